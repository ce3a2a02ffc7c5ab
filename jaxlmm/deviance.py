"""The profiled REML/ML criterion of Bates et al. (2015, lme4 JSS paper) as a pure JAX function.

With L L' = Lambda' Z'WZ Lambda + I extended by the columns of X and y (blocked Cholesky), the
diagonal of the factor gives log|L|^2, log|R_X|^2 and the penalised residual sum of squares r^2:
  ML:   log|L|^2 + n (1 + log(2 pi r^2 / n)) - sum(log w)
  REML: log|L|^2 + log|R_X|^2 + (n-p) (1 + log(2 pi r^2 / (n-p))) - sum(log w)

Lambda is assembled from theta by index maps stored in the blocks (which theta entry fills
which entry of T1 and of the diagonals of Lambda_z), so the code depends on the padded sizes
only. The later terms' Lambda_z is block-diagonal with blocks I (x) T_k: in level-major order
its column j has entries on the rows j, j+1, ..., so it acts as a few shifted diagonals.
"""

from __future__ import annotations

from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp

from .crossprod import STRIP, Blocks
from .linalg import (
    banded_transpose_times,
    batched_cholesky,
    batched_lower_solve,
    block_start,
    cholesky,
    congruence_product,
    covering_blocks,
    logdet_and_schur,
    spd_inverse_and_logdet,
    symmetric_from_lower,
    times_banded,
)
from .optimize import autodiff

CHAIN_RULE_MIN_MZ = 256  # dense blocks from this size use the chain-rule derivatives
HEAVY_BLOCK = 1024  # the heavy levels' product is formed in lower blocks about this wide


def take_theta(theta, index):
    """``theta[index]`` with zeros where the index is negative (an entry no theta fills)."""
    return jnp.where(index >= 0, theta[jnp.maximum(index, 0)], 0.0)


def rest_diagonals(theta, blocks: Blocks):
    """The diagonals of Lambda_z: ``v[d, j] = Lambda_z[j + d, j]`` (shifts, mz)."""
    return take_theta(theta, blocks.rest_index)


class RestBlocks(NamedTuple):
    """Term 1's factor and the rest of the system after eliminating term 1 (Schur complement)."""

    t1: jax.Array  # (s1, s1) term 1's T
    v: jax.Array  # (shifts, mz) diagonals of Lambda_z
    l1: jax.Array  # (ng1, s1, s1) term 1's diagonal blocks of L
    zz: jax.Array  # (mz, mz) later terms: Lambda'(Z'WZ - fill-in)Lambda + I
    zx: jax.Array  # (mz, p+1) later terms against [X y]
    xx: jax.Array  # (p+1, p+1) [X y] against itself


class LevelPart(NamedTuple):
    """Term 1 eliminated level by level: small arrays, one entry per level."""

    l1: jax.Array  # (ng1, s1, s1) term 1's diagonal blocks of L
    w: jax.Array  # (ng1, s1, s1) T (T' A_i T + I)^{-1} T' per level
    xx: jax.Array  # (p+1, p+1) [X y] against itself, after eliminating term 1


def eliminate_levels(t1, blocks: Blocks) -> LevelPart:
    """Factor term 1's diagonal blocks and remove term 1 from the [X y] block."""
    l1 = batched_cholesky(jnp.einsum("ab,iac,cd->ibd", t1, blocks.a11, t1) + jnp.eye(t1.shape[0]))
    v = batched_lower_solve(l1, jnp.broadcast_to(t1.T, l1.shape))
    w = jnp.einsum("iab,iac->ibc", v, v)
    xx = blocks.axx - jnp.einsum("iap,iab,ibq->pq", blocks.ax1, w, blocks.ax1)
    return LevelPart(l1, w, xx)


def fill_in(w, blocks: Blocks):
    """What eliminating term 1 subtracts from the later terms' blocks (zz, zx), before Lambda.

    Linear in ``w``; the sums run over the stored coupling entries, the light levels' pairs of
    entries (:func:`_add_light_products`) and, as products of matrices, the heavy levels' dense
    rows.
    """
    mz = blocks.mz
    low = _add_light_products(_after(jnp.zeros((mz, mz), w.dtype), w), w, blocks)
    low = _add_heavy_products(low, w[blocks.heavy_level], blocks.heavy_rows)
    return symmetric_from_lower(low), _fill_zx(w, blocks)


def _fill_zx(w, blocks: Blocks):
    g = jnp.einsum("iab,ibq->iaq", w, blocks.ax1)
    return jax.ops.segment_sum(
        jnp.einsum("ea,eaq->eq", blocks.entry_values, g[blocks.entry_level]),
        blocks.entry_row,
        num_segments=blocks.mz,
    )


