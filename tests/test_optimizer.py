"""The optimiser's failure paths on small functions of its own, every status code, the batch's
one-by-one retry, and no false convergence alarms (refits, response scales)."""

import warnings
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
import pytest

import jaxlmm
from jaxlmm import Status, optimize
from jaxlmm.batch import fit_responses
from jaxlmm.optimize import autodiff, minimize


def run(fun, theta0, diagonal, active=None):
    with jax.enable_x64(True):
        theta0 = jnp.asarray(theta0, jnp.float64)
        active = jnp.ones(theta0.shape, bool) if active is None else jnp.asarray(active)
        result = jax.jit(lambda t: minimize(autodiff(fun), t, jnp.asarray(diagonal), active))(
            theta0
        )
    return jax.tree.map(np.asarray, result)


def test_minimum_on_the_boundary_is_held_exactly_at_zero():
    result = run(lambda t: 0.5 * t[0] ** 2 + t[0] ** 4 + (t[1] - 1) ** 2, [0.7, 0.0], [True, False])
    assert result.theta[0] == 0.0 and result.on_boundary[0] and not result.on_boundary[1]
    assert result.theta[1] == pytest.approx(1.0, abs=1e-8)
    assert Status(int(result.status)) is Status.CONVERGED


def test_saddle_point_is_reported():
    """Started on the ridge theta_1 = 0 of a saddle, the gradient never leaves it."""
    result = run(lambda t: (t[0] - 1) ** 2 - t[1] ** 2 + t[1] ** 4, [3.0, 0.0], [False, False])
    assert result.theta[1] == 0.0
    assert Status(int(result.status)) is Status.HESSIAN_NOT_PD


def test_criterion_that_turns_undefined():
    def fun(t):
        return jnp.where(t[0] < 2.0, (t[0] - 3.0) ** 2, jnp.nan)

    result = run(fun, [0.0], [False])
    assert result.theta[0] < 2.0 and np.isfinite(result.value)
    assert Status(int(result.status)) is Status.GRADIENT_NOT_SMALL
    nowhere = run(lambda t: jnp.nan * t[0], [1.0], [False])
    assert Status(int(nowhere.status)) is Status.NONFINITE


def test_padded_entries_stay_where_they_are():
    result = run(
        lambda t: (t[0] - 2) ** 2, [0.5, 0.0, 0.0], [True, True, True], [True, False, False]
    )
    np.testing.assert_allclose(result.theta, [2.0, 0.0, 0.0], atol=1e-9)
    assert Status(int(result.status)) is Status.CONVERGED


def test_expensive_fit_ends_on_the_model_after_a_short_newton_step(monkeypatch):
    """With quasi-Newton (an expensive Hessian), a short exact Newton step ends the fit on the
    quadratic model: one evaluation fewer, the same optimum, a value equal to the criterion's
    at the returned point to rounding, and a gradient near the exact one there."""

    def fun(t):  # large values: BFGS stops at rounding noise, a short Newton step away
        centre = jnp.array([0.3, 1.2, -0.5])
        return 1e6 * (jnp.sum((t - centre) ** 2) + jnp.sum(jnp.cosh(t)) + t[0] * t[1] ** 3)

    def fit(model_step):
        monkeypatch.setattr(optimize, "MODEL_STEP", model_step)
        calls = []
        exact = autodiff(fun)

        def counted(derivatives):
            def evaluate(theta):
                jax.debug.callback(lambda: calls.append(1))
                return derivatives(theta)

            return evaluate

        criterion = optimize.Criterion(
            fun, counted(exact.value_and_grad), counted(exact.value_grad_hess)
        )
        no, yes = jnp.zeros(3, bool), jnp.ones(3, bool)
        with jax.enable_x64(True):
            start = jnp.asarray([1.0, 0.5, 0.2])
            result = jax.jit(lambda t: minimize(criterion, t, no, yes, quasi_newton=True))(start)
            at_theta = exact.value_and_grad(result.theta)
        return len(calls), jax.tree.map(np.asarray, result), jax.tree.map(np.asarray, at_theta)

    calls, modelled, (value, gradient) = fit(1e-5)
    all_calls, evaluated, _ = fit(0.0)
    assert calls < all_calls
    assert Status(int(modelled.status)) is Status.CONVERGED
    np.testing.assert_allclose(modelled.theta, evaluated.theta, rtol=1e-10)
    np.testing.assert_allclose(modelled.value, value, rtol=1e-14)
    np.testing.assert_allclose(modelled.gradient, gradient, atol=1e-6 * np.abs(value))


