"""Inference against lmerTest and pbkrtest: variance-parameter covariance and SEs,
Satterthwaite and Kenward-Roger tests, type III anova, likelihood-ratio tests, Wald intervals.

lme4 cases: tests/data/lme4/*.json (fields vcov_varpar, sdcor_se, satterthwaite, kenward_roger,
confint_wald). Further models: tests/data/inference_reference.json, made by
tests/data/make_inference_reference.R with lmerTest 3.1-3 and pbkrtest 0.5.2.
"""

import json
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
import pytest
from conftest import LME4_CASES

import jaxlmm
from jaxlmm.anova_tables import type3_contrasts
from jaxlmm.inference import varpar_deviance

REFERENCE = json.loads((Path(__file__).parent / "data" / "inference_reference.json").read_text())
DF_RTOL = 2e-3  # the tolerance on df and KR standard errors
VARPAR_RTOL = 2e-2  # lmerTest's Hessian is numerical


def _sleepstudy_with_half():
    data = jaxlmm.datasets.load("sleepstudy")
    return data.assign(half=np.where(data["Days"] < 5, "early", "late"))


@pytest.fixture(scope="module")
def reference_model():
    """Models of inference_reference.json, fitted once each."""
    cache = {}

    def get(key):
        if key not in cache:
            ref = REFERENCE[key]
            if key == "factor_fixed":
                data = jaxlmm.datasets.load("Penicillin")
            else:
                data = _sleepstudy_with_half()
            if key == "unbalanced":
                data = data.drop(data.index[np.array(ref["dropped_rows_1based"]) - 1])
            weights = 1 + data["Days"] % 3 if key == "weighted" else None  # as in the R script
            cache[key] = jaxlmm.lmer(ref["formula"], data, reml=ref["REML"], weights=weights), ref
        return cache[key]

    return get


def _nonnull(values):
    return np.array([np.nan if v is None else v for v in values], dtype=float)


# --- lme4 reference cases -------------------------------------------------------------------

# InstEval's exact Hessian compiles for ~20 s: run it on purpose (-m slow).
DERIVATIVE_CASES = [
    pytest.param(n, marks=pytest.mark.slow) if n == "insteval_crossed" else n for n in LME4_CASES
]


@pytest.mark.parametrize("name", DERIVATIVE_CASES)
def test_satterthwaite_df_and_p(lme4_fit, name):
    fit, ref = lme4_fit(name)
    table = fit.coef_table("satterthwaite")
    expected = ref["satterthwaite"]
    np.testing.assert_allclose(table["df"], np.atleast_1d(expected["df"]), rtol=DF_RTOL)
    np.testing.assert_allclose(table["t_value"], np.atleast_1d(expected["t"]), rtol=1e-3)
    log_p = np.log(table["p_value"].to_numpy())
    np.testing.assert_allclose(log_p, np.log(np.atleast_1d(expected["p"])), rtol=1e-2)


@pytest.mark.parametrize("name", DERIVATIVE_CASES)
def test_variance_parameter_covariance(lme4_fit, name):
    fit, ref = lme4_fit(name)
    expected = np.array(ref["vcov_varpar"])
    scale = np.sqrt(np.outer(np.diag(expected), np.diag(expected)))
    got = fit.vcov_varpar.to_numpy()
    np.testing.assert_array_less(np.abs(got - expected), VARPAR_RTOL * scale + 1e-12)


@pytest.mark.parametrize("name", DERIVATIVE_CASES)
def test_variance_component_standard_errors(lme4_fit, name):
    fit, ref = lme4_fit(name)
    np.testing.assert_allclose(
        fit.varcorr["std_error"], ref["sdcor_se"], rtol=VARPAR_RTOL, atol=1e-10
    )


@pytest.mark.parametrize(
    "name", [n for n in LME4_CASES if n not in ("insteval_crossed", "dyestuff_ml", "sleepstudy_ml")]
)
def test_kenward_roger_df_and_se(lme4_fit, name):
    fit, ref = lme4_fit(name)
    table = fit.coef_table("kenward-roger")
    expected = ref["kenward_roger"]
    np.testing.assert_allclose(table["df"], np.atleast_1d(expected["df"]), rtol=DF_RTOL)
    np.testing.assert_allclose(table["std_error"], np.atleast_1d(expected["se"]), rtol=DF_RTOL)


