"""A user's sitting, timed cold: ten different small models fitted one after another in a
fresh Python process with an empty compilation cache, against the same session in Rscript.

    python experiments/bench_session.py [--skip-r] [--rounds N]

Prints each model's first and warm fit time and whether its first fit compiled a program,
both sessions' whole wall times (interpreter start, imports and data loading included) and
their ratio; the same session again with the disk cache the first one filled; then, each in a
fresh process with an empty cache, the cold quick-start CLI against ``Rscript -e`` and the
first profile interval, bootstrap(100), Satterthwaite table and 1,000-response batch. Timings
are figures, not assertions.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

MODELS = [
    ("sleepstudy", "Reaction ~ Days + (Days | Subject)", True),
    ("sleepstudy", "Reaction ~ Days + (1 | Subject)", True),
    ("sleepstudy", "Reaction ~ Days + (Days || Subject)", True),
    ("sleepstudy", "Reaction ~ Days + (Days | Subject)", False),
    ("Dyestuff", "Yield ~ 1 + (1 | Batch)", True),
    ("Dyestuff2", "Yield ~ 1 + (1 | Batch)", True),
    ("Penicillin", "diameter ~ 1 + (1 | plate) + (1 | sample)", True),
    ("Pastes", "strength ~ 1 + (1 | batch/cask)", True),
    ("Pastes", "strength ~ 1 + (1 | sample)", True),
    ("sleepstudy", "Reaction ~ Days + I(Days^2) + (Days | Subject)", True),
]

SESSION = r"""
import json, sys, time
start = float(sys.argv[1])
import jaxlmm
from jaxlmm import programs
models = json.loads(sys.argv[2])
data = {}
rows = []
for name, formula, reml in models:
    t = time.perf_counter()
    frame = data.setdefault(name, jaxlmm.datasets.load(name))
    before = programs.counts()
    jaxlmm.lmer(formula, frame, reml=reml)
    first = time.perf_counter() - t
    compiled = programs.counts()["compiled"] - before["compiled"]
    rows.append([first, compiled])
session = time.time() - start
for k, (name, formula, reml) in enumerate(models):
    t = time.perf_counter()
    jaxlmm.lmer(formula, data[name], reml=reml)
    rows[k].append(time.perf_counter() - t)
print(json.dumps({"rows": rows, "session": session}))
"""

R_SESSION = r"""
start <- Sys.time()
suppressMessages(library(lme4))
fits <- list(
  function() lmer(Reaction ~ Days + (Days | Subject), sleepstudy),
  function() lmer(Reaction ~ Days + (1 | Subject), sleepstudy),
  function() lmer(Reaction ~ Days + (Days || Subject), sleepstudy),
  function() lmer(Reaction ~ Days + (Days | Subject), sleepstudy, REML = FALSE),
  function() lmer(Yield ~ 1 + (1 | Batch), Dyestuff),
  function() lmer(Yield ~ 1 + (1 | Batch), Dyestuff2),
  function() lmer(diameter ~ 1 + (1 | plate) + (1 | sample), Penicillin),
  function() lmer(strength ~ 1 + (1 | batch/cask), Pastes),
  function() lmer(strength ~ 1 + (1 | sample), Pastes),
  function() lmer(Reaction ~ Days + I(Days^2) + (Days | Subject), sleepstudy))
first <- sapply(fits, function(f) system.time(f(), gcFirst = FALSE)[["elapsed"]])
session <- as.numeric(difftime(Sys.time(), start, units = "secs"))
warm <- sapply(fits, function(f) system.time(f(), gcFirst = FALSE)[["elapsed"]])
cat(sprintf('{"first": [%s], "warm": [%s], "session": %.4f}\n',
            paste(first, collapse = ","), paste(warm, collapse = ","), session))
