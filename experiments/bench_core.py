"""Time jaxlmm's lmer() against lme4's lmer() on sleepstudy and InstEval, in one run.

    python experiments/bench_core.py [--repeats N] [--skip-insteval] [--skip-r]

Prints, per model: jaxlmm's first call in this process (tracing + compilation + fit), its warm
time (median of repeats, compiled code reused), lme4's warm time (median, via Rscript when R
with lme4 is installed) and the criterion each reached. Timings are figures, not assertions.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

from rscript import run_rscript

import jaxlmm

MODELS = [
    ("sleepstudy", "Reaction ~ Days + (Days | Subject)", 20),
    ("InstEval", "y ~ 1 + service + (1 | s) + (1 | d) + (1 | dept:service)", 3),
]

R_SCRIPT = r"""
suppressMessages(library(lme4))
args <- commandArgs(TRUE)
d <- read.csv(args[1])
for (cn in names(d)) if (is.character(d[[cn]])) d[[cn]] <- factor(d[[cn]])
for (cn in strsplit(args[4], ",")[[1]]) d[[cn]] <- factor(d[[cn]])
f <- as.formula(args[2]); reps <- as.integer(args[3])
times <- numeric(reps)
for (i in seq_len(reps)) times[i] <- system.time(m <- lmer(f, d))[["elapsed"]]
cat(sprintf('{"median": %.6f, "min": %.6f, "objective": %.10f}\n',
            median(times), min(times), REMLcrit(m)))
"""


def time_jaxlmm(data, formula, repeats):
    start = time.perf_counter()
    fit = jaxlmm.lmer(formula, data)
    first = time.perf_counter() - start
    warm = []
    for _ in range(repeats):
        start = time.perf_counter()
        fit = jaxlmm.lmer(formula, data)
        warm.append(time.perf_counter() - start)
    return first, statistics.median(warm), fit.objective


def time_lme4(data, formula, repeats):
    factors = ",".join(c for c in data.columns if str(data[c].dtype) == "category")
    reps = repeats + 1  # the first R call warms up lme4 too; the median absorbs it
    line = run_rscript(R_SCRIPT, [data], [formula, reps, factors])
    return None if line is None else json.loads(line)


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=None, help="warm repeats per model")
    parser.add_argument("--skip-insteval", action="store_true")
    parser.add_argument("--skip-r", action="store_true")
    args = parser.parse_args()
    header = (
        f"{'model':<12}{'jaxlmm first':>14}{'jaxlmm warm':>13}{'lme4 warm':>11}{'speed-up':>10}"
    )
    print(header + "   criterion (jaxlmm - lme4)")
    for name, formula, repeats in MODELS:
        if args.skip_insteval and name == "InstEval":
            continue
        repeats = args.repeats or repeats
        data = jaxlmm.datasets.load(name)
        first, warm, objective = time_jaxlmm(data, formula, repeats)
        lme4 = None if args.skip_r else time_lme4(data, formula, repeats)
        if lme4 is None:
            print(f"{name:<12}{first:>13.3f}s{warm:>12.4f}s{'-':>11}{'-':>10}   {objective:.6f}")
            continue
        speedup = lme4["median"] / warm
        diff = objective - lme4["objective"]
        print(
            f"{name:<12}{first:>13.3f}s{warm:>12.4f}s{lme4['median']:>10.4f}s{speedup:>9.1f}x"
            f"   {objective:.6f} ({diff:+.2e})"
        )


if __name__ == "__main__":
    main()
