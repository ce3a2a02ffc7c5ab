"""The profiled REML/ML criterion of Bates et al. (2015, lme4 JSS paper) as a pure JAX function.

With L L' = Lambda' Z'WZ Lambda + I extended by the columns of X and y (blocked Cholesky), the
diagonal of the factor gives log|L|^2, log|R_X|^2 and the penalised residual sum of squares r^2:
  ML:   log|L|^2 + n (1 + log(2 pi r^2 / n)) - sum(log w)
  REML: log|L|^2 + log|R_X|^2 + (n-p) (1 + log(2 pi r^2 / (n-p))) - sum(log w)
"""

from __future__ import annotations

from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp

from . import parameters
from .crossprod import Blocks
from .linalg import (
    batched_cholesky,
    batched_lower_solve,
    cholesky,
    logdet_and_schur,
    spd_inverse_and_logdet,
)
from .optimize import autodiff


class RestBlocks(NamedTuple):
    """Term 1's factor and the rest of the system after eliminating term 1 (Schur complement)."""

    t1: jax.Array  # (s1, s1) term 1's T
    rest_t: list  # T of the later terms
    l1: jax.Array  # (ng1, s1, s1) term 1's diagonal blocks of L
    zz: jax.Array  # (mz, mz) later terms: Lambda'(Z'WZ - fill-in)Lambda + I
    zx: jax.Array  # (mz, p+1) later terms against [X y]
    xx: jax.Array  # (p+1, p+1) [X y] against itself


def apply_lambda(m, rest_t, n_levels, sizes):
    """``m @ Lambda_z`` for the later terms' columns (the first mz columns of ``m``)."""
    mz = sum(ng * s for ng, s in zip(n_levels, sizes, strict=True))
    if not mz:
        return m
    if all(s == 1 for s in sizes):  # Lambda_z is diagonal: one elementwise product
        scale = jnp.concatenate(
            [jnp.full(ng, t[0, 0]) for t, ng in zip(rest_t, n_levels, strict=True)]
        )
        scaled = m[:, :mz] * scale
    else:
        pieces, start = [], 0
        for t, ng, s in zip(rest_t, n_levels, sizes, strict=True):
            block = m[:, start : start + ng * s].reshape(m.shape[0], ng, s)
            pieces.append(jnp.einsum("rja,ab->rjb", block, t).reshape(m.shape[0], ng * s))
            start += ng * s
        scaled = jnp.concatenate(pieces, axis=1)
    return scaled if m.shape[1] == mz else jnp.concatenate([scaled, m[:, mz:]], axis=1)


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

    Linear in ``w``; the sums run over the stored coupling entries and pairs of entries.
    """
    mz = blocks.mz
    g = jnp.einsum("iab,ibq->iaq", w, blocks.ax1)
    fill_zx = jax.ops.segment_sum(
        jnp.einsum("ea,eaq->eq", blocks.entry_values, g[blocks.entry_level]),
        blocks.entry_row,
        num_segments=mz,
    )
    pair_values = jnp.einsum("kab,kab->k", blocks.pair_products, w[blocks.pair_level])
    low = jax.ops.segment_sum(
        pair_values, blocks.pair_target, num_segments=mz * mz, indices_are_sorted=True
    ).reshape(mz, mz)
    return low + low.T - jnp.diag(jnp.diag(low)), fill_zx


def scale_rest(rest_t, zz, zx, blocks: Blocks):
    """Lambda_z' zz Lambda_z and Lambda_z' zx (linear in ``zz`` and ``zx``)."""
    levels, sizes = blocks.n_levels[1:], blocks.sizes[1:]
    zz = apply_lambda(apply_lambda(zz, rest_t, levels, sizes).T, rest_t, levels, sizes)
    return zz, apply_lambda(zx.T, rest_t, levels, sizes).T


def eliminate_first_term(theta, blocks: Blocks) -> RestBlocks:
    """Factor term 1's block-diagonal part and form the Schur complement of the rest."""
    ts = parameters.factors(theta, blocks.sizes)
    t1, rest_t = ts[0], ts[1:]
    first = eliminate_levels(t1, blocks)
    mz = blocks.mz
    if not mz:
        empty = jnp.zeros((0, 0))
        return RestBlocks(t1, rest_t, first.l1, empty, jnp.zeros((0, blocks.p + 1)), first.xx)
    fill_zz, fill_zx = fill_in(first.w, blocks)
    zz, zx = scale_rest(rest_t, blocks.azz - fill_zz, blocks.azx - fill_zx, blocks)
    return RestBlocks(t1, rest_t, first.l1, zz + jnp.eye(mz), zx, first.xx)


