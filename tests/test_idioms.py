"""R formula idioms against lme4: transforms, column names, logical and non-ASCII factors,
offsets, large predictor scales and predictions for new data.

Reference values: ``data/idioms_reference.json``, made by ``data/make_idioms_reference.R``.
Each model is fitted from the formula exactly as R deparses it.
"""

import json
import warnings

import jax
import numpy as np
import pandas as pd
import pytest
from conftest import DATA

import jaxlmm
from jaxlmm.design import build_design
from jaxlmm.formula import r_deparse, to_python

REFERENCE = json.loads((DATA / "idioms_reference.json").read_text(encoding="utf-8"))
FITTED = [
    "poly",
    "poly_raw",
    "scale",
    "center",
    "functions",
    "bs",
    "factor",
    "names_fixed",
    "names_random",
    "factor_levels",
    "logical_random",
    "large_scale_1e6",
    "large_scale_1e12",
    "predict_poly_scale",
    "predict_bs",
]
OFFSETS = ["offset_formula", "offset_both"]


def sleep() -> pd.DataFrame:
    """sleepstudy with the columns that make_idioms_reference.R adds."""
    d = jaxlmm.datasets.load("sleepstudy")
    days = d["Days"]
    d["x.y"] = days
    d["my-days"] = days
    d["my group"] = d["Subject"]
    d["größe"] = days % 4
    d["late"] = days >= 5
    d["stage"] = np.where(days < 3, "früh", np.where(days < 7, "mittel", "spät"))
    d["expo"] = 1.0 + days % 3
    d["shift"] = 10.0 * (days % 2)
    d["big6"] = days * 1e6
    d["big8"] = days * 1e8
    d["big12"] = days * 1e12
    return d


@pytest.fixture(scope="module")
def data():
    return sleep()


@pytest.fixture(scope="module")
def fits(data):
    results = {}
    for name in FITTED:
        ref = REFERENCE[name]
        with warnings.catch_warnings():
            warnings.simplefilter("error", jaxlmm.ConvergenceWarning)
            results[name] = jaxlmm.lmer(ref["formula"], data, reml=ref["REML"])
    return results


def assert_matches_lme4(fit, ref):
    """Names exactly; the criterion to 1e-6 relative and no higher than lme4's; fixed effects
    to 1e-6 relative of their scale; theta and sigma to the accuracy of lme4's optimiser (its
    stopping rule leaves ~1e-4 in theta of correlated terms, where the criterion is flat)."""
    assert list(fit.fixef.index) == ref["beta_names"]
    assert fit.nobs == ref["nobs"]
    assert fit.objective == pytest.approx(ref["objective"], rel=1e-6)
    assert fit.objective <= ref["objective"] + 1e-6
    np.testing.assert_allclose(fit.theta, ref["theta"], rtol=1e-3, atol=1e-6)
    beta = np.asarray(ref["beta"])
    np.testing.assert_allclose(
        fit.fixef.to_numpy(), beta, rtol=1e-6, atol=1e-6 * np.abs(beta).max()
    )
    assert fit.sigma == pytest.approx(ref["sigma"], rel=2e-5)
    variances = [
        (group, var1)
        for group, var1, var2 in zip(
            ref["varcorr_group"], ref["varcorr_var1"], ref["varcorr_var2"], strict=True
        )
        if group != "Residual" and var2 is None
    ]
    assert [(t.group, name) for t in fit.design.terms for name in t.names] == variances


@pytest.mark.parametrize("name", FITTED)
def test_matches_lme4(fits, name):
    assert_matches_lme4(fits[name], REFERENCE[name])


@pytest.mark.parametrize("name", FITTED)
def test_term_names(fits, name):
    """Fixed-effect terms are named as R's terms() labels them (lmerTest's anova rows)."""
    terms = fits[name].design.fixed_terms
    assert [t.name for t in terms] == np.atleast_1d(REFERENCE[name]["term_labels"]).tolist()


