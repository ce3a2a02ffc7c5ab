"""lmer_batch: equal to single fits, bad responses isolated, chunked and sharded alike."""

import contextlib
import os
import subprocess
import sys
import textwrap
from functools import partial

import numpy as np
import pandas as pd
import pytest

import jaxlmm
from jaxlmm import batch, programs

FORMULA = "y ~ Days + (Days | Subject)"


def simulate(data, n, seed):
    rng = np.random.default_rng(seed)
    groups = data["Subject"].cat.codes.to_numpy()
    days = data["Days"].to_numpy(dtype=float)
    b0 = rng.normal(0, 25, (n, groups.max() + 1))
    b1 = rng.normal(0, 6, (n, groups.max() + 1))
    return (
        250 + 10 * days + b0[:, groups] + b1[:, groups] * days + rng.normal(0, 25, (n, len(days)))
    )


@pytest.fixture(scope="module")
def responses(sleepstudy):
    y = simulate(sleepstudy, 24, seed=3)
    rng = np.random.default_rng(4)
    for i in range(0, 24, 3):  # every third response misses some values
        y[i, rng.choice(180, size=12, replace=False)] = np.nan
    return y


@contextlib.contextmanager
def batched(enabled: bool):
    """A context in which small batches run through the vmapped program (``enabled``) or
    one response at a time through lmer's program (the path of a first, small batch)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(batch, "ONE_BY_ONE", 0 if enabled else 10**9)
        patch.setattr(programs, "available", lambda key: enabled)
        yield


PATHS = [True, False]
PATH_IDS = ["vmapped", "one-by-one"]


@pytest.fixture(
    scope="module",
    params=[(r, v) for r in [True, False] for v in PATHS],
    ids=[f"{r}-{v}" for r in ["REML", "ML"] for v in PATH_IDS],
)
def batch_fit(request, sleepstudy, responses):
    reml, vmapped = request.param
    with batched(vmapped):
        fit = jaxlmm.lmer_batch(FORMULA, sleepstudy, responses, reml=reml, progress=False)
    return reml, fit


@pytest.mark.parametrize("i", [0, 1, 5, 9, 22])
def test_batch_equals_single_fits(batch_fit, sleepstudy, responses, i):
    reml, bf = batch_fit
    single = jaxlmm.lmer(FORMULA, sleepstudy.assign(y=responses[i]), reml=reml)
    assert bf.converged[i]
    assert bf.nobs[i] == single.nobs
    assert bf.objective[i] == pytest.approx(single.objective, rel=1e-6)
    np.testing.assert_allclose(bf.fixef.iloc[i], single.fixef, rtol=1e-5)
    np.testing.assert_allclose(bf.std_errors.iloc[i], single.std_errors, rtol=1e-4)
    assert bf.sigma[i] == pytest.approx(single.sigma, rel=1e-5)
    components = bf.variance_components().iloc[i]
    expected = single.varcorr["sdcor"].to_numpy()
    np.testing.assert_allclose(components.to_numpy(), expected[[0, 2, 1, 3]], rtol=1e-4)


def test_batch_satterthwaite_tables(batch_fit):
    """Per-response Satterthwaite tables equal the single fit's at the same estimates."""
    _, bf = batch_fit
    table = bf.coef_table()
    assert table.index.names == ["response", "term"] and len(table) == 2 * len(bf)
    for i in [0, 4]:  # response 0 has missing values
        np.testing.assert_allclose(table.loc[i], bf[i].coef_table(), rtol=1e-8)
    assert table["df"].between(10, 200).all()
    assert bf.coef_table("none")["df"].isna().all()
    with pytest.raises(jaxlmm.InferenceError, match="satterthwaite"):
        bf.coef_table("kenward-roger")


def test_single_fit_from_batch(batch_fit, sleepstudy, responses):
    reml, bf = batch_fit
    fit = bf[3]
    assert isinstance(fit, jaxlmm.LinearMixedModelFit)
    np.testing.assert_allclose(fit.fixef, bf.fixef.iloc[3], rtol=1e-10)
    assert fit.objective == pytest.approx(bf.objective[3], rel=1e-13)
    assert fit.nobs == bf.nobs[3] == 168
    single = jaxlmm.lmer(FORMULA, sleepstudy.assign(y=responses[3]), reml=reml)
    ours = fit.ranef()["Subject"]
    np.testing.assert_allclose(
        ours, single.ranef()["Subject"].loc[ours.index], rtol=1e-4, atol=1e-4
    )
    assert "Number of obs: 168" in fit.summary()


