"""Minimise a smooth criterion of theta: BFGS, boundary snapping, exact Newton polish, check.

Pure JAX with a fixed control flow, so the same code runs under ``jit`` and ``vmap``. Failures
are reported as status codes in the result, never raised.
"""

from __future__ import annotations

from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp

from .linalg import cho_solve, cholesky

CONVERGED = 0
NONFINITE = 1  # the criterion is not finite at the solution
GRADIENT_NOT_SMALL = 2  # the Newton step at the solution is too large
HESSIAN_NOT_PD = 3  # the Hessian on the free parameters is not positive definite

STATUS_MESSAGES = {
    CONVERGED: "converged",
    NONFINITE: "criterion not finite at the solution",
    GRADIENT_NOT_SMALL: "gradient not small at the solution (scaled gradient above tolerance)",
    HESSIAN_NOT_PD: "Hessian not positive definite at the solution",
}

BOUNDARY_SNAP = 1e-2  # |theta_j| below this is tried at exactly 0 ...
BOUNDARY_RISE = 1e-7  # ... and kept there if the criterion rises by at most this
SCALED_GRADIENT_TOL = 1e-3  # convergence check on H^{-1} g, as lme4's relative gradient
POLISH_TOL = 1e-5  # Newton steps are taken while H^{-1} g exceeds this
BATCHED_ITERATIONS = (25, 0)  # BFGS iterations and Newton steps under vmap


class OptResult(NamedTuple):
    """Outcome of :func:`minimize` (a pytree, so it batches under ``vmap``)."""

    theta: jax.Array
    value: jax.Array
    gradient: jax.Array
    hessian: jax.Array
    on_boundary: jax.Array  # bool per theta: held at 0
    iterations: jax.Array
    status: jax.Array


def _value_grad_hess(fun):
    """theta -> (value, gradient, Hessian), the Hessian by forward over reverse mode."""
    value_and_grad = jax.value_and_grad(fun)

    def grad_and_aux(theta):
        value, grad = value_and_grad(theta)
        return grad, (value, grad)

    def derivatives(theta):
        hess, (value, grad) = jax.jacfwd(grad_and_aux, has_aux=True)(theta)
        return value, grad, hess

    return derivatives


class _BfgsState(NamedTuple):
    theta: jax.Array
    value: jax.Array
    grad: jax.Array
    inv_hess: jax.Array  # approximation of the inverse Hessian
    step: jax.Array  # step length to try along the next direction
    iteration: jax.Array
    done: jax.Array


def _backtrack(fun, theta, value, slope, direction, max_steps=20, c1=1e-4):
    """Armijo backtracking along ``direction`` from step 1, by safeguarded quadratic steps.

    Trial points cost one evaluation of ``fun`` each, no gradient. Returns the accepted
    point, or ``theta`` itself when no step decreases ``fun``.
    """

    def rejected(carry):
        step, trial_value, k = carry
        ok = jnp.isfinite(trial_value) & (trial_value <= value + c1 * step * slope)
        return ~ok & (k < max_steps)

    def shrink(carry):
        step, trial_value, k = carry
        new_step = _shrunk_step(step, trial_value, value, slope)
        return new_step, fun(theta + new_step * direction), k + 1

    step, trial_value, _ = jax.lax.while_loop(
        rejected, shrink, (jnp.ones(()), fun(theta + direction), jnp.zeros((), jnp.int32))
    )
    found = jnp.isfinite(trial_value) & (trial_value <= value + c1 * step * slope)
    return jnp.where(found, theta + step * direction, theta)


def _shrunk_step(step, trial_value, value, slope):
    """Next step length after a rejected trial: safeguarded quadratic interpolation."""
    bend = trial_value - value - step * slope
    quadratic = -slope * step**2 / (2 * bend)
    return jnp.where(
        jnp.isfinite(trial_value) & (bend > 0),
        jnp.clip(quadratic, 0.1 * step, 0.5 * step),
        0.1 * step,
    )


