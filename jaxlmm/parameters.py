"""theta: lme4's parameterisation of the random-effects covariance.

Each term with ``s`` columns has a lower-triangular ``s x s`` factor ``T`` (relative to sigma),
stored column by column: for s = 2, theta = (T00, T10, T11). Lambda = I_levels (x) T.
"""

from __future__ import annotations

from functools import cache

import jax.numpy as jnp
import numpy as np


@cache
def tril_indices(s: int) -> tuple[np.ndarray, np.ndarray]:
    """Row and column of each theta entry of an s-column term, column-major lower triangle."""
    rows, cols = zip(*[(i, j) for j in range(s) for i in range(j, s)], strict=True)
    return np.array(rows), np.array(cols)


def n_theta(s: int) -> int:
    return s * (s + 1) // 2


def theta_offsets(sizes: tuple[int, ...]) -> np.ndarray:
    """Start of each term's theta block, plus the total at the end."""
    return np.concatenate([[0], np.cumsum([n_theta(s) for s in sizes])]).astype(int)


def factors(theta, sizes: tuple[int, ...]) -> list:
    """theta -> the lower-triangular factor T of each term (JAX, differentiable)."""
    offsets = theta_offsets(sizes)
    result = []
    for k, s in enumerate(sizes):
        rows, cols = tril_indices(s)
        block = theta[offsets[k] : offsets[k + 1]]
        result.append(jnp.zeros((s, s), dtype=theta.dtype).at[rows, cols].set(block))
    return result


def initial_theta(sizes: tuple[int, ...]) -> np.ndarray:
    """lme4's start: identity factors."""
    return np.concatenate([(tril_indices(s)[0] == tril_indices(s)[1]).astype(float) for s in sizes])


def diagonal_mask(sizes: tuple[int, ...]) -> np.ndarray:
    """True where theta holds a diagonal element of T (the entries lme4 bounds below by 0)."""
    return np.concatenate([tril_indices(s)[0] == tril_indices(s)[1] for s in sizes])


def off_boundary(theta, sizes: tuple[int, ...], floor: float = 0.1) -> np.ndarray:
    """``theta`` with diagonal entries below ``floor`` in size raised to it (NumPy). A start
    for an optimiser: at a zero diagonal entry the criterion's gradient in it vanishes (the
    criterion is even in each column of T), so an optimiser started there never leaves."""
    theta = np.asarray(theta, dtype=np.float64)
    return np.where(diagonal_mask(sizes) & (np.abs(theta) < floor), floor, theta)


def canonical_theta(theta, sizes: tuple[int, ...]):
    """Flip the sign of each column of T whose diagonal is negative (T T' is unchanged)."""
    offsets = theta_offsets(sizes)
    signs = []
    for k, s in enumerate(sizes):
        rows, cols = tril_indices(s)
        block = theta[offsets[k] : offsets[k + 1]]
        column_sign = jnp.where(block[rows == cols] < 0, -1.0, 1.0)
        signs.append(column_sign[cols])
    return theta * jnp.concatenate(signs)


def factor_arrays(theta, sizes: tuple[int, ...]) -> list[np.ndarray]:
    """theta -> each term's T (NumPy); ``theta`` may carry leading batch axes (..., n_theta)."""
    theta = np.asarray(theta, dtype=np.float64)
    offsets = theta_offsets(sizes)
    result = []
    for k, s in enumerate(sizes):
        t = np.zeros(theta.shape[:-1] + (s, s))
        rows, cols = tril_indices(s)
        t[..., rows, cols] = theta[..., offsets[k] : offsets[k + 1]]
        result.append(t)
    return result


def covariances(theta, sizes: tuple[int, ...], sigma) -> list[np.ndarray]:
    """Covariance matrices sigma^2 T T' of each term's random effects (NumPy).

    ``theta`` may carry leading batch axes (..., n_theta) with ``sigma`` of shape (...).
    """
    sigma2 = np.asarray(sigma, dtype=np.float64)[..., None, None] ** 2
    return [sigma2 * t @ np.swapaxes(t, -1, -2) for t in factor_arrays(theta, sizes)]


