"""``lmer_batch()``: one model, many responses, fitted together with ``vmap``.

The right-hand side (X, Z, weights) is shared; each response brings its own values and its own
missing rows (zero weights). Cross-products, optimiser and estimates run per response inside one
compiled, vmapped function, chunk by chunk, with the batch axis sharded over all local devices.
Responses that cannot be fitted get a status and never disturb the others.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
from jax.sharding import Mesh, NamedSharding, PartitionSpec
from scipy import stats
from tqdm.auto import tqdm

from . import parameters
from .crossprod import RowStructure, blocks_from_rows, cross_products, row_structure
from .design import Design, build_design
from .errors import DataError, InferenceError, JaxlmmError
from .fit import LinearMixedModelFit, fit_blocks, solve_jit
from .formula import parse_formula
from .inference import beta_covariance, ddf_method, satterthwaite_df, varpar_deviance
from .optimize import (
    CONVERGED,
    GRADIENT_NOT_SMALL,
    HESSIAN_NOT_PD,
    STATUS_MESSAGES,
    OptResult,
)
from .solution import Solution

# Problems found before fitting (the optimiser's own codes are 0-3).
NO_OBSERVATIONS = 10
INFINITE_RESPONSE = 11
CONSTANT_RESPONSE = 12
TOO_FEW_OBSERVATIONS = 13
TOO_FEW_LEVELS = 14
FIXED_EFFECTS_ALIASED = 15
BATCH_STATUS_MESSAGES = STATUS_MESSAGES | {
    NO_OBSERVATIONS: "no observed values",
    INFINITE_RESPONSE: "response has infinite values",
    CONSTANT_RESPONSE: "response is constant on its observed rows",
    TOO_FEW_OBSERVATIONS: "too few observations for the random effects",
    TOO_FEW_LEVELS: "a grouping factor has fewer than 2 observed levels",
    FIXED_EFFECTS_ALIASED: "fixed effects are aliased on the observed rows",
}
_PLACEHOLDER = "__jaxlmm_response__"


@jax.jit
def _fit_chunk(rs: RowStructure, weights, y, observed, theta0, reml: bool):
    """Fit a chunk of responses: (chunk, n) values and masks -> per-response results."""

    def one(y, observed):
        blocks = blocks_from_rows(rs, jnp.where(observed, y, 0.0), jnp.where(observed, weights, 0))
        return fit_blocks(blocks, theta0, reml=reml, batched=True)

    return jax.vmap(one)(y, observed)


@jax.jit
def _derivative_chunk(rs: RowStructure, weights, y, observed, varpar, reml):
    """Per response: the Hessian of the deviance in (theta, sigma) and d vcov(beta)/d varpar."""

    def one(y, observed, varpar):
        blocks = blocks_from_rows(rs, jnp.where(observed, y, 0.0), jnp.where(observed, weights, 0))
        hessian = jax.hessian(varpar_deviance)(varpar, blocks, reml)
        return hessian, jnp.moveaxis(jax.jacfwd(beta_covariance)(varpar, blocks), -1, 0)

    return jax.vmap(one)(y, observed, varpar)


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
    if isinstance(responses, pd.DataFrame):
        return responses.to_numpy(dtype=np.float64), list(responses.index)
    try:
        values = np.asarray(responses, dtype=np.float64)
    except (TypeError, ValueError):
        raise DataError("responses must be a numeric (B, n) array or a list of columns") from None
    if values.ndim == 1:
        values = values[None, :]
    if values.ndim != 2 or values.shape[1] != len(data):
        raise DataError(
            f"responses must have shape (B, {len(data)}) to match the data, got {values.shape}"
        )
    return values, list(range(len(values)))


def _screen(design: Design, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Masks of observed values and a status per response for problems seen before fitting."""
    observed = ~np.isnan(y)
    nobs = observed.sum(axis=1)
    status = np.zeros(len(y), dtype=np.int32)
    filled = np.where(observed & np.isfinite(y), y, 0.0)
    mean = filled.sum(axis=1) / np.maximum(nobs, 1)
    spread = np.where(observed, np.abs(filled - mean[:, None]), 0.0).max(axis=1)
    weights = observed * design.weights
    xwx = np.einsum("bi,ij,ik->bjk", weights, design.x, design.x)
    p = design.x.shape[1]
    aliased = np.zeros(len(y), dtype=bool)
    if p:
        eig = np.linalg.eigvalsh(xwx)
        aliased = eig[:, 0] <= 1e-10 * np.maximum(eig[:, -1], 1e-300)
    too_few_levels = np.zeros(len(y), dtype=bool)
    too_few_obs = nobs <= p
    for term in design.terms:
        order = np.argsort(term.codes, kind="stable")
        counts = np.bincount(term.codes, minlength=term.n_levels)
        per_level = np.add.reduceat(observed[:, order], np.cumsum(counts) - counts, axis=1)
        levels = (per_level > 0).sum(axis=1)
        too_few_levels |= levels < 2
        too_few_obs |= (levels >= nobs) | (levels * term.n_columns >= nobs)
    checks = [
        (nobs == 0, NO_OBSERVATIONS),
        (np.isinf(y).any(axis=1), INFINITE_RESPONSE),
        (too_few_levels, TOO_FEW_LEVELS),
        (too_few_obs, TOO_FEW_OBSERVATIONS),
        (spread == 0, CONSTANT_RESPONSE),
        (aliased, FIXED_EFFECTS_ALIASED),
    ]
    for failed, code in reversed(checks):  # the first problem in the list wins
        status = np.where(failed, code, status)
    return observed & np.isfinite(y), status


