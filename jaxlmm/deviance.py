"""The profiled REML/ML criterion of Bates et al. (2015, lme4 JSS paper) as a pure JAX function.

With L L' = Lambda' Z'WZ Lambda + I extended by the columns of X and y (blocked Cholesky), the
diagonal of the factor gives log|L|^2, log|R_X|^2 and the penalised residual sum of squares r^2:
  ML:   log|L|^2 + n (1 + log(2 pi r^2 / n)) - sum(log w)
  REML: log|L|^2 + log|R_X|^2 + (n-p) (1 + log(2 pi r^2 / (n-p))) - sum(log w)
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from . import parameters
from .crossprod import Blocks
from .linalg import batched_cholesky, batched_lower_solve, cholesky, logdet_and_schur


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


def eliminate_first_term(theta, blocks: Blocks) -> RestBlocks:
    """Factor term 1's block-diagonal part and form the Schur complement of the rest."""
    ts = parameters.factors(theta, blocks.sizes)
    t1, rest_t = ts[0], ts[1:]
    eye1 = jnp.eye(t1.shape[0])
    l1 = batched_cholesky(jnp.einsum("ab,iac,cd->ibd", t1, blocks.a11, t1) + eye1)
    v = batched_lower_solve(l1, jnp.broadcast_to(t1.T, l1.shape))
    w = jnp.einsum("iab,iac->ibc", v, v)  # T (T' A_i T + I)^{-1} T' per level
    xx = blocks.axx - jnp.einsum("iap,iab,ibq->pq", blocks.ax1, w, blocks.ax1)

    mz = blocks.mz
    if not mz:
        return RestBlocks(t1, rest_t, l1, jnp.zeros((0, 0)), jnp.zeros((0, xx.shape[0])), xx)
    g = jnp.einsum("iab,ibq->iaq", w, blocks.ax1)
    s_zx = jax.ops.segment_sum(
        jnp.einsum("ea,eaq->eq", blocks.entry_values, g[blocks.entry_level]),
        blocks.entry_row,
        num_segments=mz,
    )
    pair_values = jnp.einsum("kab,kab->k", blocks.pair_products, w[blocks.pair_level])
    low = jax.ops.segment_sum(
        pair_values, blocks.pair_target, num_segments=mz * mz, indices_are_sorted=True
    ).reshape(mz, mz)
    zz = blocks.azz - (low + low.T - jnp.diag(jnp.diag(low)))
    levels, sizes = blocks.n_levels[1:], blocks.sizes[1:]
    zz = apply_lambda(apply_lambda(zz, rest_t, levels, sizes).T, rest_t, levels, sizes)
    zx = apply_lambda((blocks.azx - s_zx).T, rest_t, levels, sizes).T
    return RestBlocks(t1, rest_t, l1, zz + jnp.eye(mz), zx, xx)


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


class Components(NamedTuple):
    """The pieces of the criterion at one theta."""

    logdet_l: jax.Array  # log|L|^2 (random effects)
    logdet_rx: jax.Array  # log|R_X|^2 (fixed effects)
    pwrss: jax.Array  # r^2, the penalised weighted residual sum of squares


def reduced_system(theta, blocks: Blocks):
    """log|L|^2 and the (p+1) x (p+1) system of [X y] left after eliminating all random effects:
    its top-left p x p block is R_X'R_X (the unscaled precision of beta)."""
    r = eliminate_first_term(theta, blocks)
    logdet_l = 2 * jnp.sum(jnp.log(jnp.diagonal(r.l1, axis1=-2, axis2=-1)))
    if not blocks.mz:
        return logdet_l, r.xx
    logdet_z, schur = logdet_and_schur(r.zz, r.zx, r.xx)
    return logdet_l + logdet_z, schur


def components(theta, blocks: Blocks) -> Components:
    logdet_l, schur = reduced_system(theta, blocks)
    d = jnp.diag(cholesky(schur))
    p = blocks.p
    return Components(logdet_l, 2 * jnp.sum(jnp.log(d[:p])), d[p] ** 2)


def objective(theta, blocks: Blocks, reml=True):
    """lme4's REML criterion (``REMLcrit``) or deviance (ML) at ``theta``; NaN where undefined.

    ``reml`` may be a traced boolean, so one compiled function serves both criteria.
    """
    c = components(theta, blocks)
    n, p = blocks.nobs, blocks.p
    dof = jnp.where(reml, n - p, n)
    value = c.logdet_l + dof * (1 + jnp.log(2 * jnp.pi * c.pwrss / dof)) - blocks.sum_log_weights
    return value + jnp.where(reml, c.logdet_rx, 0.0)