@pytest.mark.parametrize("name", FITTED)
def test_criterion_at_lme4_theta(data, name):
    """The design is R's: the criterion at lme4's theta is lme4's to rounding."""
    ref = REFERENCE[name]
    with jax.enable_x64(True):  # devfun computes in JAX's current precision
        criterion = jaxlmm.devfun(ref["formula"], data, reml=ref["REML"])
        value = float(criterion(np.atleast_1d(ref["theta"])))
    assert value == pytest.approx(ref["objective"], rel=1e-9)


@pytest.mark.parametrize("name", ["predict_poly_scale", "predict_bs"])
def test_predictions_reuse_the_fitted_transforms(fits, name):
    """poly, scale and bs of new data use the fitted data's coefficients, centre, scale and
    knots (R's makepredictcall); a float 308.0 is the level 308 and a missing group is a new
    level."""
    newdata = pd.DataFrame(REFERENCE[name]["newdata"])
    predicted = fits[name].predict(newdata, allow_new_levels=True)
    np.testing.assert_allclose(predicted, REFERENCE[name]["predict"], rtol=1e-6)
    one_row = fits[name].predict(newdata.iloc[1:2], allow_new_levels=True)
    assert one_row.iloc[0] == pytest.approx(predicted.iloc[1], rel=1e-12)


def test_missing_group_needs_allow_new_levels(fits):
    newdata = pd.DataFrame(REFERENCE["predict_poly_scale"]["newdata"]).iloc[[0, 3]]
    with pytest.raises(jaxlmm.InferenceError, match="'NA'.*'Subject'"):
        fits["predict_poly_scale"].predict(newdata)


def test_random_effect_column_on_a_degenerate_scale(data):
    """lme4 stops with 'Downdated VtV is not positive definite'; jaxlmm names the column."""
    ref = REFERENCE["random_scale_1e8"]
    assert "Downdated VtV" in ref["error"]
    with pytest.raises(jaxlmm.DataError, match=r"'big8'.*rescale it \(divide it by 1e8\)"):
        jaxlmm.lmer(ref["formula"], data)


@pytest.mark.parametrize("name", OFFSETS)
def test_offsets_enter_the_design(data, name):
    ref = REFERENCE[name]
    design = build_design(ref["formula"], data, offset=ref.get("offset"))
    expected = {
        "offset_formula": 5 * np.log(data["expo"]),
        "offset_both": data["expo"] + data["shift"],
    }[name]
    np.testing.assert_allclose(design.offset, expected)
    assert design.fixed_names == tuple(ref["beta_names"])
    newdata = data.iloc[[4, 0]]
    np.testing.assert_allclose(
        design.offset_for(newdata),
        5 * np.log(newdata["expo"]) if name == "offset_formula" else newdata["expo"],
    )


@pytest.mark.parametrize("name", OFFSETS)
def test_offsets_match_lme4(data, name):
    ref = REFERENCE[name]
    offset = {"offset": ref["offset"]} if "offset" in ref else {}
    assert_matches_lme4(jaxlmm.lmer(ref["formula"], data, reml=ref["REML"], **offset), ref)


def test_offset_rows_with_missing_values_are_dropped(data):
    data = data.copy()
    data.loc[[3, 7], "expo"] = np.nan
    shift = data["shift"].to_numpy().copy()
    shift[10] = np.nan
    design = build_design("Reaction ~ Days + offset(expo) + (1 | Subject)", data, offset=shift)
    assert design.nobs == 177 and not design.rows.isin([3, 7, 10]).any()
    kept = design.with_response(design.y, np.arange(design.nobs) % 2 == 0)
    np.testing.assert_array_equal(kept.offset, design.offset[::2])


@pytest.mark.parametrize(
    "r_text",
    [
        # R: deparse(str2lang(text), width.cutoff = 500L) returns each text unchanged
        "I(a%%b + a%/%b - (a + b)^2 + -a^2 + (-a)^2 + a/(b * c) + 1e+05 + 1e-04 + 1000 + 2)",
        "poly(x, 2, raw = TRUE)",
        "I(`my days` > 3 & x.y <= 0.5)",
        'C(f, levels = c("b", "a"))',
    ],
)
def test_r_spelling_survives_the_round_trip_through_formulaic(r_text):
    assert r_deparse(to_python(r_text)) == r_text
