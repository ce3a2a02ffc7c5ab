"""jaxlmm: lme4-compatible linear mixed-effects models in JAX.

Importing jaxlmm switches JAX to 64-bit floats (``jax_enable_x64``): every statistic is
computed in float64.
"""

import jax

jax.config.update("jax_enable_x64", True)

from . import datasets  # noqa: E402
from .design import build_design  # noqa: E402
from .errors import (  # noqa: E402
    ConvergenceWarning,
    DataError,
    FormulaError,
    JaxlmmError,
    RankDeficiencyWarning,
)
from .fit import LinearMixedModelFit, devfun, lmer  # noqa: E402
from .formula import parse_formula  # noqa: E402

__version__ = "0.1.0"

__all__ = [
    "ConvergenceWarning",
    "DataError",
    "FormulaError",
    "JaxlmmError",
    "LinearMixedModelFit",
    "RankDeficiencyWarning",
    "build_design",
    "datasets",
    "devfun",
    "lmer",
    "parse_formula",
]