class Factor(NamedTuple):
    """The blocked Cholesky factor at one theta."""

    t1: jax.Array  # (s1, s1) term 1's T
    rest_t: list  # T of the later terms
    l1: jax.Array  # (ng1, s1, s1) term 1's diagonal blocks of L
    rest: jax.Array  # (mz + p + 1, mz + p + 1) dense factor of the rest


def factorize(theta, blocks: Blocks) -> Factor:
    """Dense Cholesky factor of the whole rest (later terms, X, y) after eliminating term 1."""
    r = eliminate_first_term(theta, blocks)
    full = jnp.concatenate(
        [jnp.concatenate([r.zz, r.zx], axis=1), jnp.concatenate([r.zx.T, r.xx], axis=1)], axis=0
    )
    return Factor(t1=r.t1, rest_t=r.rest_t, l1=r.l1, rest=cholesky(full))


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
    """The criterion from log|L|^2 and the reduced system of [X y] (see the module docstring)."""
    d = jnp.diag(cholesky(schur))
    n, p = blocks.nobs, blocks.p
    logdet_rx, pwrss = 2 * jnp.sum(jnp.log(d[:p])), d[p] ** 2
    dof = jnp.where(reml, n - p, n)
    value = logdet_l + dof * (1 + jnp.log(2 * jnp.pi * pwrss / dof)) - blocks.sum_log_weights
    return value + jnp.where(reml, logdet_rx, 0.0)


def objective(theta, blocks: Blocks, reml=True):
    """lme4's REML criterion (``REMLcrit``) or deviance (ML) at ``theta``; NaN where undefined.

    ``reml`` may be a traced boolean, so one compiled function serves both criteria.
    """
    return from_reduced_system(*reduced_system(theta, blocks), blocks, reml)


def _logdet_levels(l1):
    return 2 * jnp.sum(jnp.log(jnp.diagonal(l1, axis1=-2, axis2=-1)))


