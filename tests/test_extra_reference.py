"""Weights, aliased columns, missing values, factor coding and more against lme4.

Reference values: ``data/extra_reference.json``, made by ``data/make_extra_reference.R``.
"""

import json
import warnings

import numpy as np
import pytest
from conftest import DATA

import jaxlmm

REFERENCE = json.loads((DATA / "extra_reference.json").read_text())


def _sleepstudy():
    d = jaxlmm.datasets.load("sleepstudy")
    d["w"] = 1.0 + d["Days"] % 3
    d["Days2"] = 2.0 * d["Days"]
    d["half"] = np.where(d["Days"] < 5, "early", "late")
    return d


def _sleepstudy_missing():
    d = _sleepstudy()
    d.loc[[2, 49, 50, 119], "Reaction"] = np.nan
    d.loc[6, "Days"] = np.nan
    return d


CASES = {
    "weighted": (_sleepstudy, "Reaction ~ Days + (Days | Subject)", "w"),
    "weighted_ml": (_sleepstudy, "Reaction ~ Days + (1 | Subject)", "w"),
    "aliased": (_sleepstudy, "Reaction ~ Days + Days2 + (1 | Subject)", None),
    "missing": (_sleepstudy_missing, "Reaction ~ Days + (Days | Subject)", None),
    "factor_interaction": (_sleepstudy, "Reaction ~ Days * half + (1 | Subject)", None),
    "fixed_factor": (
        lambda: jaxlmm.datasets.load("Penicillin"),
        "diameter ~ sample + (1 | plate)",
        None,
    ),
    "no_intercept_slope": (_sleepstudy, "Reaction ~ Days + (0 + Days | Subject)", None),
    "interaction_group": (
        lambda: jaxlmm.datasets.load("Pastes"),
        "strength ~ 1 + (1 | batch:cask)",
        None,
    ),
    "three_columns": (
        _sleepstudy,
        "Reaction ~ Days + I(Days**2) + (Days + I(Days**2) | Subject)",
        None,
    ),
}


@pytest.fixture(scope="module")
def fits():
    results = {}
    for name, (data, formula, weights) in CASES.items():
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            fit = jaxlmm.lmer(formula, data(), reml=REFERENCE[name]["REML"], weights=weights)
        results[name] = fit, [w.category for w in caught]
    return results


@pytest.mark.parametrize("name", sorted(set(CASES) - {"three_columns"}))
def test_matches_lme4(fits, name):
    fit, _ = fits[name]
    ref = REFERENCE[name]
    se = np.atleast_1d(ref["se"])
    assert fit.nobs == ref["nobs"]
    assert fit.objective <= ref["objective"] + 1e-4
    assert np.all(np.abs(fit.fixef.to_numpy() - np.atleast_1d(ref["beta"])) <= 1e-3 * se)
    np.testing.assert_allclose(fit.std_errors.to_numpy(), se, rtol=1e-3)
    assert fit.sigma == pytest.approx(ref["sigma"], rel=1e-3)
    np.testing.assert_allclose(fit.varcorr["sdcor"], ref["sdcor"], rtol=1e-3)
    assert fit.singular == ref["singular"]
    assert fit.converged


@pytest.mark.parametrize("name", ["aliased", "factor_interaction", "fixed_factor"])
def test_fixed_effect_names_in_r_order(fits, name):
    assert list(fits[name][0].fixef.index) == REFERENCE[name]["beta_names"]


def test_aliased_column_dropped_with_warning(fits):
    fit, caught = fits["aliased"]
    assert jaxlmm.RankDeficiencyWarning in caught
    assert fit.design.dropped_fixed == ("Days2",)


def test_three_column_term_beats_lme4(fits):
    """lme4 warns that this fit failed to converge; jaxlmm reaches a lower criterion."""
    fit, caught = fits["three_columns"]
    assert jaxlmm.ConvergenceWarning not in caught
    assert fit.objective < REFERENCE["three_columns"]["objective"]
    assert len(fit.theta) == 6


@pytest.mark.parametrize(
    "formula, expected",
    [
        # lme4: fixef(lmer(Reaction ~ Days + I(Days^2) + (1 | Subject), sleepstudy))
        (
            "Reaction ~ Days + I(Days^2) + (1 | Subject)",
            [255.449372777778, 7.434085012626, 0.337022327441],
        ),
        # lme4: fixef(lmer(Reaction ~ Days + log(Days^2 + 1) + (1 | Subject), sleepstudy))
        (
            "Reaction ~ Days + log(Days^2 + 1) + (1 | Subject)",
            [255.15775215221, 14.09273839303, -7.48760756731],
        ),
    ],
)
def test_caret_is_a_power_inside_calls(sleepstudy, formula, expected):
    fit = jaxlmm.lmer(formula, sleepstudy)
    np.testing.assert_allclose(fit.fixef.to_numpy(), expected, rtol=1e-6)
    assert fit.fixef.to_numpy()[2] != pytest.approx(1.536, abs=1e-2)