"""

FIRST_CALLS = {
    "confint(method='profile')": "fit.confint(method='profile')",
    "bootstrap(100)": "fit.bootstrap(100, seed=1)",
    "coef_table('satterthwaite')": "fit.coef_table('satterthwaite')",
    "lmer_batch(1000 responses)": (
        "jaxlmm.lmer_batch(FORMULA, data, "
        "responses=np.random.default_rng(1).normal(300, 50, (1000, len(data))), progress=False)"
    ),
}

FIRST_CALL = r"""
import sys, time
import numpy as np
import jaxlmm
FORMULA = "Reaction ~ Days + (Days | Subject)"
data = jaxlmm.datasets.load("sleepstudy")
fit = jaxlmm.lmer(FORMULA, data)
t = time.perf_counter()
exec(sys.argv[1])
print(time.perf_counter() - t)
"""


def python_session(cache: str, models) -> dict:
    env = dict(os.environ, JAXLMM_CACHE_DIR=cache)
    env.pop("JAXLMM_NO_CACHE", None)
    start = time.time()
    out = subprocess.run(
        [sys.executable, "-c", SESSION, repr(start), json.dumps(models)],
        capture_output=True,
        text=True,
        env=env,
        check=True,
    )
    result = json.loads(out.stdout.strip().splitlines()[-1])
    result["wall"] = time.time() - start
    return result


def r_session() -> dict | None:
    if shutil.which("Rscript") is None:
        return None
    start = time.time()
    out = subprocess.run(["Rscript", "-e", R_SESSION], capture_output=True, text=True)
    if out.returncode != 0:
        print(f"  R failed: {out.stderr.strip()[-300:]}")
        return None
    result = json.loads(out.stdout.strip().splitlines()[-1])
    result["wall"] = time.time() - start
    return result


def timed(command: list[str], env=None) -> float:
    start = time.time()
    subprocess.run(command, capture_output=True, check=True, env=env)
    return time.time() - start


def empty_cache_env(tmp: str) -> dict:
    env = dict(os.environ, JAXLMM_CACHE_DIR=tempfile.mkdtemp(dir=tmp))
    env.pop("JAXLMM_NO_CACHE", None)
    return env


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--skip-r", action="store_true")
    parser.add_argument("--rounds", type=int, default=3, help="cold sessions to take the median of")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        sessions = [python_session(tempfile.mkdtemp(dir=tmp), MODELS) for _ in range(args.rounds)]
        median = sorted(sessions, key=lambda s: s["wall"])[len(sessions) // 2]
        warm_cache = tempfile.mkdtemp(dir=tmp)
        python_session(warm_cache, MODELS)  # fills a cache ...
        from_disk = python_session(warm_cache, MODELS)  # ... that a new process reuses
        r = None if args.skip_r else r_session()

        print("cold session: fresh process, empty compilation cache (median of", args.rounds, ")")
        print(f"{'model':<58}{'first':>9}{'compiled':>10}{'warm':>9}{'lme4 first':>12}")
        for k, (name, formula, reml) in enumerate(MODELS):
            first, compiled, warm = median["rows"][k]
            label = f"{name}: {formula}{'' if reml else ' (ML)'}"
            r_first = f"{r['first'][k]:11.3f}s" if r else f"{'-':>12}"
            print(f"{label:<58}{first:8.3f}s{compiled:>10}{warm * 1000:7.1f}ms{r_first}")
        new = [row[0] for row in median["rows"] if row[1]]
        known = [row[0] for row in median["rows"] if not row[1]]
        print(
            f"first fit, new size class:   median {statistics.median(new):.3f}s ({len(new)} fits)"
        )
        if known:
            print(
                f"first fit, known size class: median {statistics.median(known):.3f}s "
                f"({len(known)} fits)"
            )
        disk = [row[0] for row in from_disk["rows"]]
        print(f"first fit, size class on disk (new process): median {statistics.median(disk):.3f}s")
        line = f"whole session: jaxlmm {median['wall']:.2f}s"
        if r:
            line += f", lme4 {r['wall']:.2f}s, ratio {median['wall'] / r['wall']:.2f}x"
        print(line + f" (jaxlmm with the cache on disk: {from_disk['wall']:.2f}s)")
        line = f"start to the tenth first fit: jaxlmm {median['session']:.2f}s"
        if r:
            line += f", lme4 {r['session']:.2f}s, ratio {median['session'] / r['session']:.2f}x"
        print(line)

        cli = [
            sys.executable,
            "-m",
            "jaxlmm.cli",
            "fit",
            "sleepstudy",
            "Reaction ~ Days + (Days | Subject)",
        ]
        cli_time = timed(cli, empty_cache_env(tmp))
        line = f"cold quick-start CLI: jaxlmm {cli_time:.2f}s"
        if shutil.which("Rscript") and not args.skip_r:
            r_cli = timed(
                [
                    "Rscript",
                    "-e",
                    "library(lme4); print(summary(lmer(Reaction ~ Days "
                    "+ (Days | Subject), sleepstudy)))",
                ]
            )
            line += f", Rscript {r_cli:.2f}s, ratio {cli_time / r_cli:.2f}x"
        print(line)
        for label, call in FIRST_CALLS.items():
            out = subprocess.run(
                [sys.executable, "-c", FIRST_CALL, call],
                capture_output=True,
                text=True,
                check=True,
                env=empty_cache_env(tmp),
            )
            print(f"cold first {label}: {float(out.stdout.strip().splitlines()[-1]):.2f}s")


if __name__ == "__main__":
    main()