def value_grad_hess(theta, blocks: Blocks, reml=True):
    """:func:`objective` with its exact gradient and Hessian, by the chain rule through the
    eliminated system E = (log|L_1|^2, zz, zx, xx).

    Autodiff through the dense block zz would form d(zz^-1) = -zz^-1 U zz^-1 (two large
    products) per parameter and push every parameter's tangent through the fill-in sums; here
    zz costs one Cholesky factor, one inverse and one product U_j zz^-1 per parameter, with
    U_j = d zz / d theta_j: the log-determinant's Hessian is tr(zz^-1 d2zz) - tr(zz^-1 U_j zz^-1
    U_k). The rest of the criterion sees zz only through the Schur complement
    S = xx - zx' zz^-1 zx, whose derivatives need zz^-1 on p+1 columns. Term 1's parameters
    reach zz through the fill-in, linear in its per-level ``w``; the later terms' parameters
    through Lambda_z only, so no fill-in sum is differentiated in them.
    """
    sizes, mz = blocks.sizes, blocks.mz
    if not mz:  # no dense block: plain autodiff is cheap
        return autodiff(partial(objective, blocks=blocks, reml=reml)).value_grad_hess(theta)

    m1 = parameters.n_theta(sizes[0])
    theta1, theta_rest = theta[:m1], theta[m1:]
    eye1, eye_rest = jnp.eye(m1), jnp.eye(theta.shape[0] - m1)

    def levels(th1):
        first = eliminate_levels(parameters.factors(th1, sizes[:1])[0], blocks)
        return _logdet_levels(first.l1), first.w, first.xx

    def rest(th_rest, zz, zx):
        return scale_rest(parameters.factors(th_rest, sizes[1:]), zz, zx, blocks)

    # E and its first derivatives: term 1's parameters through w (the fill-in is linear in it),
    # the later terms' parameters through Lambda_z
    (logdet_1, w, xx), linear_levels = jax.linearize(levels, theta1)
    d_logdet_1, dw, dxx_1 = jax.vmap(linear_levels)(eye1)
    fill_zz, fill_zx = fill_in(w, blocks)
    zz_u, zx_u = blocks.azz - fill_zz, blocks.azx - fill_zx
    d_fill_zz, d_fill_zx = jax.vmap(lambda d: fill_in(d, blocks))(dw)
    dzz_1, dzx_1 = jax.vmap(lambda a, b: rest(theta_rest, -a, -b))(d_fill_zz, d_fill_zx)
    (zz, zx), linear_rest = jax.linearize(lambda th: rest(th, zz_u, zx_u), theta_rest)
    dzz_r, dzx_r = jax.vmap(linear_rest)(eye_rest)
    zz = zz + jnp.eye(mz)
    n_rest = theta_rest.shape[0]
    d_logdet_l = jnp.concatenate([d_logdet_1, jnp.zeros(n_rest)])
    dzz = jnp.concatenate([dzz_1, dzz_r])
    dzx = jnp.concatenate([dzx_1, dzx_r])
    dxx = jnp.concatenate([dxx_1, jnp.zeros((n_rest,) + xx.shape)])

    # the criterion and its first and second derivatives in E, along the tangents
    inv, logdet_z = spd_inverse_and_logdet(zz)
    x = inv @ zx
    schur = xx - zx.T @ x

    def outer(s):
        return from_reduced_system(logdet_1 + logdet_z, s, blocks, reml)

    value, psi = jax.value_and_grad(outer)(schur)
    psi = (psi + psi.T) / 2  # S and its derivatives are symmetric
    ds = dxx - jnp.swapaxes(dzx, 1, 2) @ x - x.T @ dzx + x.T @ dzz @ x
    grad = d_logdet_l + jnp.sum(inv * dzz, axis=(1, 2)) + jnp.sum(psi * ds, axis=(1, 2))
    u_inv = (dzz.reshape(-1, mz) @ inv).reshape(dzz.shape)  # U_j zz^-1, one product
    hess_logdet = -jnp.sum(u_inv[:, None] * jnp.swapaxes(u_inv, 1, 2)[None], axis=(2, 3))
    resid = dzx - dzz @ x  # d2S[j, k] = -(R_j' zz^-1 R_k + R_k' zz^-1 R_j)
    inv_resid = jnp.einsum("ab,kbr->kar", inv, resid)
    hess_schur = -2 * jnp.einsum("qr,jaq,kar->jk", psi, resid, inv_resid)
    second = jax.vmap(lambda d: jax.jvp(jax.grad(outer), (schur,), (d,))[1])(ds)
    hess_outer = jnp.einsum("jqr,kqr->jk", second, ds)

    # <gradient of the criterion in E, second derivatives of E>, block by block of theta
    g_zz, g_zx = inv + x @ psi @ x.T, -2 * x @ psi

    def weighted_rest(th_rest, zz, zx):
        zz, zx = rest(th_rest, zz, zx)
        return jnp.sum(g_zz * zz) + jnp.sum(g_zx * zx)

    g_w = jax.grad(lambda w: weighted_rest(theta_rest, *fill_in(w, blocks)))(w)

    def weighted_levels(th1):  # zz and zx depend on w through minus the fill-in
        logdet, w, xx = levels(th1)
        return logdet - jnp.sum(g_w * w) + jnp.sum(psi * xx)

    hess_11 = jax.hessian(weighted_levels)(theta1)
    hess_rr = jax.hessian(weighted_rest)(theta_rest, zz_u, zx_u)
    hess_1r = jax.vmap(lambda a, b: jax.grad(weighted_rest)(theta_rest, -a, -b))(
        d_fill_zz, d_fill_zx
    )
    hess_e = jnp.block([[hess_11, hess_1r], [hess_1r.T, hess_rr]])
    hess = hess_logdet + hess_schur + hess_outer + hess_e
    return value, grad, (hess + hess.T) / 2