def bfgs(fun, theta0, max_iter, gtol, batched, ftol=1e-12, first_step=0.5, max_step=1.0, c1=1e-4):
    """BFGS with a dense inverse-Hessian approximation (theta is small) and Armijo steps.

    Alone, an iteration backtracks with values only and then takes the gradient at the
    accepted point; the first iteration only evaluates ``theta0`` (a zero step accepted against
    an infinite value, so fun and its gradient are traced once) and the first real step moves
    at most ``first_step`` in any coordinate. ``batched`` (for ``vmap``, where every response
    pays for the slowest): BFGS starts from the exact inverse Hessian at ``theta0`` (when it is
    positive definite), which saves more iterations than the Hessian costs, and an iteration
    evaluates value and gradient at exactly one trial point, a rejection shrinking the step for
    the next iteration, so no response waits for another's line search. Steps move at most
    ``max_step`` in any coordinate: far from the optimum the criterion is far from quadratic.
    """
    n = theta0.shape[0]
    eye = jnp.eye(n)
    value_and_grad = jax.value_and_grad(fun)

    def scaled_identity(grad):  # the first step moves at most first_step in any coordinate
        return eye * first_step / jnp.maximum(jnp.max(jnp.abs(grad)), 1e-12)

    def rescale(state):  # Shanno-Phua scaling after the first step from the identity
        return (state.iteration == 1) & (not batched)

    def body(state):
        direction = -state.inv_hess @ state.grad
        descent = direction @ state.grad < 0
        direction = jnp.where(descent, direction, -state.grad)
        cap = jnp.minimum(1.0, max_step / jnp.maximum(jnp.max(jnp.abs(direction)), 1e-300))
        direction = cap * direction
        slope = direction @ state.grad
        if batched:
            trial = state.theta + state.step * direction
        else:
            trial = _backtrack(fun, state.theta, state.value, slope, direction)
        value, grad = value_and_grad(trial)
        accept = jnp.isfinite(value)
        if batched:  # alone, backtracking has already ensured the decrease (or kept theta)
            accept &= value <= state.value + c1 * state.step * slope

        first = state.iteration == 0
        s, y = trial - state.theta, grad - state.grad
        sy = s @ y
        inv_hess = jnp.where(
            first,
            scaled_identity(grad),
            jnp.where(rescale(state), eye * sy / (y @ y), state.inv_hess),
        )
        rho = 1.0 / sy
        update = (eye - rho * jnp.outer(s, y)) @ inv_hess @ (eye - rho * jnp.outer(y, s))
        update = update + rho * jnp.outer(s, s)
        curvature_ok = ~first & (sy > 1e-12 * jnp.sqrt((s @ s) * (y @ y)))
        inv_hess = jnp.where(curvature_ok, update, inv_hess)

        shrunk = _shrunk_step(state.step, value, state.value, slope)
        # Stop when a step no longer lowers fun beyond rounding (its noise is ~1e-14 relative).
        stalled = ~first & (state.value - value <= ftol * (1 + jnp.abs(value)))
        done = jnp.where(accept, stalled | (jnp.max(jnp.abs(grad)) < gtol), shrunk < 1e-10)
        pick = partial(jnp.where, accept)
        return _BfgsState(
            pick(trial, state.theta),
            pick(value, state.value),
            pick(grad, state.grad),
            pick(inv_hess, state.inv_hess),
            pick(1.0, shrunk),
            state.iteration + 1,
            done,
        )

    one, no = jnp.ones(()), jnp.array(False)
    if batched:
        value, grad, hess = _value_grad_hess(fun)(theta0)
        newton = cho_solve(cholesky(hess), eye)
        inv_hess = jnp.where(jnp.all(jnp.isfinite(newton)), newton, scaled_identity(grad))
        start = _BfgsState(theta0, value, grad, inv_hess, one, jnp.ones((), jnp.int32), no)
    else:
        zero = jnp.zeros((), jnp.int32)
        start = _BfgsState(theta0, jnp.array(jnp.inf), jnp.zeros(n), eye, one, zero, no)
    state = jax.lax.while_loop(lambda st: ~st.done & (st.iteration < max_iter), body, start)
    return state.theta, state.iteration


