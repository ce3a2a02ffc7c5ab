"""Profile-likelihood confidence intervals (lme4's ``confint(method = "profile")``).

As lme4 does, the ML deviance is profiled (a REML fit is refitted by ML first) over lme4's
parameters: each term's SDs and correlations, sigma, then the fixed effects. A bound is where
zeta = sign(x - estimate) sqrt(deviance rise) reaches -z or +z. Each bound is found by
safeguarded Newton steps on zeta; zeta's derivative comes from the gradient with respect to the
pinned parameter at the constrained optimum (envelope theorem), so no extra fits are needed.
Every step optimises the other parameters for all bounds at once, in one vmapped call.
"""

from __future__ import annotations

import dataclasses
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
from scipy import stats

from . import parameters
from .crossprod import Blocks
from .deviance import objective
from .inference import varpar_deviance
from .optimize import bfgs

MAX_STEPS = 30  # Newton steps on zeta per bound
MAX_ITERATIONS, GTOL = 100, 1e-6  # BFGS for the other parameters at each step
ZETA_TOL = 1e-4  # |zeta - target| at which a bound counts as found


def _insert(free, j, x):
    """``free`` with ``x`` inserted at position ``j`` (a traced index, so it works under vmap)."""
    k = jnp.arange(free.shape[0] + 1)
    source = jnp.clip(jnp.where(k < j, k, k - 1), 0, free.shape[0] - 1)
    return jnp.where(k == j, x, free[source])


def _sdcor_deviance(psi, blocks: Blocks):
    """ML deviance at lme4's (SDs, correlations, sigma), beta profiled."""
    theta, sigma = parameters.theta_from_sdcor(psi, blocks.sizes)
    return varpar_deviance(jnp.append(theta, sigma), blocks, reml=False)


def _fix_coefficient(blocks: Blocks, j, x) -> Blocks:
    """Blocks of the model with beta_j fixed at ``x``: column j of X leaves, y becomes
    y - x X_j. A linear map E of the [X y] columns, so only the blocks touching them change."""
    p = blocks.p
    new = jnp.arange(p)
    old = jnp.where(new < j, new, new + 1)
    e = jnp.zeros((p + 1, p)).at[old[: p - 1], new[: p - 1]].set(1.0)
    e = e.at[p, p - 1].set(1.0).at[j, p - 1].add(-x)
    return dataclasses.replace(
        blocks,
        ax1=jnp.einsum("iaq,qr->iar", blocks.ax1, e),
        axx=e.T @ blocks.axx @ e,
        azx=blocks.azx @ e,
    )


def _fixed_deviance(theta, j, x, blocks: Blocks):
    return objective(theta, _fix_coefficient(blocks, j, x), reml=False)


def _optimise_all(deviance, free0, js, xs):
    """Minimise ``deviance(free, j, x)`` over ``free`` for every (j, x); the deviance and its
    derivative in x at each optimum. BFGS without a Hessian (each start is the previous
    step's optimum, and compiling a Hessian costs more than it saves here)."""

    def one(free0, j, x):
        fun = partial(deviance, j=j, x=x)
        free, _ = bfgs(jax.value_and_grad(fun), free0, MAX_ITERATIONS, GTOL)
        value, slope = jax.value_and_grad(deviance, argnums=2)(free, j, x)
        return free, value, slope

    return jax.vmap(one)(free0, js, xs)


@jax.jit
def _varpar_step(blocks: Blocks, free0, js, xs):
    def deviance(free, j, x):
        return _sdcor_deviance(_insert(free, j, x), blocks)

    return _optimise_all(deviance, free0, js, xs)


@jax.jit
def _fixed_step(blocks: Blocks, free0, js, xs):
    return _optimise_all(partial(_fixed_deviance, blocks=blocks), free0, js, xs)