def test_expensive_fit_near_its_optimum_skips_bfgs(monkeypatch):
    """From a start whose exact Newton step is short, an expensive single fit takes Newton
    steps at once: no BFGS iterations, fewer evaluations, the same optimum."""

    def fun(t):
        return jnp.sum((t - jnp.array([0.3, 1.2])) ** 2) + jnp.sum(jnp.cosh(t)) + t[0] * t[1] ** 3

    def fit(near):
        monkeypatch.setattr(optimize, "NEWTON_NEAR", near)
        calls = []
        exact = autodiff(fun)

        def counted(theta):
            jax.debug.callback(lambda: calls.append(1))
            return exact.value_and_grad(theta)

        criterion = optimize.Criterion(fun, counted, exact.value_grad_hess)
        no, yes = jnp.zeros(2, bool), jnp.ones(2, bool)
        with jax.enable_x64(True):
            start = jnp.asarray([0.07, 0.73])  # about 0.01 from the optimum
            result = jax.jit(lambda t: minimize(criterion, t, no, yes, quasi_newton=True))(start)
        return len(calls), jax.tree.map(np.asarray, result)

    gradients, newton = fit(0.1)
    bfgs_gradients, bfgs = fit(0.0)
    assert newton.iterations == 0 and gradients == 0
    assert bfgs.iterations > 0 and bfgs_gradients > 0
    assert Status(int(newton.status)) is Status.CONVERGED
    np.testing.assert_allclose(newton.theta, bfgs.theta, atol=1e-8)


def test_status_type():
    assert Status.CONVERGED.converged and Status.CONVERGED.fitted
    assert not Status.HESSIAN_NOT_PD.converged and Status.HESSIAN_NOT_PD.fitted
    assert not Status.CONSTANT_RESPONSE.fitted
    assert all(code.message for code in Status)


def test_capped_batch_iterations_are_retried_one_by_one(sleepstudy):
    """With one BFGS iteration under vmap no response converges; the retry with the single-fit
    optimiser gives lmer's results."""
    formula = "Reaction ~ Days + (Days | Subject)"
    fit = jaxlmm.lmer(formula, sleepstudy)
    y = fit.simulate(3, seed=2).to_numpy().T
    result, status = fit_responses(fit.design, y, iterations=(1, 0))
    assert np.all(status == Status.CONVERGED)
    for k in range(3):
        single = jaxlmm.lmer(formula, sleepstudy.assign(Reaction=y[k]))
        assert result.estimates.objective[k] == pytest.approx(single.objective, rel=1e-10)


def test_batch_response_with_aliased_fixed_effects(sleepstudy):
    y = np.tile(sleepstudy["Reaction"].to_numpy(), (2, 1))
    y[1, sleepstudy["Days"] != 3] = np.nan  # one value of Days left: slope and intercept alias
    y[1, sleepstudy["Days"] == 3] += np.arange(18)
    bf = jaxlmm.lmer_batch("Reaction ~ Days + (1 | Subject)", sleepstudy, y, progress=False)
    assert bf.status_code[1] in (Status.FIXED_EFFECTS_ALIASED, Status.TOO_FEW_OBSERVATIONS)
    assert bf.converged[0]


def _refit_simulated(sleepstudy, nsim: int, seed: int):
    """Refit responses simulated from the sleepstudy fit; any ConvergenceWarning fails."""
    formula = "Reaction ~ Days + (Days | Subject)"
    fit = jaxlmm.lmer(formula, sleepstudy)
    responses = fit.simulate(nsim, seed=seed)
    with warnings.catch_warnings():
        warnings.simplefilter("error", jaxlmm.ConvergenceWarning)
        for column in responses:
            jaxlmm.lmer(formula, sleepstudy.assign(Reaction=responses[column]))


def test_no_false_alarms_in_refits(sleepstudy):
    """Refits of responses simulated from the sleepstudy fit: every one converges (lme4 warned
    about 4 of 500 such refits)."""
    _refit_simulated(sleepstudy, 100, seed=11)


@pytest.mark.slow
def test_no_false_alarms_in_500_refits(sleepstudy):
    _refit_simulated(sleepstudy, 500, seed=12)


