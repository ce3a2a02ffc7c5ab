"""Bad input gets a clear ValueError subclass that names the fault; nothing fails silently."""

import numpy as np
import pandas as pd
import pytest

import jaxlmm
from jaxlmm import DataError, FormulaError

FORMULA = "Reaction ~ Days + (Days | Subject)"


@pytest.fixture
def data(sleepstudy):
    return sleepstudy.copy()


def test_errors_are_value_errors():
    assert issubclass(FormulaError, ValueError) and issubclass(DataError, ValueError)


def test_missing_column(data):
    with pytest.raises(DataError, match="Dayz"):
        jaxlmm.lmer("Reaction ~ Dayz + (1 | Subject)", data)
    with pytest.raises(DataError, match="Subjekt"):
        jaxlmm.lmer("Reaction ~ Days + (1 | Subjekt)", data)


def test_no_random_term(data):
    with pytest.raises(FormulaError, match="no random-effects term"):
        jaxlmm.lmer("Reaction ~ Days", data)


@pytest.mark.parametrize(
    "formula, fragment",
    [
        ("Reaction Days + (1 | Subject)", "response ~ terms"),
        ("Reaction ~ Days + (1 | Subject", "unbalanced"),
        ("Reaction ~ Days + 1 | Subject)", "unbalanced"),
        ("Reaction ~ Days + ( | Subject)", "each side"),
        ("Reaction ~ Days + (1 | )", "each side"),
        ("Reaction ~ Days + (1 | Subject | Days)", "exactly one"),
        ("Reaction ~ Days + + (1 | Subject)", "stray"),
        ("Reaction ~ Days + (1 | log(Subject))", "column name"),
        ("Reaction ~ Days + 1 | Subject", "parentheses"),
    ],
)
def test_formula_syntax_errors(data, formula, fragment):
    with pytest.raises(FormulaError, match=fragment.replace("(", r"\(")):
        jaxlmm.lmer(formula, data)


def test_grouping_factor_with_one_level(data):
    data["one"] = "a"
    with pytest.raises(DataError, match="'one' has 1 level"):
        jaxlmm.lmer("Reaction ~ Days + (1 | one)", data)


def test_grouping_factor_with_a_level_per_observation(data):
    data["obs"] = np.arange(len(data))
    with pytest.raises(DataError, match="'obs' has 180 levels for 180 observations"):
        jaxlmm.lmer("Reaction ~ Days + (1 | obs)", data)


def test_more_random_effects_than_observations(data):
    data["pair"] = np.arange(len(data)) // 2
    with pytest.raises(DataError, match="180 random effects for 180 observations"):
        jaxlmm.lmer("Reaction ~ Days + (Days | pair)", data)


def test_non_numeric_response(data):
    data["label"] = "x" + data["Reaction"].astype(str)
    with pytest.raises(DataError, match="response 'label' must be numeric"):
        jaxlmm.lmer("label ~ Days + (1 | Subject)", data)


def test_no_rows_left(data):
    data["Days"] = np.nan  # every row has a missing value in a used column
    with pytest.raises(DataError, match="no rows left"):
        jaxlmm.lmer(FORMULA, data)


@pytest.mark.parametrize("column", ["Reaction", "Days"])
def test_infinite_values(data, column):
    data[column] = data[column].astype(float)
    data.loc[5, column] = np.inf
    with pytest.raises(DataError, match=f"'{column}'.*infinite"):
        jaxlmm.lmer(FORMULA, data)


def test_negative_weights(data):
    weights = np.ones(len(data))
    weights[3] = -1.0
    with pytest.raises(DataError, match="negative"):
        jaxlmm.lmer(FORMULA, data, weights=weights)


def test_weights_of_wrong_length(data):
    with pytest.raises(DataError, match="length 3"):
        jaxlmm.lmer(FORMULA, data, weights=[1.0, 2.0, 3.0])


def test_missing_values_are_dropped(data):
    data.loc[[0, 10, 20], "Reaction"] = np.nan
    data.loc[30, "Subject"] = np.nan
    data["unused"] = np.nan  # columns the model does not use do not drop rows
    fit = jaxlmm.lmer(FORMULA, data)
    assert fit.nobs == 176
    assert len(fit.fitted) == 176 and not fit.fitted.index.isin([0, 10, 20, 30]).any()


def test_float32_and_integer_inputs_give_float64(data):
    data["Reaction"] = data["Reaction"].astype(np.float32)
    data["Subject"] = data["Subject"].cat.codes.astype(int) + 300
    fit = jaxlmm.lmer(FORMULA, data)
    assert fit.theta.dtype == np.float64 and fit.fixef.dtype == np.float64
    assert fit.ngroups == {"Subject": 18}


def test_data_must_be_tabular():
    with pytest.raises(DataError, match="DataFrame"):
        jaxlmm.lmer(FORMULA, 42)


def test_cli_reports_errors(capsys):
    from jaxlmm.cli import main

    assert main(["fit", "sleepstudy", "Reaction ~ Days"]) == 2
    assert "no random-effects term" in capsys.readouterr().err
    assert main(["fit", "nosuchdata", FORMULA]) == 2
    assert "neither a file nor a bundled data set" in capsys.readouterr().err


def test_pandas_string_grouping(data):
    data["Subject"] = data["Subject"].astype(str)
    assert jaxlmm.lmer(FORMULA, pd.DataFrame(data)).ngroups == {"Subject": 18}
