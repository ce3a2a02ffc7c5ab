"""Tests and standard errors from exact derivatives (lmerTest's quantities, no numDeriv).

The variance parameters are lmerTest's ``varpar`` = (theta, sigma). Their covariance is twice the
inverse Hessian of the deviance in (theta, sigma) (beta and u profiled, sigma not), and the
Satterthwaite df of a contrast come from the Jacobian of vcov(beta) with respect to them
(Kuznetsova, Brockhoff and Christensen 2017). Both derivatives come from JAX autodiff.
"""

from __future__ import annotations

from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
from scipy import special

from . import parameters, programs
from .crossprod import Blocks
from .deviance import reduced_system
from .errors import InferenceError
from .kenward_roger import KenwardRoger, kr_ddf
from .linalg import cholesky, spd_inverse


def varpar_deviance(varpar, blocks: Blocks, reml=True):
    """-2 log-likelihood (REML or ML) at theta = varpar[:-1] and sigma = varpar[-1], with beta
    and the random effects at their conditional optimum (lmerTest's ``devfun_vp``).
    ``reml`` may be traced."""
    theta, sigma = varpar[:-1], varpar[-1]
    logdet_l, schur = reduced_system(theta, blocks)
    d = jnp.diag(cholesky(schur))
    p, n, sigma2 = blocks.p, blocks.nobs, sigma**2
    dev = logdet_l + d[p] ** 2 / sigma2 + n * jnp.log(2 * jnp.pi * sigma2) - blocks.sum_log_weights
    reml_terms = 2 * jnp.sum(jnp.log(d[:p])) - blocks.n_fixed * jnp.log(2 * jnp.pi * sigma2)
    return dev + jnp.where(reml, reml_terms, 0.0)


def beta_covariance(varpar, blocks: Blocks):
    """vcov(beta) = sigma^2 (R_X'R_X)^{-1} at varpar = (theta, sigma) (padded columns too)."""
    _, schur = reduced_system(varpar[:-1], blocks)
    p = blocks.p
    return varpar[-1] ** 2 * spd_inverse(schur[:p, :p])


def varpar_jacobians(varpar, blocks: Blocks, scale, reml):
    """The Hessian of the deviance in varpar and the Jacobian of vcov(beta), for blocks of the
    response divided by ``scale`` and varpar on the response's own scale (sigma = scale times
    the divided response's sigma, vcov(beta) = scale^2 times its)."""
    units = jnp.ones_like(varpar).at[-1].set(scale)
    own = varpar / units
    # forward over forward mode: with few parameters it compiles in half the time of
    # forward over reverse (no transposed Cholesky rules)
    hessian = jax.jacfwd(jax.jacfwd(varpar_deviance))(own, blocks, reml)
    hessian = hessian / jnp.outer(units, units)
    jacobian = jnp.moveaxis(jax.jacfwd(beta_covariance)(own, blocks), -1, 0)
    return hessian, scale**2 * jacobian / units[:, None, None]


def _derivatives(varpar, blocks: Blocks, scale, reml):
    hessian, jacobian = varpar_jacobians(varpar, blocks, scale, reml)
    layout, width = blocks.layout, blocks.width
    sdcor_jacobian = jax.jacfwd(lambda v: parameters.sdcor(v[:-1], v[-1], layout, width))(varpar)
    return hessian, jacobian, sdcor_jacobian


@dataclass(frozen=True)
class VarparDerivatives:
    """Exact derivatives at the estimate that the tests and standard errors need."""

    varpar: np.ndarray  # (k,) theta, then sigma
    hessian: np.ndarray  # (k, k) of the deviance in varpar
    vcov_varpar: np.ndarray  # (k, k) 2 H^{-1}: lmerTest's ``vcov_varpar``
    vcov_beta_jacobian: np.ndarray  # (k, p, p) d vcov(beta) / d varpar_k
    sdcor_jacobian: np.ndarray  # (k, k) d sdcor / d varpar

    @property
    def vcov_sdcor(self) -> np.ndarray:
        """Covariance of the SDs, correlations and sigma by the delta method."""
        j = self.sdcor_jacobian
        return j @ self.vcov_varpar @ j.T


def real_entries(blocks: Blocks, n_theta: int) -> np.ndarray:
    """Positions of the real theta entries and sigma in a padded varpar."""
    return np.append(np.arange(n_theta), blocks.n_theta)


def varpar_derivatives(theta, sigma, blocks: Blocks, scale, reml: bool) -> VarparDerivatives:
    """:class:`VarparDerivatives` at (theta, sigma) (real lengths) from the padded blocks."""
    n_theta, p = len(theta), int(np.asarray(blocks.n_fixed))
    varpar = np.append(parameters.pad_theta(theta, blocks.n_theta), sigma)
    hessian, jacobian, sdcor_jacobian = (
        np.asarray(a) for a in programs.run(_derivatives, varpar, blocks, scale, reml)
    )
    real = real_entries(blocks, n_theta)
    hessian = hessian[np.ix_(real, real)]
    vcov_varpar = 2 * np.linalg.pinv(hessian, hermitian=True)  # the inverse where H is PD
    return VarparDerivatives(
        varpar[real],
        hessian,
        vcov_varpar,
        jacobian[real][:, :p, :p],
        sdcor_jacobian[np.ix_(real, real)],
    )


# --- contrasts ----------------------------------------------------------------------------

_DDF_METHODS = {
    "satterthwaite": "satterthwaite",
    "kenward-roger": "kenward-roger",
    "kr": "kenward-roger",
    "none": "none",
    "lme4": "none",
}