@pytest.mark.parametrize("scale", [1e-150, 1e-75, 1e-20, 1e20, 1e75, 1e150])
def test_convergence_check_is_invariant_to_the_response_scale(sleepstudy, scale):
    formula = "Reaction ~ Days + (Days | Subject)"
    base = jaxlmm.lmer(formula, sleepstudy)
    with warnings.catch_warnings():
        warnings.simplefilter("error", jaxlmm.ConvergenceWarning)
        fit = jaxlmm.lmer(formula, sleepstudy.assign(Reaction=sleepstudy["Reaction"] * scale))
    np.testing.assert_allclose(fit.theta, base.theta, rtol=1e-6)
    np.testing.assert_allclose(fit.fixef / scale, base.fixef, rtol=1e-8)
    assert fit.sigma / scale == pytest.approx(base.sigma, rel=1e-8)
    n = base.nobs - 2
    assert fit.objective == pytest.approx(base.objective + 2 * n * np.log(scale), rel=1e-10)


def test_rejected_newton_points_cost_their_value_only():
    """Without quasi-Newton, a single fit evaluates a trial point's value first and its
    derivatives only if the point is kept: the same optimum with fewer Hessians than the
    vmapped path, which evaluates every trial point in full."""

    def fun(t):  # Newton's step from |t| > 1 overshoots: rejected, then halved
        return jnp.sum(jnp.sqrt(1 + (t - jnp.array([0.2, -0.4])) ** 2))

    def fit(vmapped):
        calls = []
        exact = autodiff(fun)

        def counted(theta):
            jax.debug.callback(lambda: calls.append(1))
            return exact.value_grad_hess(theta)

        criterion = optimize.Criterion(fun, exact.value_and_grad, counted)
        no, yes = jnp.zeros(2, bool), jnp.ones(2, bool)
        with jax.enable_x64(True):
            start = jnp.asarray([3.0, -2.5])
            run = partial(
                minimize, criterion, diagonal=no, active=yes, quasi_newton=False, value_first=True
            )
            result = jax.jit(lambda t: run(t, vmapped=vmapped))(start)
        return len(calls), jax.tree.map(np.asarray, result)

    value_first, result = fit(False)
    in_full, reference = fit(True)
    assert Status(int(result.status)) is Status.CONVERGED
    np.testing.assert_allclose(result.theta, [0.2, -0.4], atol=1e-8)
    with jax.enable_x64(True):
        np.testing.assert_allclose(result.value, fun(jnp.asarray(result.theta)), rtol=1e-14)
    np.testing.assert_allclose(result.theta, reference.theta, atol=1e-10)
    assert value_first < in_full


@pytest.mark.parametrize(
    "data, formula",
    [
        ("sleepstudy", "Reaction ~ Days + (Days | Subject)"),
        ("sleepstudy", "Reaction ~ Days + (1 | Subject) + (0 + Days | Subject)"),
        ("Pastes", "strength ~ 1 + (1 | batch/cask)"),
        ("Penicillin", "diameter ~ 1 + (1 | plate) + (1 | sample)"),
    ],
)
def test_moment_start_is_near_the_optimum(data, formula):
    """The start of random slopes and of nested terms comes from moments, not identity factors:
    each SD within a factor of 2 of the optimum's (lme4's identity start is 4 times the
    sleepstudy slope's, and a nested term swept before its outer one starts the outer at 0)."""
    frame = jaxlmm.datasets.load(data)
    start = jaxlmm.model(formula, frame).info.start
    fit = jaxlmm.lmer(formula, frame)
    sizes = fit.sizes
    sd_start = jaxlmm.parameters.sdcor_values(start, sizes, 1.0)[:-1]
    sd_fit = jaxlmm.parameters.sdcor_values(fit.theta, sizes, 1.0)[:-1]
    diagonal = jaxlmm.parameters.diagonal_mask(sizes)
    ratio = sd_start[diagonal] / sd_fit[diagonal]
    assert np.all((ratio > 0.5) & (ratio < 2)), ratio


def test_start_of_terms_without_informative_levels():
    """Levels whose columns are collinear (a slope on x, x constant within each level) inform
    no moment: the term starts from lme4's identity factor and the fit converges."""
    rng = np.random.default_rng(3)
    frame = pd.DataFrame({"g": np.repeat(np.arange(30), 4), "h": np.arange(120) // 3})
    frame["x"] = rng.normal(size=40)[frame.h]
    frame["y"] = rng.normal(size=30)[frame.g] + rng.normal(size=120)
    formula = "y ~ x + (1 | g) + (x | h)"
    core = jaxlmm.model(formula, frame)
    assert [t.group for t in core.design.terms] == ["h", "g"]
    np.testing.assert_array_equal(core.info.start[:3], [1.0, 0.0, 1.0])
    assert core.info.start[3] > 0.5  # the informative intercept term has its moment estimate
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fit = jaxlmm.lmer(formula, frame)
    assert np.isfinite(fit.objective)
