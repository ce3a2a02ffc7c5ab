"""Estimates at a given theta: fixed effects, conditional modes and their variances.

All by back-substitution through the blocked factor of :mod:`jaxlmm.deviance`; pure JAX.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from .crossprod import Blocks
from .deviance import apply_lambda, factorize
from .linalg import batched_lower_solve, batched_upper_solve


class Solution(NamedTuple):
    """Conditional estimates at theta (random effects on the scale of the data: b = Lambda u)."""

    beta: jax.Array  # (p,)
    b1: jax.Array  # (ng1, s1): term 1, one row per level
    b_rest: jax.Array  # (mz,): later terms, level-major
    pwrss: jax.Array  # penalised weighted residual sum of squares r^2
    vcov_unscaled: jax.Array  # (p, p): (R_X' R_X)^{-1}


def _transposed(ts):
    return [t.T for t in ts]


def solve(theta, blocks: Blocks) -> Solution:
    """beta, b and (R_X'R_X)^{-1} at theta."""
    f = factorize(theta, blocks)
    mz, p = blocks.mz, blocks.p
    low = f.rest[:-1, :-1]
    sol = jax.scipy.linalg.solve_triangular(low, f.rest[-1, :-1], lower=True, trans="T")
    u_rest, beta = sol[:mz], sol[mz:]
    levels, sizes = blocks.n_levels[1:], blocks.sizes[1:]
    b_rest = apply_lambda(u_rest[None, :], _transposed(f.rest_t), levels, sizes)[0]

    explained = jnp.einsum("iap,p->ia", blocks.ax1[:, :, :p], beta)
    if mz:
        coupling = blocks.entry_values * b_rest[blocks.entry_row][:, None]
        explained += jax.ops.segment_sum(
            coupling, blocks.entry_level, num_segments=blocks.n_levels[0]
        )
    rhs = jnp.einsum("ab,ia->ib", f.t1, blocks.ax1[:, :, p] - explained)
    u1 = batched_upper_solve(f.l1, batched_lower_solve(f.l1, rhs[..., None]))[..., 0]

    rx = low[mz:, mz:]
    rx_inv = jax.scipy.linalg.solve_triangular(rx, jnp.eye(p), lower=True)
    return Solution(
        beta=beta,
        b1=u1 @ f.t1.T,
        b_rest=b_rest,
        pwrss=f.rest[-1, -1] ** 2,
        vcov_unscaled=rx_inv.T @ rx_inv,
    )


def conditional_covariances(theta, blocks: Blocks):
    """Var(b | y, beta) / sigma^2 per level: (ng1, s1, s1) for term 1, then each later term.

    These are the diagonal blocks of Lambda (Lambda'Z'WZ Lambda + I)^{-1} Lambda', as lme4's
    ``ranef(condVar = TRUE)``; the inverse's term-1 blocks add the fill-in through later terms.
    """
    f = factorize(theta, blocks)
    mz, ng1, s1 = blocks.mz, blocks.n_levels[0], blocks.sizes[0]
    eye1 = jnp.broadcast_to(jnp.eye(s1), (ng1, s1, s1))
    m1_inv = batched_upper_solve(f.l1, batched_lower_solve(f.l1, eye1))
    if not mz:
        return [jnp.einsum("ab,ibc,dc->iad", f.t1, m1_inv, f.t1)]

    inv_lzz = jax.scipy.linalg.solve_triangular(f.rest[:mz, :mz], jnp.eye(mz), lower=True)
    coupling = (
        jnp.zeros((mz, ng1, s1)).at[blocks.entry_row, blocks.entry_level].add(blocks.entry_values)
    )
    levels, sizes = blocks.n_levels[1:], blocks.sizes[1:]
    k = apply_lambda(coupling.reshape(mz, ng1 * s1).T, f.rest_t, levels, sizes)  # A_1z Lambda_z
    k = jnp.einsum("ab,iam->ibm", f.t1, k.reshape(ng1, s1, mz))  # T1' A_1z Lambda_z per level
    fill = batched_upper_solve(f.l1, batched_lower_solve(f.l1, k))  # M1^{-1} T1' A_1z Lambda_z
    h = inv_lzz @ fill.transpose(2, 0, 1).reshape(mz, ng1 * s1)
    h = h.reshape(mz, ng1, s1)
    term1 = m1_inv + jnp.einsum("mia,mib->iab", h, h)
    result = [jnp.einsum("ab,ibc,dc->iad", f.t1, term1, f.t1)]

    p_zz = inv_lzz.T @ inv_lzz
    start = 0
    for t, ng, s in zip(f.rest_t, levels, sizes, strict=True):
        idx = start + jnp.arange(ng)[:, None] * s + jnp.arange(s)[None, :]
        block = p_zz[idx[:, :, None], idx[:, None, :]]
        result.append(jnp.einsum("ab,ibc,dc->iad", t, block, t))
        start += ng * s
    return result