def _snap_to_boundary(fun, theta, diagonal):
    """Try each small diagonal entry at exactly 0; keep it there if fun rises by at most a hair."""
    indices = jnp.asarray(diagonal.nonzero()[0])
    if not len(indices):
        return theta, jnp.zeros(theta.shape, dtype=bool)

    def value_if(small, point):  # a single fit skips evaluations that cannot snap
        return jax.lax.cond(small, fun, lambda _: jnp.array(jnp.inf), point)

    def body(k, carry):
        theta, value, on_boundary = carry
        j = indices[k]
        candidate = theta.at[j].set(0.0)
        small = jnp.abs(theta[j]) < BOUNDARY_SNAP
        cand_value = value_if(small, candidate)
        snap = small & (cand_value <= value + BOUNDARY_RISE)
        return (
            jnp.where(snap, candidate, theta),
            jnp.where(snap, cand_value, value),
            on_boundary.at[j].set(snap),
        )

    any_small = jnp.any(jnp.abs(theta[indices]) < BOUNDARY_SNAP)
    start = (theta, value_if(any_small, theta), jnp.zeros(theta.shape, dtype=bool))
    theta, _, on_boundary = jax.lax.fori_loop(0, len(indices), body, start)
    return theta, on_boundary


class _Derivatives(NamedTuple):
    value: jax.Array
    grad: jax.Array
    hess: jax.Array
    chol: jax.Array  # Cholesky factor of the Hessian on the free coordinates (NaN if not PD)
    step: jax.Array  # Newton step H^{-1} g on the free coordinates


def _newton_polish(fun, theta, free, max_steps):
    """Exact Newton steps on the free coordinates while the step exceeds POLISH_TOL.

    A step is kept only if it does not raise fun. Returns theta and the derivatives at it,
    which the convergence check reuses (the Hessian is traced once, inside the loop).
    """
    value_grad_hess = _value_grad_hess(fun)
    both = free[:, None] & free[None, :]
    eye = jnp.eye(theta.shape[0])

    def derivatives(theta):
        value, grad, hess = value_grad_hess(theta)
        chol = cholesky(jnp.where(both, hess, eye))
        step = cho_solve(chol, jnp.where(free, grad, 0.0))
        return _Derivatives(value, grad, hess, chol, step)

    def keep_going(carry):
        k, _, d, stop = carry
        return (k == 0) | (~stop & (k <= max_steps) & (jnp.max(jnp.abs(d.step)) > POLISH_TOL))

    def body(carry):
        k, theta, d, _ = carry
        candidate = jnp.where((k > 0) & jnp.all(jnp.isfinite(d.step)), theta - d.step, theta)
        new = derivatives(candidate)
        accept = (k == 0) | (jnp.isfinite(new.value) & (new.value <= d.value))
        pick = partial(jnp.where, accept)
        return k + 1, pick(candidate, theta), jax.tree.map(pick, new, d), ~accept

    n = theta.shape[0]
    nan = jnp.full(n, jnp.nan)
    start = _Derivatives(jnp.array(jnp.inf), nan, jnp.full((n, n), jnp.nan), eye, nan)
    _, theta, d, _ = jax.lax.while_loop(
        keep_going, body, (jnp.zeros((), jnp.int32), theta, start, jnp.array(False))
    )
    return theta, d


def minimize(fun, theta0, diagonal, batched=False, gtol=1e-6) -> OptResult:
    """Minimise ``fun`` from ``theta0``; ``diagonal`` (NumPy bool) marks entries bounded at 0.

    ``batched=True`` shapes the loops for ``vmap``, where every response pays for the slowest:
    BFGS from the exact inverse Hessian with one trial point per iteration (see :func:`_bfgs`),
    capped at fewer iterations and with no Newton polish; the exact check at the end still
    tells which responses did not converge.
    """
    max_iter, newton_steps = BATCHED_ITERATIONS if batched else (500, 2)
    theta, iterations = bfgs(fun, theta0, max_iter, gtol, batched)
    theta, on_boundary = _snap_to_boundary(fun, theta, diagonal)
    theta, d = _newton_polish(fun, theta, ~on_boundary, newton_steps)
    small_step = jnp.max(jnp.abs(d.step)) <= SCALED_GRADIENT_TOL
    status = jnp.where(
        ~jnp.isfinite(d.value),
        NONFINITE,
        jnp.where(
            ~jnp.all(jnp.isfinite(d.chol)),
            HESSIAN_NOT_PD,
            jnp.where(small_step, CONVERGED, GRADIENT_NOT_SMALL),
        ),
    )
    return OptResult(theta, d.value, d.grad, d.hess, on_boundary, iterations, status)
