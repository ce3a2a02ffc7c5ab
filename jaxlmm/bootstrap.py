"""Parametric bootstrap (lme4's ``bootMer`` with ``use.u = FALSE``): responses simulated from the
fitted model, all refitted in one batch, percentile intervals from the replicates."""

from __future__ import annotations

from dataclasses import dataclass

import jax.numpy as jnp
import numpy as np
import pandas as pd

from . import parameters
from .batch import fit_responses
from .errors import InferenceError
from .predict import simulate_responses


@dataclass(frozen=True, eq=False)
class BootstrapResult:
    """Bootstrap replicates of lme4's ``confint`` parameters (immutable)."""

    estimates: pd.Series  # the fitted model's values
    samples: pd.DataFrame  # one row per replicate: sd_/cor_ per term, sigma, fixed effects
    converged: np.ndarray  # (nsim,) bool: the replicate's refit converged

    def confint(self, level: float = 0.95) -> pd.DataFrame:
        """Percentile intervals from the converged replicates."""
        if not 0 < level < 1:
            raise InferenceError(f"level must be between 0 and 1, got {level!r}")
        used = self.samples[self.converged]
        if not len(used):
            raise InferenceError("no bootstrap replicate converged")
        tails = [(1 - level) / 2, (1 + level) / 2]
        bounds = np.nanquantile(used.to_numpy(), tails, axis=0).T
        return pd.DataFrame(bounds, index=self.samples.columns, columns=["lower", "upper"])


def bootstrap(fit, nsim: int, seed=None, chunk_size: int = 512) -> BootstrapResult:
    """Simulate ``nsim`` responses from ``fit`` and refit each (one vmapped batch)."""
    design = fit.design
    y = simulate_responses(fit, nsim, np.random.default_rng(seed))
    theta0 = parameters.off_boundary(fit.theta, fit.blocks.sizes)
    batch = fit_responses(
        design, y, list(range(nsim)), fit.reml, chunk_size, progress=False, theta0=theta0
    )
    samples = pd.concat([batch.variance_components(), batch.fixef], axis=1)
    estimates = pd.concat(
        [
            pd.Series(
                np.asarray(parameters.sdcor(jnp.asarray(fit.theta), fit.sigma, fit.blocks.sizes)),
                index=parameters.sdcor_names(design.terms),
            ),
            fit.fixef,
        ]
    )
    return BootstrapResult(estimates, samples, batch.converged)
