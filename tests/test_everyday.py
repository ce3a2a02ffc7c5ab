"""Everyday lme4 / lmerTest helpers and R's printed layouts.

Reference values and R's printed text: ``data/everyday_reference.json``, made by
``data/make_everyday_reference.R`` (R 4.2, lme4 1.1-31, lmerTest 3.1-3). Layouts are checked
by printing R's own numbers with jaxlmm's formatting and comparing with R's text, so that a
difference in the last digits of an estimate cannot hide or fake a layout difference.
"""

import json
import re
import warnings

import numpy as np
import pandas as pd
import pytest
from conftest import DATA
from scipy import sparse

import jaxlmm
from jaxlmm.printing import (
    anova_table,
    confint_table,
    format_pval,
    format_real,
    varcorr_lines,
    zapsmall,
)
from jaxlmm.update import update_formula

REFERENCE = json.loads((DATA / "everyday_reference.json").read_text())
PRINT = REFERENCE["print"]


def _sleepstudy():
    d = jaxlmm.datasets.load("sleepstudy")
    d["half"] = np.where(d["Days"] < 5, "early", "late")
    d["w"] = 1.0 + d["Days"] % 3
    return d


DATASETS = {
    "sleepstudy": _sleepstudy,
    "Penicillin": lambda: jaxlmm.datasets.load("Penicillin"),
    "Pastes": lambda: jaxlmm.datasets.load("Pastes"),
}


@pytest.fixture(scope="module")
def fitted():
    """lmer fits, one per (formula, data, reml), made once for the module."""
    cache = {}

    def get(formula, data="sleepstudy", reml=True, **kwargs):
        key = (formula, data, reml, tuple(sorted(kwargs.items())))
        if key not in cache:
            with warnings.catch_warnings():
                warnings.simplefilter("error", jaxlmm.ConvergenceWarning)
                cache[key] = jaxlmm.lmer(formula, DATASETS[data](), reml=reml, **kwargs)
        return cache[key]

    return get


def _lines(text: str) -> list[str]:
    """R's text with ASCII quotes and without trailing blanks."""
    text = text.replace("\u2018", "'").replace("\u2019", "'")
    return [line.rstrip() for line in text.split("\n")]


def _values(values) -> np.ndarray:
    return np.array([np.nan if v is None else v for v in np.atleast_1d(values)], dtype=float)


_COLUMNS = {
    "Sum Sq": "sum_sq",
    "Mean Sq": "mean_sq",
    "NumDF": "num_df",
    "DenDF": "den_df",
    "F value": "F_value",
    "Pr(>F)": "p_value",
    "Pr(>Chisq)": "p_value",
}


def _r_table(ref: dict) -> pd.DataFrame:
    """An R table of the reference as jaxlmm names its columns."""
    columns = [c for c in ref if c not in ("rownames", "heading", "text", "formulae", "formula")]
    columns = [c for c in columns if c not in ("REML",)]
    frame = pd.DataFrame(
        {_COLUMNS.get(c, c): _values(ref[c]) for c in columns},
        index=list(np.atleast_1d(ref["rownames"])),
    )
    return frame


# --- R's number formatting -------------------------------------------------------------------
@pytest.mark.parametrize(
    "values, digits, expected",
    [
        # R: format(c(1814.85047040879, 1783.09708556855), digits = 5)
        ([1814.85047040879, 1783.09708556855], 5, ["1814.9", "1783.1"]),
        # R: format(c(123456789, 0.1)); format(c(1e5, 1e15)); format(123456.7, digits = 5)
        ([123456789, 0.1], 7, ["123456789.0", "        0.1"]),
        ([1e5, 1e15], 7, ["1e+05", "1e+15"]),
        ([123456.7], 5, ["123457"]),
        # R: format(c(1.5, NA, 3)); format(0); format(1e-20)
        ([1.5, np.nan, 3], 7, ["1.5", " NA", "3.0"]),
        ([0.0], 7, ["0"]),
        ([1e-20], 7, ["1e-20"]),
    ],
)
def test_format_real_is_r_format(values, digits, expected):
    assert format_real(values, digits) == expected


