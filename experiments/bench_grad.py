"""Derivatives of a fit with respect to its data, timed against the fit itself.

    python experiments/bench_grad.py [--skip-insteval] [--repeats N]

For sleepstudy and InstEval: ``jaxlmm.estimate`` (jitted), the reverse-mode gradient of
beta-hat[1] with respect to y (implicit function theorem: one linear solve at the optimum, not
the optimiser's iterations) and the whole Jacobian of beta-hat with respect to y (every
observation's influence on every coefficient). First call (tracing and compiling) and warm
time (median of repeats), all in float64. Figures, not assertions.
"""

from __future__ import annotations

import argparse
import statistics
import time

import jax

import jaxlmm

MODELS = [
    ("sleepstudy", "Reaction ~ Days + (Days | Subject)"),
    ("InstEval", "y ~ 1 + service + (1 | s) + (1 | d) + (1 | dept:service)"),
]


def timed(fun, *args, repeats: int):
    start = time.perf_counter()
    jax.block_until_ready(fun(*args))
    first = time.perf_counter() - start
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(fun(*args))
        times.append(time.perf_counter() - start)
    return first, statistics.median(times)


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--skip-insteval", action="store_true")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    print(f"{'model':<12}{'computation':<34}{'first':>9}{'warm':>11}{'warm / fit':>12}")
    for name, formula in MODELS:
        if args.skip_insteval and name == "InstEval":
            continue
        with jax.enable_x64(True):
            model = jaxlmm.model(formula, jaxlmm.datasets.load(name))
            repeats = args.repeats if name == "sleepstudy" else max(2, args.repeats // 2)

            def fit(y, model=model):
                return jaxlmm.estimate(model, y=y).beta

            computations = {
                "fit (estimate)": jax.jit(fit),
                "grad of beta[1] in y (reverse)": jax.jit(jax.grad(lambda y: fit(y)[1])),
                "Jacobian of beta in y (reverse)": jax.jit(jax.jacrev(fit)),
            }
            fit_time = None
            for label, fun in computations.items():
                first, warm = timed(fun, model.y, repeats=repeats)
                fit_time = fit_time or warm
                print(f"{name:<12}{label:<34}{first:8.2f}s{warm:10.4f}s{warm / fit_time:11.2f}x")


if __name__ == "__main__":
    main()
