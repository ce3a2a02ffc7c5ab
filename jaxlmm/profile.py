"""Likelihood profiles and profile confidence intervals (lme4's ``profile`` and
``confint(method = "profile")``).

As lme4 does, the ML deviance is profiled (a REML fit is refitted by ML first) over lme4's
parameters phi: each term's SDs and correlations, sigma, then the fixed effects. The deviance
is written in all of them, D(phi) = log|L|^2 + r^2(beta)/sigma^2 + n log(2 pi sigma^2), where
r^2(beta) comes from the reduced system of [X y]. The profile at phi_j = x minimises D over the
other parameters by exact Newton steps (the Hessian of D by autodiff; shifted where it is not
positive definite, and the step halved until D falls). zeta = sign(x - estimate)
sqrt(D - D_min), and its derivative is dD/dphi_j at that optimum (envelope theorem). A bound is
where zeta reaches -z or +z: safeguarded Newton steps on zeta, every step optimising the others
for all bounds at once in one compiled program. A parameter whose profile stays below z up to the
edge of its range (an SD of 0, a correlation of +-1) gets that edge.
"""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
from scipy import special

from . import parameters, programs
from .crossprod import Blocks
from .deviance import reduced_system
from .model import block_diagonal
from .optimize import autodiff, levenberg

MAX_STEPS = 30  # Newton steps on zeta per bound
NEWTON_STEPS = 12  # exact Newton steps for the other parameters at each pinned value
HALVINGS = 8  # step halvings tried when a Newton step does not lower the deviance
ZETA_TOL = 1e-4  # |zeta - target| at which a bound counts as found
CORRELATION_EDGE = 1e-6  # correlations are profiled within [-1 + this, 1 - this]


def full_deviance(phi, blocks: Blocks):
    """ML deviance at phi = (SDs and correlations per term, sigma, beta), padded as the blocks
    are, with the random effects at their conditional modes."""
    n_psi = blocks.n_theta + 1
    theta, sigma = parameters.theta_from_sdcor(phi[:n_psi], blocks.layout, blocks.width)
    logdet, schur = reduced_system(theta, blocks)
    coefficients = jnp.append(-phi[n_psi:], 1.0)  # y - X beta
    rss = coefficients @ schur @ coefficients
    sigma2 = sigma**2
    return (
        logdet
        + rss / sigma2
        + blocks.nobs * jnp.log(2 * jnp.pi * sigma2)
        - (blocks.sum_log_weights)
    )


def _pinned_optimum(phi, j, x, free, correlations, blocks: Blocks):
    """Minimise D over the ``free`` entries of ``phi`` other than ``j``, with phi_j = ``x``
    (``j`` past the end: nothing pinned). Returns phi, D, dD/dphi_j and the Hessian there.

    Where pinning phi_j leaves the correlation matrices not positive definite, the other
    ``correlations`` are first shrunk towards 0 until they are. Each round evaluates D's
    derivatives once; it stops when the Newton step no longer lowers D beyond rounding (the
    derivatives are then those of the point returned)."""
    n = phi.shape[0]
    derivatives = autodiff(partial(full_deviance, blocks=blocks)).value_grad_hess
    mask = free & (jnp.arange(n) != j)
    both = mask[:, None] & mask[None, :]
    eye = jnp.eye(n)

    def round_(state):
        k, phi, _, _, _, _ = state
        value, grad, hess = derivatives(phi)
        _, direction = levenberg(jnp.where(both, hess, eye), jnp.where(mask, grad, 0.0), False)

        def worse(alpha):
            trial = fun_at(phi + alpha * direction)
            return ~(jnp.isfinite(trial) & (trial <= value)) & (alpha > 0.5**HALVINGS)

        alpha = jax.lax.while_loop(worse, lambda alpha: alpha / 2, 1.0)
        decrease = -jnp.dot(grad, direction) * alpha
        done = ~(alpha > 0.5**HALVINGS) | (decrease <= 1e-12 * (1 + jnp.abs(value)))
        step = jnp.where(done, 0.0, alpha) * direction
        return k + 1, phi + step, done, value, grad, hess

    def fun_at(point):
        return full_deviance(point, blocks)

    phi = jnp.where(jnp.arange(n) == j, x, phi)
    others = correlations & (jnp.arange(n) != j)

    def shrunk(factor):
        return jnp.where(others, factor * phi, phi)

    factor = jax.lax.while_loop(
        lambda f: (f > 0) & ~jnp.isfinite(fun_at(shrunk(f))),
        lambda f: jnp.where(f < 1e-3, 0.0, f / 2),
        1.0,
    )
    phi = shrunk(factor)
    nan = jnp.full(n, jnp.nan)
    start = (0, phi, False, jnp.nan, nan, jnp.full((n, n), jnp.nan))
    _, phi, _, value, grad, hess = jax.lax.while_loop(
        lambda s: (s[0] < NEWTON_STEPS) & ~s[2], round_, start
    )
    return phi, value, grad[jnp.minimum(j, n - 1)], hess


