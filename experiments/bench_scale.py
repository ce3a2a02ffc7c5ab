"""Large designs: time and peak memory of jaxlmm against lme4 on synthetic data, one run.

    python experiments/bench_scale.py [--skip-r] [--large] [--r-limit SECONDS] [--cases ...]

Cases (seeded data, generated here):
  ml1m      MovieLens-1M-shaped: 1,000,000 ratings, 6,040 users x 3,706 items crossed, skewed
            user activity (log-normal) and item popularity (Zipf), no repeated user-item pair;
            ``rating ~ x + (1 | user) + (1 | item)``
  g5k-int   1,000,000 rows, 5,000 groups: ``y ~ x + (1 | g)``
  g5k-slope the same data: ``y ~ x + (x | g)``
  boot      InstEval's model and ``bootstrap(100)`` (memory of a batch of a crossed design)
  ml10m     (with ``--large``) MovieLens-10M-shaped: 10,000,054 ratings, 69,878 x 10,677

Each case runs in a fresh process on data generated beforehand and saved to a file (so its
peak RSS is its own, not that of generating the data; grouping columns as pandas categoricals,
as lme4's script makes them factors) and prints: the model build (formula,
design and cross-products: ``jaxlmm.model``), the first fit (compilation included), the warm
fit (not for ml10m on CPU, fitted once), the peak RSS of the process through those fits (one
fit held at a time) and, on an accelerator, its peak memory, the criterion, and the same for
lme4 (Rscript, peak from /proc/self/status) where it finishes within ``--r-limit``. For
crossed designs it also prints the dense block's size, the warm fit's iterations, the time of
one criterion evaluation with its gradient, and the rate of a Cholesky factor of the dense
block's size against a measured matrix product (the machine's practical peak).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time

import numpy as np
import pandas as pd

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

CASES = {
    "ml1m": ("rating ~ x + (1 | user) + (1 | item)", "movielens", (1_000_000, 6_040, 3_706)),
    "g5k-int": ("y ~ x + (1 | g)", "groups", (1_000_000, 5_000)),
    "g5k-slope": ("y ~ x + (x | g)", "groups", (1_000_000, 5_000)),
    "boot": ("y ~ 1 + service + (1 | s) + (1 | d) + (1 | dept:service)", "insteval", ()),
    "ml10m": ("rating ~ x + (1 | user) + (1 | item)", "movielens", (10_000_054, 69_878, 10_677)),
}

ONE_FIT = ("ml10m",)  # on CPU fitted once (minutes each): no warm fit, no evaluation timing

R_SCRIPT = r"""
suppressMessages(library(lme4))
args <- commandArgs(TRUE)
d <- read.csv(args[1])
for (cn in strsplit(args[3], ",")[[1]]) d[[cn]] <- factor(d[[cn]])
start <- proc.time()[["elapsed"]]
m <- lmer(as.formula(args[2]), d)
elapsed <- proc.time()[["elapsed"]] - start
status <- readLines("/proc/self/status")
peak <- as.numeric(gsub("[^0-9]", "", status[grepl("^VmHWM", status)])) / 1024
cat(sprintf('{"seconds": %.3f, "peak_mb": %.1f, "objective": %.6f}\n',
            elapsed, peak, REMLcrit(m)))
