"""Fitting as a pure function: theta by the optimiser, its derivatives by the implicit function
theorem at the optimum, and everything else in closed form from theta.

:func:`fit_blocks` is the engine every fit runs (``lmer`` through a compiled program per size
class, batches under ``vmap``); :func:`estimate` wraps it for the functional API, where the
estimates are differentiable functions of the data: the optimiser's iterations are never
differentiated. At the optimum the gradient in theta vanishes, so
d theta = -H^{-1} (d/d data of the gradient) d data (one linear solve with the exact Hessian);
beta, sigma, b and the criterion follow from (theta, data) by differentiable closed forms.
Entries of theta held on the boundary (a zero variance) get zero derivatives.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np

from . import parameters
from .crossprod import Blocks
from .deviance import (
    dense_derivatives,
    dense_system,
    expensive_hessian,
    is_dense,
    objective,
    value_and_grad,
    value_grad_hess,
)
from .linalg import cho_solve, cholesky
from .model import Model
from .optimize import ITERATIONS, Criterion, minimize
from .solution import Solution, solve
from .status import Status


def criterion(blocks: Blocks, reml) -> Criterion:
    """The criterion of one model's blocks with its exact derivatives (for a dense system,
    with its theta-free parts formed here, before the optimiser's loops)."""
    if is_dense(blocks):
        system = dense_system(blocks, reml)
        return Criterion(
            *(
                partial(dense_derivatives, blocks=blocks, reml=reml, order=order, system=system)
                for order in range(3)
            )
        )
    return Criterion(
        partial(objective, blocks=blocks, reml=reml),
        partial(value_and_grad, blocks=blocks, reml=reml),
        partial(value_grad_hess, blocks=blocks, reml=reml),
    )


def fit_blocks(
    blocks: Blocks, theta0, reml=True, iterations=ITERATIONS, quasi_newton=None, vmapped=False
):
    """Optimise theta from ``theta0`` for one model's blocks and solve for the estimates there:
    (OptResult, Solution), padded as the blocks are. Pure; ``iterations`` caps the optimiser
    (see :func:`optimize.minimize`). By default (``quasi_newton=None``) BFGS runs first only
    where the exact Hessian is expensive (a large dense block after a block-diagonal term);
    elsewhere Newton's method alone is as fast and its program compiles faster. Batches pass
    ``True``: under ``vmap`` BFGS's cheap iterations let every response converge in step.
    ``vmapped``: the program runs under ``vmap`` (see :func:`optimize.minimize`). Trial points
    are evaluated by their value first except in the dense layout of small models, whose
    program is the one a session compiles first (see ``value_first`` there)."""
    layout = blocks.layout
    result = minimize(
        criterion(blocks, reml),
        theta0,
        layout.diagonal,
        layout.active,
        iterations,
        quasi_newton=expensive_hessian(blocks) if quasi_newton is None else quasi_newton,
        vmapped=vmapped,
        value_first=not is_dense(blocks),
    )
    theta = parameters.canonical_theta(result.theta, layout)
    return result._replace(theta=theta), solve(theta, blocks)


@jax.custom_jvp
def implicit_theta(theta, hessian, free, blocks: Blocks, reml):
    """``theta`` (the optimum of the criterion of ``blocks``), carrying its implicit
    derivatives with respect to the blocks; ``free`` marks the entries not held on a bound."""
    return theta


@implicit_theta.defjvp
def _implicit_theta_jvp(primals, tangents):
    theta, hessian, free, blocks, reml = primals
    _, d_grad = jax.jvp(lambda b: jax.grad(objective)(theta, b, reml), (blocks,), (tangents[3],))
    both = free[:, None] & free[None, :]
    h = jnp.where(both, hessian, jnp.eye(theta.shape[0], dtype=theta.dtype))
    d_theta = -jnp.where(free, cho_solve(cholesky(h), jnp.where(free, d_grad, 0.0)), 0.0)
    return theta, d_theta


@jax.tree_util.register_dataclass
@dataclass(frozen=True)
class Estimates:
    """A fit's estimates as a pytree: theta, beta, sigma, the conditional modes ``b`` (mapped to
    levels by :meth:`Model.random_effect_labels`), the criterion at the optimum and a
    :class:`Status` code."""

    theta: jax.Array  # (n_theta,)
    beta: jax.Array  # (p,)
    sigma: jax.Array  # ()
    b: jax.Array  # (q,)
    objective: jax.Array  # () REML criterion or deviance
    status: jax.Array  # () int

    @property
    def converged(self):
        return self.status == Status.CONVERGED

    def __repr__(self) -> str:
        shapes = ", ".join(
            f"{name}={getattr(getattr(self, name), 'shape', ())}"
            for name in ("theta", "beta", "sigma", "b", "objective", "status")
        )
        return f"Estimates({shapes})"


def assemble(theta, solution: Solution, value, status, nobs, scale, model: Model):
    """Estimates on the model's own scale and sizes from padded results for a response divided
    by ``scale`` with ``nobs`` observations (NumPy or JAX alike; batch axes in front)."""
    xp = np if isinstance(solution.beta, np.ndarray) else jnp
    info, design = model.info, model.design
    t1 = design.terms[0]
    dof = nobs - (info.n_fixed if info.reml else 0.0)
    if model.rows.ng1:  # term 1 block-diagonal, the later terms in the dense block
        first = solution.b1[..., : t1.n_levels, : t1.n_columns]
        mz = info.n_random - t1.n_levels * t1.n_columns
        parts = [first.reshape(first.shape[:-2] + (-1,)), solution.b_rest[..., :mz]]
        b = xp.concatenate(parts, axis=-1)
    else:
        b = solution.b_rest[..., : info.n_random]
    scale = xp.asarray(scale)
    return Estimates(
        theta=theta[..., : info.n_theta],
        beta=solution.beta[..., : info.n_fixed] * scale[..., None],
        sigma=scale * xp.sqrt(solution.pwrss / dof),
        b=b * scale[..., None],
        objective=value + 2 * dof * xp.log(scale),
        status=status,
    )


def estimate(model: Model, *, y=None, X=None, weights=None, offset=None, theta0=None) -> Estimates:
    """Fit ``model`` to the given arrays (None: the model's own) as a pure, jittable,
    vmappable and differentiable function (see the module docstring). The optimiser starts
    from ``theta0``, by default from lmer's start for the model's own data (a moment estimate
    of each random intercept's SD: near the optimum for other responses of the same design
    too); the estimates and their derivatives do not depend on the start."""
    theta0 = model.info.start if theta0 is None else theta0
    return _estimate(model, y, X, weights, offset, theta0)


@jax.jit
def _estimate(model: Model, y, X, weights, offset, theta0) -> Estimates:
    blocks, scale = model.blocks(y, X, weights, offset)
    layout = blocks.layout
    dtype = blocks.axx.dtype
    start = jnp.pad(jnp.asarray(theta0, dtype), (0, blocks.n_theta - model.n_theta))
    fixed = jax.lax.stop_gradient(blocks)
    opt = minimize(
        criterion(fixed, model.reml),
        start,
        layout.diagonal,
        layout.active,
        quasi_newton=expensive_hessian(blocks),
        vmapped=True,  # users vmap estimate
    )
    free = layout.active & ~opt.on_boundary
    theta = implicit_theta(opt.theta, opt.hessian, free, blocks, model.reml)
    theta = parameters.canonical_theta(theta, layout)
    value = objective(theta, blocks, model.reml)
    return assemble(theta, solve(theta, blocks), value, opt.status, blocks.nobs, scale, model)