def _profile_step(blocks: Blocks, phi, js, xs, free, correlations):
    """:func:`_pinned_optimum` for many (j, x) in one program. One after another (``lax.map``,
    not ``vmap``): batched LAPACK calls that XLA runs side by side can deadlock jaxlib's
    thread pool on a two-core machine."""

    def one(problem):
        phi, j, x = problem
        return _pinned_optimum(phi, j, x, free, correlations, blocks)

    return jax.lax.map(one, (phi, js, xs))


class _Profile:
    """The ML fit's parameters phi and everything the searches along them need, in units of
    the blocks' divided response."""

    def __init__(self, ml):
        # term 1 block-diagonal: each of the many Hessians of the searches costs little
        core = block_diagonal(ml.model)
        blocks, scale = (ml.blocks, ml.scale) if core is ml.model else core.blocks()
        self.blocks, self.scale, sizes = blocks, float(scale), ml.sizes
        n_theta, padded, p = len(ml.theta), self.blocks.n_theta, len(ml.fixef)
        self.real = np.concatenate(
            [np.arange(n_theta), [padded], padded + 1 + np.arange(p)]
        ).astype(int)  # positions of the real parameters in the padded phi
        n = padded + 1 + self.blocks.p
        self.phi = np.zeros(n)
        self.phi[self.real] = np.concatenate(
            [parameters.sdcor_values(ml.theta, sizes, ml.sigma / self.scale), ml.fixef / self.scale]
        )
        self.free = np.zeros(n, dtype=bool)
        self.free[self.real] = True
        kind = np.full(n, "beta", dtype=object)
        kind[: padded + 1][self.real[: n_theta + 1]] = np.append(
            np.where(parameters.diagonal_mask(sizes), "sd", "cor"), "sigma"
        )
        self.kind = kind
        self.units = np.where(np.isin(kind, ["sd", "sigma", "beta"]), self.scale, 1.0)
        out = self.step(self.phi[None], np.array([n]), np.zeros(1))
        self.deviance = float(out[1][0])
        hessian = out[3][0][np.ix_(self.real, self.real)]
        self.se = np.zeros(n)
        self.se[self.real] = np.sqrt(np.maximum(np.diag(2 * np.linalg.pinv(hessian)), 0.0))

    def step(self, phi, js, xs):
        """Pinned optima for the problems (js, xs), in chunks of one size (one compiled
        program per model: two problems per parameter, padded to a power of two)."""
        size = max(8, 1 << max(2 * len(self.real) - 1, 0).bit_length())
        parts = []
        for start in range(0, len(js), size):
            take = np.arange(start, start + size) % len(js)
            correlations = self.kind == "cor"
            out = programs.run(
                _profile_step, self.blocks, phi[take], js[take], xs[take], self.free, correlations
            )
            parts.append([np.asarray(a)[: len(js) - start] for a in out])
        return [np.concatenate(column) for column in zip(*parts, strict=True)]

    def domain(self, js):
        """Each parameter's range: a correlation stops just short of +-1, where the deviance is
        undefined (a bound found there is reported as the edge itself)."""
        kind = self.kind[js]
        edge = 1 - CORRELATION_EDGE
        low = np.select([kind == "sd", kind == "cor", kind == "sigma"], [0.0, -edge, 0.0], -np.inf)
        high = np.where(kind == "cor", edge, np.inf)
        return np.where(kind == "sigma", 1e-8 * self.phi[js], low), high

    def lift(self, phi):
        """Free SDs at least a small fraction of sigma: at an SD of exactly 0 the deviance is
        flat in it (it is even in each SD), so an optimiser started there would stay."""
        floor = 0.05 * self.phi[self.blocks.n_theta]
        return np.where(self.kind == "sd", np.maximum(np.abs(phi), floor), phi)

    def zeta(self, js, xs, phi):
        """zeta at (js, xs) and the optimum of the other parameters there."""
        phi, dev, slope, _ = self.step(self.lift(phi), js, xs)
        rise = np.maximum(dev - self.deviance, 0.0)
        return np.sign(xs - self.phi[js]) * np.sqrt(rise), phi, rise, slope


