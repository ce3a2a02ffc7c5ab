"""The ``jaxlmm`` command line, end to end: ``main([...])`` in process and one real
subprocess."""

import importlib.util
import io
import json
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
from conftest import load_reference

import jaxlmm
from jaxlmm.cli import CSV_COLUMNS, main

FORMULA = "Reaction ~ Days + (Days | Subject)"


@pytest.fixture(scope="module")
def fit():
    return jaxlmm.lmer(FORMULA, jaxlmm.datasets.load("sleepstudy"))


@pytest.fixture
def weighted_csv(tmp_path):
    data = jaxlmm.datasets.load("sleepstudy")
    data["w"] = 1.0 + data["Days"] % 3
    path = tmp_path / "sleep.csv"
    data.to_csv(path, index=False)
    return path, data


def _error_line(capsys) -> str:
    captured = capsys.readouterr()
    lines = captured.err.strip().split("\n")
    assert len(lines) == 1 and lines[0].startswith("jaxlmm: error: "), captured.err
    return lines[0]


def test_version(capsys):
    assert main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"jaxlmm {jaxlmm.__version__}"


def test_help_is_plain_text(capsys):
    assert main(["--help"]) == 0
    assert main(["fit", "--help"]) == 0
    out = capsys.readouterr().out
    assert "``" not in out and ":func:" not in out
    for option in ("--weights", "--confint", "--ranef", "--plot", "--output", "--version"):
        assert option in out


def test_weights_column(weighted_csv, capsys):
    path, data = weighted_csv
    assert main(["fit", str(path), FORMULA, "--weights", "w"]) == 0
    out = capsys.readouterr().out
    expected = jaxlmm.lmer(FORMULA, data, weights="w")
    assert "Weights: w" in out and f"   Data: {path.name}" in out
    assert f"REML criterion at convergence: {expected.objective:.1f}" in out


@pytest.mark.parametrize("method", ["wald", "profile"])
def test_confint_and_ranef_text(method, fit, capsys):
    assert main(["fit", "sleepstudy", FORMULA, "--confint", method, "--ranef"]) == 0
    out = capsys.readouterr().out
    assert "Linear mixed model fit by REML" in out
    assert f"{method.capitalize()} confidence intervals:\n" in out
    assert repr(fit.confint(method)) in out
    assert "$Subject\n    (Intercept)        Days\n308 " in out


def test_bootstrap_confint_is_reproducible(capsys):
    args = ["fit", "Dyestuff", "Yield ~ 1 + (1 | Batch)", "--confint", "bootstrap"]
    assert main([*args, "--nsim", "20", "--seed", "3", "--output", "json"]) == 0
    first = json.loads(capsys.readouterr().out)["confint"]
    assert main([*args, "--nsim", "20", "--seed", "3", "--output", "json"]) == 0
    assert json.loads(capsys.readouterr().out)["confint"] == first
    assert [c["parameter"] for c in first] == ["sd_(Intercept)|Batch", "sigma", "(Intercept)"]


def test_json_output(fit, capsys):
    args = ["fit", "sleepstudy", FORMULA, "--ddf", "satterthwaite", "--confint", "wald"]
    assert main([*args, "--ranef", "--output", "json"]) == 0
    record = json.loads(capsys.readouterr().out)
    assert record["formula"] == FORMULA and record["data"] == "sleepstudy" and record["reml"]
    table = fit.coef_table()
    fixed = pd.DataFrame(record["fixed_effects"]).set_index("term")
    np.testing.assert_allclose(fixed["estimate"], table["estimate"], rtol=1e-10)
    np.testing.assert_allclose(fixed["std_error"], table["std_error"], rtol=1e-10)
    np.testing.assert_allclose(fixed["df"], table["df"], rtol=1e-8)
    np.testing.assert_allclose(fixed["p_value"], table["p_value"], rtol=1e-8)
    random = pd.DataFrame(record["random_effects"])
    np.testing.assert_allclose(random["sdcor"], fit.varcorr["sdcor"], rtol=1e-10)
    assert random["parameter"].tolist() == [
        "sd_(Intercept)|Subject",
        "sd_Days|Subject",
        "cor_Days.(Intercept)|Subject",
        "sigma",
    ]
    assert record["statistics"]["REMLcrit"] == pytest.approx(fit.objective)
    assert record["statistics"]["nobs"] == 180
    bounds = {c["parameter"]: c for c in record["confint"]}
    assert bounds["sigma"]["lower"] is None  # Wald: NA for variance parameters, as lme4
    assert bounds["Days"]["lower"] == pytest.approx(fit.confint("wald").loc["Days", "lower"])
    assert len(record["ranef"]["Subject"]) == 18
    assert set(record["ranef"]["Subject"][0]) == {
        "level", "(Intercept)", "Days", "condsd_(Intercept)", "condsd_Days",
    }  # fmt: skip