@pytest.mark.parametrize("name", ["sleepstudy_reml", "penicillin_crossed", "pastes_nested"])
def test_exact_hessian_matches_finite_differences(lme4_fit, name):
    """The Hessian of the deviance in (theta, sigma) against central differences of the
    (autodiff) gradient: agreement to 1e-6 relative."""
    fit, _ = lme4_fit(name)
    exact = fit._derivatives.hessian
    with jax.enable_x64(True):
        blocks, scale = fit.model.blocks()
        n_theta = len(fit.theta)

        def deviance(varpar):  # on the response's own scale (sigma in its units)
            theta = jnp.pad(varpar[:-1], (0, blocks.n_theta - n_theta))
            return varpar_deviance(jnp.append(theta, varpar[-1] / scale), blocks, fit.reml)

        grad = jax.jit(jax.grad(deviance))
        varpar = jnp.asarray(np.append(fit.theta, fit.sigma))
        numeric = np.empty_like(exact)
        for k in range(len(varpar)):
            h = 1e-5 * max(abs(float(varpar[k])), 1.0)
            step = jnp.zeros_like(varpar).at[k].set(h)
            numeric[:, k] = (np.asarray(grad(varpar + step)) - np.asarray(grad(varpar - step))) / (
                2 * h
            )
    scale = np.sqrt(np.outer(np.abs(np.diag(exact)), np.abs(np.diag(exact))))
    np.testing.assert_array_less(np.abs(numeric - exact), 1e-6 * scale)


@pytest.mark.parametrize("name", LME4_CASES)
def test_wald_intervals(lme4_fit, name):
    fit, ref = lme4_fit(name)
    ci = fit.confint("wald")
    expected = ref["confint_wald"]
    assert list(ci.index) == expected["names"]
    se = np.atleast_1d(ref["se"])
    se = np.concatenate([np.full(len(ci) - len(se), np.nan), se])
    for side in ("lower", "upper"):
        error = np.abs(ci[side].to_numpy() - _nonnull(expected[side]))
        assert np.all(np.isnan(error) == np.isnan(se))
        np.testing.assert_array_less(error[~np.isnan(se)], 1e-3 * se[~np.isnan(se)])


# --- contrasts and anova (inference_reference.json) -----------------------------------------


def _check_f_table(got: pd.DataFrame, expected: dict, df_rtol=DF_RTOL):
    assert list(got.index) == list(np.atleast_1d(expected["rownames"]))
    np.testing.assert_array_equal(got["num_df"], np.atleast_1d(expected["NumDF"]))
    np.testing.assert_allclose(got["den_df"], np.atleast_1d(expected["DenDF"]), rtol=df_rtol)
    np.testing.assert_allclose(got["F_value"], np.atleast_1d(expected["F value"]), rtol=1e-4)
    np.testing.assert_allclose(got["mean_sq"], np.atleast_1d(expected["Mean Sq"]), rtol=1e-4)
    np.testing.assert_allclose(got["sum_sq"], np.atleast_1d(expected["Sum Sq"]), rtol=1e-4)
    np.testing.assert_allclose(got["p_value"], np.atleast_1d(expected["Pr(>F)"]), rtol=1e-2)


# "interaction" is "unbalanced" on all rows (a balanced design: no KR adjustment); it
# costs another compilation, so it runs with the slow tests.
INTERACTION = pytest.param("interaction", marks=pytest.mark.slow)


@pytest.mark.parametrize("key", [INTERACTION, "unbalanced", "factor_fixed"])
@pytest.mark.parametrize("ddf", ["satterthwaite", "kenward_roger"])
def test_type3_anova(reference_model, key, ddf):
    fit, ref = reference_model(key)
    table = jaxlmm.anova(fit, ddf=ddf.replace("_", "-"))
    _check_f_table(table, ref[f"anova_III_{ddf}"])


def test_type3_anova_ml_fit(reference_model):
    fit, ref = reference_model("ml_slope")
    _check_f_table(fit.anova(), ref["anova_III_satterthwaite"])


def test_type3_contrasts_match_lmertest(reference_model):
    """lmerTest's contrasts for Days * half (they depend on the coding, not on the rows)."""
    fit, _ = reference_model("unbalanced")
    contrasts = type3_contrasts(fit.design)
    for term, expected in REFERENCE["interaction"]["contrasts_type3"].items():
        np.testing.assert_allclose(contrasts[term], np.atleast_2d(expected["rows"]), atol=1e-12)


@pytest.mark.parametrize("key", [INTERACTION, "unbalanced"])
@pytest.mark.parametrize("ddf", ["satterthwaite", "kenward_roger"])
def test_contrasts(reference_model, key, ddf):
    fit, ref = reference_model(key)
    method = ddf.replace("_", "-")
    joint = fit.contrast(ref["contest_L"], ddf=method)
    expected = dict(ref[f"contest_{ddf}"], rownames=[0])
    _check_f_table(joint, expected)
    single = fit.contrast(ref["contest1D_L"], ddf=method).iloc[0]
    expected = ref[f"contest1D_{ddf}"]
    assert single["estimate"] == pytest.approx(expected["Estimate"], rel=1e-4)
    assert single["std_error"] == pytest.approx(expected["Std. Error"], rel=DF_RTOL)
    assert single["df"] == pytest.approx(expected["df"], rel=DF_RTOL)