def _search(profile: _Profile, js, sides, z: float) -> np.ndarray:
    """Safeguarded Newton search on zeta for the bound of each (parameter js, side)."""
    estimate = profile.phi[js]
    low, high = profile.domain(js)
    target = sides * z
    x = np.clip(estimate + sides * np.where(profile.se[js] > 0, z * profile.se[js], 0.1), low, high)
    inside, outside = estimate.copy(), np.full_like(estimate, np.nan)
    result = np.full_like(estimate, np.nan)
    phi = np.tile(profile.phi, (len(js), 1))
    for _ in range(MAX_STEPS):
        zeta, phi, rise, slope = profile.zeta(js, x, phi)
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
        beyond = np.isfinite(newton) & (sides * (newton - inside) > 0)
        x = np.where(
            known,
            np.where(in_bracket, newton, (inside + outside) / 2),
            np.where(beyond, newton, estimate + 2 * (x - estimate)),
        )
        x = np.clip(x, low, high)
    correlation = profile.kind[js] == "cor"
    return np.where(correlation & (np.abs(result) >= 1 - CORRELATION_EDGE), np.sign(result), result)


def _names(fit) -> list[str]:
    return parameters.sdcor_names(fit.design.terms) + list(fit.design.fixed_names)


def profile_confint(fit, level: float = 0.95) -> pd.DataFrame:
    """Profile-likelihood intervals with rows in lme4's ``confint(oldNames = FALSE)`` order."""
    profile = _Profile(fit.ml_fit())
    z = float(special.ndtri((1 + level) / 2))
    js = np.repeat(profile.real, 2)
    sides = np.tile([-1.0, 1.0], len(profile.real))
    bounds = _search(profile, js, sides, z) * profile.units[js]
    return pd.DataFrame(bounds.reshape(-1, 2), index=_names(fit), columns=["lower", "upper"])


def profile_frame(fit, level: float = 0.99, points: int = 9) -> pd.DataFrame:
    """Points of each parameter's profile (lme4's ``profile``): a long frame with
    ``parameter, value, zeta``, ``points`` values each side of the estimate out to the
    ``level`` profile bound (zeta = 0 at the estimate)."""
    profile = _Profile(fit.ml_fit())
    z = float(special.ndtri((1 + level) / 2))
    js = np.repeat(profile.real, 2)
    sides = np.tile([-1.0, 1.0], len(profile.real))
    bounds = _search(profile, js, sides, z)
    fractions = np.arange(1, points + 1) / points
    rows_j = np.repeat(js, points)
    estimate = profile.phi[rows_j]
    xs = estimate + np.tile(fractions, len(js)) * (np.repeat(bounds, points) - estimate)
    finite = np.isfinite(xs)
    zeta = np.full(len(xs), np.nan)
    phi = np.tile(profile.phi, (finite.sum(), 1))
    zeta[finite] = profile.zeta(rows_j[finite], xs[finite], phi)[0]
    names = np.array(_names(fit), dtype=object)
    index = {j: k for k, j in enumerate(profile.real)}
    labels = names[[index[j] for j in rows_j]]
    frame = pd.DataFrame({"parameter": labels, "value": xs * profile.units[rows_j], "zeta": zeta})
    centre = pd.DataFrame(
        {
            "parameter": names,
            "value": profile.phi[profile.real] * profile.units[profile.real],
            "zeta": 0.0,
        }
    )
    frame = pd.concat([frame[finite], centre], ignore_index=True)
    order = {name: k for k, name in enumerate(names)}
    frame["_order"] = frame["parameter"].map(order)
    return frame.sort_values(["_order", "value"]).drop(columns="_order").reset_index(drop=True)
