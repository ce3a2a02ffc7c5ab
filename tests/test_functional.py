"""The functional core: ``jaxlmm.model``, ``Model.deviance`` and ``jaxlmm.estimate`` are pure
JAX functions of the data, with exact implicit derivatives (checked against central
differences of refits), under ``jit``, ``vmap``, ``grad`` and ``jacfwd``; and jaxlmm leaves the
user's JAX settings alone."""

import dataclasses
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxlmm

FIELDS = ("theta", "beta", "sigma", "b", "objective")


def unbalanced_sleepstudy():
    data = jaxlmm.datasets.load("sleepstudy")
    return data.drop(index=data.index[::7]).reset_index(drop=True)


CASES = {
    "sleepstudy": (unbalanced_sleepstudy, "Reaction ~ Days + (Days | Subject)", True),
    "crossed": (
        lambda: jaxlmm.datasets.load("Penicillin"),
        "diameter ~ 1 + (1 | plate) + (1 | sample)",
        False,
    ),
    "nested": (lambda: jaxlmm.datasets.load("Pastes"), "strength ~ 1 + (1 | batch/cask)", True),
}


def flat(est) -> jnp.ndarray:
    return jnp.concatenate([jnp.ravel(getattr(est, f)) for f in FIELDS])


def directions(m, rng):
    """A random direction for each differentiable input (weights kept positive)."""
    n, p = m.x.shape
    return {
        "y": rng.normal(size=n) * np.std(m.y),
        "X": rng.normal(size=(n, p)),
        "weights": rng.uniform(-0.5, 0.5, size=n),
        "offset": rng.normal(size=n) * np.std(m.y),
    }


def primal(m, name):
    return {"y": m.y, "X": m.x, "weights": m.weights, "offset": m.offset}[name]


@pytest.mark.parametrize(
    "case",
    [
        "sleepstudy",
        pytest.param("crossed", marks=pytest.mark.slow),
        pytest.param("nested", marks=pytest.mark.slow),
    ],
)
def test_implicit_derivatives_equal_central_differences(case):
    """Forward-mode derivatives of every field of the estimates in y, X, weights and offset
    against central differences of full refits (relative 1e-5 of each field's scale)."""
    load, formula, reml = CASES[case]
    rng = np.random.default_rng(1)
    with jax.enable_x64(True):
        m = jaxlmm.model(formula, load(), reml=reml)
        fit = jax.jit(lambda **kw: flat(jaxlmm.estimate(m, **kw)))
        base = np.asarray(fit())
        for name, v in directions(m, rng).items():
            x = primal(m, name)
            _, tangent = jax.jvp(lambda a, name=name: fit(**{name: a}), (x,), (v,))
            h = 1e-5
            numeric = np.asarray(fit(**{name: x + h * v})) - np.asarray(fit(**{name: x - h * v}))
            numeric /= 2 * h
            scale = np.maximum(np.abs(base), 1.0) * 1e-5 + 1e-5 * np.max(np.abs(numeric))
            np.testing.assert_array_less(np.abs(np.asarray(tangent) - numeric), scale, name)


def test_reverse_mode_equals_forward_mode_and_both_modes_compose():
    """grad and jacfwd of beta-hat agree; ML fits too; vmap over responses equals separate fits."""
    data = unbalanced_sleepstudy()
    with jax.enable_x64(True):
        m = jaxlmm.model("Reaction ~ Days + (Days | Subject)", data, reml=False)
        slope = jax.jit(lambda y: jaxlmm.estimate(m, y=y).beta[1])
        grad = np.asarray(jax.jit(jax.grad(slope))(m.y))
        jac = np.asarray(jax.jit(jax.jacfwd(lambda y: jaxlmm.estimate(m, y=y).beta))(m.y))
        np.testing.assert_allclose(grad, jac[1], rtol=1e-9, atol=1e-12)
        rng = np.random.default_rng(2)
        ys = m.y + rng.normal(size=(8, len(m.y))) * 20
        batched = jax.jit(jax.vmap(lambda y: jaxlmm.estimate(m, y=y)))(ys)
        for k in (0, 5):
            single = jaxlmm.estimate(m, y=ys[k])
            np.testing.assert_allclose(batched.beta[k], single.beta, rtol=1e-8)
            np.testing.assert_allclose(batched.theta[k], single.theta, rtol=1e-6, atol=1e-8)
        grads = jax.jit(jax.vmap(jax.grad(slope)))(ys)
        np.testing.assert_allclose(grads[5], jax.grad(slope)(ys[5]), rtol=1e-8, atol=1e-12)


def test_estimates_match_lmer_and_map_to_levels():
    data = jaxlmm.datasets.load("Penicillin")
    fit = jaxlmm.lmer("diameter ~ 1 + (1 | plate) + (1 | sample)", data)
    with jax.enable_x64(True):
        m = jaxlmm.model("diameter ~ 1 + (1 | plate) + (1 | sample)", data)
        est = jaxlmm.estimate(m)
    assert bool(est.converged) and int(est.status) == jaxlmm.Status.CONVERGED
    np.testing.assert_allclose(est.theta, fit.theta, rtol=1e-6)
    np.testing.assert_allclose(est.beta, fit.fixef, rtol=1e-8)
    assert float(est.objective) == pytest.approx(fit.objective, rel=1e-10)
    labels = m.random_effect_labels()
    assert len(labels) == len(est.b)
    ranef = fit.ranef()
    for group in ("plate", "sample"):
        rows = labels["group"] == group
        expected = ranef[group]["(Intercept)"].loc[labels.loc[rows, "level"]].to_numpy()
        np.testing.assert_allclose(np.asarray(est.b)[rows.to_numpy()], expected, rtol=1e-6)


