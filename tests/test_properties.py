"""Property tests on small random designs: the criterion against a naive dense likelihood,
invariances, and autodiff against finite differences.

The layouts are fixed (so compiled code is reused); hypothesis draws the data and theta.
"""

from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

import jaxlmm
from jaxlmm import deviance, linalg, parameters
from jaxlmm.design import build_design
from jaxlmm.deviance import chain_rule_derivatives, dense_derivatives, objective
from jaxlmm.model import from_design

FORMULA = "y ~ x + (x | g) + (1 | h)"
N = 48
SETTINGS = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def make_data(seed: int, weighted: bool = False) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    g = np.arange(N) % 6  # 6 levels, crossed with h
    h = (np.arange(N) // 2) % 4
    x = rng.normal(size=N)
    y = 1 + 0.5 * x + rng.normal(size=6)[g] + 0.7 * rng.normal(size=4)[h] + rng.normal(size=N)
    data = pd.DataFrame({"y": y, "x": x, "g": [f"g{k}" for k in g], "h": h})
    if weighted:
        data["w"] = rng.uniform(0.5, 2.0, size=N)
    return data


def make_mixed_data(seed: int) -> pd.DataFrame:
    """g crossed with h, each level of g meeting a few or many levels of h: in the blocked
    layout of ``(x | g) + (x | h)`` g has both light levels (entry pairs) and heavy ones (rows)."""
    rng = np.random.default_rng(seed)
    visits = [rng.choice(20, size=rng.integers(1, 8), replace=False) for _ in range(60)]
    g = np.concatenate([np.full(len(v), k) for k, v in enumerate(visits)])
    h = np.concatenate(visits)
    x = rng.normal(size=len(g))
    effects = rng.normal(size=60)[g] + 0.7 * rng.normal(size=20)[h]
    y = 1 + 0.5 * x + effects + rng.normal(size=len(g))
    return pd.DataFrame({"y": y, "x": x, "g": [f"g{k}" for k in g], "h": h})


def naive_criterion(design, theta, reml):
    """-2 log-likelihood (profiled over beta and sigma) from V = Z Lambda Lambda' Z' + W^{-1}."""
    sizes = tuple(t.n_columns for t in design.terms)
    blocks_z, blocks_lambda = [], []
    for term, t in zip(design.terms, parameters.factor_arrays(theta, sizes), strict=True):
        z = np.zeros((design.nobs, term.n_levels * term.n_columns))
        for a in range(term.n_columns):
            z[np.arange(design.nobs), term.codes * term.n_columns + a] = term.z[:, a]
        blocks_z.append(z)
        blocks_lambda.append(np.kron(np.eye(term.n_levels), np.asarray(t)))
    z = np.hstack(blocks_z)
    lam = np.zeros((z.shape[1], z.shape[1]))
    start = 0
    for block in blocks_lambda:
        lam[start : start + len(block), start : start + len(block)] = block
        start += len(block)
    v = z @ lam @ lam.T @ z.T + np.diag(1.0 / design.weights)
    x, y, n, p = design.x, design.y, design.nobs, design.x.shape[1]
    v_inv = np.linalg.inv(v)
    beta = np.linalg.solve(x.T @ v_inv @ x, x.T @ v_inv @ y)
    r = y - x @ beta
    quad = r @ v_inv @ r
    logdet_v = np.linalg.slogdet(v)[1]
    if not reml:
        return logdet_v + n * (1 + np.log(2 * np.pi * quad / n))
    logdet_xvx = np.linalg.slogdet(x.T @ v_inv @ x)[1]
    return logdet_v + logdet_xvx + (n - p) * (1 + np.log(2 * np.pi * quad / (n - p)))


thetas = st.lists(st.floats(-2.0, 2.0), min_size=4, max_size=4).map(np.array)


def core_model(formula, data, reml, weights=None, shared=False):
    return from_design(build_design(formula, data, weights), reml, shared)


@SETTINGS
@given(
    seed=st.integers(0, 2**31),
    theta=thetas,
    reml=st.booleans(),
    weighted=st.booleans(),
    shared=st.booleans(),
)
def test_criterion_equals_dense_marginal_likelihood(seed, theta, reml, weighted, shared):
    """Both layouts (first term block-diagonal, or everything dense) give the likelihood."""
    data = make_data(seed, weighted)
    core = core_model(FORMULA, data, reml, "w" if weighted else None, shared)
    with jax.enable_x64(True):
        ours = float(core.deviance(theta))
    expected = naive_criterion(core.design, theta, reml)
    assert ours == pytest.approx(expected, rel=1e-9, abs=1e-8)


@SETTINGS
@given(seed=st.integers(0, 2**31), theta=thetas, flips=st.lists(st.booleans(), min_size=3))
def test_criterion_invariant_to_sign_flips_of_lambda_columns(seed, theta, flips):
    core = core_model(FORMULA, make_data(seed), True)
    flipped = theta.copy()
    if flips[0]:  # first column of the (x | g) factor: entries 0 and 1
        flipped[[0, 1]] *= -1
    if flips[1]:  # second column: entry 2
        flipped[2] *= -1
    if flips[2]:  # the (1 | h) term
        flipped[3] *= -1
    with jax.enable_x64(True):
        assert float(core.deviance(flipped)) == pytest.approx(
            float(core.deviance(theta)), rel=1e-12
        )


@jax.jit
def autodiff_derivatives(theta, blocks, reml):
    value, grad = jax.value_and_grad(objective)(theta, blocks, reml)
    return value, grad, jax.hessian(objective)(theta, blocks, reml)


@settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    seed=st.integers(0, 2**31),
    theta=st.lists(st.floats(-2.0, 2.0), min_size=6, max_size=6).map(np.array),
    reml=st.booleans(),
    weighted=st.booleans(),
)
@example(seed=3, theta=np.array([1.0, 0.3, 0.8, 1.2, -0.4, 0.0]), reml=True, weighted=False)
@example(seed=4, theta=np.array([0.6, -0.2, 0.5, 1.1, 0.7, 1e-3]), reml=False, weighted=True)
@example(seed=5, theta=np.array([0.9, 0.1, 0.5, 0.0, 0.0, 0.0]), reml=True, weighted=False)
def test_optimiser_derivatives_equal_autodiff(seed, theta, reml, weighted):
    """The closed-form (dense systems) and chain-rule (block-diagonal first term, with and
    without the Hessian) value, gradient and Hessian the optimiser uses equal plain autodiff
    (crossed vector terms: several parameters both in term 1 and in the later term; the
    explicit examples put later thetas at and near 0, and all of them at 0, where the
    Hessian's traces of the largest one, taken from the homogeneity of zz, vanish)."""
    data = make_data(seed, weighted)
    formula = "y ~ x + (x | g) + (x | h)"
    weights = "w" if weighted else None
    with jax.enable_x64(True):
        for shared, derivatives in [(False, chain_rule_derivatives), (True, dense_derivatives)]:
            blocks, _ = core_model(formula, data, reml, weights, shared).blocks()
            padded = jnp.asarray(parameters.pad_theta(theta, blocks.n_theta))
            expected = autodiff_derivatives(padded, blocks, reml)
            if derivatives is dense_derivatives:
                got = jax.jit(partial(derivatives, order=2))(padded, blocks, reml)
            else:
                got = jax.jit(derivatives)(padded, blocks, reml)
                gradient_only = jax.jit(partial(derivatives, hessian=False))(padded, blocks, reml)
                got = (*gradient_only, got[2])
            for value, want in zip(got, expected, strict=True):
                scale = np.max(np.abs(want))
                np.testing.assert_allclose(value, want, rtol=1e-8, atol=1e-9 * scale)