def test_zapsmall_and_pvalues_as_r():
    # R 4.2: print(zapsmall(c(1814.85047040879, 1783.09708556855), 5), digits = 10)
    np.testing.assert_array_equal(
        zapsmall([1814.85047040879, 1783.09708556855], 5), [1814.85, 1783.1]
    )
    # R: format.pval(c(3.2637e-06, 1e-20), digits = 3); the same of c(0.41742, 1e-20) and
    # of c(1.474e-13, 1e-20) with digits = 4
    assert format_pval([3.2637e-06, 1e-20], 3) == ["3.26e-06", "< 2e-16"]
    assert format_pval([0.41742, 1e-20], 4) == ["0.4174", "<2e-16"]
    assert format_pval([1.474e-13, 1e-20], 4) == ["1.474e-13", "< 2.2e-16"]


# --- printed layouts, from R's numbers ---------------------------------------------------------
ANOVA_TEXTS = [
    ("print", "anova_m1"),
    ("print", "anova_mh"),
    ("print", "anova_mh_kr"),
    ("print", "lrt_m0_m1"),
    *[("ranova", k) for k in REFERENCE["ranova"]],
    *[("drop1", k) for k in REFERENCE["drop1"]],
]


@pytest.mark.parametrize("section, key", ANOVA_TEXTS)
def test_anova_like_tables_print_as_r(section, key):
    ref = REFERENCE[section][key]
    table = anova_table(_r_table(ref), np.atleast_1d(ref["heading"]))
    assert _lines(repr(table)) == _lines(ref["text"])


@pytest.mark.parametrize("key, level", [("confint_m1", 0.95), ("confint_m1_wald90", 0.9)])
def test_confint_prints_as_r(key, level):
    ref = PRINT[key]
    frame = pd.DataFrame(
        {"lower": _values(ref["lower"]), "upper": _values(ref["upper"])}, index=ref["rownames"]
    )
    assert _lines(repr(confint_table(frame, level))) == _lines(ref["text"])


@pytest.mark.parametrize(
    "key, formula, data",
    [
        ("varcorr_m1", "Reaction ~ Days + (Days | Subject)", "sleepstudy"),
        ("varcorr_pen", "diameter ~ 1 + (1 | plate) + (1 | sample)", "Penicillin"),
        ("varcorr_double", "Reaction ~ Days + (Days || Subject)", "sleepstudy"),
        ("varcorr_three", "Reaction ~ Days + I(Days^2) + (Days + I(Days^2) | Subject)",
         "sleepstudy"),
    ],
)  # fmt: skip
def test_varcorr_prints_as_r(fitted, key, formula, data):
    ref = PRINT[key]
    components = fitted(formula, data).variance_components()
    # R's numbers in jaxlmm's layout: per group the SDs then the correlations, then sigma
    sds, corrs = list(_values(ref["stddev"])), list(_values(ref["corr"]))
    values = []
    for group, block in components.groupby("group", sort=False):
        if group == "Residual":
            continue
        n_sd = int(block["var2"].isna().sum())
        values += sds[:n_sd] + corrs[: len(block) - n_sd]
        del sds[:n_sd], corrs[: len(block) - n_sd]
    components = components.assign(sdcor=values + [ref["sigma"]])
    assert _lines("\n".join(varcorr_lines(components))) == _lines(ref["text"])
    both = varcorr_lines(components, comp=("Variance", "Std.Dev."))
    assert _lines("\n".join(both)) == _lines(ref["text_both"])


def _layout(text: str) -> list[str]:
    """Lines with every digit masked; lme4's ``Formula:`` and optimizer lines left out."""
    skip = ("Formula:", "optimizer (", "   Data:")
    return [re.sub(r"\d", "#", line) for line in _lines(text) if line and not line.startswith(skip)]


@pytest.mark.parametrize(
    "key, formula, data, reml, ddf",
    [
        ("summary_m1", "Reaction ~ Days + (Days | Subject)", "sleepstudy", True, None),
        ("summary_m1_satterthwaite", "Reaction ~ Days + (Days | Subject)", "sleepstudy", True,
         "satterthwaite"),
        ("summary_m1_ml", "Reaction ~ Days + (Days | Subject)", "sleepstudy", False, None),
        ("summary_pastes", "strength ~ 1 + (1 | batch/cask)", "Pastes", True, None),
    ],
)  # fmt: skip
def test_summary_lines_up_as_lme4(fitted, key, formula, data, reml, ddf):
    """Same lines, same widths, same columns as lme4's summary (digits masked: jaxlmm's
    optimum differs from lme4's in the last digits)."""
    fit = fitted(formula, data, reml)
    assert _layout(fit.summary(ddf)) == _layout(PRINT[key])


