"""Parametric bootstrap (lme4's ``bootMer`` with ``use.u = FALSE``): responses simulated from the
fitted model, all refitted in one batch, percentile intervals from the replicates."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from . import parameters
from .batch import fit_responses
from .errors import InferenceError
from .printing import confint_table
from .status import Status


@dataclass(frozen=True, eq=False)
class BootstrapResult:
    """Bootstrap replicates of lme4's ``confint`` parameters (immutable)."""

    estimates: pd.Series  # the fitted model's values
    samples: pd.DataFrame  # one row per replicate: sd_/cor_ per term, sigma, fixed effects
    converged: np.ndarray  # (nsim,) bool: the replicate's refit converged

    def __repr__(self) -> str:
        return (
            f"<BootstrapResult: {len(self.samples)} replicates ({int(self.converged.sum())} "
            f"converged) of {len(self.samples.columns)} parameters>"
        )

    def plot(self, level: float = 0.95):
        """Histograms of the replicates with the estimate and the percentile interval."""
        from . import plots  # matplotlib is optional and slow to import

        return plots.bootstrap_distributions(self, level)

    def confint(self, level: float = 0.95) -> pd.DataFrame:
        """Percentile intervals from the converged replicates."""
        if not 0 < level < 1:
            raise InferenceError(f"level must be between 0 and 1, got {level!r}")
        used = self.samples[self.converged]
        if not len(used):
            raise InferenceError("no bootstrap replicate converged")
        tails = [(1 - level) / 2, (1 + level) / 2]
        bounds = np.nanquantile(used.to_numpy(), tails, axis=0).T
        frame = pd.DataFrame(bounds, index=self.samples.columns, columns=["lower", "upper"])
        return confint_table(frame, level)  # prints as R's confint matrix


def bootstrap(
    design, reml: bool, theta, sigma, fixef: pd.Series, responses: np.ndarray, chunk_size: int = 512
) -> BootstrapResult:
    """Refit the model of ``design`` to simulated ``responses`` (one vmapped batch), starting
    from the fit's ``theta``; the replicates of the SDs, correlations, sigma and fixed effects."""
    sizes = tuple(t.n_columns for t in design.terms)
    theta0 = parameters.off_boundary(theta, sizes)
    result, status = fit_responses(design, responses, reml, chunk_size, theta0=theta0)
    est = result.estimates
    names = parameters.sdcor_names(design.terms)
    samples = pd.concat(
        [
            pd.DataFrame(parameters.sdcor_values(est.theta, sizes, est.sigma), columns=names),
            pd.DataFrame(est.beta, columns=list(fixef.index)),
        ],
        axis=1,
    )
    estimates = pd.concat(
        [pd.Series(parameters.sdcor_values(theta, sizes, sigma), index=names), fixef]
    )
    return BootstrapResult(estimates, samples, status == Status.CONVERGED)
