"""Dense factorisations at both ends of the size range.

A term with ``s`` columns per level gives one ``s x s`` block per level. Batched LAPACK calls
on such tiny matrices are slow (per-matrix overhead), so the loops over the ``s`` rows and
columns are unrolled in Python and every operation acts on the whole batch at once.

The dense block of a large crossed design is the memory of a fit, so it is worked on where it
lies: factored, solved against and inverted by LAPACK called from the host on XLA's own buffer
on CPU (:func:`spd_solve`, :func:`spd_inverse_and_logdet`), mirrored and multiplied a block of
rows at a time by XLA loops that update it in place (:func:`symmetric_from_lower`,
:func:`congruence_product`). Products with banded lower-triangular matrices (Lambda of the
later terms) are sums of shifted rows or columns.
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


def times_banded(m, v):
    """``m @ V`` for the banded lower-triangular V with diagonals ``v[d, j] = V[j + d, j]``
    (shifts, n) and ``m`` (r, n): column j is sum_d m[:, j + d] v[d, j]."""
    shifts, n = v.shape
    if not n:
        return m
    padded = jnp.pad(m, ((0, 0), (0, shifts - 1)))
    return sum(padded[:, d : d + n] * v[d] for d in range(shifts))


def banded_times(u, v):
    """``V @ u`` for V as in :func:`times_banded` and ``u`` (n, k): row i is
    sum_d v[d, i - d] u[i - d]."""
    shifts, n = v.shape
    if not n:
        return u
    scaled = [v[d][:, None] * u for d in range(shifts)]
    return sum(jnp.pad(s, ((d, 0), (0, 0)))[:n] for d, s in enumerate(scaled))


def banded_transpose_times(m, v):
    """``V' @ m`` for V as in :func:`times_banded` and ``m`` (n, k): row j is
    sum_d v[d, j] m[j + d] (no transposed copy of ``m``: for a large dense block that is a
    matrix less in memory)."""
    shifts, n = v.shape
    if not n:
        return m
    padded = jnp.pad(m, ((0, shifts - 1), (0, 0)))
    return sum(v[d][:, None] * padded[d : d + n] for d in range(shifts))


ROW_BLOCK = 512  # rows per step where large matrices are mirrored and multiplied in place


def covering_blocks(n: int, block: int) -> tuple[int, int]:
    """(count, width): ``count`` blocks of one width, at most ``block``, that cover n > 0."""
    count = -(-n // block)
    return count, -(-n // count)


def block_start(k, width: int, n: int):
    """Where block ``k`` of :func:`covering_blocks` starts, and which of its rows are its own:
    the last blocks start early enough to end at n, their overlap with the ones before them is
    not theirs."""
    begin = k * width
    start = jnp.minimum(begin, n - width)
    return start, start + jnp.arange(width) >= begin


def symmetric_from_lower(m):
    """The symmetric matrix with ``m``'s lower triangle. Large matrices get their upper blocks
    from the lower ones where they lie, a pair of blocks at a time: no transposed copy."""
    n = m.shape[0]
    if n <= ROW_BLOCK:
        return jnp.tril(m, -1) + jnp.tril(m).T
    count, width = covering_blocks(n, ROW_BLOCK)
    pairs = jnp.asarray([(i, j) for j in range(count) for i in range(j + 1)], dtype=jnp.int32)

    def mirror(m, pair):
        r, c = block_start(pair[0], width, n)[0], block_start(pair[1], width, n)[0]
        upper = (r + jnp.arange(width))[:, None] < (c + jnp.arange(width))[None, :]
        old = jax.lax.dynamic_slice(m, (r, c), (width, width))
        lower = jax.lax.dynamic_slice(m, (c, r), (width, width)).T  # never written
        return jax.lax.dynamic_update_slice(m, jnp.where(upper, lower, old), (r, c)), None

    return jax.lax.scan(mirror, m, pairs)[0]


def congruence_product(m, v, b, scale=1.0):
    """``scale V' m V b`` for square ``m`` and ``b`` and V as in :func:`times_banded`, formed
    a strip of rows at a time where m lies, from the top: row j of V' m takes rows j, j + 1,
    ... of m, which are not yet overwritten. One matrix and a strip held where the whole
    product holds two or three; ``m`` must have no later use."""
    n, shifts = m.shape[0], v.shape[0]
    count, width = covering_blocks(n, ROW_BLOCK)

    def strip(m, k):
        start, own = block_start(k, width, n)
        rows = start + jnp.arange(width)
        left = sum(v[d, rows][:, None] * m[jnp.minimum(rows + d, n - 1)] for d in range(shifts))
        new = scale * (times_banded(left, v) @ b)
        old = jax.lax.dynamic_slice_in_dim(m, start, width)  # not its own: done before
        return jax.lax.dynamic_update_slice_in_dim(
            m, jnp.where(own[:, None], new, old), start, 0
        ), None

    return jax.lax.scan(strip, m, jnp.arange(count))[0]


HOST_LAPACK_MIN = 2048  # from this size, on CPU, the host's LAPACK factors dense blocks in place


def _host_lapack(a) -> bool:
    """Whether ``a`` is worked on by the host in its own buffer: one large float matrix."""
    return a.ndim == 2 and a.shape[-1] >= HOST_LAPACK_MIN and a.dtype in (jnp.float32, jnp.float64)


def _in_place(callback, shapes, *args):
    """``callback`` run by the host on XLA's buffers, overwriting the first argument's (its
    first output)."""
    return buffer_callback(callback, shapes, input_output_aliases={0: 0}, vmap_method="sequential")(
        *args
    )


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
    return tuple(_in_place(_invert_in_place, shapes, a))


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
    low, logdet = _factor_in_place(m)
    if low is not None:
        low, info = get_lapack_funcs("potri", (m,))(low, lower=1, overwrite_c=1)
        _keep(m, low, info)
    _mirror_lower(m)
    np.asarray(out[1])[...] = logdet


def _factor_in_place(m: np.ndarray):
    """LAPACK's lower Cholesky factor of the column-major ``m`` where it lies, and the
    log-determinant; (None, NaN) with ``m`` filled with NaN if it is not positive definite."""
    low, info = get_lapack_funcs("potrf", (m,))(m, lower=1, clean=0, overwrite_a=1)
    _keep(m, low, info)
    if info != 0:
        return None, np.nan
    return low, 2 * np.sum(np.log(np.diagonal(low)))


def _keep(m: np.ndarray, result: np.ndarray, info: int) -> None:
    """Leave LAPACK's ``result`` in ``m`` (in case it worked on a copy), NaN if it failed."""
    if not np.shares_memory(result, m):
        m[...] = result
    if info != 0:
        m.fill(np.nan)