def fill_in_gradient(cot_zz, cot_zx, w, blocks: Blocks):
    """The gradient in ``w`` of <cot_zz, fill_zz(w)> + <cot_zx, fill_zx(w)> for a symmetric
    ``cot_zz``: :func:`fill_in` transposed (it is linear in w) by the same sums, reading cot_zz
    where it lies (autodiff would carry copies of it through the loops). A pair of entries
    (e, f) of a light level adds (2 - [e = f]) cot_zz[row_e, row_f] v_e v_f' to its level, a
    heavy level its rows cot_zz rows'. Exact in its symmetric part, the part that counts for
    the symmetric w of term 1's levels."""
    g_w = jax.grad(lambda w: jnp.sum(cot_zx * _fill_zx(w, blocks)))(w)
    return _light_gradient(_heavy_gradient(g_w, cot_zz, blocks), cot_zz, blocks)


def _strip_pairs(strips, blocks: Blocks):
    """A chunk of strips, (first entries, chunk number), as pairs of entries: first (k,),
    second (k, STRIP), which of them are pairs, and their rows in the (mz, mz) block, (k, 1)
    and (k, STRIP) (see ``crossprod._strips``)."""
    first, chunk = strips
    width = first.shape[0]
    index = (chunk * width + jnp.arange(width)).astype(blocks.strip_base.dtype)
    start = blocks.strip_base[first] + STRIP * index
    second = start[:, None] + jnp.arange(STRIP, dtype=start.dtype)
    keep = second <= first[:, None]
    second = jnp.minimum(second, blocks.entry_level.shape[0] - 1)
    rows = blocks.entry_row
    return first, second, keep, rows[first][:, None], rows[second]


def _strip_chunks(blocks: Blocks):
    """The strips' first entries and chunk numbers, what the fill-in's loops run over."""
    return blocks.strip_first, jnp.arange(blocks.strip_first.shape[0])


def _add_light_products(low, w, blocks: Blocks):
    """``low`` plus the light levels' fill-in: for each pair of entries (e, f) of one level,
    with f's row at most e's, v_e' w_level v_f at (row_e, row_f). The pairs are read from the
    strips (``crossprod._strips``) a chunk at a time in a loop that autodiff rematerialises, so
    no array of pairs is ever formed."""
    if not blocks.strip_first.size:
        return low
    values = blocks.entry_values

    mz = blocks.mz
    index = jnp.int64 if mz * mz >= 2**31 else blocks.entry_row.dtype  # flat targets

    @jax.checkpoint
    def add(low, strips):
        first, second, keep, row, column = _strip_pairs(strips, blocks)
        target = jnp.where(keep, row.astype(index) * mz + column, mz * mz)
        weighted = jnp.einsum("ka,kab->kb", values[first], w[blocks.entry_level[first]])
        products = jnp.einsum("kb,ksb->ks", weighted, values[second])
        return low.at[target].add(products, mode="drop"), None

    return jax.lax.scan(add, low.reshape(-1), _strip_chunks(blocks))[0].reshape(low.shape)


def _light_gradient(g_w, cot, blocks: Blocks):
    """``g_w`` plus the light pairs' part of :func:`fill_in_gradient`."""
    if not blocks.strip_first.size:
        return g_w
    values = blocks.entry_values

    def add(g_w, strips):
        first, second, keep, row, column = _strip_pairs(strips, blocks)
        weight = jnp.where(keep, jnp.where(second == first[:, None], 1.0, 2.0), 0.0)
        c = weight * cot[row, column]
        outer = jnp.einsum("ks,ka,ksb->kab", c, values[first], values[second])
        return g_w.at[blocks.entry_level[first]].add(outer), None

    return jax.lax.scan(add, g_w, _strip_chunks(blocks))[0]


def _heavy_gradient(g_w, cot, blocks: Blocks):
    """``g_w`` plus the heavy levels' part of :func:`fill_in_gradient`, rows cot rows' per
    level, a block of cot's columns at a time (blocks as in :func:`linalg.block_start`)."""
    rows, mz = blocks.heavy_rows, blocks.mz
    if not rows.shape[0] or not mz:
        return g_w
    count, width = covering_blocks(mz, HEAVY_BLOCK)

    def add(total, k):
        start, own = block_start(k, width, mz)
        columns = jnp.where(own[None, :], jax.lax.dynamic_slice_in_dim(cot, start, width, 1), 0.0)
        right = jax.lax.dynamic_slice_in_dim(rows, start, width, axis=2)
        product = jnp.einsum("lam,mn->lan", rows, columns)
        return total + jnp.einsum("lan,lbn->lab", product, right), None

    zeros = jnp.zeros(rows.shape[:2] + rows.shape[1:2], g_w.dtype)
    per_level = jax.lax.scan(add, zeros, jnp.arange(count))[0]
    return g_w.at[blocks.heavy_level].add(per_level)