def test_contrast_by_name_equals_matrix(reference_model):
    fit, _ = reference_model("unbalanced")
    by_name = fit.contrast(pd.Series({"Days": 1.0, "Days:halflate": 1.0}))
    by_matrix = fit.contrast([0, 1, 0, 1])
    pd.testing.assert_frame_equal(by_name, by_matrix)


@pytest.mark.parametrize("key", [INTERACTION, "unbalanced", "factor_fixed"])
@pytest.mark.parametrize("ddf", ["satterthwaite", "kenward_roger"])
def test_coefficient_tables(reference_model, key, ddf):
    fit, ref = reference_model(key)
    table = fit.coef_table(ddf.replace("_", "-"))
    expected = ref[f"coef_{ddf}"]
    assert list(table.index) == expected["rownames"]
    np.testing.assert_allclose(table["std_error"], expected["Std. Error"], rtol=DF_RTOL)
    np.testing.assert_allclose(table["df"], expected["df"], rtol=DF_RTOL)


def test_kenward_roger_adjusted_covariance(reference_model):
    fit, ref = reference_model("unbalanced")
    expected = np.array(ref["vcovAdj"]["rows"])
    adjusted = fit._kenward_roger.vcov_adjusted
    assert np.max(np.abs(adjusted - fit.vcov.to_numpy())) > 0.1  # a real adjustment
    np.testing.assert_allclose(adjusted, expected, rtol=1e-3, atol=1e-3 * np.abs(expected).max())


def test_weighted_satterthwaite(reference_model):
    fit, ref = reference_model("weighted")
    table = fit.coef_table()
    np.testing.assert_allclose(table["df"], ref["coef_satterthwaite"]["df"], rtol=DF_RTOL)


@pytest.mark.parametrize("models", [["m0", "m1"], ["m0", "m1", "m2"]])
def test_likelihood_ratio_tests(models):
    data = jaxlmm.datasets.load("sleepstudy").assign(Days2=lambda d: d["Days"] ** 2)
    fits = []
    for key in models:
        spec = REFERENCE["lrt"][key]
        formula = spec["formula"].replace("I(Days^2)", "Days2")
        fits.append(jaxlmm.lmer(formula, data, reml=spec["REML"]))
    table = jaxlmm.anova(*reversed(fits), names=list(reversed(models)))
    expected = REFERENCE["lrt"]["anova_" + "_".join(models)]
    assert list(table.index) == expected["rownames"]
    for column in ["npar", "AIC", "BIC", "logLik", "deviance", "Chisq", "Df"]:
        np.testing.assert_allclose(table[column], _nonnull(expected[column]), rtol=1e-6)
    np.testing.assert_allclose(table["p_value"], _nonnull(expected["Pr(>Chisq)"]), rtol=1e-3)
    assert "ML" in table.attrs["note"]


# --- summary and bad input --------------------------------------------------------------------


def test_summary_with_ddf(lme4_fit):
    fit, _ = lme4_fit("sleepstudy_reml")
    text = fit.summary(ddf="satterthwaite")
    assert "Satterthwaite's method" in text and "Pr(>|t|)" in text and "17.00" in text
    assert "Pr(>|t|)" not in fit.summary()


def test_inference_errors(lme4_fit):
    fit, _ = lme4_fit("sleepstudy_ml")
    with pytest.raises(jaxlmm.InferenceError, match="REML"):
        fit.coef_table("kenward-roger")
    with pytest.raises(jaxlmm.InferenceError, match="ddf"):
        fit.coef_table("containment")
    with pytest.raises(jaxlmm.InferenceError, match="2 columns"):
        fit.contrast([1, 0, 0])
    with pytest.raises(jaxlmm.InferenceError, match="unknown fixed effects"):
        fit.contrast(pd.Series({"Weeks": 1.0}))
    with pytest.raises(jaxlmm.InferenceError, match="nonzero"):
        fit.contrast([0, 0])
    with pytest.raises(jaxlmm.InferenceError, match="method"):
        fit.confint("exact")
    with pytest.raises(jaxlmm.InferenceError, match="level"):
        fit.confint("wald", level=95)
    other = jaxlmm.lmer("Reaction ~ Days + (1 | Subject)", jaxlmm.datasets.load("sleepstudy")[:100])
    with pytest.raises(jaxlmm.InferenceError, match="numbers of observations"):
        jaxlmm.anova(fit, other)
    with pytest.raises(jaxlmm.InferenceError, match="fitted models"):
        jaxlmm.anova(fit, "Reaction ~ Days + (1 | Subject)")
