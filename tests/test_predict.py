"""predict() and simulate() against lme4 (tests/data/inference_reference.json, field predict,
made by tests/data/make_inference_reference.R) and against the model's moments."""

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import jaxlmm

PREDICT = json.loads((Path(__file__).parent / "data" / "inference_reference.json").read_text())[
    "predict"
]


@pytest.fixture(scope="module")
def fit(sleepstudy):
    return jaxlmm.lmer(PREDICT["model"]["formula"], sleepstudy)


@pytest.fixture(scope="module")
def newdata():
    return pd.DataFrame(PREDICT["newdata"])


def test_predict_own_rows(fit):
    np.testing.assert_allclose(fit.predict().to_numpy()[:5], PREDICT["fitted_head5"], rtol=1e-6)
    pd.testing.assert_series_equal(fit.predict(), fit.fitted)


def test_predict_new_data(fit, newdata):
    np.testing.assert_allclose(fit.predict(newdata[:3]), PREDICT["newdata_rows1to3"], rtol=1e-6)
    allowed = fit.predict(newdata, allow_new_levels=True)
    np.testing.assert_allclose(allowed, PREDICT["newdata_allow_new"], rtol=1e-6)
    population = fit.predict(newdata, re_form="~0")
    np.testing.assert_allclose(population, PREDICT["newdata_re_form_NA"], rtol=1e-6)
    assert allowed.iloc[3] == population.iloc[3]  # the new level gets the population value
    intercepts = fit.predict(newdata, re_form="~ (1 | Subject)", allow_new_levels=True)
    np.testing.assert_allclose(intercepts, PREDICT["re_form_intercept"]["value"], rtol=1e-6)


def test_predict_errors(fit, newdata):
    with pytest.raises(jaxlmm.InferenceError, match="'999'.*Subject"):
        fit.predict(newdata)
    with pytest.raises(jaxlmm.DataError, match="Days"):
        fit.predict(newdata.drop(columns="Days"))
    with pytest.raises(jaxlmm.DataError, match="Subject"):
        fit.predict(newdata.drop(columns="Subject"), re_form=None, allow_new_levels=True)
    with pytest.raises(jaxlmm.InferenceError, match="Plate"):
        fit.predict(newdata, re_form="~ (1 | Plate)")
    with pytest.raises(jaxlmm.InferenceError, match="Weeks"):
        fit.predict(newdata, re_form="~ (Weeks | Subject)")


def test_predict_factor_fixed_effects():
    data = jaxlmm.datasets.load("Penicillin")
    fit = jaxlmm.lmer("diameter ~ sample + (1 | plate)", data)
    again = fit.predict(data.iloc[::-1])
    np.testing.assert_allclose(again.to_numpy()[::-1], fit.fitted.to_numpy(), rtol=1e-10)


def test_simulate_moments(fit):
    sims = fit.simulate(4000, seed=1)
    assert sims.shape == (180, 4000) and list(sims.columns[:2]) == ["sim_1", "sim_2"]
    pd.testing.assert_frame_equal(fit.simulate(3, seed=7), fit.simulate(3, seed=7))
    design = fit.design
    mean = design.x @ fit.fixef.to_numpy()
    t = np.array([[fit.theta[0], 0.0], [fit.theta[1], fit.theta[2]]])
    z = design.terms[0].z
    variance = fit.sigma**2 * (np.sum((z @ t) ** 2, axis=1) + 1)
    values = sims.to_numpy()
    assert np.all(np.abs(values.mean(axis=1) - mean) < 4.5 * np.sqrt(variance / 4000))
    np.testing.assert_allclose(values.var(axis=1), variance, rtol=0.15)


def test_simulate_rejects_bad_nsim(fit):
    with pytest.raises(jaxlmm.InferenceError, match="nsim"):
        fit.simulate(0)


def test_predict_refuses_an_unseen_fixed_effect_level(sleepstudy):
    data = sleepstudy.assign(f=np.where(sleepstudy.Days < 5, "lo", "hi"))
    fit = jaxlmm.lmer("Reaction ~ f + (1 | Subject)", data)
    known = fit.predict(pd.DataFrame({"f": ["lo", "hi"], "Subject": ["308", "308"]}))
    assert known.iloc[0] != known.iloc[1]
    with pytest.raises(jaxlmm.JaxlmmError, match=r"'f' has level\(s\) \['zz'\]"):
        fit.predict(pd.DataFrame({"f": ["zz"], "Subject": ["308"]}))
