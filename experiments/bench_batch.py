"""Batch fitting: jaxlmm.lmer_batch against a loop over lme4's refit(), in one run.

    python experiments/bench_batch.py [--responses 10000] [--skip-r] [--skip-large]

Simulates responses from sleepstudy's design (18 subjects x 10 days, random intercept and
slope) and prints jaxlmm's first call (compilation included), warm call and fits per second,
then lme4's time per refit() when R with lme4 is installed. Also times a larger design
(200 groups x 10 observations) and how the time grows with the number of responses.
Timings are figures, not assertions.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import pandas as pd
from rscript import run_rscript

import jaxlmm

FORMULA = "y ~ Days + (Days | Subject)"

R_SCRIPT = r"""
suppressMessages(library(lme4))
args <- commandArgs(TRUE)
d <- read.csv(args[1]); d$Subject <- factor(d$Subject)
Y <- as.matrix(read.csv(args[2]))
d$y <- Y[, 1]
m <- lmer(y ~ Days + (Days | Subject), d)
t <- system.time(for (j in seq_len(ncol(Y))) m2 <- refit(m, Y[, j]))[["elapsed"]]
cat(sprintf("%.6f\n", t / ncol(Y)))
"""


def simulate(data: pd.DataFrame, groups: np.ndarray, n_responses: int, seed: int = 1):
    """Responses with random intercepts (SD 25) and slopes (SD 6) per group, noise SD 25."""
    rng = np.random.default_rng(seed)
    days = data["Days"].to_numpy(dtype=float)
    n_groups = groups.max() + 1
    intercepts = rng.normal(0, 25, (n_responses, n_groups))
    slopes = rng.normal(0, 6, (n_responses, n_groups))
    noise = rng.normal(0, 25, (n_responses, len(data)))
    return 250 + 10 * days + intercepts[:, groups] + slopes[:, groups] * days + noise


def large_design(n_groups: int = 200, per_group: int = 10) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "Days": np.tile(np.arange(per_group, dtype=float), n_groups),
            "Subject": np.repeat([f"g{k}" for k in range(n_groups)], per_group),
        }
    )


def time_batch(data, y):
    start = time.perf_counter()
    fit = jaxlmm.lmer_batch(FORMULA, data, y, progress=False)
    first = time.perf_counter() - start
    start = time.perf_counter()
    fit = jaxlmm.lmer_batch(FORMULA, data, y, progress=False)
    return first, time.perf_counter() - start, fit


def lme4_refit_seconds(data, y):
    line = run_rscript(R_SCRIPT, [data[["Days", "Subject"]], pd.DataFrame(y.T)], [])
    return None if line is None else float(line)


def report(label, data, y, lme4_per_fit=None):
    first, warm, fit = time_batch(data, y)
    b = len(y)
    line = (
        f"{label:<34} B={b:>6}  first {first:7.2f}s  warm {warm:7.3f}s  "
        f"{b / warm:9.0f} fits/s  converged {fit.converged.mean():.1%}  "
        f"max iterations {int(fit.to_frame()['iterations'].max())}"
    )
    if lme4_per_fit is not None:
        line += f"  speed-up vs lme4 refit {lme4_per_fit * b / warm:6.1f}x"
    print(line)


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--responses", type=int, default=10_000)
    parser.add_argument("--skip-r", action="store_true")
    parser.add_argument("--skip-large", action="store_true")
    args = parser.parse_args()

    sleep = jaxlmm.datasets.load("sleepstudy")
    groups = sleep["Subject"].cat.codes.to_numpy()
    y = simulate(sleep, groups, args.responses)
    lme4 = None if args.skip_r else lme4_refit_seconds(sleep, y[:200])
    if lme4 is not None:
        print(f"lme4 refit() loop: {lme4 * 1000:.1f} ms per fit (200 refits)")
    report("sleepstudy-shaped", sleep, y, lme4)
    for b in (1000, 2500, 5000):
        if b < args.responses:
            report("sleepstudy-shaped (scaling)", sleep, y[:b])
    if not args.skip_large:
        large = large_design()
        big_groups = large["Subject"].str[1:].astype(int).to_numpy()
        y_large = simulate(large, big_groups, 1000, seed=2)
        lme4_large = None if args.skip_r else lme4_refit_seconds(large, y_large[:50])
        if lme4_large is not None:
            print(f"lme4 refit() loop, 200 groups x 10: {lme4_large * 1000:.1f} ms per fit")
        report("200 groups x 10 obs, (Days|g)", large, y_large, lme4_large)


if __name__ == "__main__":
    main()