def ddf_method(ddf: str) -> str:
    """The canonical name of a denominator-df method ("KR" -> "kenward-roger", ...)."""
    method = _DDF_METHODS.get(str(ddf).lower().replace("_", "-"))
    if method is None:
        raise InferenceError(f"ddf must be 'satterthwaite', 'kenward-roger' or 'none', got {ddf!r}")
    return method


def contrast_matrix(contrast, names: list[str]) -> np.ndarray:
    """A (q, p) float array from a vector, matrix or DataFrame/Series indexed by coefficient."""
    if isinstance(contrast, (pd.Series, pd.DataFrame)):
        frame = contrast.to_frame().T if isinstance(contrast, pd.Series) else contrast
        unknown = [c for c in frame.columns if c not in names]
        if unknown:
            raise InferenceError(f"contrast names unknown fixed effects {unknown}")
        contrast = frame.reindex(columns=names, fill_value=0.0).to_numpy(dtype=np.float64)
    try:
        matrix = np.atleast_2d(np.asarray(contrast, dtype=np.float64))
    except (TypeError, ValueError):
        raise InferenceError("a contrast must be numeric") from None
    if matrix.ndim != 2 or matrix.shape[1] != len(names):
        raise InferenceError(
            f"a contrast needs {len(names)} columns (one per fixed effect {names}), "
            f"got shape {matrix.shape}"
        )
    if not np.all(np.isfinite(matrix)):
        raise InferenceError("a contrast has infinite or undefined entries")
    if matrix.shape[0] == 0 or not np.any(matrix):
        raise InferenceError("a contrast must have a nonzero row")
    return matrix


def satterthwaite_df(contrasts, vcov, vcov_jacobian, vcov_varpar) -> np.ndarray:
    """Satterthwaite's df of each contrast row c: 2 var^2 / (g' A g) with var = c' V c,
    g_k = c' dV/dvarpar_k c and A = vcov_varpar. ``vcov``, ``vcov_jacobian`` (k, p, p) and
    ``vcov_varpar`` may carry a leading batch axis (one model per entry)."""
    variance = np.einsum("qi,...ij,qj->...q", contrasts, vcov, contrasts)
    grad = np.einsum("qi,...kij,qj->...qk", contrasts, vcov_jacobian, contrasts)
    return 2 * variance**2 / np.einsum("...qk,...kl,...ql->...q", grad, vcov_varpar, grad)


def t_table(contrasts: np.ndarray, beta, vcov, dfs, index) -> pd.DataFrame:
    """estimate, std_error, df, t_value, p_value (two-sided) per contrast row."""
    estimate = contrasts @ beta
    se = np.sqrt(np.einsum("qi,ij,qj->q", contrasts, vcov, contrasts))
    t = estimate / se
    dfs = np.asarray(dfs, dtype=np.float64)
    p = 2 * special.stdtr(dfs, -np.abs(t))  # NaN where df is NaN
    return pd.DataFrame(
        {"estimate": estimate, "std_error": se, "df": dfs, "t_value": t, "p_value": p},
        index=index,
    )


def combined_ddf(nu: np.ndarray, tol: float = 1e-8) -> float:
    """Denominator df of an F test from the df of its orthogonal 1-df pieces (lmerTest)."""
    if len(nu) == 1 or np.all(np.abs(np.diff(nu)) < tol):
        return float(np.mean(nu))
    if np.any(nu <= 2):
        return 2.0
    e = np.sum(nu / (nu - 2))
    return float(2 * e / (e - len(nu)))


def satterthwaite_f(contrasts, beta, vcov, derivs: VarparDerivatives) -> dict:
    """F test of ``contrasts @ beta = 0``: the contrast covariance is diagonalised, each
    eigen-direction gets its Satterthwaite df, and those combine into one denominator df."""
    values, vectors = np.linalg.eigh(contrasts @ vcov @ contrasts.T)
    order = np.argsort(values)[::-1]
    values, vectors = values[order], vectors[:, order]
    rank = int(np.sum(values > max(np.sqrt(np.finfo(float).eps) * values[0], 0)))
    rotated = vectors[:, :rank].T @ contrasts
    f_value = float(np.sum((rotated @ beta) ** 2 / values[:rank]) / rank)
    nu = satterthwaite_df(rotated, vcov, derivs.vcov_beta_jacobian, derivs.vcov_varpar)
    den_df = combined_ddf(nu)
    return _f_result(rank, den_df, f_value, f_value)


def _f_result(num_df: int, den_df: float, f_value: float, wald_f: float) -> dict:
    """An F test's figures; ``wald_f`` is the unscaled Wald statistic over num_df."""
    return {
        "num_df": num_df,
        "den_df": den_df,
        "F_value": f_value,
        "p_value": f_p(f_value, num_df, den_df),
        "wald_F": wald_f,
    }


def f_p(f_value: float, num_df: int, den_df: float) -> float:
    return float(special.fdtrc(num_df, den_df, f_value))


def kenward_roger_f(contrasts, beta, vcov, kr: KenwardRoger) -> dict:
    """Kenward-Roger F test: Wald statistic with the adjusted covariance, scaled (pbkrtest)."""
    rank = int(np.linalg.matrix_rank(contrasts))
    estimate = contrasts @ beta
    wald = estimate @ np.linalg.lstsq(contrasts @ kr.vcov_adjusted @ contrasts.T, estimate)[0]
    den_df, scaling = kr_ddf(contrasts, vcov, kr)
    return _f_result(rank, den_df, scaling * wald / rank, wald / rank)