def test_singular_fit_has_zero_theta_tangents():
    """Dyestuff2's batch variance is on the boundary: theta's derivatives are zero, the others
    still equal central differences (the perturbed fits stay on the boundary)."""
    with jax.enable_x64(True):
        m = jaxlmm.model("Yield ~ 1 + (1 | Batch)", jaxlmm.datasets.load("Dyestuff2"))
        fit = jax.jit(lambda y: jaxlmm.estimate(m, y=y))
        est = fit(m.y)
        assert float(est.theta[0]) == 0.0
        v = np.random.default_rng(3).normal(size=len(m.y))
        _, tangent = jax.jvp(fit, (m.y,), (v,))
        assert float(tangent.theta[0]) == 0.0
        h = 1e-4
        numeric = (fit(m.y + h * v).beta - fit(m.y - h * v).beta) / (2 * h)
        np.testing.assert_allclose(tangent.beta, numeric, rtol=1e-6)


def test_deviance_is_differentiable_in_every_array():
    data = unbalanced_sleepstudy()
    with jax.enable_x64(True):
        m = jaxlmm.model("Reaction ~ Days + (Days | Subject)", data)
        theta = jnp.array([0.9, 0.02, 0.25])
        fun = jax.jit(m.deviance)
        assert float(fun(theta)) == pytest.approx(
            float(jaxlmm.devfun("Reaction ~ Days + (Days | Subject)", data)(theta)), rel=1e-12
        )
        rng = np.random.default_rng(4)
        for name, v in directions(m, rng).items():
            x = primal(m, name)

            def along(a, name=name):
                return m.deviance(theta, **{name: a})

            derivative = jax.grad(along)(x) if name != "X" else jax.grad(along)(x)
            h = 1e-5
            numeric = (along(x + h * v) - along(x - h * v)) / (2 * h)
            assert float(jnp.sum(derivative * v)) == pytest.approx(float(numeric), rel=1e-5)
        with pytest.raises(jaxlmm.JaxlmmError, match="theta must have shape"):
            m.deviance(jnp.ones(2))


def test_predict_new_rows_and_array_form():
    data = jaxlmm.datasets.load("sleepstudy")
    fit = jaxlmm.lmer("Reaction ~ Days + (Days | Subject)", data)
    newdata = data.iloc[[0, 15, 30]].assign(Subject=["308", "nobody", "310"])
    expected = fit.predict(newdata, allow_new_levels=True).to_numpy()
    with jax.enable_x64(True):
        m = jaxlmm.model("Reaction ~ Days + (Days | Subject)", data)
        est = jaxlmm.estimate(m)
        np.testing.assert_allclose(m.predict(est, newdata), expected, rtol=1e-6)
        np.testing.assert_allclose(m.predict(est), fit.fitted.to_numpy(), rtol=1e-6)
        rows = m.new_rows(newdata)
        shift = jnp.array([1.0, 2.0, 3.0])
        step = jax.jit(lambda e, o: jaxlmm.predict_rows(e, rows, offset=o))
        np.testing.assert_allclose(step(est, shift), expected + np.array([1.0, 2.0, 3.0]))

        def first(beta):
            return jaxlmm.predict_rows(dataclasses.replace(est, beta=beta), rows)[0]

        np.testing.assert_allclose(jax.grad(first)(est.beta), rows.x[0])


def test_float32_programs_stay_float32():
    """Without x64 the functional core computes in float32 (documented); lmer still in float64."""
    assert not jax.config.jax_enable_x64
    data = jaxlmm.datasets.load("sleepstudy")
    m = jaxlmm.model("Reaction ~ Days + (Days | Subject)", data)
    value = m.deviance(jnp.array([0.9667, 0.0152, 0.2309], jnp.float32))
    assert value.dtype == jnp.float32
    assert float(value) == pytest.approx(1743.6283, rel=1e-5)
    est = jaxlmm.estimate(m)
    assert est.beta.dtype == jnp.float32
    np.testing.assert_allclose(est.beta, [251.405, 10.467], rtol=1e-4)
    fit = jaxlmm.lmer("Reaction ~ Days + (Days | Subject)", data)
    assert fit.objective == pytest.approx(1743.6282719585, rel=1e-11)
    assert jnp.ones(1).dtype == jnp.float32  # the user's setting is untouched


def test_import_changes_no_jax_setting():
    code = textwrap.dedent(
        """
        import jax
        before = dict(jax.config.values)
        import jaxlmm
        data = jaxlmm.datasets.load("Dyestuff")
        jaxlmm.lmer("Yield ~ 1 + (1 | Batch)", data)
        changed = [k for k, v in jax.config.values.items() if before.get(k) != v]
        print(changed, jax.config.jax_enable_x64)
        """
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[] False"