def _chunk_size(n_responses: int, chunk_size: int, n_devices: int) -> int:
    """Responses per compiled call: a power of two (at least 16) up to ``chunk_size``, so that
    batches of different sizes share compiled code; a multiple of the device count."""
    size = min(chunk_size, max(16, 1 << max(n_responses - 1, 0).bit_length()))
    return -(-size // n_devices) * n_devices


def _sharding(n_devices: int):
    mesh = Mesh(np.array(jax.local_devices()[:n_devices]), ("batch",))
    return NamedSharding(mesh, PartitionSpec("batch")), NamedSharding(mesh, PartitionSpec())


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

    ``responses``: a (B, n) array with one row per response (NaN marks a missing value) or a
    list of numeric columns of ``data``; the formula's left-hand side is ignored. A response is
    fitted on its own complete rows, as ``lmer`` would fit it. Batches are processed in chunks
    of ``chunk_size`` (compiled once), each sharded over ``devices`` local devices (default all).
    """
    if not isinstance(chunk_size, int) or chunk_size < 1:
        raise JaxlmmError(f"chunk_size must be a positive integer, got {chunk_size!r}")
    if devices is not None and (not isinstance(devices, int) or devices < 1):
        raise JaxlmmError(f"devices must be a positive integer, got {devices!r}")
    values, names = _responses(responses, data)
    parsed = dataclasses.replace(parse_formula(formula), response=_PLACEHOLDER)
    design = build_design(parsed, data.assign(**{_PLACEHOLDER: 0.0}), weights)
    positions = data.index.get_indexer(design.rows)
    return fit_responses(design, values[:, positions], names, reml, chunk_size, progress, devices)


def fit_responses(
    design: Design,
    y: np.ndarray,
    names: list,
    reml: bool = True,
    chunk_size: int = 512,
    progress: bool = False,
    devices: int | None = None,
    theta0=None,
) -> BatchFit:
    """Fit the model of ``design`` to each row of ``y`` (B, nobs) (NaN: missing), starting
    from ``theta0`` (default lme4's identity start). The engine of :func:`lmer_batch`."""
    observed, status = _screen(design, y)
    n_devices = min(devices or jax.local_device_count(), jax.local_device_count())
    rows_sharding, replicated = _sharding(n_devices)
    size = _chunk_size(len(y), chunk_size, n_devices)
    host_rs = row_structure(design)
    rs = jax.device_put(host_rs, replicated)
    w = jax.device_put(design.weights, replicated)
    if theta0 is None:
        theta0 = parameters.initial_theta(rs.sizes)
    theta0 = jnp.asarray(theta0, dtype=jnp.float64)

    good = np.flatnonzero(status == 0)
    results = []
    for start in tqdm(range(0, len(good), size), disable=not progress, unit="chunk"):
        index = good[start : start + size]
        padded = np.concatenate([index, np.full(size - len(index), index[0])])
        y_chunk = jax.device_put(y[padded], rows_sharding)
        obs_chunk = jax.device_put(observed[padded], rows_sharding)
        out = jax.device_get(_fit_chunk(rs, w, y_chunk, obs_chunk, theta0, bool(reml)))
        results.append(jax.tree.map(partial(_head, k=len(index)), out))

    n_theta, p = len(theta0), design.x.shape[1]
    opt = OptResult(
        theta=np.full((len(y), n_theta), np.nan),
        value=np.full(len(y), np.nan),
        gradient=np.full((len(y), n_theta), np.nan),
        hessian=np.full((len(y), n_theta, n_theta), np.nan),
        on_boundary=np.zeros((len(y), n_theta), dtype=bool),
        iterations=np.zeros(len(y), dtype=np.int32),
        status=status,
    )
    solution = Solution(
        beta=np.full((len(y), p), np.nan),
        b1=None,
        b_rest=None,
        pwrss=np.full(len(y), np.nan),
        vcov_unscaled=np.full((len(y), p, p), np.nan),
    )
    if results:
        fitted = jax.tree.map(lambda *a: np.concatenate(a), *map(_without_modes, results))
        fitted = _retry_unconverged(
            fitted, host_rs, design.weights, y[good], observed[good], theta0, reml
        )
        opt, solution = jax.tree.map(partial(_scatter, index=good), (opt, solution), fitted)
    return BatchFit(
        design=design,
        y=y,
        observed=observed,
        names=names,
        reml=bool(reml),
        opt=opt,
        solution=solution,
    )


def _without_modes(fitted):
    """Drop the conditional modes (``batch[i]`` recomputes them for the response it needs)."""
    opt, solution = fitted
    return opt, solution._replace(b1=None, b_rest=None)


def _head(a, k: int):
    return a[:k]


def _scatter(full: np.ndarray, part, index: np.ndarray) -> np.ndarray:
    full = np.array(full)
    full[index] = np.asarray(part)
    return full


def _retry_unconverged(fitted, rs: RowStructure, weights, y, observed, theta0, reml: bool):
    """Refit, one at a time with the single-fit optimiser, the few responses that the batched
    pass (capped iterations) left unconverged; keep whichever result is better."""
    opt, solution = fitted
    for k in np.flatnonzero(np.isin(opt.status, [GRADIENT_NOT_SMALL, HESSIAN_NOT_PD])):
        blocks = blocks_from_rows(rs, np.where(observed[k], y[k], 0.0), weights * observed[k])
        single = _without_modes(jax.device_get(fit_blocks(blocks, theta0, reml=reml)))
        if single[0].status == CONVERGED or single[0].value < opt.value[k]:
            for full, part in zip(jax.tree.leaves(fitted), jax.tree.leaves(single), strict=True):
                full[k] = part
    return opt, solution


@dataclass(frozen=True, eq=False)
class BatchFit:
    """Results of :func:`lmer_batch`, one entry per response (immutable)."""

    design: Design  # the shared right-hand side on the rows where it is complete
    y: np.ndarray  # (B, n) responses on those rows
    observed: np.ndarray  # (B, n) bool
    names: list
    reml: bool
    opt: OptResult  # per-response optimiser results (NaN where not fitted)
    solution: Solution  # per-response beta, pwrss, vcov_unscaled (no conditional modes)

    def __len__(self) -> int:
        return len(self.names)

    @property
    def nobs(self) -> np.ndarray:
        return self.observed.sum(axis=1)

    @property
    def objective(self) -> np.ndarray:
        return np.asarray(self.opt.value)

    @property
    def theta(self) -> np.ndarray:
        return np.asarray(self.opt.theta)

    @property
    def sigma(self) -> np.ndarray:
        dof = self.nobs - (self.solution.beta.shape[1] if self.reml else 0)
        return np.sqrt(self.solution.pwrss / dof)

    @property
    def status_code(self) -> np.ndarray:
        return np.asarray(self.opt.status)

    @property
    def status(self) -> np.ndarray:
        return np.array([BATCH_STATUS_MESSAGES[int(c)] for c in self.status_code])

    @property
    def converged(self) -> np.ndarray:
        return self.status_code == 0

    @property
    def fixef(self) -> pd.DataFrame:
        return pd.DataFrame(
            self.solution.beta, index=self.names, columns=list(self.design.fixed_names)
        )

    @property
    def std_errors(self) -> pd.DataFrame:
        variances = (
            np.diagonal(self.solution.vcov_unscaled, axis1=1, axis2=2) * self.sigma[:, None] ** 2
        )
        return pd.DataFrame(
            np.sqrt(variances), index=self.names, columns=list(self.design.fixed_names)
        )

    def _satterthwaite_dfs(self, fitted: np.ndarray, chunk_size: int) -> np.ndarray:
        """(len(fitted), p) Satterthwaite df of each coefficient of the responses ``fitted``."""
        rs = row_structure(self.design)
        varpar = np.column_stack([self.theta, self.sigma])[fitted]
        size = _chunk_size(len(fitted), chunk_size, 1)
        hessians, jacobians = [], []
        for start in range(0, len(fitted), size):
            index = np.arange(start, min(start + size, len(fitted)))
            padded = np.concatenate([index, np.full(size - len(index), index[0])])
            rows = fitted[padded]
            h, j = jax.device_get(
                _derivative_chunk(
                    rs,
                    self.design.weights,
                    self.y[rows],
                    self.observed[rows],
                    varpar[padded],
                    self.reml,
                )
            )
            hessians.append(h[: len(index)])
            jacobians.append(j[: len(index)])
        vcov_varpar = 2 * np.linalg.pinv(np.concatenate(hessians), hermitian=True)
        vcov = self.sigma[fitted, None, None] ** 2 * self.solution.vcov_unscaled[fitted]
        eye = np.eye(vcov.shape[-1])
        return satterthwaite_df(eye, vcov, np.concatenate(jacobians), vcov_varpar)

    def coef_table(self, ddf: str = "satterthwaite", chunk_size: int = 512) -> pd.DataFrame:
        """Per response and coefficient: ``estimate, std_error, df, t_value, p_value``, indexed
        by (response, term). Satterthwaite df from each response's exact Hessian, computed in
        vmapped chunks; ``ddf="none"`` leaves df and p-values out."""
        method = ddf_method(ddf)
        if method == "kenward-roger":
            raise InferenceError("batch fits offer ddf='satterthwaite' or 'none'")
        p = len(self.design.fixed_names)
        dfs = np.full((len(self), p), np.nan)
        fitted = np.flatnonzero(self.status_code < NO_OBSERVATIONS)
        if method == "satterthwaite" and len(fitted):
            dfs[fitted] = self._satterthwaite_dfs(fitted, chunk_size)
        se = self.std_errors.to_numpy()
        beta = self.fixef.to_numpy()
        index = pd.MultiIndex.from_product(
            [self.names, list(self.design.fixed_names)], names=["response", "term"]
        )
        t_value = beta / se
        with np.errstate(invalid="ignore"):
            p_value = 2 * stats.t.sf(np.abs(t_value), dfs)
        columns = {
            "estimate": beta,
            "std_error": se,
            "df": dfs,
            "t_value": t_value,
            "p_value": p_value,
        }
        return pd.DataFrame({k: v.ravel() for k, v in columns.items()}, index=index)

    def variance_components(self) -> pd.DataFrame:
        """SDs and correlations per response, named as lme4's ``confint(oldNames = FALSE)``."""
        # NumPy rather than a vmapped parameters.sdcor: eager JAX dispatch costs ~15 ms a call
        sizes = tuple(t.n_columns for t in self.design.terms)
        covs = parameters.covariances(self.theta, sizes, self.sigma)
        values = []
        for term, cov in zip(self.design.terms, covs, strict=True):
            sd = np.sqrt(np.diagonal(cov, axis1=1, axis2=2))
            for i, j in zip(*parameters.tril_indices(term.n_columns), strict=True):
                with np.errstate(invalid="ignore", divide="ignore"):
                    values.append(sd[:, i] if i == j else cov[:, i, j] / (sd[:, i] * sd[:, j]))
        values.append(self.sigma)
        names = parameters.sdcor_names(self.design.terms)
        return pd.DataFrame(dict(zip(names, values, strict=True)), index=self.names)

    def to_frame(self) -> pd.DataFrame:
        """One row per response: status, fit statistics, estimates, SEs, variance components."""
        head = pd.DataFrame(
            {
                "status": self.status,
                "converged": self.converged,
                "nobs": self.nobs,
                "objective": self.objective,
                "iterations": np.asarray(self.opt.iterations),
            },
            index=self.names,
        )
        se = self.std_errors.add_prefix("se_")
        return pd.concat([head, self.fixef, se, self.variance_components()], axis=1)

    def __getitem__(self, i: int) -> LinearMixedModelFit:
        """The full single-model fit of response ``i`` (from the batch's theta; no refit)."""
        if int(self.status_code[i]) >= NO_OBSERVATIONS:
            raise DataError(f"response {self.names[i]!r} was not fitted: {self.status[i]}")
        observed = self.observed[i]
        design = self.design.with_response(np.where(observed, self.y[i], 0.0), observed)
        blocks = cross_products(design)
        opt = jax.tree.map(lambda a: np.asarray(a)[i], self.opt)
        solution = jax.device_get(solve_jit(jnp.asarray(opt.theta), blocks))
        return LinearMixedModelFit(
            design=design, blocks=blocks, reml=self.reml, opt=opt, solution=solution
        )
