"""``lmer_batch()``: many responses sharing one right-hand side, and their results object."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from functools import cached_property

import numpy as np
import pandas as pd
from scipy import special

from . import parameters
from .batch import BatchResult, fit_responses, satterthwaite_parts
from .design import Design, build_design
from .errors import DataError, InferenceError, JaxlmmError
from .estimate import Estimates
from .fit import LinearMixedModelFit, lmer_design
from .formula import parse_formula
from .inference import ddf_method, satterthwaite_df
from .optimize import EVALUATE_ONLY
from .status import Status

_PLACEHOLDER = "__jaxlmm_response__"


def _responses(responses, data: pd.DataFrame) -> tuple[np.ndarray, list]:
    """(B, len(data)) float64 values and a name per response."""
    if isinstance(responses, str):
        responses = [responses]
    if isinstance(responses, (list, tuple)) and all(isinstance(r, str) for r in responses):
        missing = [r for r in responses if r not in data.columns]
        if missing:
            raise DataError(f"response column(s) {missing} are not in the data")
        try:
            values = data[list(responses)].to_numpy(dtype=np.float64).T
        except (TypeError, ValueError):
            raise DataError(f"response columns {list(responses)} must be numeric") from None
        return values, list(responses)
    names = list(responses.index) if isinstance(responses, pd.DataFrame) else None
    try:
        values = np.asarray(responses, dtype=np.float64)
    except (TypeError, ValueError):
        raise DataError("responses must be a numeric (B, n) array or a list of columns") from None
    if values.ndim == 1:
        values = values[None, :]
    if values.ndim != 2 or values.shape[1] != len(data):
        hint = ""
        if values.ndim == 2 and values.shape[0] == len(data):
            hint = " (one row per response: transpose it)"
        raise DataError(
            f"responses must have shape (B, {len(data)}) to match the data, got "
            f"{values.shape}{hint}"
        )
    return values, names if names is not None else list(range(len(values)))


def lmer_batch(
    formula: str,
    data: pd.DataFrame,
    responses,
    reml: bool = True,
    weights=None,
    chunk_size: int = 512,
    progress: bool = True,
    devices: int | None = None,
) -> BatchFit:
    """Fit ``formula`` to many responses that share its right-hand side (one vmapped call).

    ``responses``: a (B, n) array or DataFrame with one row per response (NaN marks a missing
    value) or a list of numeric columns of ``data``; the formula's left-hand side is ignored.
    A response is fitted on its own complete rows, as ``lmer`` would fit it. Batches are
    processed in chunks of ``chunk_size`` (compiled once), each sharded over ``devices`` local
    devices (default all). After ``jax.distributed.initialize()``, every process makes the same
    call: each fits its share of the responses and every process gets the whole batch.
    """
    if not isinstance(chunk_size, int) or chunk_size < 1:
        raise JaxlmmError(f"chunk_size must be a positive integer, got {chunk_size!r}")
    if devices is not None and (not isinstance(devices, int) or devices < 1):
        raise JaxlmmError(f"devices must be a positive integer, got {devices!r}")
    if not isinstance(data, pd.DataFrame):
        raise DataError(f"data must be a pandas DataFrame, got {type(data).__name__}")
    values, names = _responses(responses, data)
    parsed = dataclasses.replace(parse_formula(formula), response=_PLACEHOLDER)
    positional = data.reset_index(drop=True).assign(**{_PLACEHOLDER: 0.0})
    design = build_design(parsed, positional, weights)
    positions = design.rows.to_numpy()
    design = dataclasses.replace(design, rows=data.index[positions])
    result, _ = fit_responses(design, values[:, positions], reml, chunk_size, progress, devices)
    return BatchFit(result, names)


@dataclass(frozen=True, eq=False)
class BatchFit:
    """Results of :func:`lmer_batch`, one entry per response (immutable)."""

    result: BatchResult
    names: list

    def __len__(self) -> int:
        return len(self.names)

    def __repr__(self) -> str:
        codes = self.status_code
        counts = ", ".join(f"{np.sum(codes == c)} {Status(c).message}" for c in np.unique(codes))
        return (
            f"<BatchFit of {len(self)} responses, {self.design.formula.text!r}, "
            f"{'REML' if self.reml else 'ML'}: {counts}>"
        )

    @property
    def design(self) -> Design:
        """The shared right-hand side on the rows where it is complete."""
        return self.result.model.design

    @property
    def reml(self) -> bool:
        return self.result.model.reml

    @property
    def y(self) -> np.ndarray:
        return self.result.y

    @property
    def observed(self) -> np.ndarray:
        return self.result.observed

    @cached_property
    def estimates(self) -> Estimates:
        """Per-response estimates as the functional core's pytree (NumPy leaves, no modes)."""
        return self.result.estimates

    @property
    def nobs(self) -> np.ndarray:
        return self.observed.sum(axis=1)

    @property
    def objective(self) -> np.ndarray:
        return np.asarray(self.estimates.objective)

    @property
    def theta(self) -> np.ndarray:
        return np.asarray(self.estimates.theta)

    @property
    def sigma(self) -> np.ndarray:
        return np.asarray(self.estimates.sigma)

    @property
    def status_code(self) -> np.ndarray:
        return np.asarray(self.estimates.status)

    @property
    def status(self) -> np.ndarray:
        return np.array([Status(int(c)).message for c in self.status_code])

    @property
    def converged(self) -> np.ndarray:
        return self.status_code == Status.CONVERGED

    @property
    def fixef(self) -> pd.DataFrame:
        return pd.DataFrame(
            self.estimates.beta, index=self.names, columns=list(self.design.fixed_names)
        )

    @property
    def std_errors(self) -> pd.DataFrame:
        p = len(self.design.fixed_names)
        unscaled = np.diagonal(self.result.solution.vcov_unscaled, axis1=1, axis2=2)[:, :p]
        return pd.DataFrame(
            np.sqrt(unscaled * self.sigma[:, None] ** 2),
            index=self.names,
            columns=list(self.design.fixed_names),
        )

    def _satterthwaite_dfs(self, fitted: np.ndarray, chunk_size: int) -> np.ndarray:
        """(len(fitted), p) Satterthwaite df of each coefficient of the responses ``fitted``."""
        hessians, jacobians = satterthwaite_parts(self.result, fitted, chunk_size)
        vcov_varpar = 2 * np.linalg.pinv(hessians, hermitian=True)
        p = len(self.design.fixed_names)
        unscaled = self.result.solution.vcov_unscaled[fitted][:, :p, :p]
        vcov = self.sigma[fitted, None, None] ** 2 * unscaled
        return satterthwaite_df(np.eye(p), vcov, jacobians, vcov_varpar)

    def coef_table(self, ddf: str = "satterthwaite", chunk_size: int = 512) -> pd.DataFrame:
        """Per response and coefficient: ``estimate, std_error, df, t_value, p_value``, indexed
        by (response, term). Satterthwaite df from each response's exact Hessian, computed in
        vmapped chunks; ``ddf="none"`` leaves df and p-values out."""
        method = ddf_method(ddf)
        if method == "kenward-roger":
            raise InferenceError("batch fits offer ddf='satterthwaite' or 'none'")
        p = len(self.design.fixed_names)
        dfs = np.full((len(self), p), np.nan)
        fitted = np.flatnonzero(self.status_code < Status.NO_OBSERVATIONS)
        if method == "satterthwaite" and len(fitted):
            dfs[fitted] = self._satterthwaite_dfs(fitted, chunk_size)
        se = self.std_errors.to_numpy()
        beta = self.fixef.to_numpy()
        index = pd.MultiIndex.from_product(
            [self.names, list(self.design.fixed_names)], names=["response", "term"]
        )
        t_value = beta / se
        with np.errstate(invalid="ignore"):
            p_value = 2 * special.stdtr(dfs, -np.abs(t_value))
        columns = {
            "estimate": beta,
            "std_error": se,
            "df": dfs,
            "t_value": t_value,
            "p_value": p_value,
        }
        return pd.DataFrame({k: v.ravel() for k, v in columns.items()}, index=index)

    def plot_pvalues(self, term: str, bins: int = 20):
        """Histogram of one coefficient's Satterthwaite p-values across the responses."""
        from . import plots  # matplotlib is optional and slow to import

        return plots.pvalue_histogram(self, term, bins)

    def plot_volcano(self, term: str, alpha: float = 0.05, adjust: str | None = None):
        """Volcano plot of one coefficient: estimate against -log10 p (``adjust="bh"``:
        Benjamini-Hochberg)."""
        from . import plots

        return plots.volcano(self, term, alpha, adjust)

    def variance_components(self) -> pd.DataFrame:
        """SDs and correlations per response, named as lme4's ``confint(oldNames = FALSE)``."""
        sizes = tuple(t.n_columns for t in self.design.terms)
        values = parameters.sdcor_values(self.theta, sizes, self.sigma)
        names = parameters.sdcor_names(self.design.terms)
        return pd.DataFrame(values, index=self.names, columns=names)

    def to_frame(self) -> pd.DataFrame:
        """One row per response: status, fit statistics, estimates, SEs, variance components."""
        head = pd.DataFrame(
            {
                "status": self.status,
                "converged": self.converged,
                "nobs": self.nobs,
                "objective": self.objective,
                "iterations": np.asarray(self.result.opt.iterations),
            },
            index=self.names,
        )
        se = self.std_errors.add_prefix("se_")
        return pd.concat([head, self.fixef, se, self.variance_components()], axis=1)

    def __getitem__(self, i: int) -> LinearMixedModelFit:
        """The full single-model fit of response ``i`` at the batch's estimate (no refit)."""
        if not Status(int(self.status_code[i])).fitted:
            raise DataError(f"response {self.names[i]!r} was not fitted: {self.status[i]}")
        observed = self.observed[i]
        design = self.design.with_response(np.where(observed, self.y[i], 0.0), observed)
        return lmer_design(design, self.reml, theta0=self.theta[i], iterations=EVALUATE_ONLY)