def test_tidy_frame(batch_fit):
    _, bf = batch_fit
    frame = bf.to_frame()
    assert len(frame) == 24
    for column in ["status", "converged", "objective", "(Intercept)", "se_Days", "sigma"]:
        assert column in frame.columns
    assert "sd_(Intercept)|Subject" in frame.columns and "cor_Days.(Intercept)|Subject" in frame


@pytest.mark.parametrize("vmapped", PATHS, ids=PATH_IDS)
def test_bad_responses_get_a_status_and_leave_others_alone(sleepstudy, responses, vmapped):
    y = responses[:6].copy()
    y[1] = np.nan  # nothing observed
    y[2] = 5.0  # constant
    y[3, 7] = np.inf
    y[4, np.arange(180) % 10 != 0] = np.nan  # one observation per subject
    y[5, sleepstudy["Subject"] != "308"] = np.nan  # one subject left
    with batched(vmapped):
        bf = jaxlmm.lmer_batch(FORMULA, sleepstudy, y, progress=False)
    status = jaxlmm.Status
    codes = [status.NO_OBSERVATIONS, status.CONSTANT_RESPONSE, status.INFINITE_RESPONSE]
    assert list(bf.status_code[1:4]) == codes
    assert bf.status_code[4] == status.TOO_FEW_OBSERVATIONS
    assert bf.status_code[5] == status.TOO_FEW_LEVELS
    assert np.all(np.isnan(bf.objective[1:])) and np.all(np.isnan(bf.fixef.iloc[1:]))
    table = bf.coef_table()
    assert table.loc[0].notna().all().all() and table.loc[1:].isna().all().all()
    alone = jaxlmm.lmer_batch(FORMULA, sleepstudy, y[:1], progress=False)
    assert bf.objective[0] == pytest.approx(alone.objective[0], rel=1e-12)
    with pytest.raises(jaxlmm.DataError, match="not fitted: no observed values"):
        bf[1]


def test_response_columns_and_crossed_design():
    data = jaxlmm.datasets.load("Penicillin")
    rng = np.random.default_rng(5)
    plate, sample = data["plate"].cat.codes.to_numpy(), data["sample"].cat.codes.to_numpy()
    for k in range(3):
        data[f"d{k}"] = (
            22
            + rng.normal(0, 0.8, 24)[plate]
            + rng.normal(0, 2, 6)[sample]
            + rng.normal(0, 0.5, 144)
        )
    data.loc[[3, 40], "d1"] = np.nan
    formula = "d ~ 1 + (1 | plate) + (1 | sample)"
    bf = jaxlmm.lmer_batch(formula, data, ["d0", "d1", "d2"], progress=False)
    assert list(bf.fixef.index) == ["d0", "d1", "d2"]
    for k in range(3):
        single = jaxlmm.lmer(formula.replace("d ~", f"d{k} ~"), data)
        assert bf.objective[k] == pytest.approx(single.objective, rel=1e-6)
        assert bf.fixef.iloc[k, 0] == pytest.approx(single.fixef.iloc[0], rel=1e-5)


def test_first_small_batches_reuse_lmers_program_then_batching_compiles(sleepstudy, responses):
    """Until a batch's vmapped program exists, small models' responses are fitted one at a
    time by lmer's program (no compiling), up to ONE_BY_ONE responses, then batching compiles."""
    jaxlmm.lmer(FORMULA, sleepstudy.assign(y=responses[1]))
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(batch, "ONE_BY_ONE", 12)
        patch.setattr(batch, "_fitted_one_by_one", batch.Counter())
        patch.setattr(programs, "available", lambda key: False)
        before = programs.counts()["compiled"]
        first = jaxlmm.lmer_batch(FORMULA, sleepstudy, responses[:8], progress=False)
        assert programs.counts()["compiled"] == before  # lmer's program, one response at a time
        again = jaxlmm.lmer_batch(FORMULA, sleepstudy, responses[:8], progress=False)
    assert first.result.model.rows.ng1 == 0  # lmer's layout: every effect in the dense block
    assert again.result.model.rows.ng1 > 0  # past the budget: the batched layout
    np.testing.assert_allclose(again.objective, first.objective, rtol=1e-9)
    np.testing.assert_allclose(again.fixef, first.fixef, rtol=1e-6)


def test_chunks_reuse_compiled_code(sleepstudy, responses):
    with batched(True):
        whole = jaxlmm.lmer_batch(FORMULA, sleepstudy, responses[:10], progress=False)
        before = programs.counts()["compiled"]
        chunked = jaxlmm.lmer_batch(
            FORMULA, sleepstudy, responses[:10], chunk_size=4, progress=False
        )
    assert programs.counts()["compiled"] - before <= 1  # one new chunk shape, then reused
    np.testing.assert_allclose(chunked.objective, whole.objective, rtol=1e-10)