def _add_heavy_products(low, w_heavy, rows):
    """``low`` plus the lower blocks (at most HEAVY_BLOCK wide) of the symmetric sum_l rows_l'
    w_l rows_l: the heavy levels' fill-in, formed block pair by block pair in a loop
    (rematerialised in autodiff), so that autodiff holds one block's weighted rows and cotangent
    at a time, not the rows' size many times over (blocks as in :func:`linalg.block_start`)."""
    mz = low.shape[0]
    if not rows.shape[0] or not mz:
        return low
    count, width = covering_blocks(mz, HEAVY_BLOCK)
    pairs = jnp.asarray([(i, j) for i in range(count) for j in range(i + 1)], dtype=jnp.int32)

    @jax.checkpoint
    def add(low, pair):
        a, own_rows = block_start(pair[0], width, mz)
        c, own_columns = block_start(pair[1], width, mz)
        left = jax.lax.dynamic_slice_in_dim(rows, a, width, axis=2)
        right = jax.lax.dynamic_slice_in_dim(rows, c, width, axis=2)
        block = jnp.einsum("lam,lab,lbn->mn", left, w_heavy, right)
        keep = own_rows[:, None] & own_columns[None, :]
        keep = jnp.where(pair[0] == pair[1], jnp.tril(keep), keep)
        old = jax.lax.dynamic_slice(low, (a, c), (width, width))
        return jax.lax.dynamic_update_slice(low, old + jnp.where(keep, block, 0.0), (a, c)), None

    return jax.lax.scan(add, low, pairs)[0]


def scale_rest(v, zz, zx):
    """Lambda_z' zz Lambda_z and Lambda_z' zx (linear in ``zz`` and ``zx``)."""
    return banded_transpose_times(times_banded(zz, v), v), banded_transpose_times(zx, v)


def eliminate_first_term(theta, blocks: Blocks) -> RestBlocks:
    """Factor term 1's block-diagonal part and form the Schur complement of the rest."""
    t1, v = take_theta(theta, blocks.first_index), rest_diagonals(theta, blocks)
    eye = jnp.eye(blocks.mz, dtype=theta.dtype)
    if not blocks.a11.shape[0]:  # every term in the dense block
        zz, zx = scale_rest(v, blocks.azz, blocks.azx)
        return RestBlocks(t1, v, blocks.a11, zz + eye, zx, blocks.axx)
    first = eliminate_levels(t1, blocks)
    if not blocks.mz:  # a single, block-diagonal term
        return RestBlocks(t1, v, first.l1, blocks.azz, blocks.azx, first.xx)
    fill_zz, fill_zx = fill_in(first.w, blocks)
    zz, zx = scale_rest(v, blocks.azz - fill_zz, blocks.azx - fill_zx)
    return RestBlocks(t1, v, first.l1, zz + eye, zx, first.xx)


class Factor(NamedTuple):
    """The blocked Cholesky factor at one theta."""

    t1: jax.Array  # (s1, s1) term 1's T
    v: jax.Array  # (shifts, mz) diagonals of Lambda_z
    l1: jax.Array  # (ng1, s1, s1) term 1's diagonal blocks of L
    rest: jax.Array  # (mz + p + 1, mz + p + 1) dense factor of the rest


def factorize(theta, blocks: Blocks) -> Factor:
    """Dense Cholesky factor of the whole rest (later terms, X, y) after eliminating term 1."""
    r = eliminate_first_term(theta, blocks)
    full = jnp.concatenate(
        [jnp.concatenate([r.zz, r.zx], axis=1), jnp.concatenate([r.zx.T, r.xx], axis=1)], axis=0
    )
    return Factor(t1=r.t1, v=r.v, l1=r.l1, rest=cholesky(full))


def reduced_system(theta, blocks: Blocks):
    """log|L|^2 and the (p+1) x (p+1) system of [X y] left after eliminating all random effects:
    its top-left p x p block is R_X'R_X (the unscaled precision of beta)."""
    r = eliminate_first_term(theta, blocks)
    logdet_l = _logdet_levels(r.l1)
    if not blocks.mz:
        return logdet_l, r.xx
    logdet_z, schur = logdet_and_schur(r.zz, r.zx, r.xx)
    return logdet_l + logdet_z, schur