"""


def movielens(n: int, n_users: int, n_items: int, seed: int = 1) -> pd.DataFrame:
    """Ratings with log-normal user activity and Zipf item popularity, each (user, item) once."""
    rng = np.random.default_rng(seed)
    activity = rng.lognormal(0.0, 1.1, n_users)
    popularity = rng.permutation(1.0 / np.arange(1, n_items + 1) ** 0.9)
    keys = np.zeros(0, dtype=np.int64)
    while len(keys) < n:
        draw = int(1.3 * (n - len(keys))) + 1000
        user = rng.choice(n_users, draw, p=activity / activity.sum())
        item = rng.choice(n_items, draw, p=popularity / popularity.sum())
        keys = sorted_unique(np.concatenate([keys, user * n_items + item]))
    keys = rng.permutation(keys)[:n]
    user, item = keys // n_items, keys % n_items
    x = rng.normal(size=n)
    u = rng.normal(0, 0.4, n_users)
    v = rng.normal(0, 0.5, n_items)
    rating = 3.6 + 0.2 * x + u[user] + v[item] + rng.normal(0, 0.9, n)
    return pd.DataFrame({"rating": rating, "x": x, "user": user, "item": item})


def sorted_unique(a: np.ndarray) -> np.ndarray:
    """``np.unique(a)`` by one sort (NumPy 2.4's ``unique`` takes seconds on 10M values)."""
    a = np.sort(a)
    return a[np.concatenate([[True], a[1:] != a[:-1]])]


def groups(n: int, n_groups: int, seed: int = 2) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    g = rng.integers(0, n_groups, n)
    x = rng.normal(size=n)
    b0, b1 = rng.normal(0, 1.0, n_groups), rng.normal(0, 0.5, n_groups)
    y = 1.0 + 0.5 * x + b0[g] + b1[g] * x + rng.normal(size=n)
    return pd.DataFrame({"y": y, "x": x, "g": g})


def make_data(kind: str, shape) -> pd.DataFrame:
    if kind == "movielens":
        return movielens(*shape)
    if kind == "groups":
        return groups(*shape)
    import jaxlmm

    return jaxlmm.datasets.load("InstEval")


def factor_columns(kind: str) -> list[str]:
    return {"movielens": ["user", "item"], "groups": ["g"], "insteval": []}[kind]


def peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _seconds(function, *args) -> float:
    """Wall time of a second call (the first compiles)."""
    jax_block(function(*args))
    start = time.perf_counter()
    jax_block(function(*args))
    return time.perf_counter() - start


def jax_block(out):
    import jax

    return jax.block_until_ready(out)


def dense_block_rates(fit) -> dict:
    """The dense block's size, one criterion evaluation with its gradient, and the GFLOP/s of a
    Cholesky factor of that size against a measured matrix product (the practical peak)."""
    import jax
    import jax.numpy as jnp

    from jaxlmm import deviance, programs

    mz = fit.blocks.mz
    evaluation = _seconds(
        lambda: jax_block(
            programs.run(deviance.value_and_grad, fit.opt.theta, fit.blocks, fit.reml)
        )
    )
    with jax.enable_x64(True):
        a = jnp.asarray(np.random.default_rng(0).random((mz, mz)))
        spd = a @ a.T + mz * jnp.eye(mz)
        cholesky = _seconds(jax.jit(jnp.linalg.cholesky), spd)
        gemm = _seconds(jax.jit(lambda a: a @ a), a)
    return {
        "mz": mz,
        "iterations": int(fit.opt.iterations),
        "evaluation": evaluation,
        "cholesky_gflops": mz**3 / 3 / cholesky / 1e9,
        "peak_gflops": 2 * mz**3 / gemm / 1e9,
    }


def device_peak_mb() -> float | None:
    """Peak memory in use on the accelerator (None on CPU, where peak RSS counts it)."""
    import jax

    if jax.default_backend() == "cpu":
        return None
    stats = jax.local_devices()[0].memory_stats() or {}
    return stats.get("peak_bytes_in_use", 0) / 2**20


def child(name: str, path: str | None) -> None:
    """Run one case in this process on the data saved at ``path`` (made here when None) and
    print its figures as one JSON line."""
    formula, kind, shape = CASES[name]
    if path is None:
        data = make_data(kind, shape)
    else:
        with np.load(path, allow_pickle=False) as saved:
            data = pd.DataFrame({column: saved[column] for column in saved.files})
    for column in factor_columns(kind):  # factors, as lme4's script makes them
        data[column] = data[column].astype("category")
    base = peak_mb()
    import jax

    import jaxlmm

    once = name in ONE_FIT and jax.default_backend() == "cpu"
    start = time.perf_counter()
    jaxlmm.model(formula, data, reml=True)
    build = time.perf_counter() - start
    start = time.perf_counter()
    fit = jaxlmm.lmer(formula, data)
    first = time.perf_counter() - start
    warm = None
    if not once:
        del fit  # the peak below is that of one fit at a time
        start = time.perf_counter()
        fit = jaxlmm.lmer(formula, data)
        warm = time.perf_counter() - start
    out = {"build": build, "first": first, "warm": warm, "objective": float(fit.objective)}
    out["status"] = fit.status
    if name == "boot":
        start = time.perf_counter()
        fit.bootstrap(100, seed=1)
        out["bootstrap"] = time.perf_counter() - start
    out["data_mb"] = base
    out["peak_mb"] = peak_mb()  # before the rates below, which allocate matrices of their own
    out["device"] = f"{jax.default_backend()} ({jax.local_devices()[0].device_kind})"
    out["device_peak_mb"] = device_peak_mb()
    if len(fit.model.info.sizes) > 1 and name != "boot" and not once:
        out.update(dense_block_rates(fit))
    print(json.dumps(out))


def run_child(name: str, data: pd.DataFrame) -> dict | None:
    """Run one case in a fresh process, on generated ``data`` saved to a file (so that the
    peak memory of generating it is not the fit's); bundled data is loaded there."""
    import tempfile

    command = [sys.executable, __file__, "--child", name]
    with tempfile.TemporaryDirectory() as tmp:
        if CASES[name][1] != "insteval":
            path = os.path.join(tmp, "data.npz")
            np.savez(path, **{column: data[column].to_numpy() for column in data.columns})
            command += ["--data", path]
        result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        print(f"  {name} failed: {result.stderr.strip()[-600:]}")
        return None
    return json.loads(result.stdout.strip().splitlines()[-1])


def run_lme4(name: str, data: pd.DataFrame, limit: float) -> dict | None:
    import shutil
    import tempfile

    if shutil.which("Rscript") is None:
        return None
    formula, kind, shape = CASES[name]
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "data.csv")
        data.to_csv(path, index=False)
        script = os.path.join(tmp, "bench.R")
        with open(script, "w") as f:
            f.write(R_SCRIPT)
        command = ["Rscript", script, path, formula, ",".join(factor_columns(kind))]
        try:
            result = subprocess.run(command, capture_output=True, text=True, timeout=limit)
        except subprocess.TimeoutExpired:
            return {"timeout": limit}
    if result.returncode != 0:
        print(f"  R failed: {result.stderr.strip()[-300:]}")
        return None
    return json.loads(result.stdout.strip().splitlines()[-1])


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--data", help=argparse.SUPPRESS)
    parser.add_argument("--skip-r", action="store_true")
    parser.add_argument("--large", action="store_true", help="add the 10M-row case")
    parser.add_argument("--r-limit", type=float, default=1800, help="seconds lme4 may take")
    parser.add_argument(
        "--cases", nargs="*", choices=list(CASES), help="cases to run (default: all but ml10m)"
    )
    args = parser.parse_args()
    if args.child:
        child(args.child, args.data)
        return
    names = args.cases or [n for n in CASES if n != "ml10m"] + (["ml10m"] if args.large else [])
    for name in names:
        formula, kind, shape = CASES[name]
        print(f"{name}: {formula}")
        data = make_data(kind, shape)
        ours = run_child(name, data)
        if ours is not None:
            warm = "" if ours["warm"] is None else f"warm {ours['warm']:.2f}s  "
            line = (
                f"  jaxlmm  build {ours['build']:.2f}s  first {ours['first']:.2f}s  "
                f"{warm}peak RSS {ours['peak_mb']:.0f} MB "
                f"(data alone {ours['data_mb']:.0f} MB)  criterion {ours['objective']:.4f} "
                f"({ours['status']})"
            )
            if ours["device_peak_mb"] is not None:
                line += f"  on {ours['device']}, peak device memory {ours['device_peak_mb']:.0f} MB"
            if "bootstrap" in ours:
                line += f"  bootstrap(100) {ours['bootstrap']:.2f}s"
            print(line)
            if "mz" in ours:
                print(
                    f"  dense block mz={ours['mz']}: {ours['iterations']} iterations, "
                    f"{ours['evaluation']:.3f}s per criterion+gradient evaluation; its Cholesky "
                    f"runs at {ours['cholesky_gflops']:.0f} GFLOP/s, matrix product at "
                    f"{ours['peak_gflops']:.0f} GFLOP/s"
                )
        if args.skip_r or name == "boot":
            continue
        lme4 = run_lme4(name, data, args.r_limit)
        if lme4 is None:
            continue
        if "timeout" in lme4:
            print(f"  lme4    did not finish within {lme4['timeout']:.0f}s")
            continue
        line = (
            f"  lme4    fit {lme4['seconds']:.2f}s  peak RSS {lme4['peak_mb']:.0f} MB  "
            f"criterion {lme4['objective']:.4f}"
        )
        if ours is not None and ours["warm"] is not None:
            line += (
                f"  -> jaxlmm warm {lme4['seconds'] / ours['warm']:.1f}x faster, "
                f"{ours['peak_mb'] / lme4['peak_mb']:.2f}x the memory"
            )
        print(line)


if __name__ == "__main__":
    main()
