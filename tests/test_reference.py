"""jaxlmm against lme4 1.1-31 on every reference case (tolerances from the core issue)."""

import numpy as np
import pandas as pd
import pytest
from conftest import LME4_CASES


def vec(x):
    return np.atleast_1d(np.asarray(x, dtype=float))


@pytest.mark.parametrize("case", LME4_CASES)
def test_objective_no_worse_than_lme4(lme4_fit, case):
    fit, ref = lme4_fit(case)
    assert fit.objective <= ref["objective"] + 1e-4
    assert fit.loglik == pytest.approx(ref["logLik"], abs=1e-4)
    assert fit.aic == pytest.approx(ref["AIC"], abs=1e-4)
    assert fit.bic == pytest.approx(ref["BIC"], abs=1e-4)
    assert fit.df_residual == ref["df_resid"]


@pytest.mark.parametrize("case", LME4_CASES)
def test_fixed_effects_and_standard_errors(lme4_fit, case):
    fit, ref = lme4_fit(case)
    se = vec(ref["se"])
    assert list(fit.fixef.index) == list(np.atleast_1d(ref["beta_names"]))
    assert np.all(np.abs(fit.fixef.to_numpy() - vec(ref["beta"])) <= 1e-3 * se)
    np.testing.assert_allclose(fit.std_errors.to_numpy(), se, rtol=1e-3)
    np.testing.assert_allclose(fit.vcov.to_numpy(), np.atleast_2d(ref["vcov"]), rtol=2e-3)
    assert fit.sigma == pytest.approx(ref["sigma"], rel=1e-3)


@pytest.mark.parametrize("case", LME4_CASES)
def test_variance_components(lme4_fit, case):
    fit, ref = lme4_fit(case)
    vc, expected = fit.varcorr, pd.DataFrame(ref["varcorr"])
    assert list(vc["group"]) == list(expected["grp"])
    assert list(vc["var1"].fillna("-")) == list(expected["var1"].fillna("-"))
    assert list(vc["var2"].fillna("-")) == list(expected["var2"].fillna("-"))
    np.testing.assert_allclose(vc["sdcor"], expected["sdcor"], rtol=1e-3, atol=1e-12)
    np.testing.assert_allclose(vc["vcov"], expected["vcov"], rtol=2e-3, atol=1e-12)
    assert fit.singular == ref["singular"]
    assert fit.converged
    assert fit.nobs == ref["nobs"]
    assert fit.ngroups == ref["ngroups"]


@pytest.mark.parametrize("case", LME4_CASES)
def test_theta_matches_lme4(lme4_fit, case):
    fit, ref = lme4_fit(case)
    np.testing.assert_allclose(fit.theta, vec(ref["theta"]), rtol=1e-3, atol=2e-4)


@pytest.mark.parametrize("case", LME4_CASES)
def test_conditional_modes_and_sds(lme4_fit, case):
    """Relative 1e-3; values below a tenth of their term's RMS are compared on that scale."""
    fit, ref = lme4_fit(case)
    ranef = fit.ranef(condvar=True)
    expected = pd.DataFrame(ref["ranef"])
    for (group, term), rows in expected.groupby(["grpvar", "term"]):
        ours = ranef[group].loc[rows["level"].to_numpy()]
        scale = 0.1 * np.sqrt(np.mean(rows["condval"] ** 2))
        floor = np.maximum(np.abs(rows["condval"].to_numpy()), scale)
        assert np.all(np.abs(ours[term].to_numpy() - rows["condval"].to_numpy()) <= 1e-3 * floor)
        np.testing.assert_allclose(ours[f"condsd_{term}"], rows["condsd"], rtol=1e-3, atol=1e-12)


@pytest.mark.parametrize("case", LME4_CASES)
def test_fitted_and_residuals(lme4_fit, case):
    fit, ref = lme4_fit(case)
    scale = np.std(fit.fitted.to_numpy() + fit.residuals.to_numpy())
    np.testing.assert_allclose(fit.fitted.to_numpy()[:20], ref["fitted_head"], atol=1e-4 * scale)
    np.testing.assert_allclose(fit.residuals.to_numpy()[:20], ref["resid_head"], atol=1e-4 * scale)