def from_reduced_system(logdet_l, schur, blocks: Blocks, reml):
    """The criterion from log|L|^2 and the reduced system of [X y] (see the module docstring).
    Padded fixed-effect columns have a unit diagonal and add nothing."""
    d = jnp.diag(cholesky(schur))
    n, p = blocks.nobs, blocks.p
    logdet_rx, pwrss = 2 * jnp.sum(jnp.log(d[:p])), d[p] ** 2
    dof = jnp.where(reml, n - blocks.n_fixed, n)
    value = logdet_l + dof * (1 + jnp.log(2 * jnp.pi * pwrss / dof)) - blocks.sum_log_weights
    return value + jnp.where(reml, logdet_rx, 0.0)


def objective(theta, blocks: Blocks, reml=True):
    """lme4's REML criterion (``REMLcrit``) or deviance (ML) at ``theta``; NaN where undefined.

    ``reml`` may be a traced boolean, so one compiled function serves both criteria.
    """
    if is_dense(blocks):
        return dense_derivatives(theta, blocks, reml, order=0)
    return from_reduced_system(*reduced_system(theta, blocks), blocks, reml)


def is_dense(blocks: Blocks) -> bool:
    """Every random effect is in the dense block (no block-diagonal first term)."""
    return not blocks.a11.shape[0]


def expensive_hessian(blocks: Blocks) -> bool:
    """The exact Hessian costs several gradients: a large dense block after a block-diagonal
    term (:func:`chain_rule_derivatives`)."""
    return not is_dense(blocks) and blocks.mz >= CHAIN_RULE_MIN_MZ


class DenseSystem(NamedTuple):
    """What a dense system's derivatives use that does not depend on theta (formed once per
    fit, outside the optimiser's loops)."""

    a: jax.Array  # (n, n) [Z X y]' W [Z X y]
    a_shifted: jax.Array  # (shifts, shifts, mz, mz): [d, e, j, l] = A[j + d, l + e]
    mask: jax.Array  # (n_theta, shifts, mz): the entries Lambda_z[j + d, j] theta_t fills
    identity_z: jax.Array  # (n, n) diag(I, 0): the identity on the random effects
    half: jax.Array  # (n, n) lower triangle of ones, half on the diagonal
    weights: jax.Array  # (n,) c: 1 on the random effects, reml on the fixed, the dof on y
    constant: jax.Array  # () the criterion's constant


def dense_system(blocks: Blocks, reml) -> DenseSystem:
    """The theta-free parts of the dense system of ``blocks`` (see :func:`dense_derivatives`)."""
    mz, p, shifts = blocks.mz, blocks.p, blocks.rest_index.shape[0]
    a = jnp.block([[blocks.azz, blocks.azx], [blocks.azx.T, blocks.axx]])
    padded = jnp.pad(a, ((0, shifts), (0, shifts)))
    a_shifted = jnp.stack(
        [jnp.stack([padded[d : d + mz, e : e + mz] for e in range(shifts)]) for d in range(shifts)]
    )
    mask = (blocks.rest_index == jnp.arange(blocks.n_theta)[:, None, None]).astype(a.dtype)
    n = a.shape[0]
    identity_z = jnp.diag((jnp.arange(n) < mz).astype(a.dtype))
    half = jnp.tril(jnp.ones((n, n), a.dtype)) - 0.5 * jnp.eye(n, dtype=a.dtype)
    dof = jnp.where(reml, blocks.nobs - blocks.n_fixed, blocks.nobs)
    reml_weight = jnp.where(reml, 1.0, 0.0)
    weights = jnp.concatenate([jnp.ones(mz), jnp.full(p, reml_weight), jnp.reshape(dof, (1,))])
    constant = dof * (1 + jnp.log(2 * jnp.pi / dof)) - blocks.sum_log_weights
    return DenseSystem(a, a_shifted, mask, identity_z, half, weights, constant)


def _full_system(theta, blocks: Blocks, system: DenseSystem):
    """Phi = Lambda~' A Lambda~ + diag(I, 0) for the whole dense system [Z X y] (dense blocks
    only), with K = A Lambda~: Lambda~ = blockdiag(Lambda_z, I)."""
    a, mz = system.a, blocks.mz
    v = jnp.tensordot(theta, system.mask, axes=1)  # the diagonals of Lambda_z
    k = jnp.concatenate([times_banded(a[:, :mz], v), a[:, mz:]], axis=1)
    phi = jnp.concatenate([banded_transpose_times(k[:mz], v), k[mz:]], axis=0)
    return phi + system.identity_z, k


def _shifted(m, shifts: int, mz: int):
    """(shifts, mz, k): row j + d of ``m`` (n, k) at [d, j], zero past the end: the rows that
    the shifted diagonals of Lambda_z combine."""
    padded = jnp.pad(m, ((0, shifts), (0, 0)))
    return jnp.stack([padded[d : d + mz] for d in range(shifts)])


