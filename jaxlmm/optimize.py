"""Minimise a smooth criterion of theta: BFGS, boundary snapping, exact Newton polish, check.

Pure JAX with a fixed control flow, so the same code runs under ``jit`` and ``vmap``. Failures
are reported as status codes in the result, never raised.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp

from .linalg import cho_solve, cholesky
from .status import Status

BOUNDARY_SNAP = 1e-2  # |theta_j| below this is tried at exactly 0 ...
BOUNDARY_RISE = 1e-7  # ... and kept there if the criterion rises by at most this (float64)
SCALED_GRADIENT_TOL = 1e-3  # convergence check on H^{-1} g, as lme4's relative gradient
POLISH_TOL = 1e-8  # Newton steps are taken while H^{-1} g exceeds this
ITERATIONS = (500, 50)  # BFGS iterations and Newton steps of a single fit
BATCHED_ITERATIONS = (25, 2)  # ... under vmap, where every response waits for the slowest
EVALUATE_ONLY = (0, 0)  # derivatives and status at the start, no steps


class OptResult(NamedTuple):
    """Outcome of :func:`minimize` (a pytree, so it batches under ``vmap``)."""

    theta: jax.Array
    value: jax.Array
    gradient: jax.Array
    hessian: jax.Array
    on_boundary: jax.Array  # bool per theta: held at 0
    iterations: jax.Array
    status: jax.Array  # a :class:`Status` code


class Criterion(NamedTuple):
    """A smooth function of theta with its derivatives, each a pure JAX function of theta."""

    value: Callable  # theta -> value
    value_and_grad: Callable  # theta -> (value, gradient)
    value_grad_hess: Callable  # theta -> (value, gradient, Hessian)


def autodiff(fun) -> Criterion:
    """``fun`` with derivatives by JAX autodiff, the Hessian by forward over reverse mode."""
    value_and_grad = jax.value_and_grad(fun)

    def grad_and_aux(theta):
        value, grad = value_and_grad(theta)
        return grad, (value, grad)

    def value_grad_hess(theta):
        hess, (value, grad) = jax.jacfwd(grad_and_aux, has_aux=True)(theta)
        return value, grad, hess

    return Criterion(fun, value_and_grad, value_grad_hess)


class _BfgsState(NamedTuple):
    theta: jax.Array
    value: jax.Array
    grad: jax.Array
    inv_hess: jax.Array  # approximation of the inverse Hessian
    step: jax.Array  # step length to try along the next direction
    iteration: jax.Array  # trial points evaluated
    done: jax.Array


def rounding(dtype) -> float:
    """Relative noise of a criterion value computed in ``dtype`` (the stopping tolerances)."""
    return max(1e-12, 100 * float(jnp.finfo(dtype).eps))


def _shrunk_step(step, trial_value, value, slope):
    """Next step length after a rejected trial: safeguarded quadratic interpolation."""
    bend = trial_value - value - step * slope
    quadratic = -slope * step**2 / (2 * bend)
    return jnp.where(
        jnp.isfinite(trial_value) & (bend > 0),
        jnp.clip(quadratic, 0.1 * step, 0.5 * step),
        0.1 * step,
    )


def bfgs(
    value_and_grad, theta0, max_iter, gtol, start=None, first_step=0.5, max_step=1.0, vmapped=False
):
    """BFGS with a dense inverse-Hessian approximation (theta is small).

    Given ``start`` = (value, gradient, Hessian) at ``theta0``, it starts from the exact inverse
    Hessian when that is positive definite (which saves more iterations than the Hessian costs),
    else from a scaled identity whose first step moves at most ``first_step`` in any coordinate;
    without ``start``, from the scaled identity after a first iteration that only evaluates
    ``theta0`` (so ``value_and_grad`` is traced once). An iteration evaluates value
    and gradient at exactly one trial point, kept if it lowers the criterion enough (Armijo),
    else the step shrinks for the next iteration: under ``vmap`` no fit waits for another's
    line search, and alone no point is evaluated twice. Steps move at most ``max_step`` in any
    coordinate: far from the optimum the criterion is far from quadratic. Coordinates where
    the gradient is exactly zero (padding) never move. ``vmapped``: see :func:`minimize`.
    """
    n = theta0.shape[0]
    eye = jnp.eye(n, dtype=theta0.dtype)
    c1, ftol = 1e-4, rounding(theta0.dtype)
    tiny = jnp.finfo(theta0.dtype).tiny

    def scaled_identity(grad):
        return eye * first_step / jnp.maximum(jnp.max(jnp.abs(grad)), 1e-12)

    def body(state):
        direction = -state.inv_hess @ state.grad
        descent = direction @ state.grad < 0
        direction = jnp.where(descent, direction, -state.grad)
        cap = jnp.minimum(1.0, max_step / jnp.maximum(jnp.max(jnp.abs(direction)), tiny))
        direction = cap * direction
        slope = direction @ state.grad
        trial = state.theta + state.step * direction
        value, grad = value_and_grad(trial)
        accept = jnp.isfinite(value) & (value <= state.value + c1 * state.step * slope)

        s, y = trial - state.theta, grad - state.grad
        sy = s @ y
        rho = 1.0 / sy
        update = (eye - rho * jnp.outer(s, y)) @ state.inv_hess @ (eye - rho * jnp.outer(y, s))
        update = update + rho * jnp.outer(s, s)
        curvature_ok = sy > ftol * jnp.sqrt((s @ s) * (y @ y))
        inv_hess = jnp.where(curvature_ok, update, state.inv_hess)
        if start is None:
            inv_hess = jnp.where(state.iteration == 0, scaled_identity(grad), inv_hess)

        shrunk = _shrunk_step(state.step, value, state.value, slope)
        # Stop when a step no longer lowers fun beyond rounding, or when the next step is not
        # expected to (its predicted decrease is below that).
        noise = ftol * (1 + jnp.abs(value))
        stalled = (state.value - value <= noise) | (grad @ inv_hess @ grad <= 2 * noise)
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

    zero, one = jnp.zeros((), jnp.int32), jnp.ones((), theta0.dtype)
    if start is None:  # a zero first step, accepted against an infinite value
        state = _BfgsState(theta0, jnp.inf * one, jnp.zeros_like(theta0), eye, one, zero, False)
    else:
        value, grad, hess = start
        newton = cho_solve(cholesky(hess, vmapped), eye, vmapped)
        inv_hess = jnp.where(jnp.all(jnp.isfinite(newton)), newton, scaled_identity(grad))
        state = _BfgsState(theta0, value, grad, inv_hess, one, zero, ~jnp.isfinite(value))
    state = state._replace(done=jnp.asarray(state.done))
    state = jax.lax.while_loop(lambda st: ~st.done & (st.iteration < max_iter), body, state)
    return state.theta, state.iteration


def _allowed_rise(value):
    """How much snapping an entry to 0 may raise the criterion: a hair in float64; in float32,
    rounding noise relative to the value."""
    eps = float(jnp.finfo(value.dtype).eps)
    return BOUNDARY_RISE if eps < 1e-10 else 1e3 * eps * (1 + jnp.abs(value))


class _Derivatives(NamedTuple):
    value: jax.Array
    grad: jax.Array
    hess: jax.Array
    chol: jax.Array  # Cholesky factor of the Hessian on the free coordinates (NaN if not PD)
    step: jax.Array  # Newton step H^{-1} g on the free coordinates (the convergence check)
    direction: jax.Array  # -(H + mu I)^{-1} g: mu the least shift that makes H + mu I PD


class _Round(NamedTuple):
    k: jax.Array  # rounds done: 0 evaluates the start
    point: jax.Array  # where this round evaluates the derivatives ...
    point_boundary: jax.Array  # ... with these entries held at 0
    snapping: jax.Array  # the point is the best point with one more entry at 0
    theta: jax.Array  # the best point so far ...
    d: _Derivatives  # ... the derivatives there ...
    on_boundary: jax.Array  # ... and its entries held at 0
    tried: jax.Array  # entries already tried at 0
    alpha: jax.Array  # length of the next Newton step along d.direction
    newton: jax.Array  # Newton steps tried
    iterations: jax.Array
    done: jax.Array


SHIFTS = (0.0, 1e-8, 1e-5, 1e-3, 1e-1, 1.0, 10.0)  # Levenberg shifts, relative to |H|
SNAP_READY = 1e-3  # entries are tried at 0 once the Newton step is below this
MODEL_STEP = 1e-5  # a plain exact Newton step this short ends an expensive fit on the model
NEWTON_NEAR = 0.1  # an expensive single fit whose first Newton step is this short skips BFGS


def levenberg(h, g, unrolled=True):
    """The Cholesky factor of ``h`` (NaN where not PD) and the step -(h + mu I)^{-1} g, with
    mu the least of :data:`SHIFTS` (relative to |h|) that makes h + mu I positive definite.
    ``unrolled``: see :func:`linalg.cholesky`."""
    eye = jnp.eye(h.shape[0], dtype=h.dtype)
    shifts = jnp.asarray(SHIFTS, h.dtype)
    size = jnp.max(jnp.abs(h))
    chol = cholesky(h, unrolled)

    def shift(state):  # the next shift and its factor (SHIFTS[0] is 0: chol itself)
        k = state[0] + 1
        return k, cholesky(h + shifts[k] * size * eye, unrolled)

    _, shifted = jax.lax.while_loop(
        lambda state: (state[0] < len(SHIFTS) - 1) & ~jnp.all(jnp.isfinite(state[1])),
        shift,
        (0, chol),
    )
    return chol, -cho_solve(shifted, g, unrolled)


def minimize(
    criterion: Criterion,
    theta0,
    diagonal,
    active,
    iterations=ITERATIONS,
    gtol=1e-6,
    quasi_newton: bool = True,
    vmapped: bool = False,
    value_first: bool = False,
) -> OptResult:
    """Minimise ``criterion`` from ``theta0``. ``diagonal`` (bool per entry) marks entries
    bounded at 0; ``active`` the entries that the criterion depends on (the others are padding,
    held where they are).

    Each round evaluates the exact derivatives at one point, so the program holds one copy of
    the Hessian (and, with ``quasi_newton``, one of the gradient in BFGS). Round 0 evaluates
    ``theta0``; with ``quasi_newton`` it runs BFGS from there (cheap iterations for criteria
    whose Hessian is expensive), except in a single fit whose Hessian there is positive definite
    with a Newton step under NEWTON_NEAR: from such a start (lmer's moment start of a crossed
    design) Newton's steps converge in a round or two, as BFGS's several would not (ML-1M: two
    Hessians instead of two Hessians and two gradients). The next rounds take exact Newton steps
    on the free coordinates (Levenberg-shifted where the Hessian is not positive definite,
    halved when they would raise the criterion beyond rounding) while the step exceeds
    POLISH_TOL; once the step is small they try each small diagonal entry at exactly 0, kept
    there if the criterion rises by at most a hair. The derivatives at the last point kept give
    the status. With ``quasi_newton`` (and not ``vmapped``), a plain (not shifted, not halved)
    exact Newton step shorter than MODEL_STEP ends the fit: the point it reaches gets the value
    and gradient of the quadratic model (exact to the step's third power, far below the
    criterion's rounding), which saves the most expensive evaluation of large models; the status
    is that of the exact derivatives the step came from. Newton's method alone polishes on to
    POLISH_TOL: its evaluations are cheap, and the optimum is then the same to 1e-10 whichever
    way it is reached (a single fit, a vmapped batch). With ``value_first`` (for Newton's method
    alone, not ``vmapped``), a point is evaluated by its value first and gets its derivatives
    only if it is kept: a rejected Newton step costs a fraction of a round, and the program
    compiles a little longer.
    ``iterations`` (BFGS iterations, Newton steps; may be traced) caps the loops:
    :data:`BATCHED_ITERATIONS` under ``vmap``, where the exact check at the end tells which
    responses did not converge, :data:`EVALUATE_ONLY` for the status of a given point.
    ``vmapped``: the program runs under ``vmap``, where the small factorisations of the
    Hessian are unrolled (a batched LAPACK call pays per matrix); alone, one LAPACK call each
    compiles faster.
    """
    max_iter, newton_steps = iterations
    model_finish = quasi_newton and not vmapped  # under vmap, every response waits anyway
    value_first = value_first and not quasi_newton and not vmapped
    n = theta0.shape[0]
    eye = jnp.eye(n, dtype=theta0.dtype)
    diagonal = diagonal & active

    def derivatives(theta, free):
        value, grad, hess = criterion.value_grad_hess(theta)
        h = jnp.where(free[:, None] & free[None, :], hess, eye)
        g = jnp.where(free, grad, 0.0)
        chol, direction = levenberg(h, g, unrolled=vmapped)
        return _Derivatives(value, grad, hess, chol, cho_solve(chol, g, vmapped), direction)

    def body(r: _Round):
        free = active & ~r.point_boundary
        noise = rounding(theta0.dtype) * (1 + jnp.abs(r.d.value))  # a Newton step this near
        slack = jnp.where(r.snapping, _allowed_rise(r.d.value), noise)  # lowers fun below it
        trusted = (r.k == 0) | ((r.k == 1) & (r.iterations > 0))  # the start, BFGS's result

        def acceptable(value):
            return trusted | (jnp.isfinite(value) & (value <= r.d.value + slack))

        if value_first:
            accept = acceptable(criterion.value(r.point))
            new = jax.lax.cond(accept, lambda: derivatives(r.point, free), lambda: r.d)
        else:
            new = derivatives(r.point, free)
            accept = acceptable(new.value)
        pick = partial(jnp.where, accept)
        theta, d = pick(r.point, r.theta), jax.tree.map(pick, new, r.d)
        on_boundary = pick(r.point_boundary, r.on_boundary)
        alpha = jnp.where(accept | r.snapping, 1.0, r.alpha / 2)

        # BFGS first, unless a single fit starts where exact Newton steps converge at once
        near = jnp.all(jnp.isfinite(d.chol)) & (jnp.max(jnp.abs(d.direction)) <= NEWTON_NEAR)
        bfgs_next = (r.k == 0) & quasi_newton & ~(model_finish & near)
        iterations = jnp.zeros((), jnp.int32)
        found = theta
        if quasi_newton:
            hess = jnp.where(active[:, None] & active[None, :], d.hess, eye)
            found, iterations = bfgs(
                criterion.value_and_grad,
                theta,
                jnp.where(bfgs_next, max_iter, 0),
                gtol,
                start=(d.value, d.grad, hess),
                vmapped=vmapped,
            )
        stationary = jnp.all(jnp.isfinite(d.step)) & (jnp.max(jnp.abs(d.step)) <= POLISH_TOL)
        ready = jnp.all(jnp.isfinite(d.step)) & (jnp.max(jnp.abs(d.step)) <= SNAP_READY)
        small = diagonal & ~r.tried & ~on_boundary & (jnp.abs(theta) < BOUNDARY_SNAP)
        snap = ~bfgs_next & ready & jnp.any(small)
        j = jnp.argmax(small)
        newton = (
            ~bfgs_next
            & ~snap
            & ~stationary
            & (r.newton < newton_steps)
            & jnp.all(jnp.isfinite(d.direction))
            & (alpha > 1e-10)
        )
        step = alpha * d.direction
        point = jnp.where(bfgs_next, found, jnp.where(snap, theta.at[j].set(0.0), theta + step))
        full_step = (alpha == 1) & jnp.all(jnp.isfinite(d.chol))  # neither halved nor shifted
        finish = model_finish & newton & full_step & (jnp.max(jnp.abs(step)) <= MODEL_STEP)
        if model_finish:  # the step on the quadratic model: H step = -gradient where free
            theta = jnp.where(finish, point, theta)
            d = d._replace(
                value=jnp.where(finish, d.value + step @ d.grad / 2, d.value),
                grad=jnp.where(finish, d.grad + d.hess @ step, d.grad),
            )
        return _Round(
            r.k + 1,
            point,
            jnp.where(snap, on_boundary.at[j].set(True), on_boundary),
            snap,
            theta,
            d,
            on_boundary,
            jnp.where(snap, r.tried.at[j].set(True), r.tried),
            alpha,
            r.newton + newton,
            r.iterations + iterations,
            (~bfgs_next & ~snap & ~newton) | finish,
        )

    nan = jnp.full(n, jnp.nan, theta0.dtype)
    nothing = _Derivatives(jnp.array(jnp.inf, theta0.dtype), nan, eye * jnp.nan, eye, nan, nan)
    no, zero = jnp.zeros(n, dtype=bool), jnp.zeros((), jnp.int32)
    false, one = jnp.array(False), jnp.ones((), theta0.dtype)
    start = _Round(zero, theta0, no, false, theta0, nothing, no, no, one, zero, zero, false)
    r = jax.lax.while_loop(lambda r: ~r.done, body, start)
    d = r.d
    small_step = jnp.max(jnp.abs(d.step)) <= SCALED_GRADIENT_TOL
    status = jnp.where(
        ~jnp.isfinite(d.value),
        Status.NONFINITE,
        jnp.where(
            ~jnp.all(jnp.isfinite(d.chol)),
            Status.HESSIAN_NOT_PD,
            jnp.where(small_step, Status.CONVERGED, Status.GRADIENT_NOT_SMALL),
        ),
    ).astype(jnp.int32)
    return OptResult(r.theta, d.value, d.grad, d.hess, r.on_boundary, r.iterations, status)
