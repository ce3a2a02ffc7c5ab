"""jaxlmm: lme4-compatible linear mixed-effects models in JAX.

Importing jaxlmm changes no JAX setting. ``lmer``, ``lmer_batch`` and the inference compute
in float64 whatever the global ``jax_enable_x64``; the functional core (``model``,
``Model.deviance``, ``estimate``) computes in JAX's current precision. Compiled programs are
cached on disk (see :mod:`jaxlmm.programs`).
"""

from . import datasets
from .anova_tables import anova
from .batch_fit import BatchFit, lmer_batch
from .design import build_design
from .errors import (
    ConvergenceWarning,
    DataError,
    FormulaError,
    InferenceError,
    JaxlmmError,
    RankDeficiencyWarning,
)
from .estimate import Estimates, estimate
from .fit import LinearMixedModelFit, devfun, lmer
from .formula import parse_formula
from .lmertest_tables import drop1, ranova
from .model import Model, NewRows, model, predict_rows
from .printing import AnovaTable, ConfintTable, VarCorr
from .status import Status

__version__ = "0.1.0"

__all__ = [
    "AnovaTable",
    "BatchFit",
    "ConfintTable",
    "ConvergenceWarning",
    "DataError",
    "Estimates",
    "FormulaError",
    "InferenceError",
    "JaxlmmError",
    "LinearMixedModelFit",
    "Model",
    "NewRows",
    "RankDeficiencyWarning",
    "Status",
    "VarCorr",
    "anova",
    "build_design",
    "datasets",
    "devfun",
    "drop1",
    "estimate",
    "lmer",
    "lmer_batch",
    "model",
    "parse_formula",
    "predict_rows",
    "ranova",
]