def dense_derivatives(theta, blocks: Blocks, reml, order: int, system: DenseSystem | None = None):
    """The criterion of a dense system and, for ``order`` 1 and 2, its gradient and Hessian in
    closed form.

    With L L' = Phi, the criterion is sum_i c_i log L_ii^2 + constant, where c_i is 1 on the
    random effects, ``reml`` on the fixed effects and the residual degrees of freedom on y:
    log|Phi_zz| = log|L_z|^2, log|R_X|^2 and r^2 = L_yy^2 are read off one factor. With
    X_t = L^{-1} dPhi_t L^{-T} and W = L^{-T} diag(c) L^{-1}, the gradient is
    sum_i c_i (X_t)_ii = 2 <E_t, K W>, and the Hessian is
    -2 sum_i c_i (P_u X_t)_ii + 2 <E_t, A E_u W>, with P_u the lower triangle of X_u (half its
    diagonal): d L^{-1} = -P_u L^{-1}. E_t (d Lambda~ / d theta_t) is never formed: it is the
    mask m_t[d, j] of the entries Lambda_z[j + d, j] that theta_t fills, so every product with
    it is a masked sum of shifted rows, and the Hessian costs one matrix product per theta.
    ``system``: :func:`dense_system` of the blocks, when formed beforehand.
    """
    system = dense_system(blocks, reml) if system is None else system
    c, mask = system.weights, system.mask
    phi, k = _full_system(theta, blocks, system)
    n, mz = phi.shape[0], blocks.mz
    low = cholesky(phi, unrolled=False)
    value = jnp.sum(c * jnp.log(jnp.diag(low) ** 2)) + system.constant
    if order == 0:
        return value
    inv = jax.scipy.linalg.solve_triangular(low, jnp.eye(n, dtype=phi.dtype), lower=True)
    w = inv.T @ (c[:, None] * inv)
    shifts = blocks.rest_index.shape[0]
    kw_diagonals = jnp.sum(_shifted(k, shifts, mz) * w[:, :mz].T, axis=-1)  # (KW)[j+d, j]
    grad = 2 * jnp.sum(mask * kw_diagonals, axis=(1, 2))
    if order == 1:
        return value, grad
    kt = _shifted(k @ inv.T, shifts, mz)  # rows of K L^{-T}
    s_t = jnp.sum(mask[..., None] * kt, axis=1)  # (E_t' K L^{-T})[:mz]
    r = jnp.einsum("aj,tjk->tak", inv[:, :mz], s_t)  # L^{-1} E_t' K L^{-T}
    x = r + jnp.swapaxes(r, 1, 2)
    weighted = (c[:, None] * system.half * x).reshape(x.shape[0], -1)
    hess_factor = -2 * weighted @ x.reshape(x.shape[0], -1).T
    b = system.a_shifted * w[:mz, :mz].T  # [d, e, j, l] = A[j + d, l + e] W[l, j]
    flat = mask.reshape(mask.shape[0], -1)  # <E_t, A E_u W>
    hess_pattern = 2 * flat @ jnp.swapaxes(b, 1, 2).reshape(flat.shape[1], -1) @ flat.T
    hess = hess_factor + hess_pattern
    return value, grad, (hess + hess.T) / 2


def _logdet_levels(l1):
    return 2 * jnp.sum(jnp.log(jnp.diagonal(l1, axis1=-2, axis2=-1)))


def value_and_grad(theta, blocks: Blocks, reml=True):
    """:func:`objective` and its gradient: closed forms for dense systems and for large dense
    blocks after a block-diagonal term (:func:`chain_rule_derivatives`), else autodiff."""
    if is_dense(blocks):
        return dense_derivatives(theta, blocks, reml, order=1)
    if blocks.mz >= CHAIN_RULE_MIN_MZ:
        return chain_rule_derivatives(theta, blocks, reml, hessian=False)
    return jax.value_and_grad(objective)(theta, blocks, reml)


def value_grad_hess(theta, blocks: Blocks, reml=True):
    """:func:`objective` with its exact gradient and Hessian: closed forms for dense systems
    (:func:`dense_derivatives`), plain autodiff when the dense block after a block-diagonal term
    is small, the chain rule (:func:`chain_rule_derivatives`) when it is large."""
    if is_dense(blocks):
        return dense_derivatives(theta, blocks, reml, order=2)
    if blocks.mz < CHAIN_RULE_MIN_MZ:
        return autodiff(partial(objective, blocks=blocks, reml=reml)).value_grad_hess(theta)
    return chain_rule_derivatives(theta, blocks, reml)


