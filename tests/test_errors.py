"""Bad input gets a clear ValueError subclass that names the fault; nothing fails silently."""

import re

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


@pytest.mark.parametrize("formula", [None, 42, ["Reaction ~ Days + (1 | Subject)"]])
def test_formula_must_be_text(data, formula):
    with pytest.raises(FormulaError, match="formula must be a string"):
        jaxlmm.lmer(formula, data)


@pytest.mark.parametrize(
    "formula, fragment",
    [
        ("Reaction ~ `Days + (1 | Subject)", "unmatched backtick"),
        ("Reaction ~ splines::bs(Days, df = 4) + (1 | Subject)", "names a package"),
        ("Reaction ~ Days - offset(Days) + (1 | Subject)", "cannot subtract offset"),
        ("Reaction ~ Days + offset() + (1 | Subject)", "offset\\(\\) needs an expression"),
    ],
)
def test_r_syntax_errors(data, formula, fragment):
    with pytest.raises(FormulaError, match=fragment):
        jaxlmm.lmer(formula, data)


def test_non_numeric_weights_and_offset_columns_are_named(data):
    data["label"] = "x"
    with pytest.raises(DataError, match="weights column 'label' must be numeric"):
        jaxlmm.lmer(FORMULA, data, weights="label")
    with pytest.raises(DataError, match="offset column 'label' must be numeric"):
        jaxlmm.build_design(FORMULA, data, offset="label")
    with pytest.raises(DataError, match="offset \\['Subject'\\] must be numeric"):
        jaxlmm.build_design("Reaction ~ Days + offset(Subject) + (1 | Subject)", data)


def test_constant_response(data):
    data["constant"] = 5.0
    with pytest.raises(DataError, match="response 'constant' is constant"):
        jaxlmm.lmer("constant ~ Days + (1 | Subject)", data)
    data["line"] = 2.0 * data["Days"] + 1.0
    with pytest.raises(DataError, match="'line' is an exact linear function of the fixed"):
        jaxlmm.lmer("line ~ Days + (1 | Subject)", data)


def test_as_many_fixed_effects_as_observations(data):
    data = data[data["Subject"].isin(["308", "309", "310"])].copy()
    data["day"] = data["Days"].astype(str)
    with pytest.raises(DataError, match="30 fixed-effect columns for 30 observations"):
        jaxlmm.lmer("Reaction ~ day * Subject + (1 | Subject)", data)


@pytest.mark.parametrize(
    "formula, scale, fragment",
    [
        ("Reaction ~ Days + (big | Subject)", 1e4, "'big' in the random-effects term .*1e4"),
        ("Reaction ~ Days + (0 + big | Subject)", 1e-5, "'big' in the random-eff.*by 1e5"),
        ("Reaction ~ big + (1 | Subject)", 1e70, "'big' in the fixed-effects .*by 1e70"),
    ],
)
def test_degenerate_scales_name_the_column_to_rescale(data, formula, scale, fragment):
    data["big"] = data["Days"] * scale
    with pytest.raises(DataError, match=fragment):
        jaxlmm.lmer(formula, data)


@pytest.mark.parametrize(
    "content, fragment",
    [
        ("", "cannot read data file .*: No columns to parse"),
        ('a,b\n1,2\n"x,3\n', "cannot read data file .*EOF inside string"),
        (None, "does not exist"),
    ],
)
def test_cli_reports_unreadable_data_on_one_line(tmp_path, capfd, content, fragment):
    from jaxlmm.cli import main

    path = tmp_path / "data.csv"
    if content is not None:
        path.write_text(content)
    assert main(["fit", str(path), "y ~ x + (1 | g)"]) == 2
    err = capfd.readouterr().err
    assert err.startswith("jaxlmm: error: ") and err.count("\n") == 1
    assert "Traceback" not in err
    assert re.search(fragment, err)


def test_cli_reports_a_bad_formula_on_one_line(capfd):
    from jaxlmm.cli import main

    assert main(["fit", "sleepstudy", "Reaction ~ Days + (1 | Subject"]) == 2
    err = capfd.readouterr().err
    assert err.startswith("jaxlmm: error: unbalanced '('") and err.count("\n") == 1
