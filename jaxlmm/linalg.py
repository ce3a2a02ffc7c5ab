"""Small dense factorisations over a batch axis, unrolled into elementwise arithmetic.

A term with ``s`` columns per level gives one ``s x s`` block per level. Batched LAPACK calls
on such tiny matrices are slow (per-matrix overhead), so the loops over the ``s`` rows and
columns are unrolled in Python and every operation acts on the whole batch at once.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.linalg import solve_triangular
from scipy.linalg import get_lapack_funcs


def batched_cholesky(m):
    """Lower Cholesky factors of ``m`` with shape (..., s, s); non-PD blocks give NaN."""
    s = m.shape[-1]
    low = [[None] * s for _ in range(s)]
    for j in range(s):
        d = m[..., j, j] - sum(low[j][k] ** 2 for k in range(j))
        low[j][j] = jnp.sqrt(d)
        for i in range(j + 1, s):
            low[i][j] = (m[..., i, j] - sum(low[i][k] * low[j][k] for k in range(j))) / low[j][j]
    zero = jnp.zeros_like(m[..., 0, 0])
    return jnp.stack(
        [jnp.stack([low[i][j] if j <= i else zero for j in range(s)], -1) for i in range(s)], -2
    )


def batched_lower_solve(low, b):
    """Solve ``low @ x = b`` for lower-triangular ``low`` (..., s, s) and ``b`` (..., s, k)."""
    s = low.shape[-1]
    rows = []
    for i in range(s):
        acc = b[..., i, :] - sum(low[..., i, k, None] * rows[k] for k in range(i))
        rows.append(acc / low[..., i, i, None])
    return jnp.stack(rows, -2)


def batched_upper_solve(low, b):
    """Solve ``low.T @ x = b`` for lower-triangular ``low`` (..., s, s) and ``b`` (..., s, k)."""
    s = low.shape[-1]
    rows = [None] * s
    for i in reversed(range(s)):
        acc = b[..., i, :] - sum(low[..., k, i, None] * rows[k] for k in range(i + 1, s))
        rows[i] = acc / low[..., i, i, None]
    return jnp.stack(rows, -2)


HOST_LAPACK_MIN = 2048  # from this size, on CPU, dense inverses are LAPACK's potrf + potri


def spd_inverse_and_logdet(a):
    """Inverse and log-determinant of a symmetric positive-definite matrix (NaN if not PD).

    XLA has no triangular inverse: its inverse is two triangular solves against the identity
    (2 n^3 flops), and its CPU LAPACK calls transpose their operands to column-major. For large
    matrices on CPU, LAPACK's potri (2 n^3 / 3 flops, in place) is called from the host: at
    n = 3712 the factor and inverse take a quarter of the time. Programs with such a call are
    not kept in the disk cache (they hold a Python callback); at this size they compute for
    longer than they compile.
    """
    if a.shape[-1] >= HOST_LAPACK_MIN and a.dtype in (jnp.float32, jnp.float64):
        return jax.lax.platform_dependent(
            a, cpu=_lapack_inverse_and_logdet, default=_xla_inverse_and_logdet
        )
    return _xla_inverse_and_logdet(a)


def _xla_inverse_and_logdet(a):
    low = jnp.linalg.cholesky(a)
    inv_low = solve_triangular(low, jnp.eye(a.shape[-1], dtype=a.dtype), lower=True)
    inv = solve_triangular(low, inv_low, lower=True, trans=1)  # two solves beat inv_low' inv_low
    return inv, 2 * jnp.sum(jnp.log(jnp.diag(low)))


@jax.custom_jvp
def _lapack_inverse_and_logdet(a):
    # The callback runs in XLA's threads, where JAX's float64 setting is the user's global one:
    # the matrices cross as raw bytes, so that no setting can round them to float32.
    raw = jax.lax.bitcast_convert_type(a, jnp.uint8)
    shapes = (
        jax.ShapeDtypeStruct(raw.shape, jnp.uint8),
        jax.ShapeDtypeStruct((a.dtype.itemsize,), jnp.uint8),
    )
    inv, logdet = jax.pure_callback(_potri, shapes, raw, vmap_method="sequential")
    return jax.lax.bitcast_convert_type(inv, a.dtype), jax.lax.bitcast_convert_type(logdet, a.dtype)


@_lapack_inverse_and_logdet.defjvp
def _lapack_inverse_and_logdet_jvp(primals, tangents):
    (a,), (da,) = primals, tangents
    inv, logdet = _lapack_inverse_and_logdet(a)
    return (inv, logdet), (-inv @ da @ inv, jnp.sum(inv * da))


def _potri(raw):
    """LAPACK's inverse of a symmetric positive-definite matrix (given and returned as its
    bytes, ``raw`` (n, n, itemsize)) in one copy of it, with its log-determinant; NaN if it
    is not positive definite."""
    raw = np.asarray(raw)
    dtype = np.dtype(f"f{raw.shape[-1]}")
    a = raw.view(dtype)[..., 0]
    inv = np.array(a.T, order="F")  # column-major copy of a' = a, factored in place
    potrf, potri = get_lapack_funcs(("potrf", "potri"), (inv,))
    low, info = potrf(inv, lower=1, clean=0, overwrite_a=1)
    if info == 0:
        logdet = 2 * np.sum(np.log(np.diagonal(low)))
        inv, info = potri(low, lower=1, overwrite_c=1)
    if info != 0:
        inv, logdet = np.full(a.shape, np.nan, dtype), np.nan
    _mirror_lower(inv)
    inv = np.ascontiguousarray(inv.T)  # symmetric: its row-major view is the same, no copy
    return inv.view(np.uint8).reshape(raw.shape), np.asarray([logdet], dtype).view(np.uint8)


def _mirror_lower(m: np.ndarray, block: int = 512) -> None:
    """Copy the lower triangle of square ``m`` onto its upper one, in place, block by block."""
    n = m.shape[0]
    for k in range(0, n, block):
        end = min(k + block, n)
        diagonal = np.tril(m[k:end, k:end])
        m[k:end, k:end] = diagonal + np.tril(diagonal, -1).T
        m[k:end, end:] = m[end:, k:end].T


@jax.custom_jvp
def spd_inverse(a):
    """Inverse of a symmetric positive-definite matrix (NaN where ``a`` is not PD)."""
    return spd_inverse_and_logdet(a)[0]


@spd_inverse.defjvp
def _spd_inverse_jvp(primals, tangents):
    (a,), (da,) = primals, tangents
    inv = spd_inverse(a)
    return inv, -inv @ da @ inv


@jax.custom_jvp
def logdet_and_schur(a, b, c):
    """For a symmetric PD matrix [[a, b], [b', c]]: log det(a) and the Schur complement
    c - b' a^{-1} b, with a derivative rule that costs a few matrix products instead of
    differentiating through the Cholesky factorisation of the (large) block ``a``."""
    low = jnp.linalg.cholesky(a)
    half = solve_triangular(low, b, lower=True)
    return 2 * jnp.sum(jnp.log(jnp.diag(low))), c - half.T @ half


@logdet_and_schur.defjvp
def _logdet_and_schur_jvp(primals, tangents):
    a, b, c = primals
    da, db, dc = tangents
    logdet, schur = logdet_and_schur(a, b, c)
    a_inv = spd_inverse(a)
    x = a_inv @ b
    d_logdet = jnp.sum(a_inv * da)
    d_schur = dc - db.T @ x - x.T @ db + x.T @ (da @ x)
    return (logdet, schur), (d_logdet, d_schur)


SMALL = 8  # up to this size, unrolled arithmetic beats a batched LAPACK call under vmap


def cholesky(m, unrolled=True):
    """Lower Cholesky factor (NaN where ``m`` is not PD), reading the lower triangle. Small
    matrices are factored by unrolled arithmetic when ``unrolled`` (under ``vmap`` a batched
    LAPACK call pays per matrix), else by one LAPACK call (fewer operations to compile)."""
    if unrolled and m.shape[-1] <= SMALL:
        return batched_cholesky(m)
    return jax.lax.linalg.cholesky(m, symmetrize_input=False)


def cho_solve(low, b, unrolled=True):
    """Solve ``(low @ low.T) x = b`` for a vector or matrix ``b`` given the lower factor
    (``unrolled`` as in :func:`cholesky`)."""
    if not unrolled or low.shape[-1] > SMALL:
        return jax.scipy.linalg.cho_solve((low, True), b)
    vector = b.ndim == low.ndim - 1
    x = batched_upper_solve(low, batched_lower_solve(low, b[..., None] if vector else b))
    return x[..., 0] if vector else x
