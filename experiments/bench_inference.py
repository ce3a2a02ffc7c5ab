"""Time jaxlmm's inference against lme4/lmerTest/pbkrtest on sleepstudy, in one run.

    python experiments/bench_inference.py [--repeats N] [--nsim N] [--skip-r]

Model: Reaction ~ Days + (Days | Subject), REML. Rows: profile confidence intervals
(``confint(m, method = "profile")``), parametric bootstrap per replicate (``bootMer``,
``use.u = FALSE``), Satterthwaite and Kenward-Roger coefficient tables
(``summary(as_lmerModLmerTest(m), ddf = ...)``). jaxlmm's first call in this process includes
tracing and compilation (the persistent compilation cache is off here); warm is the median of
the repeats. lme4 runs via Rscript when R with lme4, lmerTest and pbkrtest is installed.
Timings are figures, not assertions.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

os.environ.setdefault("JAXLMM_NO_CACHE", "1")  # first calls really compile

from rscript import run_rscript  # noqa: E402

import jaxlmm  # noqa: E402

FORMULA = "Reaction ~ Days + (Days | Subject)"

R_SCRIPT = r"""
suppressMessages({library(lme4); library(lmerTest); library(pbkrtest)})
args <- commandArgs(TRUE)
d <- read.csv(args[1]); d$Subject <- factor(d$Subject)
reps <- as.integer(args[2]); nsim <- as.integer(args[3])
m <- lme4::lmer(Reaction ~ Days + (Days | Subject), d)
med <- function(expr) median(replicate(reps, system.time(eval(expr))[["elapsed"]]))
mt <- as_lmerModLmerTest(m)
prof <- med(quote(confint(m, method = "profile")))
boot <- system.time(bootMer(m, fixef, nsim = nsim, use.u = FALSE))[["elapsed"]] / nsim
satt <- med(quote(summary(as_lmerModLmerTest(m), ddf = "Satterthwaite")))
kr <- med(quote(summary(as_lmerModLmerTest(m), ddf = "Kenward-Roger")))
cat(sprintf("%.6f %.6f %.6f %.6f\n", satt, kr, prof, boot))
"""


def timed(task, repeats, setup=lambda: None):
    """(first call, median of ``repeats`` warm calls) in seconds of ``task(setup())``, with
    ``setup`` outside the timer."""
    times = []
    for _ in range(repeats + 1):
        argument = setup()
        start = time.perf_counter()
        task(argument)
        times.append(time.perf_counter() - start)
    return times[0], statistics.median(times[1:])


def time_r(data, repeats, nsim):
    line = run_rscript(R_SCRIPT, [data], [repeats, nsim])
    return None if line is None else [float(v) for v in line.split()]


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--nsim", type=int, default=1000, help="bootstrap replicates")
    parser.add_argument("--skip-r", action="store_true")
    args = parser.parse_args()

    data = jaxlmm.datasets.load("sleepstudy")

    def fresh_fit():  # inference results are cached on a fit: time them on a new one
        return jaxlmm.lmer(FORMULA, data)

    fit_time = timed(lambda _: fresh_fit(), args.repeats)[1]
    rows = [
        ("Satterthwaite table", lambda fit: fit.coef_table("satterthwaite"), 1),
        ("Kenward-Roger table", lambda fit: fit.coef_table("kenward-roger"), 1),
        ("profile confint", lambda fit: fit.confint("profile"), 1),
        ("bootstrap per replicate", lambda fit: fit.bootstrap(args.nsim, seed=1), args.nsim),
    ]
    r_times = None if args.skip_r else time_r(data, args.repeats, min(args.nsim, 200))
    print(f"sleepstudy {FORMULA} (REML); a warm lmer() alone takes {fit_time:.4f}s")
    print(f"{'task':<26}{'jaxlmm first':>14}{'jaxlmm warm':>14}{'R warm':>12}{'speed-up':>10}")
    print(f"{'':<26}{'(s)':>14}{'(ms)':>14}{'(ms)':>12}")
    for k, (name, fn, per) in enumerate(rows):
        first, warm = timed(fn, args.repeats, setup=fresh_fit)
        first, warm = first / per, warm / per
        r = r_times[k] if r_times else None
        r_text = f"{1000 * r:>12.2f}" if r else f"{'n/a':>12}"
        ratio = f"{r / warm:>9.1f}x" if r else f"{'':>10}"
        print(f"{name:<26}{first:>14.3f}{1000 * warm:>14.3f}{r_text}{ratio}")
    print("jaxlmm times exclude the lmer() fit each task starts from; lme4 times exclude it too.")


if __name__ == "__main__":
    main()