def _after(m, before):
    """``m`` (a pytree), for computations that XLA must schedule after those of ``before``: a
    dependency on a scalar of ``before`` that m's consumers fuse, so that the (mz, mz) arrays
    that only ``before`` needs are let go first. (XLA's CPU compiler drops optimisation
    barriers before it schedules.)"""
    zero = 0 * sum(jnp.sum(leaf) for leaf in jax.tree.leaves(before))
    return jax.tree.map(lambda leaf: leaf + zero, m)


def _shifted_rows(g, m, d: int, e: int, weights):
    """sum_b g[a, b] m[a + d, b + e] weights[b, r] (zero past the end): what the diagonals d and
    e of Lambda_z meet in <g, E' m E~>, for g = inv + left right' given as (inv, left, right).
    inv's part by row sums, the low-rank part by a product of m with narrow matrices: neither
    g nor its product with m is ever formed."""
    inv, left, right = g
    mz, k, r = m.shape[0], left.shape[1], weights.shape[1]
    shifted = jnp.pad(m, ((0, d), (0, e)))[d : d + mz, e : e + mz]
    dense = jnp.stack([jnp.sum(inv * shifted * weights[:, j], axis=1) for j in range(r)], axis=1)
    narrow = (right[:, :, None] * weights[:, None, :]).reshape(mz, k * r)
    narrow = jnp.pad(narrow, ((e, 0), (0, 0)))[:mz]  # row b + e holds row b
    product = jnp.pad(m @ narrow, ((0, d), (0, 0)))[d : d + mz]  # row a holds row a + d
    return dense + jnp.einsum("aq,aqr->ar", left, product.reshape(mz, k, r))


def _lambda_pullback(g, m, v, mask):
    """<g, E_t' m Lambda_z> for each theta entry t, E_t = d Lambda_z / d theta_t the entries
    ``mask[t]`` of its diagonals ``v``: half the gradient of <g, Lambda_z' m Lambda_z> for
    symmetric g and m (g as in :func:`_shifted_rows`)."""
    shifts = v.shape[0]
    return sum(
        mask[:, d] @ _shifted_rows(g, m, d, e, v[e][:, None])[:, 0]
        for d in range(shifts)
        for e in range(shifts)
    )


def _lambda_second(g, m, mask):
    """<g, E_j' m E_k> for each pair of the theta entries of ``mask`` (see
    :func:`_lambda_pullback`): half the Hessian of <g, Lambda_z' m Lambda_z> there."""
    shifts = mask.shape[1]
    return sum(
        mask[:, d] @ _shifted_rows(g, m, d, e, mask[:, e].T)
        for d in range(shifts)
        for e in range(shifts)
    )


def _columns_pullback(g, m, mask):
    """<g, E_t' m> for each theta entry t: the gradient of <g, Lambda_z' m>."""
    shifts, mz = mask.shape[1:]
    padded = jnp.pad(m, ((0, shifts - 1), (0, 0)))
    return sum(mask[:, d] @ jnp.sum(g * padded[d : d + mz], axis=1) for d in range(shifts))


def _logdet_traces(head, inv, coefficients, last):
    """T[j, k] = tr(U_j zz^-1 U_k zz^-1) over the tangents U_j = d zz / d phi_j, from
    ``head`` (each U_j zz^-1, all but the last) without forming the last: zz - I is homogeneous
    of degree 2 in the later terms' theta (Lambda_z is linear in them), so sum_j theta_j U_j =
    2 (zz - I) over those, and U_last zz^-1 = (B - sum_j c_j U_j zz^-1) / theta_last with
    B = 2 (I - zz^-1), ``coefficients`` c the head's theta (0 for term 1's) and ``last`` the
    largest later theta (no cancellation beyond the others'; all zero: U_last = 0)."""
    n = len(head)
    eye = jnp.eye(inv.shape[0], dtype=inv.dtype)
    t = jnp.array(
        [[_trace_of_product(head[max(j, k)], head[min(j, k)]) for k in range(n)] for j in range(n)]
    ).reshape(n, n)
    t_b = jnp.array([2 * (jnp.trace(u) - jnp.sum(u * inv)) for u in head])  # tr(U_j zz^-1 B)
    t_bb = 4 * jnp.sum(jnp.square(eye - inv))
    scale = jnp.where(last != 0, 1 / jnp.where(last != 0, last, 1.0), 0.0)
    cross = (t_b - t @ coefficients) * scale
    square = (t_bb - 2 * coefficients @ t_b + coefficients @ t @ coefficients) * scale**2
    return jnp.block([[t, cross[:, None]], [cross[None, :], square[None, None]]])


