"""Estimates at a given theta: fixed effects, conditional modes and their variances.

All by back-substitution through the blocked system of :mod:`jaxlmm.deviance`; pure JAX.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from .crossprod import Blocks
from .deviance import eliminate_first_term, factorize
from .linalg import (
    banded_times,
    batched_lower_solve,
    batched_upper_solve,
    cholesky,
    spd_solve,
    times_banded,
)


class Solution(NamedTuple):
    """Conditional estimates at theta (random effects on the scale of the data: b = Lambda u)."""

    beta: jax.Array  # (p,)
    b1: jax.Array  # (ng1, s1): term 1, one row per level
    b_rest: jax.Array  # (mz,): later terms, level-major
    pwrss: jax.Array  # penalised weighted residual sum of squares r^2
    vcov_unscaled: jax.Array  # (p, p): (R_X' R_X)^{-1}


def solve(theta, blocks: Blocks) -> Solution:
    """beta, b and (R_X'R_X)^{-1} at theta: the later terms' block solved against [X y] where
    it lies (one matrix held), beta from the factor of the Schur complement of [X y], the
    random effects from beta."""
    f = eliminate_first_term(theta, blocks)
    p = blocks.p
    x, schur = f.zx, f.xx
    if blocks.mz:
        _, x = spd_solve(f.zz, f.zx)  # zz^-1 [zx_X zx_y]
        schur = f.xx - f.zx.T @ x
    low = cholesky(schur)  # [[R_X', 0], [c', r]]: R_X beta = c, r^2 the penalised RSS
    beta = jax.scipy.linalg.solve_triangular(low[:p, :p], low[p, :p], lower=True, trans="T")
    b_rest = banded_times((x[:, p] - x[:, :p] @ beta)[:, None], f.v)[:, 0]
    rx_inv = jax.scipy.linalg.solve_triangular(low[:p, :p], jnp.eye(p), lower=True)
    solution = Solution(
        beta=beta,
        b1=jnp.zeros(f.l1.shape[:2], beta.dtype),
        b_rest=b_rest,
        pwrss=low[p, p] ** 2,
        vcov_unscaled=rx_inv.T @ rx_inv,
    )
    if not len(f.l1):  # every random effect in the dense block
        return solution
    explained = jnp.einsum("iap,p->ia", blocks.ax1[:, :, :p], beta)
    if blocks.mz:
        coupling = blocks.entry_values * b_rest[blocks.entry_row][:, None]
        explained += jax.ops.segment_sum(coupling, blocks.entry_level, num_segments=len(f.l1))
    rhs = jnp.einsum("ab,ia->ib", f.t1, blocks.ax1[:, :, p] - explained)
    u1 = batched_upper_solve(f.l1, batched_lower_solve(f.l1, rhs[..., None]))[..., 0]
    return solution._replace(b1=u1 @ f.t1.T)


def conditional_covariances(theta, blocks: Blocks):
    """Var(b | y, beta) / sigma^2: term 1's per-level blocks (ng1, s1, s1) and the later terms'
    whole (mz, mz) matrix (the caller takes each level's block from it).

    These are the diagonal blocks of Lambda (Lambda'Z'WZ Lambda + I)^{-1} Lambda', as lme4's
    ``ranef(condVar = TRUE)``; the inverse's term-1 blocks add the fill-in through later terms.
    """
    f = factorize(theta, blocks)
    mz, (ng1, s1, _) = blocks.mz, f.l1.shape
    eye1 = jnp.broadcast_to(jnp.eye(s1), (ng1, s1, s1))
    m1_inv = batched_upper_solve(f.l1, batched_lower_solve(f.l1, eye1))
    inv_lzz = jax.scipy.linalg.solve_triangular(f.rest[:mz, :mz], jnp.eye(mz), lower=True)
    coupling = (
        jnp.zeros((mz, ng1, s1)).at[blocks.entry_row, blocks.entry_level].add(blocks.entry_values)
    )
    k = times_banded(coupling.reshape(mz, ng1 * s1).T, f.v)  # A_1z Lambda_z
    k = jnp.einsum("ab,iam->ibm", f.t1, k.reshape(ng1, s1, mz))  # T1' A_1z Lambda_z per level
    fill = batched_upper_solve(f.l1, batched_lower_solve(f.l1, k))  # M1^{-1} T1' A_1z Lambda_z
    h = (inv_lzz @ fill.transpose(2, 0, 1).reshape(mz, ng1 * s1)).reshape(mz, ng1, s1)
    term1 = m1_inv + jnp.einsum("mia,mib->iab", h, h)
    lambda_inv = banded_times(inv_lzz.T, f.v)  # Lambda_z L_zz^{-T}
    return jnp.einsum("ab,ibc,dc->iad", f.t1, term1, f.t1), lambda_inv @ lambda_inv.T
