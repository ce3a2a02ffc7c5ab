"""The user-facing surface: summary text, CLI, data sets, formula expansion, immutability."""

import dataclasses

import numpy as np
import pytest

import jaxlmm
from jaxlmm.cli import main
from jaxlmm.formula import parse_formula

FORMULA = "Reaction ~ Days + (Days | Subject)"


@pytest.fixture(scope="module")
def fit():
    return jaxlmm.lmer(FORMULA, jaxlmm.datasets.load("sleepstudy"), data_name="sleepstudy")


def test_summary_reads_like_lme4(fit):
    text = fit.summary()
    for line in [
        "Linear mixed model fit by REML ['lmerMod']",
        "Formula: Reaction ~ Days + (Days | Subject)",
        "REML criterion at convergence: 1743.6",
        "Scaled residuals:",
        " Groups   Name        Variance Std.Dev. Corr",
        "Days         35.07    5.922   0.07",  # lme4: left-aligned columns
        "Number of obs: 180, groups:  Subject, 18",
        "(Intercept)  251.405      6.825  36.838",
        "Days          10.467      1.546   6.771",
        "Correlation of Fixed Effects:",
        "Days -0.138",
    ]:
        assert line in text


def test_ml_summary_shows_information_criteria():
    fit = jaxlmm.lmer(FORMULA, jaxlmm.datasets.load("sleepstudy"), reml=False)
    text = fit.summary()
    assert "maximum likelihood" in text and "df.resid" in text and "1763.9" in text


def test_cli_fit_prints_summary(capsys):
    assert main(["fit", "sleepstudy", FORMULA]) == 0
    assert "REML criterion at convergence: 1743.6" in capsys.readouterr().out


def test_cli_reads_csv_and_fits_ml(tmp_path, capsys):
    path = tmp_path / "dye.csv"
    jaxlmm.datasets.load("Dyestuff").to_csv(path, index=False)
    assert main(["fit", str(path), "Yield ~ 1 + (1 | Batch)", "--ml"]) == 0
    assert "deviance" in capsys.readouterr().out
    assert (
        main(["fit", str(path), "Yield ~ 1 + (1 | Batch)", "--ml", "--ddf", "kenward-roger"]) == 2
    )
    assert "REML" in capsys.readouterr().err


def test_cli_prints_satterthwaite_tests(capsys):
    assert main(["fit", "sleepstudy", FORMULA, "--ddf", "satterthwaite"]) == 0
    out = capsys.readouterr().out
    assert "Satterthwaite's method" in out and "Pr(>|t|)" in out


def test_fit_is_immutable(fit):
    with pytest.raises(dataclasses.FrozenInstanceError):
        fit.reml = False
    theta = fit.theta
    theta[0] = 99.0
    assert fit.theta[0] != 99.0


def test_ranef_layout(fit):
    ranef = fit.ranef()
    assert list(ranef) == ["Subject"]
    assert list(ranef["Subject"].columns) == ["(Intercept)", "Days"]
    assert len(ranef["Subject"]) == 18
    with_sd = fit.ranef(condvar=True)["Subject"]
    assert list(with_sd.columns) == ["(Intercept)", "Days", "condsd_(Intercept)", "condsd_Days"]
    assert np.all(with_sd["condsd_Days"] > 0)


def test_datasets_bundled():
    sizes = {"sleepstudy": 180, "Dyestuff": 30, "Dyestuff2": 30, "Penicillin": 144, "Pastes": 60}
    for name, rows in sizes.items():
        assert len(jaxlmm.datasets.load(name)) == rows
    insteval = jaxlmm.datasets.load("insteval")
    assert insteval.shape == (73421, 7) and insteval["service"].dtype == "category"
    with pytest.raises(KeyError):
        jaxlmm.datasets.load("nope")


def test_formula_expansions():
    nested = parse_formula("y ~ x + (1 | a/b)")
    assert [t.group for t in nested.random] == ["a", "b:a"]
    double = parse_formula("y ~ (x + z || g)")
    assert [t.expr for t in double.random] == ["1", "0 + x", "0 + z"]
    assert parse_formula("y ~ (1 | g) - 1").fixed == "1 - 1"
    assert parse_formula("y ~ 0 + x + (0 + x | g)").fixed == "0 + x"


def test_no_fixed_effects_is_allowed():
    data = jaxlmm.datasets.load("sleepstudy")
    fit = jaxlmm.lmer("Reaction ~ 0 + (1 | Subject)", data, reml=False)
    assert len(fit.fixef) == 0 and np.isfinite(fit.objective)


def test_devfun_is_differentiable():
    import jax

    fun = jaxlmm.devfun(FORMULA, jaxlmm.datasets.load("sleepstudy"))
    theta = np.array([0.9667, 0.0152, 0.2309])
    with jax.enable_x64(True):
        assert float(fun(theta)) == pytest.approx(1743.628, abs=1e-3)
        assert np.all(np.abs(np.asarray(jax.grad(fun)(theta))) < 1.0)
        assert np.all(np.linalg.eigvalsh(np.asarray(jax.hessian(fun)(theta))) > 0)