def starting_theta(design, floor: float = 0.1, sweeps: int = 3) -> np.ndarray:
    """A start for the optimiser: lme4's identity factors, except that a random intercept gets
    a moment estimate of its relative SD (between-level variance of backfitted level means over
    the residual variance). A nearby start saves most of the iterations on crossed designs.
    Estimates are floored at ``floor``: theta = 0 is a stationary point to be reached, not left.
    """
    x, y, w = design.x, design.y, design.weights
    sqrt_w = np.sqrt(w)
    resid = y - x @ np.linalg.lstsq(x * sqrt_w[:, None], y * sqrt_w, rcond=None)[0]
    intercepts = [k for k, t in enumerate(design.terms) if t.names == ("(Intercept)",)]
    effects = {k: np.zeros(design.terms[k].n_levels) for k in intercepts}
    counts = {k: np.bincount(design.terms[k].codes, weights=w) for k in intercepts}
    for _ in range(sweeps):
        for k in intercepts:
            codes = design.terms[k].codes
            partial = resid - sum(effects[j][design.terms[j].codes] for j in intercepts if j != k)
            effects[k] = np.bincount(codes, weights=w * partial) / counts[k]
    remaining = resid - sum(effects[k][design.terms[k].codes] for k in intercepts)
    dof = max(len(y) - sum(len(e) for e in effects.values()) - x.shape[1], 1)
    sigma2 = max(np.sum(w * remaining**2) / dof, np.finfo(float).tiny)
    theta = []
    for k, term in enumerate(design.terms):
        start = initial_theta((term.n_columns,))
        if k in effects:
            between = np.var(effects[k]) - np.mean(sigma2 / counts[k])
            start = np.array([max(np.sqrt(max(between, 0.0) / sigma2), floor)])
        theta.append(start)
    return np.concatenate(theta)


def _safe_norm(rows):
    """Euclidean norm of each row, with derivative 0 (not NaN) at a zero row."""
    squares = jnp.sum(rows**2, axis=-1)
    positive = squares > 0
    return jnp.where(positive, jnp.sqrt(jnp.where(positive, squares, 1.0)), 0.0)


def sdcor(theta, sigma, sizes: tuple[int, ...]):
    """(theta, sigma) -> the SDs and correlations of each term, in theta's order (a diagonal
    entry gives the SD of its column, an off-diagonal entry the correlation of its row and
    column), then sigma: lme4's ``confint`` parameters. JAX, differentiable."""
    out = []
    for t, s in zip(factors(theta, sizes), sizes, strict=True):
        norms = _safe_norm(t)
        rows, cols = tril_indices(s)
        dots = jnp.sum(t[rows] * t[cols], axis=-1)
        denom = norms[rows] * norms[cols]
        out.append(jnp.where(rows == cols, sigma * norms[rows], dots / denom))
    return jnp.concatenate(out + [jnp.reshape(sigma, (1,))])


def theta_from_sdcor(psi, sizes: tuple[int, ...]):
    """Inverse of :func:`sdcor`: (SDs and correlations per term, sigma) -> (theta, sigma).

    T = diag(sd) chol(R) / sigma with R the correlation matrix; NaN where R is not PD.
    """
    from .linalg import batched_cholesky

    sigma = psi[-1]
    offsets = theta_offsets(sizes)
    thetas = []
    for k, s in enumerate(sizes):
        rows, cols = tril_indices(s)
        block = psi[offsets[k] : offsets[k + 1]]
        sd = block[rows == cols]
        corr = jnp.eye(s).at[rows, cols].set(jnp.where(rows == cols, 1.0, block))
        corr = corr.at[cols, rows].set(corr[rows, cols])
        t = sd[:, None] * batched_cholesky(corr) / sigma
        thetas.append(t[rows, cols])
    return jnp.concatenate(thetas), sigma


def sdcor_names(terms) -> list[str]:
    """Names of the :func:`sdcor` entries as lme4's ``confint(oldNames = FALSE)``."""
    names = []
    for term in terms:
        for i, j in zip(*tril_indices(term.n_columns), strict=True):
            if i == j:
                names.append(f"sd_{term.names[i]}|{term.group}")
            else:
                names.append(f"cor_{term.names[i]}.{term.names[j]}|{term.group}")
    return names + ["sigma"]


def varcorr_order(sizes: tuple[int, ...]) -> np.ndarray:
    """Positions in :func:`sdcor` of the rows of lme4's ``as.data.frame(VarCorr(m))``: per
    term the SDs, then the correlations (column a with each later column b), then sigma."""
    order = []
    for k, s in enumerate(sizes):
        rows, cols = tril_indices(s)
        position = {
            (int(i), int(j)): theta_offsets(sizes)[k] + n
            for n, (i, j) in enumerate(zip(rows, cols, strict=True))
        }
        order += [position[a, a] for a in range(s)]
        order += [position[b, a] for a in range(s) for b in range(a + 1, s)]
    return np.array(order + [theta_offsets(sizes)[-1]])