def _trace_of_product(a, b):
    """tr(a b) = sum_ij a_ij b_ji, a block of a's rows (:func:`linalg.covering_blocks`) against the
    same block of b's columns at a time: no transposed copy of b."""
    mz = a.shape[0]
    count, width = covering_blocks(mz, HEAVY_BLOCK)

    def block(k):
        start, own = block_start(k, width, mz)
        rows = jax.lax.dynamic_slice_in_dim(a, start, width, axis=0)
        columns = jax.lax.dynamic_slice_in_dim(b, start, width, axis=1)
        return jnp.sum(jnp.where(own[:, None], rows * columns.T, 0.0))

    return jnp.sum(jax.lax.map(block, jnp.arange(count)))


def chain_rule_derivatives(theta, blocks: Blocks, reml=True, hessian=True):
    """:func:`objective` with its exact gradient (and, with ``hessian``, Hessian) by the chain
    rule through the eliminated system E = (log|L_1|^2, zz, zx, xx), in the parameters
    phi = (tau, theta of the later terms) where tau holds the entries of T1 (theta reaches
    term 1 only through them, the later terms only through Lambda_z).

    Autodiff through the dense block zz would push every parameter's tangent through its
    Cholesky factor and through the fill-in sums. Here zz costs one Cholesky factor and one
    inverse: the gradient is <dcriterion/dE, dE/dphi>, where dcriterion/dzz = zz^-1 + x psi x'
    (x = zz^-1 zx, psi the criterion's gradient in the Schur complement S = xx - zx' x) is
    pulled back through Lambda_z for theta and through the fill-in (linear in term 1's
    per-level ``w``) for tau, once each. The Hessian adds one product U_j zz^-1 per parameter
    but one (:func:`_logdet_traces`), U_j = d zz / d phi_j: the log-determinant's Hessian is
    tr(zz^-1 d2zz) - tr(zz^-1 U_j zz^-1 U_k), and S's second derivatives need zz^-1 on p+1
    columns only.
    """
    mz = blocks.mz
    s1 = blocks.first_index.shape[0]
    rows1, cols1 = jnp.tril_indices(s1)
    position = blocks.first_index[rows1, cols1]  # theta entry of each tau entry (-1: none)
    to_tau = (position[:, None] == jnp.arange(theta.shape[0])[None, :]).astype(theta.dtype)
    tau = to_tau @ theta
    m1, n_theta = tau.shape[0], theta.shape[0]
    one_hot = jnp.eye(n_theta, dtype=theta.dtype)
    later = one_hot[m1:]  # theta's entries of the later terms (term 1's come first)
    to_phi = jnp.concatenate([to_tau, later])  # d phi / d theta

    def levels(tau):
        t1 = jnp.zeros((s1, s1), theta.dtype).at[rows1, cols1].set(tau)
        first = eliminate_levels(t1, blocks)
        return _logdet_levels(first.l1), first.w, first.xx

    def rest(theta, zz, zx):
        return scale_rest(rest_diagonals(theta, blocks), zz, zx)

    v = rest_diagonals(theta, blocks)
    mask = (blocks.rest_index == jnp.arange(n_theta)[:, None, None]).astype(theta.dtype)

    logdet_1, w, xx = levels(tau)
    fill_zz, fill_zx = fill_in(w, blocks)
    zz_u, zx_u = blocks.azz - fill_zz, blocks.azx - fill_zx
    zz, zx = rest(theta, zz_u, zx_u)
    inv, logdet_z = spd_inverse_and_logdet(zz + jnp.eye(mz))
    x = inv @ zx
    schur = xx - zx.T @ x

    def outer(s):
        return from_reduced_system(logdet_1 + logdet_z, s, blocks, reml)

    value, psi = jax.value_and_grad(outer)(schur)
    psi = (psi + psi.T) / 2  # S and its derivatives are symmetric
    x_psi = x @ psi
    g_zx = -2 * x_psi  # the criterion's gradient in zx

    g_zz = (inv, x_psi, x)  # ... and in zz, zz^-1 + x psi x', never formed (see _shifted_rows)

    def grad_rest(zz, zx):  # the gradient of <g, Lambda_z' zz Lambda_z + Lambda_z' zx> in theta
        return 2 * _lambda_pullback(g_zz, zz, v, mask) + _columns_pullback(g_zx, zx, mask)

    # (mz, mz) arrays are formed one phase after another, each phase's let go before the next
    # (see _after): products with zz_u (the gradient in the later terms' theta and its
    # Hessian there), then the fill-in's gradient g_w (the criterion is linear in zz and zx:
    # its gradient there, Lambda_z g Lambda_z' and Lambda_z g_zx, is pulled back to w), then
    # the fill-in's tangents
    grad_r = grad_rest(zz_u, zx_u)[m1:]
    hess_rr = 2 * _lambda_second(g_zz, zz_u, mask[m1:]) if hessian else None
    g_late = _after(inv, (grad_r, hess_rr)) + sum(  # g_zz, fused into its one use
        x_psi[:, q, None] * x[None, :, q] for q in range(x.shape[1])
    )

    def weighted_rest(zz, zx):
        zz, zx = rest(theta, zz, zx)
        return jnp.sum(g_late * zz) + jnp.sum(g_zx * zx)

    g_w = fill_in_gradient(*jax.grad(weighted_rest, argnums=(0, 1))(zz_u, zx_u), w, blocks)

    def weighted_levels(tau):  # zz and zx depend on w through minus the fill-in
        logdet, w, xx = levels(tau)
        return logdet - jnp.sum(g_w * w) + jnp.sum(psi * xx)

    grad = jnp.concatenate([jax.grad(weighted_levels)(tau), grad_r])
    if not hessian:
        return value, to_phi.T @ grad

    # <gradient of the criterion in E, second derivatives of E>, block by block of phi, with
    # the first derivatives of E along tau (through w: the fill-in's tangents)
    _, linear_levels = jax.linearize(levels, tau)
    d_logdet_1, dw, dxx_1 = jax.vmap(linear_levels)(jnp.eye(m1))
    dw = _after(dw, (grad, hess_rr))
    d_fill_zz, d_fill_zx = zip(*(fill_in(dw[i], blocks) for i in range(m1)), strict=True)
    hess_11 = jax.hessian(weighted_levels)(tau)
    hess_1r = jnp.stack([-grad_rest(d_fill_zz[i], d_fill_zx[i])[m1:] for i in range(m1)])
    hess_e = jnp.block([[hess_11, hess_1r], [hess_1r.T, hess_rr]])
    zz_u = _after(zz_u, hess_e)

    # zz's tangents U_j, each made U_j zz^-1 where it lies (term 1's, -Lambda_z' d_fill
    # Lambda_z, after hess_e has read d_fill), but the later terms' one with the largest theta
    # (see _logdet_traces): in the order ``phi_order``, term 1's first, the later terms' by
    # their |theta|
    _, linear_rest = jax.linearize(lambda th: rest(th, zz_u, zx_u), theta)
    dzx_1 = jnp.stack([rest(theta, -d_fill_zz[i], -d_fill_zx[i])[1] for i in range(m1)])
    dzx = jnp.concatenate([dzx_1, jax.vmap(lambda e: linear_rest(e)[1])(later)])
    dxx = jnp.concatenate([dxx_1, jnp.zeros((n_theta - m1,) + xx.shape)])
    phi_order = jnp.concatenate([jnp.arange(m1), m1 + jnp.argsort(jnp.abs(theta[m1:]))])
    head_inv = [congruence_product(d_fill_zz[i], _after(v, hess_e), inv, -1.0) for i in range(m1)]
    identity = jnp.ones((1, mz), theta.dtype)  # the later terms' U_j are formed whole
    head_inv += [
        congruence_product(linear_rest(one_hot[phi_order[k]])[0], identity, inv)
        for k in range(m1, n_theta - 1)
    ]
    coefficients = jnp.where(phi_order[:-1] >= m1, theta[phi_order[:-1]], 0.0)
    last = theta[phi_order[-1]]
    head_x = jnp.stack([u @ zx for u in head_inv])  # each U_j x
    last_x = 2 * (zx - x) - jnp.einsum("j,jaq->aq", coefficients, head_x)  # (zz - I) x = zx - x
    last_x = last_x * jnp.where(last != 0, 1 / jnp.where(last != 0, last, 1.0), 0.0)
    back = jnp.argsort(phi_order)  # from phi_order to phi's own order
    dzz_x = jnp.concatenate([head_x, last_x[None]])[back]
    traces = _logdet_traces(head_inv, inv, coefficients, last)
    hess_logdet = -traces[back][:, back]

    # second derivatives of the criterion in E, along the tangents
    ds = dxx - jnp.swapaxes(dzx, 1, 2) @ x - x.T @ dzx + x.T @ dzz_x
    resid = dzx - dzz_x  # d2S[j, k] = -(R_j' zz^-1 R_k + R_k' zz^-1 R_j)
    inv_resid = jnp.einsum("ab,kbr->kar", inv, resid)
    hess_schur = -2 * jnp.einsum("qr,jaq,kar->jk", psi, resid, inv_resid)
    second = jax.vmap(lambda d: jax.jvp(jax.grad(outer), (schur,), (d,))[1])(ds)
    hess_outer = jnp.einsum("jqr,kqr->jk", second, ds)
    hess = hess_logdet + hess_schur + hess_outer + hess_e
    hess = to_phi.T @ ((hess + hess.T) / 2) @ to_phi
    return value, to_phi.T @ grad, hess
