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


def covariances(theta, sizes: tuple[int, ...], sigma) -> list[np.ndarray]:
    """Covariance matrices sigma^2 T T' of each term's random effects (NumPy).

    ``theta`` may carry leading batch axes (..., n_theta) with ``sigma`` of shape (...).
    """
    theta = np.asarray(theta, dtype=np.float64)
    sigma2 = np.asarray(sigma, dtype=np.float64)[..., None, None] ** 2
    offsets = theta_offsets(sizes)
    result = []
    for k, s in enumerate(sizes):
        t = np.zeros(theta.shape[:-1] + (s, s))
        rows, cols = tril_indices(s)
        t[..., rows, cols] = theta[..., offsets[k] : offsets[k + 1]]
        result.append(sigma2 * t @ np.swapaxes(t, -1, -2))
    return result


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