def test_csv_output(fit, capsys):
    args = ["fit", "sleepstudy", FORMULA, "--confint", "wald", "--ranef", "--output", "csv"]
    assert main(args) == 0
    table = pd.read_csv(io.StringIO(capsys.readouterr().out), keep_default_na=False)
    assert list(table.columns) == CSV_COLUMNS
    fixed = table[table["section"] == "fixed"].set_index("name")
    np.testing.assert_allclose(fixed["estimate"].astype(float), fit.fixef, rtol=1e-10)
    np.testing.assert_allclose(fixed["std_error"].astype(float), fit.std_errors, rtol=1e-10)
    np.testing.assert_allclose(fixed["lower"].astype(float), fit.confint("wald")["lower"][-2:])
    random = table[table["section"] == "random"]
    np.testing.assert_allclose(random["estimate"].astype(float), fit.varcorr["sdcor"])
    statistics = table[table["section"] == "statistic"].set_index("name")["estimate"]
    assert float(statistics["REMLcrit"]) == pytest.approx(fit.objective)
    assert (table["section"] == "ranef").sum() == 36


@pytest.mark.skipif(importlib.util.find_spec("matplotlib") is None, reason="needs matplotlib")
def test_plot_file(tmp_path, capsys):
    path = tmp_path / "diagnostics.png"
    assert main(["fit", "sleepstudy", FORMULA, "--plot", str(path)]) == 0
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "Linear mixed model" in capsys.readouterr().out


def test_plot_without_matplotlib(monkeypatch, tmp_path, capsys):
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "matplotlib" else real(name)
    )
    assert main(["fit", "sleepstudy", FORMULA, "--plot", str(tmp_path / "x.png")]) == 2
    assert "matplotlib" in _error_line(capsys)
    assert not (tmp_path / "x.png").exists()


@pytest.mark.parametrize(
    "args, message",
    [
        ([], "required"),
        (["fit", "sleepstudy"], "required"),
        (["fit", "sleepstudy", FORMULA, "--confint", "exact"], "invalid choice"),
        (["fit", "sleepstudy", FORMULA, "--output", "xml"], "invalid choice"),
        (["fit", "sleepstudy", FORMULA, "--level", "95"], "--level"),
        (["fit", "sleepstudy", FORMULA, "--nsim", "many"], "invalid int"),
        (["fit", "sleepstudy", "Reaction ~ Days + (Days | Subject"], "unbalanced"),
        (["fit", "sleepstudy", "Reaction ~ Days"], "random-effects"),
        (["fit", "sleepstudy", FORMULA, "--weights", "nope"], "nope"),
        (["fit", "no_such_data", FORMULA], "neither a file"),
        (["fit", "missing.csv", FORMULA], "does not exist"),
        (["frobnicate"], "invalid choice"),
    ],
)
def test_malformed_input_is_one_error_line(args, message, capsys):
    assert main(args) == 2
    assert message in _error_line(capsys)


def test_unreadable_csv(tmp_path, capsys):
    path = tmp_path / "bad.csv"
    path.write_bytes(b'"a,b\n1,2\n3')
    assert main(["fit", str(path), "b ~ 1 + (1 | a)"]) == 2
    _error_line(capsys)


def test_real_subprocess():
    """The installed entry point, as a shell runs it."""
    command = [sys.executable, "-m", "jaxlmm.cli", "fit", "Dyestuff", "Yield ~ 1 + (1 | Batch)"]
    done = subprocess.run([*command, "--output", "json"], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    record = json.loads(done.stdout)
    expected = load_reference("dyestuff_reml")  # lme4's fit
    assert record["statistics"]["REMLcrit"] == pytest.approx(expected["objective"], abs=1e-6)
    bad = subprocess.run([*command, "--ddf", "kr"], capture_output=True, text=True)
    assert bad.returncode == 2
    assert bad.stderr.strip().startswith("jaxlmm: error: argument --ddf")
    assert len(bad.stderr.strip().split("\n")) == 1