def test_singular_summary_ends_with_lme4s_note():
    dye = jaxlmm.lmer("Yield ~ 1 + (1 | Batch)", jaxlmm.datasets.load("Dyestuff2"), data_name="d")
    text = dye.summary()
    assert text.endswith("boundary (singular) fit: see help('isSingular')")
    assert _layout(text) == _layout(PRINT["summary_dye2"])


def test_scaled_residual_quantiles_under_their_headers(fitted):
    fit = fitted("Reaction ~ Days + (Days | Subject)")
    lines = fit.summary().split("\n")
    at = lines.index("Scaled residuals:")
    names, values = lines[at + 1], lines[at + 2]
    assert names == "    Min      1Q  Median      3Q     Max"
    ends = [m.end() for m in re.finditer(r"\S+", names)]
    assert [m.end() for m in re.finditer(r"\S+", values)] == ends
    got = [float(v) for v in values.split()]
    np.testing.assert_allclose(got, PRINT["summary_m1_residuals"], atol=2e-4)


def test_data_line_when_named(fitted):
    fit = jaxlmm.lmer("Reaction ~ Days + (1 | Subject)", _sleepstudy(), data_name="sleepstudy")
    assert "\n   Data: sleepstudy\n" in fit.summary()
    weighted = fitted("Reaction ~ Days + (1 | Subject)", weights="w")
    assert "Weights: w" in weighted.summary() and "Data:" not in weighted.summary()


def test_wide_tables_print_in_full(fitted):
    m0 = fitted("Reaction ~ Days + (1 | Subject)")
    m1 = fitted("Reaction ~ Days + (Days | Subject)")
    with pd.option_context("display.width", 30, "display.max_columns", 3):
        text = repr(jaxlmm.anova(m0, m1, names=["m0", "m1"]))
    assert "..." not in text
    assert text.split("\n")[:5] == [
        "refitting model(s) with ML (instead of REML)",
        "Models:",
        "m0: Reaction ~ Days + (1 | Subject)",
        "m1: Reaction ~ Days + (Days | Subject)",
        "   npar    AIC    BIC  logLik deviance  Chisq Df Pr(>Chisq)",
    ]
    default = jaxlmm.anova(m0, m1)
    assert list(default.index) == ["MODEL1", "MODEL2"]
    assert isinstance(default.copy(), pd.DataFrame)
    assert type(default[["AIC"]]) is pd.DataFrame  # derived frames are plain


def test_lrt_heading_names_data():
    d = _sleepstudy()
    fits = [
        jaxlmm.lmer(f, d, data_name="sleep")
        for f in ("Reaction ~ Days + (1 | Subject)", "Reaction ~ Days + (Days | Subject)")
    ]
    lines = _lines(repr(jaxlmm.anova(*fits, names=["m0", "m1"])))
    r_lines = _lines(PRINT["lrt_m0_m1"]["text"])  # R's model formulas are variables f0, f1
    assert lines[:5] == [
        "refitting model(s) with ML (instead of REML)",
        r_lines[0],
        "Models:",
        "m0: Reaction ~ Days + (1 | Subject)",
        "m1: Reaction ~ Days + (Days | Subject)",
    ]
    assert r_lines[0] == "Data: sleep"
    assert _layout("\n".join(lines[5:])) == _layout("\n".join(r_lines[4:]))


def test_result_objects_have_concise_reprs(fitted):
    fit = fitted("Reaction ~ Days + (Days | Subject)")
    vc = fit.VarCorr()
    assert repr(vc).startswith(" Groups   Name        Std.Dev. Corr")
    np.testing.assert_allclose(vc["Subject"].to_numpy(), vc["Subject"].to_numpy().T)
    assert vc["Subject"].loc["Days", "Days"] == pytest.approx(fit.varcorr["vcov"][1])
    with pytest.raises(KeyError, match="groups"):
        vc["Nope"]
    confint = fit.confint("wald")
    assert isinstance(confint, jaxlmm.ConfintTable) and "2.5 %" in repr(confint)
    assert repr(fit).startswith("Linear mixed model fit by REML")


