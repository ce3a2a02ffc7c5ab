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


def covariances(theta: np.ndarray, sizes: tuple[int, ...], sigma: float) -> list[np.ndarray]:
    """Covariance matrix sigma^2 T T' of each term's random effects (NumPy)."""
    return [
        sigma**2 * np.asarray(t) @ np.asarray(t).T
        for t in factors(jnp.asarray(theta, dtype=jnp.float64), sizes)
    ]
