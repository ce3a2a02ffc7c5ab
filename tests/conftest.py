"""Shared fixtures: lme4 reference cases, each fitted once per test session."""

import json
import os
import warnings
from pathlib import Path

# The suite compiles many model shapes once each; skipping LLVM's expensive optimisation passes
# makes compilation ~20% faster and changes no result beyond rounding.
os.environ["XLA_FLAGS"] = " ".join(
    [os.environ.get("XLA_FLAGS", ""), "--xla_llvm_disable_expensive_passes=true"]
).strip()

import pytest  # noqa: E402

import jaxlmm  # noqa: E402

DATA = Path(__file__).parent / "data"
LME4_CASES = sorted(p.stem for p in (DATA / "lme4").glob("*.json"))


def load_reference(name: str) -> dict:
    return json.loads((DATA / "lme4" / f"{name}.json").read_text())


@pytest.fixture(scope="session")
def lme4_fit():
    """Fit a reference case (once per session) and return (fit, reference)."""
    cache = {}

    def get(name):
        if name not in cache:
            ref = load_reference(name)
            data = jaxlmm.datasets.load(ref["data"])
            with warnings.catch_warnings():
                warnings.simplefilter("error", jaxlmm.ConvergenceWarning)
                cache[name] = jaxlmm.lmer(ref["formula"], data, reml=ref["REML"]), ref
        return cache[name]

    return get


@pytest.fixture(scope="session")
def sleepstudy():
    return jaxlmm.datasets.load("sleepstudy")