# --- lme4's helpers -------------------------------------------------------------------------
COEF_CASES = {
    "m1": "sleepstudy",
    "additive": "sleepstudy",
    "slope_only_random": "sleepstudy",
    "penicillin": "Penicillin",
}


@pytest.mark.parametrize("key", COEF_CASES)
def test_coef_matches_lme4(fitted, key):
    ref = REFERENCE["coef"][key]
    fit = fitted(ref["formula"], COEF_CASES[key])
    coef = fit.coef()
    assert list(coef) == [g for g in ref if g != "formula"]
    for group, frame in coef.items():
        expected = ref[group]
        columns = [c for c in expected if c != "rownames"]
        assert list(frame.columns) == columns
        assert list(frame.index) == expected["rownames"]
        for c in columns:
            scale = np.abs(expected[c]).max()
            np.testing.assert_allclose(frame[c], expected[c], atol=1e-5 * scale)


def test_coef_fixed_columns_without_random_effect_are_constant(fitted):
    coef = fitted(REFERENCE["coef"]["additive"]["formula"]).coef()["Subject"]
    assert coef["Days"].nunique() == 1 and coef["halflate"].nunique() == 1


def _postvar(ref) -> np.ndarray:
    """R's (s, s, levels) array, column-major, as (levels, s, s)."""
    s, _, levels = ref["dim"]
    return np.asarray(ref["values"]).reshape(levels, s, s).transpose(0, 2, 1)


def test_ranef_postvar_matches_lme4_for_a_two_column_term(fitted):
    ref = REFERENCE["postvar"]["m1"]
    fit = fitted(ref["formula"])
    expected = _postvar(ref["Subject"])
    ranef = fit.ranef(condvar=True)["Subject"]
    postvar = ranef.attrs["postVar"]
    assert postvar.shape == (18, 2, 2)
    np.testing.assert_allclose(postvar, expected, rtol=2e-4, atol=2e-4 * np.abs(expected).max())
    np.testing.assert_allclose(ranef["condsd_Days"], np.sqrt(expected[:, 1, 1]), rtol=2e-4)
    np.testing.assert_allclose(fit.conditional_covariances()["Subject"], postvar)


def test_ranef_postvar_per_term_of_one_factor(fitted):
    ref = REFERENCE["postvar"]["double"]
    postvar = fitted(ref["formula"]).ranef(condvar=True)["Subject"].attrs["postVar"]
    assert [p.shape for p in postvar] == [(18, 1, 1), (18, 1, 1)]
    for got, name in zip(postvar, ["(Intercept)", "Days"], strict=True):
        np.testing.assert_allclose(got[:, 0, 0], ref["Subject"][name], rtol=1e-3)


def _triplets(ref) -> np.ndarray:
    shape = (ref["nrow"], ref["ncol"])
    return sparse.coo_matrix((ref["x"], (ref["i"], ref["j"])), shape=shape).toarray()


@pytest.mark.parametrize(
    "key, data", [("m1", "sleepstudy"), ("penicillin", "Penicillin"), ("pastes", "Pastes"),
                  ("double", "sleepstudy")]
)  # fmt: skip
def test_model_matrices_match_getme(fitted, key, data):
    ref = REFERENCE["getME"][key]
    fit = fitted(ref["formula"], data)
    names = list(np.atleast_1d(ref["X_colnames"]))
    assert list(fit.X.columns) == names
    np.testing.assert_array_equal(fit.X.to_numpy().T.ravel(), ref["X"])
    z = fit.Z
    assert sparse.issparse(z) and z.format == "csc"
    np.testing.assert_array_equal(z.toarray(), _triplets(ref["Z"]))  # lme4's column order
    np.testing.assert_array_equal((z.T @ z).toarray().T.ravel(), ref["ZtZ"])
    # Lambda: lme4's pattern, with jaxlmm's theta (lme4's optimum differs in the last digits)
    expected = _triplets(ref["Lambda"])
    got = fit.Lambda.toarray()
    np.testing.assert_array_equal(got != 0, expected != 0)
    np.testing.assert_allclose(got, expected, atol=2e-4 * np.abs(expected).max())
    np.testing.assert_array_equal(fit.Lambdat.toarray(), got.T)
    np.testing.assert_allclose(fit.theta, ref["theta"], rtol=1e-3, atol=1e-4)