def _search(step, free0, estimate, start, low, high, z, dev_min, floor):
    """Safeguarded Newton search for the bounds, vectorised over problems.

    ``step(free0, x) -> (free, deviance, slope)``. ``estimate``, ``start``, ``low`` and
    ``high`` (the parameter's domain) have one entry per problem; ``start - estimate`` gives
    each problem's side. ``floor(free)`` lifts free parameters off a zero-gradient boundary.
    """
    side = np.sign(start - estimate)
    target = side * z
    x = np.clip(start, low, high)
    inside, outside = estimate.copy(), np.full_like(estimate, np.nan)
    result = np.full_like(estimate, np.nan)
    free = free0
    for _ in range(MAX_STEPS):
        free, dev, slope = jax.device_get(step(floor(free), x))
        rise = np.maximum(dev - dev_min, 0.0)
        zeta = np.sign(x - estimate) * np.sqrt(rise)
        found = np.isfinite(zeta) & (np.abs(zeta - target) < ZETA_TOL)
        at_edge = ((x <= low) | (x >= high)) & (np.abs(zeta) < z)
        result = np.where(np.isnan(result) & (found | at_edge), x, result)
        if not np.any(np.isnan(result)):
            break
        within = np.isfinite(zeta) & (np.abs(zeta) < z)
        inside = np.where(within, x, inside)
        outside = np.where(~within, x, outside)
        with np.errstate(divide="ignore", invalid="ignore"):
            newton = x + (target - zeta) * 2 * np.sqrt(rise) / slope
        known = np.isfinite(outside)
        lo_b, hi_b = np.minimum(inside, outside), np.maximum(inside, outside)
        in_bracket = np.isfinite(newton) & (newton > lo_b) & (newton < hi_b)
        beyond = np.isfinite(newton) & (side * (newton - inside) > 0)
        x = np.where(
            known,
            np.where(in_bracket, newton, (inside + outside) / 2),
            np.where(beyond, newton, estimate + 2 * (x - estimate)),
        )
        x = np.clip(x, low, high)
    return result


def _variance_bounds(ml, z: float) -> np.ndarray:
    """Bounds of the SDs, correlations and sigma: each pinned in turn, the others free on the
    same scale (beta profiled). (2 * n, ) lower and upper per parameter."""
    sizes = ml.blocks.sizes
    psi = np.asarray(parameters.sdcor(jnp.asarray(ml.theta), ml.sigma, sizes))
    n_psi = len(psi)
    is_sd = np.append(parameters.diagonal_mask(sizes), True)
    se = np.sqrt(np.diag(ml.vcov_sdcor.to_numpy()))
    half = np.where(np.isfinite(se) & (se > 0), z * se, np.where(is_sd, 0.25 * ml.sigma, 0.25))
    js = np.repeat(np.arange(n_psi), 2)
    sides = np.tile([-1.0, 1.0], n_psi)
    low = np.where(is_sd, 0.0, -1.0)[js]
    low[js == n_psi - 1] = 1e-8 * ml.sigma
    high = np.where(is_sd, np.inf, 1.0)[js]
    free_sd = np.array([np.delete(is_sd, j) for j in js])
    sd_floor = 0.05 * ml.sigma

    def lift_sds(free):
        return np.where(free_sd & (np.abs(free) < sd_floor), sd_floor, free)

    return _search(
        lambda free, x: _varpar_step(ml.blocks, free, js, x),
        np.array([np.delete(psi, j) for j in js]),
        psi[js],
        psi[js] + sides * half[js],
        low,
        high,
        z,
        ml.objective,
        lift_sds,
    )


def _fixed_bounds(ml, z: float) -> np.ndarray:
    """Bounds of the fixed effects: beta_j pinned, theta free (sigma, other betas profiled)."""
    beta, se = ml.fixef.to_numpy(), ml.std_errors.to_numpy()
    p = len(beta)
    if not p:
        return np.zeros(0)
    js = np.repeat(np.arange(p), 2)
    sides = np.tile([-1.0, 1.0], p)
    return _search(
        lambda free, x: _fixed_step(ml.blocks, free, js, x),
        np.tile(ml.theta, (2 * p, 1)),
        beta[js],
        beta[js] + sides * z * se[js],
        np.full(2 * p, -np.inf),
        np.full(2 * p, np.inf),
        z,
        ml.objective,
        partial(parameters.off_boundary, sizes=ml.blocks.sizes, floor=0.05),
    )


def profile_confint(fit, level: float = 0.95) -> pd.DataFrame:
    """Profile-likelihood intervals with rows in lme4's ``confint(oldNames = FALSE)`` order."""
    ml = fit.ml_fit()
    z = float(stats.norm.ppf((1 + level) / 2))
    bounds = np.concatenate([_variance_bounds(ml, z), _fixed_bounds(ml, z)]).reshape(-1, 2)
    names = parameters.sdcor_names(fit.design.terms) + list(fit.design.fixed_names)
    return pd.DataFrame(bounds, index=names, columns=["lower", "upper"])
