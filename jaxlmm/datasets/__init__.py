"""Example data sets from the R package lme4, bundled as gzipped CSV.

Each was exported from lme4 with ``write.csv``; factors come back as pandas categoricals with
alphabetical levels. Sources (all documented in lme4's help pages):

- ``sleepstudy``: reaction times under sleep deprivation (Belenky et al. 2003).
- ``Dyestuff``, ``Dyestuff2``: batch-to-batch variation in dyestuff yield (Davies and
  Goldsmith 1972; Dyestuff2 is simulated data with no batch variance, Box and Tiao 1973).
- ``Penicillin``: penicillin potency by plate and sample (Davies and Goldsmith 1972).
- ``Pastes``: paste strength by batch and cask (Davies and Goldsmith 1972).
- ``InstEval``: university lecture evaluations by students (ETH Zurich), 73,421 ratings.
- ``Machines``: productivity scores of six workers on three machines (Milliken and Johnson
  1992; the R package nlme's data set, used in lme4's examples).
"""

from __future__ import annotations

from importlib import resources

import pandas as pd

_FACTORS = {
    "sleepstudy": ["Subject"],
    "Dyestuff": ["Batch"],
    "Dyestuff2": ["Batch"],
    "Penicillin": ["plate", "sample"],
    "Pastes": ["batch", "cask", "sample"],
    "InstEval": ["s", "d", "studage", "lectage", "service", "dept"],
    "Machines": ["Worker", "Machine"],
}
_BY_LOWER = {name.lower(): name for name in _FACTORS}


def names() -> list[str]:
    """Names of the bundled data sets."""
    return list(_FACTORS)


def load(name: str) -> pd.DataFrame:
    """Load a bundled data set by name (case-insensitive)."""
    key = _BY_LOWER.get(str(name).lower())
    if key is None:
        raise KeyError(f"unknown data set {name!r}; available: {names()}")
    factors = _FACTORS[key]
    path = resources.files(__name__) / f"{key}.csv.gz"
    with resources.as_file(path) as file:
        frame = pd.read_csv(file, dtype={c: str for c in factors})
    for column in factors:
        frame[column] = pd.Categorical(frame[column], categories=sorted(frame[column].unique()))
    return frame