def test_bad_arguments(sleepstudy):
    with pytest.raises(jaxlmm.DataError, match="shape"):
        jaxlmm.lmer_batch(FORMULA, sleepstudy, np.zeros((3, 7)), progress=False)
    with pytest.raises(jaxlmm.DataError, match="nope"):
        jaxlmm.lmer_batch(FORMULA, sleepstudy, ["nope"], progress=False)
    y = np.zeros((2, 180))
    with pytest.raises(ValueError, match="chunk_size"):
        jaxlmm.lmer_batch(FORMULA, sleepstudy, y, chunk_size=0, progress=False)
    with pytest.raises(ValueError, match="devices"):
        jaxlmm.lmer_batch(FORMULA, sleepstudy, y, devices=0, progress=False)


SHARDED = textwrap.dedent(
    """
    import numpy as np, jax, jaxlmm
    from jaxlmm import batch
    assert jax.local_device_count() == 4
    data = jaxlmm.datasets.load("sleepstudy")
    rng = np.random.default_rng(0)
    y = data["Reaction"].to_numpy() + rng.normal(0, 20, (10, 180))
    y[2, :7] = np.nan
    one = jaxlmm.lmer_batch("y ~ Days + (Days | Subject)", data, y, devices=1, progress=False)
    four = jaxlmm.lmer_batch("y ~ Days + (Days | Subject)", data, y, devices=4, progress=False)
    np.testing.assert_allclose(four.objective, one.objective, rtol=1e-10)
    np.testing.assert_allclose(four.fixef, one.fixef, rtol=1e-10)
    rows, _ = batch._sharding(4)
    placed = jax.device_put(np.zeros((8, 180)), rows)
    assert len({s.device for s in placed.addressable_shards}) == 4
    assert placed.addressable_shards[0].data.shape == (2, 180)
    print("sharded ok")
    """
)


@pytest.mark.slow  # fresh processes compile the batch fit for one device, then for four
def test_sharded_equals_unsharded(tmp_path):
    """Also: programs that a one-device process left in the disk cache are not loaded where
    there are four devices."""
    env = dict(os.environ, JAXLMM_CACHE_DIR=str(tmp_path / "cache"))
    env.pop("JAXLMM_NO_CACHE", None)
    single = "import jaxlmm; jaxlmm.lmer('y ~ Days + (Days | Subject)', jaxlmm.datasets.load("
    single += "'sleepstudy').rename(columns={'Reaction': 'y'}))"
    run = partial(subprocess.run, capture_output=True, text=True, timeout=600)
    assert run([sys.executable, "-c", single], env=env).returncode == 0
    flags = os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=4"
    out = run([sys.executable, "-c", SHARDED], env=dict(env, XLA_FLAGS=flags))
    assert out.returncode == 0, out.stderr[-3000:]
    assert "sharded ok" in out.stdout


def test_responses_frame_names(sleepstudy, responses):
    frame = pd.DataFrame(responses[:2], index=["geneA", "geneB"])
    bf = jaxlmm.lmer_batch(FORMULA, sleepstudy, frame, progress=False)
    assert list(bf.fixef.index) == ["geneA", "geneB"]


def test_response_frames_are_checked_like_arrays(sleepstudy, responses):
    frame = pd.DataFrame(responses[:3], index=["a", "b", "c"])
    bf = jaxlmm.lmer_batch(FORMULA, sleepstudy, frame, progress=False)
    assert list(bf.fixef.index) == ["a", "b", "c"]
    with pytest.raises(jaxlmm.DataError, match=r"shape \(B, 180\).*\(3, 179\)"):
        jaxlmm.lmer_batch(FORMULA, sleepstudy, frame.iloc[:, :179], progress=False)
    with pytest.raises(jaxlmm.DataError, match="transpose it"):
        jaxlmm.lmer_batch(FORMULA, sleepstudy, frame.T, progress=False)


def test_duplicated_index_works_as_in_lmer(sleepstudy, responses):
    data = sleepstudy.set_axis(np.arange(len(sleepstudy)) // 2)  # every label twice
    bf = jaxlmm.lmer_batch(FORMULA, data, responses[:2], progress=False)
    single = jaxlmm.lmer(FORMULA, data.assign(y=responses[1]))
    assert bf.objective[1] == pytest.approx(single.objective, rel=1e-10)
    assert list(bf[1].fitted.index) == list(single.fitted.index)
