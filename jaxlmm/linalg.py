"""Dense factorisations at both ends of the size range.

A term with ``s`` columns per level gives one ``s x s`` block per level. Batched LAPACK calls
on such tiny matrices are slow (per-matrix overhead), so the loops over the ``s`` rows and
columns are unrolled in Python and every operation acts on the whole batch at once. The dense
block of a large crossed design is inverted by LAPACK called from the host on CPU
(:func:`spd_inverse_and_logdet`).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental.buffer_callback import buffer_callback
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


HOST_LAPACK_MIN = 2048  # from this size, on CPU, dense inverses come from the host's LAPACK


def _host_lapack(a) -> bool:
    """Whether ``a`` may be inverted by the host's LAPACK: one large float matrix."""
    return a.ndim == 2 and a.shape[-1] >= HOST_LAPACK_MIN and a.dtype in (jnp.float32, jnp.float64)


def spd_inverse_and_logdet(a):
    """Inverse and log-determinant of a symmetric positive-definite matrix (NaN if not PD).

    XLA has no triangular inverse: its inverse is two triangular solves against the identity
    (2 n^3 flops), and its CPU LAPACK calls transpose their operands to column-major. For large
    matrices on CPU, LAPACK's potrf and potri (n^3 flops in all) are called from the host on
    XLA's own buffer, in place: at n = 3712 the factor and inverse take 0.66 s instead of
    1.14 s, and hold one matrix instead of three. Programs with such a call are not kept in the
    disk cache (they hold a Python callback); at this size they compute for longer than they
    compile.
    """
    if _host_lapack(a):
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
    shapes = (jax.ShapeDtypeStruct(a.shape, a.dtype), jax.ShapeDtypeStruct((), a.dtype))
    invert = buffer_callback(
        _invert_in_place, shapes, input_output_aliases={0: 0}, vmap_method="sequential"
    )
    inv, logdet = invert(a)
    return inv, logdet


@_lapack_inverse_and_logdet.defjvp
def _lapack_inverse_and_logdet_jvp(primals, tangents):
    (a,), (da,) = primals, tangents
    inv, logdet = _lapack_inverse_and_logdet(a)
    return (inv, logdet), (-inv @ da @ inv, jnp.sum(inv * da))


def _invert_in_place(context, out, a) -> None:
    """Overwrite XLA's buffer of the symmetric positive-definite ``a`` (aliased to ``out[0]``)
    with its inverse, and write its log-determinant to ``out[1]``; NaN if it is not positive
    definite. The buffer is row-major: seen column-major it is ``a'``, the same matrix, which
    LAPACK factors and inverts where it lies (no copy; the arrays keep their dtype whatever
    JAX's float64 setting in XLA's threads)."""
    m = np.asarray(out[0]).T
    potrf, potri = get_lapack_funcs(("potrf", "potri"), (m,))
    low, info = potrf(m, lower=1, clean=0, overwrite_a=1)
    logdet = 2 * np.sum(np.log(np.diagonal(low))) if info == 0 else np.nan
    if info == 0:
        low, info = potri(low, lower=1, overwrite_c=1)
    if not np.shares_memory(low, m):  # LAPACK worked on a copy after all
        m[...] = low
    if info != 0:
        m.fill(np.nan)
    _mirror_lower(m)
    np.asarray(out[1])[...] = logdet


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