def test_z_lambda_reproduce_fitted_values(fitted):
    """b = Lambda u and fitted = X beta + Z b, as in lme4."""
    fit = fitted("diameter ~ 1 + (1 | plate) + (1 | sample)", "Penicillin")
    b = np.concatenate([frame.to_numpy().ravel() for frame in fit.ranef().values()])
    fitted_values = fit.X.to_numpy() @ fit.fixef.to_numpy() + fit.Z @ b
    np.testing.assert_allclose(fitted_values, fit.fitted, rtol=1e-12)


def _missing_rows():
    d = _sleepstudy()
    d.loc[[2, 49, 50, 119], "Reaction"] = np.nan
    d.loc[6, "Days"] = np.nan
    return d


def test_na_exclude_pads_with_nan_as_lme4():
    ref = REFERENCE["na_exclude"]
    data = _missing_rows()
    fit = jaxlmm.lmer(ref["formula"], data, na_action="exclude")
    assert fit.nobs == ref["nobs"] and fit.na_action == "exclude"
    for name in ("fitted", "residuals", "predict"):
        got = fit.predict() if name == "predict" else getattr(fit, name)
        expected = _values(ref[name])
        assert got.index.equals(data.index)
        np.testing.assert_array_equal(np.isnan(got), np.isnan(expected))
        np.testing.assert_allclose(got.dropna(), expected[~np.isnan(expected)], atol=1e-3)
    omitted = jaxlmm.lmer(ref["formula"], data)
    assert len(omitted.fitted) == ref["fitted_omit_length"]
    assert fit.summary() == omitted.summary()  # the summary uses the rows fitted


def test_na_exclude_with_a_repeated_index():
    data = _missing_rows()
    data.index = np.zeros(len(data), dtype=int)
    fit = jaxlmm.lmer("Reaction ~ Days + (1 | Subject)", data, na_action="na.exclude")
    assert len(fit.residuals) == len(data)
    assert np.flatnonzero(np.isnan(fit.residuals.to_numpy())).tolist() == [2, 6, 49, 50, 119]


def test_na_action_is_checked():
    with pytest.raises(jaxlmm.DataError, match="na_action"):
        jaxlmm.lmer("Reaction ~ Days + (1 | Subject)", _sleepstudy(), na_action="fail")


# --- update -----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "old, new, expected",
    [
        ("y ~ x + (x | g)", ". ~ . - x", "y ~ (x | g)"),
        ("y ~ x + (1 | g)", ". ~ . + I(x^2)", "y ~ x + (1 | g) + I(x^2)"),
        ("y ~ x + (x | g)", ". ~ . - (x|g) + (1|g)", "y ~ x + (1 | g)"),
        ("y ~ x + (1 | g)", "log(.) ~ .", "log(y) ~ x + (1 | g)"),
        ("y ~ x + (1 | g)", "~ . - 1", "y ~ x + (1 | g) - 1"),
        ("y ~ 0 + x + (1 | g)", ". ~ . + z", "y ~ x + (1 | g) + z - 1"),
        ("y ~ a * b + (1 | g)", ". ~ . - a:b", "y ~ a * b + (1 | g) - a:b"),
        ("y ~ x + (1 | g)", "z ~ w + (1 | h)", "z ~ w + (1 | h)"),
        ("y ~ x + (1 | g)", "~ w + (1 | h)", "y ~ w + (1 | h)"),
        ("y ~ x + (1 | g)", ". ~ . + (1 | g)", "y ~ x + (1 | g)"),
    ],
)
def test_update_formula_like_r(old, new, expected):
    assert update_formula(old, new) == expected


@pytest.mark.parametrize(
    "key, base, change",
    [
        ("minus_days", "Reaction ~ Days + (Days | Subject)", ". ~ . - Days"),
        ("plus_square", "Reaction ~ Days + (1 | Subject)", ". ~ . + I(Days^2)"),
        ("swap_term", "Reaction ~ Days + (Days | Subject)",
         ". ~ . - (Days | Subject) + (1 | Subject)"),
        ("log_response", "Reaction ~ Days + (1 | Subject)", "log(.) ~ ."),
    ],
)  # fmt: skip
def test_update_refits_as_lme4(fitted, key, base, change):
    ref = REFERENCE["update"][key]
    new = fitted(base).update(change)
    assert new.design.formula.text == ref["formula"]
    assert new.objective == pytest.approx(ref["REMLcrit"], abs=1e-5)
    assert new.reml and new.data is fitted(base).data