@pytest.mark.parametrize(
    "width, data",
    [(3, make_data(5)), (1024, make_data(5)), (7, make_mixed_data(1)), (1024, make_mixed_data(2))],
)  # mz = 8: in blocks, the last shifted back; whole; mixed: light and heavy levels, mz = 40
def test_chain_rule_derivatives_with_the_host_inverse(monkeypatch, width, data):
    """The chain-rule derivatives with the dense block inverted by LAPACK from the host (the
    path of large blocks on CPU, here forced on a small one) equal plain autodiff, whether the
    Hessian's traces, the heavy fill-in, its mirroring and the tangents' products with zz^-1
    are formed in blocks or whole, with light levels (their fill-in and its gradient read from
    the strips) or not."""
    monkeypatch.setattr(linalg, "HOST_LAPACK_MIN", 1)
    monkeypatch.setattr(linalg, "ROW_BLOCK", width)
    monkeypatch.setattr(deviance, "HEAVY_BLOCK", width)
    formula = "y ~ x + (x | g) + (x | h)"
    with jax.enable_x64(True):
        blocks, _ = core_model(formula, data, True, None, False).blocks()
        theta = jnp.asarray(parameters.pad_theta([0.9, -0.2, 0.6, 1.1, 0.4, 0.7], blocks.n_theta))
        compiled = jax.jit(lambda t, b: chain_rule_derivatives(t, b)).lower(theta, blocks).compile()
        assert "callback" in compiled.as_text()
        expected = autodiff_derivatives(theta, blocks, True)
        got = compiled(theta, blocks)  # the callback runs in XLA's threads, outside the context
        for value, want in zip(got, expected, strict=True):
            scale = np.max(np.abs(want))
            np.testing.assert_allclose(value, want, rtol=1e-8, atol=1e-9 * scale)