def _mirror_lower(m: np.ndarray, block: int = 512) -> None:
    """Copy the lower triangle of square ``m`` onto its upper one, in place, block by block."""
    n = m.shape[0]
    for k in range(0, n, block):
        end = min(k + block, n)
        diagonal = np.tril(m[k:end, k:end])
        m[k:end, k:end] = diagonal + np.tril(diagonal, -1).T
        m[k:end, end:] = m[end:, k:end].T


@jax.custom_jvp
def spd_solve(a, b):
    """log det(a) and a^{-1} b for a symmetric positive-definite ``a`` (NaN if not PD); large
    on CPU, factored by the host in ``a``'s own buffer, which it overwrites (see
    :func:`spd_inverse_and_logdet`)."""
    logdet, _, x = _solve_parts(a, b)
    return logdet, x


@spd_solve.defjvp
def _spd_solve_jvp(primals, tangents):
    (a, b), (da, db) = primals, tangents
    logdet, x = spd_solve(a, b)
    inv = spd_inverse(a)
    return (logdet, x), (jnp.sum(inv * da), inv @ (db - da @ x))


def _solve_parts(a, b):
    """log det(a), L^{-1} b and a^{-1} b for a = L L' (no derivative rule)."""
    if _host_lapack(a):
        return jax.lax.platform_dependent(a, b, cpu=_lapack_solve, default=_xla_solve)
    return _xla_solve(a, b)


def _xla_solve(a, b):
    low = jnp.linalg.cholesky(a)
    half = solve_triangular(low, b, lower=True)
    return (
        2 * jnp.sum(jnp.log(jnp.diag(low))),
        half,
        solve_triangular(low, half, lower=True, trans=1),
    )


def _lapack_solve(a, b):
    shapes = (
        jax.ShapeDtypeStruct(a.shape, a.dtype),
        jax.ShapeDtypeStruct((), a.dtype),
        jax.ShapeDtypeStruct(b.shape, b.dtype),
        jax.ShapeDtypeStruct(b.shape, b.dtype),
    )
    _, logdet, half, x = _in_place(_solve_in_place, shapes, a, b)
    return logdet, half, x


def _solve_in_place(context, out, a, b) -> None:
    """Factor XLA's buffer of ``a`` (aliased to ``out[0]``) where it lies (see
    :func:`_invert_in_place`) and solve with ``b``: log det(a), L^{-1} b and a^{-1} b."""
    m = np.asarray(out[0]).T
    low, logdet = _factor_in_place(m)
    half, x = np.asarray(out[2]), np.asarray(out[3])
    if low is None:
        half.fill(np.nan)
        x.fill(np.nan)
    else:
        trtrs = get_lapack_funcs("trtrs", (low,))
        half[...] = trtrs(low, np.asarray(b), lower=1)[0]
        x[...] = trtrs(low, half, lower=1, trans=1)[0]
    np.asarray(out[1])[...] = logdet


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
    logdet, half, _ = _solve_parts(a, b)
    return logdet, c - half.T @ half


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