def test_update_keeps_weights_and_changes_arguments(fitted):
    weighted = fitted("Reaction ~ Days + (Days | Subject)", weights="w")
    new = weighted.update(". ~ . - Days")
    ref = REFERENCE["update"]["weighted_minus_days"]
    assert new.objective == pytest.approx(ref["REMLcrit"], abs=1e-5)
    ml = fitted("Reaction ~ Days + (Days | Subject)").update(reml=False)
    assert not ml.reml
    assert ml.objective == pytest.approx(REFERENCE["update"]["ml"]["deviance"], abs=1e-5)
    with pytest.raises(TypeError, match="unexpected"):
        weighted.update(REML=False)


def test_update_needs_the_data(fitted):
    batch = jaxlmm.lmer_batch(
        "y ~ Days + (1 | Subject)",
        _sleepstudy(),
        responses=np.stack([_sleepstudy()["Reaction"].to_numpy()] * 2),
        progress=False,
    )
    with pytest.raises(jaxlmm.JaxlmmError, match="lmer"):
        batch[0].update(". ~ . - Days")


# --- lmerTest's ranova and drop1 ----------------------------------------------------------------
RANOVA_DATA = {"penicillin": "Penicillin", "pastes": "Pastes"}


@pytest.mark.parametrize("key", REFERENCE["ranova"])
def test_ranova_matches_lmertest(fitted, key):
    ref = REFERENCE["ranova"][key]
    fit = fitted(ref["formula"], RANOVA_DATA.get(key, "sleepstudy"), ref["REML"])
    table = jaxlmm.ranova(fit)
    assert list(table.index) == ref["rownames"]
    assert list(table.attrs["formulae"].values()) == list(np.atleast_1d(ref["formulae"]))
    assert table.attrs["heading"][2] == ref["heading"][2]
    np.testing.assert_array_equal(table["npar"], ref["npar"])
    np.testing.assert_allclose(table["logLik"], ref["logLik"], rtol=1e-7)
    np.testing.assert_allclose(table["AIC"], ref["AIC"], rtol=1e-7)
    np.testing.assert_allclose(table["LRT"][1:], _values(ref["LRT"])[1:], rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(table["Df"][1:], _values(ref["Df"])[1:])
    p = _values(ref["Pr(>Chisq)"])[1:]
    np.testing.assert_allclose(table["p_value"][1:], p, rtol=1e-3)
    assert _layout(repr(table)) == _layout(ref["text"])


DROP1_DATA = {"penicillin": "Penicillin"}


@pytest.mark.parametrize("key", REFERENCE["drop1"])
def test_drop1_matches_lmertest(fitted, key):
    ref = REFERENCE["drop1"][key]
    fit = fitted(ref["formula"], DROP1_DATA.get(key, "sleepstudy"))
    table = jaxlmm.drop1(fit, ddf="kenward-roger" if key.endswith("_kr") else "satterthwaite")
    assert list(table.index) == list(np.atleast_1d(ref["rownames"]))
    np.testing.assert_array_equal(table["num_df"], _values(ref["NumDF"]))
    np.testing.assert_allclose(table["den_df"], _values(ref["DenDF"]), rtol=1e-5)
    np.testing.assert_allclose(table["F_value"], _values(ref["F value"]), rtol=1e-5)
    np.testing.assert_allclose(table["sum_sq"], _values(ref["Sum Sq"]), rtol=1e-5)
    np.testing.assert_allclose(table["p_value"], _values(ref["Pr(>F)"]), rtol=1e-4)
    assert table.attrs["heading"][0] == ref["heading"][0]


def test_ranova_refuses_a_change_of_rows():
    data = _sleepstudy()
    data["g2"] = np.where(np.arange(len(data)) % 7 == 0, None, (data["Days"] % 4).astype(str))
    with warnings.catch_warnings():
        warnings.simplefilter("error", jaxlmm.ConvergenceWarning)
        fit = jaxlmm.lmer("Reaction ~ Days + (1 | Subject) + (1 | g2)", data)
    with pytest.raises(jaxlmm.InferenceError, match="rows"):
        jaxlmm.ranova(fit)
