"""jaxlmm: lme4-compatible linear mixed-effects models in JAX.

Importing jaxlmm switches JAX to 64-bit floats (``jax_enable_x64``): every statistic is
computed in float64. Unless JAX already has one or ``JAXLMM_NO_CACHE`` is set, it also turns on
JAX's persistent compilation cache (in ``$XDG_CACHE_HOME/jaxlmm``, default ``~/.cache/jaxlmm``)
so that a new process reuses the compiled fitting code instead of compiling it again.
"""

import os
from pathlib import Path

import jax

jax.config.update("jax_enable_x64", True)
if not os.environ.get("JAXLMM_NO_CACHE") and not jax.config.jax_compilation_cache_dir:
    _cache_home = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    jax.config.update("jax_compilation_cache_dir", str(_cache_home / "jaxlmm" / "xla"))

from . import datasets  # noqa: E402
from .anova_tables import anova  # noqa: E402
from .batch import BatchFit, lmer_batch  # noqa: E402
from .design import build_design  # noqa: E402
from .errors import (  # noqa: E402
    ConvergenceWarning,
    DataError,
    FormulaError,
    InferenceError,
    JaxlmmError,
    RankDeficiencyWarning,
)
from .fit import LinearMixedModelFit, devfun, lmer  # noqa: E402
from .formula import parse_formula  # noqa: E402

__version__ = "0.1.0"

__all__ = [
    "BatchFit",
    "InferenceError",
    "ConvergenceWarning",
    "DataError",
    "FormulaError",
    "anova",
    "JaxlmmError",
    "LinearMixedModelFit",
    "RankDeficiencyWarning",
    "build_design",
    "datasets",
    "devfun",
    "lmer",
    "lmer_batch",
    "parse_formula",
]
