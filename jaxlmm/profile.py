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
from scipy import special

from . import parameters, programs
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
    theta, sigma = parameters.theta_from_sdcor(psi, blocks.layout, blocks.width)
    return varpar_deviance(jnp.append(theta, sigma), blocks, reml=False)


def _fix_coefficient(blocks: Blocks, j, x) -> Blocks:
    """Blocks of the model with beta_j fixed at ``x``: y becomes y - x X_j and column j turns
    into a padding column (zero, unit diagonal). A linear map E of the [X y] columns, so only
    the blocks touching them change; the shapes stay (one program for every j)."""
    p = blocks.p
    keep = (jnp.arange(p + 1) != j).astype(blocks.axx.dtype)
    e = (jnp.eye(p + 1) * keep).at[j, p].add(-x)
    unit = jnp.diag(1.0 - keep)
    return dataclasses.replace(
        blocks,
        ax1=jnp.einsum("iaq,qr->iar", blocks.ax1, e),
        axx=e.T @ blocks.axx @ e + unit,
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


def _varpar_step(blocks: Blocks, free0, js, xs):
    def deviance(free, j, x):
        return _sdcor_deviance(_insert(free, j, x), blocks)

    return _optimise_all(deviance, free0, js, xs)


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


def _problems(count: int) -> np.ndarray:
    """Problem indices padded (by repeating the first) to a power of two, so that models with
    a similar number of parameters share the compiled step."""
    size = max(8, 1 << max(count - 1, 0).bit_length())
    return np.concatenate([np.arange(count), np.zeros(size - count, dtype=int)])


def _variance_bounds(ml, z: float) -> np.ndarray:
    """Bounds of the SDs, correlations and sigma: each pinned in turn, the others free on the
    same scale (beta profiled). (2 * n, ) lower and upper per parameter, in units of the
    blocks' divided response."""
    blocks, scale, sizes = ml.blocks, ml.scale, ml.sizes
    n_theta, padded = len(ml.theta), blocks.n_theta
    real = np.append(np.arange(n_theta), padded)  # positions of the real entries in psi
    psi = np.zeros(padded + 1)
    psi[real] = parameters.sdcor_values(ml.theta, sizes, ml.sigma / scale)
    is_sd = np.zeros(padded + 1, dtype=bool)
    is_sd[real] = np.append(parameters.diagonal_mask(sizes), True)
    se = np.zeros(padded + 1)
    se[real] = np.sqrt(np.diag(ml.vcov_sdcor.to_numpy())) / np.where(is_sd[real], scale, 1.0)
    sigma = psi[-1]
    half = np.where(np.isfinite(se) & (se > 0), z * se, np.where(is_sd, 0.25 * sigma, 0.25))
    problems = _problems(2 * len(real))
    js = np.repeat(real, 2)[problems]
    sides = np.tile([-1.0, 1.0], len(real))[problems]
    low = np.where(is_sd, 0.0, -1.0)[js]
    low[js == padded] = 1e-8 * sigma
    high = np.where(is_sd, np.inf, 1.0)[js]
    free_sd = np.array([np.delete(is_sd, j) for j in js])
    sd_floor = 0.05 * sigma

    def lift_sds(free):
        return np.where(free_sd, np.maximum(np.abs(free), sd_floor), free)

    bounds = _search(
        lambda free, x: programs.run(_varpar_step, blocks, free, js, x),
        np.array([np.delete(psi, j) for j in js]),
        psi[js],
        psi[js] + sides * half[js],
        low,
        high,
        z,
        float(ml.opt.value),
        lift_sds,
    )[: 2 * len(real)]
    return bounds * np.repeat(np.where(is_sd[real], scale, 1.0), 2)


def _fixed_bounds(ml, z: float) -> np.ndarray:
    """Bounds of the fixed effects: beta_j pinned, theta free (sigma, other betas profiled)."""
    scale = ml.scale
    beta, se = ml.fixef.to_numpy() / scale, ml.std_errors.to_numpy() / scale
    p = len(beta)
    if not p:
        return np.zeros(0)
    problems = _problems(2 * p)
    js = np.repeat(np.arange(p), 2)[problems]
    sides = np.tile([-1.0, 1.0], p)[problems]
    theta = parameters.pad_theta(ml.theta, ml.blocks.n_theta)
    diagonal = np.asarray(ml.blocks.layout.diagonal)
    bounds = _search(
        lambda free, x: programs.run(_fixed_step, ml.blocks, free, js, x),
        np.tile(theta, (len(js), 1)),
        beta[js],
        beta[js] + sides * z * se[js],
        np.full(len(js), -np.inf),
        np.full(len(js), np.inf),
        z,
        float(ml.opt.value),
        lambda free: np.where(diagonal & (np.abs(free) < 0.05), 0.05, free),
    )[: 2 * p]
    return bounds * scale


def profile_confint(fit, level: float = 0.95) -> pd.DataFrame:
    """Profile-likelihood intervals with rows in lme4's ``confint(oldNames = FALSE)`` order."""
    ml = fit.ml_fit()
    z = float(special.ndtri((1 + level) / 2))
    bounds = np.concatenate([_variance_bounds(ml, z), _fixed_bounds(ml, z)]).reshape(-1, 2)
    names = parameters.sdcor_names(fit.design.terms) + list(fit.design.fixed_names)
    return pd.DataFrame(bounds, index=names, columns=["lower", "upper"])