@pytest.mark.parametrize("width", [3, 4])  # 8 = mz: last blocks shifted back, or not
def test_fill_in_by_lower_blocks_equals_the_whole_product(monkeypatch, width):
    """The heavy levels' product formed block by block (its lower blocks, mirrored; the last
    blocks shifted back to end at mz, their overlap masked) equals the product formed whole,
    and so does its gradient."""
    data = make_data(6)
    with jax.enable_x64(True):
        blocks, _ = core_model("y ~ x + (x | g) + (x | h)", data, True, None, False).blocks()
        assert np.count_nonzero(blocks.heavy_rows) > 0
        w = jnp.asarray(np.random.default_rng(0).normal(size=blocks.a11.shape))
        cotangent = jnp.asarray(np.random.default_rng(1).normal(size=(blocks.mz, blocks.mz)))

        def weighted_sum(w, b):
            return jnp.sum(cotangent * deviance.fill_in(w, b)[0])

        whole = jax.jit(deviance.fill_in)(w, blocks), jax.jit(jax.grad(weighted_sum))(w, blocks)
        monkeypatch.setattr(deviance, "HEAVY_BLOCK", width)
        assert blocks.mz == 8
        by_blocks = (
            jax.jit(lambda w, b: deviance.fill_in(w, b))(w, blocks),
            jax.jit(jax.grad(lambda w, b: weighted_sum(w, b)))(w, blocks),
        )
    for got, want in zip(jax.tree.leaves(by_blocks), jax.tree.leaves(whole), strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("width", [3, 1024])
def test_fill_in_gradient_is_the_transpose_of_the_fill_in(monkeypatch, width):
    """The fill-in's gradient by its own sums (light pairs read from the strips, heavy rows a
    block of columns at a time) equals autodiff through the fill-in, for a symmetric cotangent
    of the (mz, mz) part, in the symmetric part that counts for a symmetric w."""
    data = make_mixed_data(3)
    monkeypatch.setattr(deviance, "HEAVY_BLOCK", width)
    with jax.enable_x64(True):
        blocks, _ = core_model("y ~ x + (x | g) + (x | h)", data, True, None, False).blocks()
        assert np.count_nonzero(blocks.heavy_rows) > 0 and blocks.strip_first.size > 0
        rng = np.random.default_rng(2)
        w = jnp.asarray(rng.normal(size=blocks.a11.shape))
        c = rng.normal(size=(blocks.mz, blocks.mz))
        cot_zz, cot_zx = jnp.asarray(c + c.T), jnp.asarray(rng.normal(size=blocks.azx.shape))

        def weighted(w, blocks):
            fill_zz, fill_zx = deviance.fill_in(w, blocks)
            return jnp.sum(cot_zz * fill_zz) + jnp.sum(cot_zx * fill_zx)

        want = jax.jit(jax.grad(weighted))(w, blocks)
        got = jax.jit(deviance.fill_in_gradient)(cot_zz, cot_zx, w, blocks)

    def symmetric(a):  # w is symmetric: the part of its gradient that counts
        a = np.asarray(a)
        return (a + np.swapaxes(a, 1, 2)) / 2

    np.testing.assert_allclose(symmetric(got), symmetric(want), rtol=1e-12, atol=1e-12)


@pytest.fixture(scope="module")
def base_fit():
    return jaxlmm.lmer(FORMULA, make_data(7)), make_data(7)


@settings(max_examples=5, deadline=None)
@given(seed=st.integers(0, 2**31))
def test_fit_invariant_to_row_order(base_fit, seed):
    fit, data = base_fit
    shuffled = data.sample(frac=1.0, random_state=seed % 2**32)
    other = jaxlmm.lmer(FORMULA, shuffled)
    assert other.objective == pytest.approx(fit.objective, abs=1e-8)
    np.testing.assert_allclose(other.theta, fit.theta, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(other.fixef, fit.fixef, rtol=1e-6)
    np.testing.assert_allclose(other.fitted.loc[data.index], fit.fitted, rtol=1e-6)


@pytest.mark.parametrize("scale", [1e6, 1e-6])
def test_theta_invariant_to_response_scale(base_fit, scale):
    fit, data = base_fit
    scaled = data.assign(y=data["y"] * scale)
    other = jaxlmm.lmer(FORMULA, scaled)
    np.testing.assert_allclose(other.theta, fit.theta, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(other.fixef / scale, fit.fixef, rtol=1e-6)
    assert other.sigma / scale == pytest.approx(fit.sigma, rel=1e-6)


def test_gradient_matches_finite_differences(base_fit):
    fit, data = base_fit
    fun = jaxlmm.devfun(FORMULA, data)
    theta = fit.theta + np.array([0.1, -0.05, 0.2, 0.1])
    eps = 1e-6
    with jax.enable_x64(True):
        grad = np.asarray(jax.grad(fun)(theta))
        numeric = [
            (float(fun(theta + eps * e)) - float(fun(theta - eps * e))) / (2 * eps)
            for e in np.eye(4)
        ]
        hess = np.asarray(jax.hessian(fun)(theta))
        numeric_hess = [
            (
                np.asarray(jax.grad(fun)(theta + eps * e))
                - np.asarray(jax.grad(fun)(theta - eps * e))
            )
            / (2 * eps)
            for e in np.eye(4)
        ]
    np.testing.assert_allclose(grad, numeric, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(hess, np.array(numeric_hess), rtol=1e-5, atol=1e-5)


def test_devfun_at_the_optimum_is_the_objective(base_fit):
    fit, data = base_fit
    with jax.enable_x64(True):
        value = float(jaxlmm.devfun(FORMULA, data)(fit.theta))
    assert value == pytest.approx(fit.objective, rel=1e-12)


def test_large_host_blocks_are_read_in_place():
    """Large host blocks are 64-byte aligned copies (NumPy aligns to 16 bytes only), which
    XLA's CPU client reads where they lie instead of copying them once more per fit."""
    from jaxlmm.crossprod import IN_PLACE_MIN_BYTES, _in_place

    a = np.arange(IN_PLACE_MIN_BYTES // 8 + 2, dtype=np.float64)[1:]  # 8 bytes off alignment
    assert a.ctypes.data % 64 != 0
    out = _in_place(a)
    assert out.ctypes.data % 64 == 0 and np.array_equal(out, a)
    if jax.default_backend() == "cpu":
        with jax.enable_x64(True):
            assert np.shares_memory(np.asarray(jax.device_put(out)), out)
    small = np.arange(10.0)[1:]
    assert _in_place(small) is small


@pytest.mark.parametrize("strip, chunk", [(1, 4), (3, 8), (8, 2**17)])
def test_strips_hold_all_pairs_within_each_light_level_once(monkeypatch, strip, chunk):
    """The strips stand for exactly the pairs of entries of one light term-1 level (second row
    at most the first's), each once, ordered by the first's row; padding strips join the last
    entry with itself, and their count is the one the size class was given."""
    from jaxlmm import crossprod

    monkeypatch.setattr(crossprod, "STRIP", strip)
    monkeypatch.setattr(crossprod, "STRIP_CHUNK", chunk)
    rng = np.random.default_rng(3)
    mz, ne = 12, 64
    counts = rng.integers(1, 9, 10)
    level = np.repeat(np.arange(10), counts)
    row = np.concatenate([np.sort(rng.choice(mz, c, replace=False)) for c in counts])
    is_light = rng.random(10) < 0.7
    real = len(level)
    pad = ne - real
    level, row = (np.concatenate([a, np.zeros(pad, int)]).astype(np.int32) for a in (level, row))
    light = np.concatenate([is_light[level[:real]], np.zeros(pad, bool)])
    want = sorted(
        (a, b)
        for a in np.flatnonzero(light)
        for b in np.flatnonzero(light)
        if level[a] == level[b] and row[b] <= row[a]
    )
    n = crossprod.count_strips(level[:real], counts, light[:real])
    nstrips = crossprod._strip_count(n + 3, 0)
    first, base = crossprod._strips(level, row, counts, light, nstrips)
    assert first.shape == crossprod.strip_shape(nstrips) and first.size == nstrips
    first = first.reshape(-1)
    start = base[first] + strip * np.arange(nstrips)
    pairs = zip(first[:n], start[:n], strict=True)
    got = [(f, s + k) for f, s in pairs for k in range(strip) if s + k <= f]
    assert sorted(got) == want
    assert np.all(np.diff(row[first[:n]]) >= 0)
    assert np.all(first[n:] == ne - 1)
