"""Data frames as users hand them over: pandas string dtypes, logicals, nullable dtypes, other
libraries' frames, duplicated names; and a property test that any small input either fits or
raises a JaxlmmError, never modifying the caller's frame."""

import copy
import importlib.util
import warnings

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import jaxlmm
from jaxlmm import DataError

FORMULA = "Reaction ~ Days + half + (Days | Subject)"
HAS_PYARROW = importlib.util.find_spec("pyarrow") is not None
STRING_DTYPES = ["str", "object", "category", "string[python]"] + (
    ["string[pyarrow]"] if HAS_PYARROW else []
)


def sleep(dtype: str = "object") -> pd.DataFrame:
    d = jaxlmm.datasets.load("sleepstudy")
    d["Subject"] = d["Subject"].astype(str).astype(dtype)
    d["half"] = pd.Series(np.where(d["Days"] < 5, "early", "late")).astype(dtype)
    return d


@pytest.fixture(scope="module")
def baseline():
    return jaxlmm.lmer(FORMULA, sleep())


@pytest.mark.parametrize("dtype", STRING_DTYPES)
def test_string_dtypes_are_factors(baseline, dtype):
    data = sleep(dtype)
    fit = jaxlmm.lmer(FORMULA, data)
    assert fit.objective == baseline.objective
    assert list(fit.fixef.index) == ["(Intercept)", "Days", "halflate"]
    assert fit.ngroups == {"Subject": 18}
    newdata = data.iloc[[0, 179]]
    np.testing.assert_allclose(fit.predict(newdata), baseline.predict(sleep().iloc[[0, 179]]))
    unseen = newdata.assign(half=pd.Series(["mid", "late"], index=newdata.index).astype(dtype))
    with pytest.raises(DataError, match=r"'half' has level\(s\) \['mid'\]"):
        fit.predict(unseen)
    with pytest.raises(DataError, match="response 'Subject' must be numeric"):
        jaxlmm.lmer("Subject ~ Days + (1 | half)", data)


def test_logical_predictor_is_a_factor():
    data = sleep()
    data["late"] = data["Days"] >= 5
    data["maybe"] = pd.array(data["late"], dtype="boolean")
    data.loc[0, "maybe"] = pd.NA
    fit = jaxlmm.lmer("Reaction ~ late + (1 | Subject)", data)
    assert list(fit.fixef.index) == ["(Intercept)", "lateTRUE"]
    expected = fit.fixef["(Intercept)"] + np.array([0.0, fit.fixef["lateTRUE"]])
    population = fit.predict(pd.DataFrame({"late": [False, True]}), re_form="~0")
    np.testing.assert_allclose(population, expected)
    with pytest.raises(DataError, match=r"'late' has level\(s\) \['maybe'\]"):
        fit.predict(pd.DataFrame({"late": ["maybe"], "Subject": ["308"]}))
    nullable = jaxlmm.lmer("Reaction ~ maybe + (1 | Subject)", data)
    assert list(nullable.fixef.index) == ["(Intercept)", "maybeTRUE"] and nullable.nobs == 179


def test_nullable_numbers_with_missing_values():
    data = sleep()
    data["days"] = pd.array(data["Days"], dtype="Int64")
    data.loc[[3, 4], "days"] = pd.NA
    fit = jaxlmm.lmer("Reaction ~ days + (1 | Subject)", data)
    plain = jaxlmm.lmer("Reaction ~ Days + (1 | Subject)", data.drop(index=[3, 4]))
    assert fit.nobs == 178 and fit.objective == pytest.approx(plain.objective, rel=1e-12)


def test_float_and_string_spellings_of_integer_levels(baseline):
    data = sleep()
    data["Subject"] = data["Subject"].astype(int)
    fit = jaxlmm.lmer(FORMULA, data)
    assert fit.objective == baseline.objective
    newdata = pd.DataFrame(
        {"Days": [1.0, 1.0, 1.0], "half": "early", "Subject": [308.0, 308, "308"]}
    )
    assert np.ptp(fit.predict(newdata)) == 0


class InterchangeOnly:
    """A data frame of another library that offers only the interchange protocol."""

    def __init__(self, frame: pd.DataFrame):
        self._frame = frame

    def __dataframe__(self, nan_as_null=False, allow_copy=True):
        return self._frame.__dataframe__(nan_as_null, allow_copy)


class BrokenConverter:
    def to_pandas(self):
        raise ModuleNotFoundError("No module named 'pyarrow'")


def test_interchange_protocol(baseline):
    assert jaxlmm.lmer(FORMULA, InterchangeOnly(sleep("str"))).objective == baseline.objective


def test_polars_frame(baseline):
    pl = pytest.importorskip("polars")
    pytest.importorskip("pyarrow")  # polars' to_pandas() needs it
    assert jaxlmm.lmer(FORMULA, pl.from_pandas(sleep("str"))).objective == baseline.objective


def test_unconvertible_frames_are_refused_with_advice():
    with pytest.raises(DataError, match="to_pandas.*pyarrow.*pass a pandas DataFrame"):
        jaxlmm.lmer(FORMULA, BrokenConverter())
    with pytest.raises(DataError, match="data must be a pandas DataFrame.*got str"):
        jaxlmm.lmer(FORMULA, "sleepstudy")


def test_duplicated_column_names():
    data = sleep()
    data.insert(3, "extra", 1.0)
    data.columns = ["Reaction", "Days", "Subject", "Days", "half"]
    with pytest.raises(DataError, match=r"\['Days'\] appear more than once"):
        jaxlmm.lmer(FORMULA, data)
    data.columns = ["Reaction", "Days", "Subject", "unused", "unused"]
    assert jaxlmm.lmer("Reaction ~ Days + (1 | Subject)", data).nobs == 180
    data.columns = ["Reaction", "Days", "Subject", "w", "w"]
    with pytest.raises(DataError, match="weights column 'w' appears more than once"):
        jaxlmm.lmer("Reaction ~ Days + (1 | Subject)", data, weights="w")


def test_unsupported_column_types_are_named():
    data = sleep()
    data["when"] = pd.Timestamp("2024-01-01") + pd.to_timedelta(data["Days"], unit="D")
    with pytest.raises(DataError, match="'when' holds datetime64 values"):
        jaxlmm.lmer("Reaction ~ when + (1 | Subject)", data)


# Property test: small frames of every column type, a small formula grammar.
N = 24
GROUP = np.arange(N) % 4
FORMULAS = [
    "y ~ x + (1 | g)",
    "y ~ x + (x | g)",
    "y ~ 0 + x + (1 | g)",
    "y ~ poly(x, 2) + (1 | g)",
    "y ~ scale(x) + (1 | g)",
    "y ~ log(x) + (1 | g)",
    "y ~ x + (1 | g) + (1 | x)",
]
KINDS = ["float", "int", "bool", "str", "category", "string[python]", "str-dtype"]


def _column(kind: str, levels: int, values: np.ndarray) -> pd.Series:
    """A column of ``kind`` built from integer codes (``levels`` distinct values)."""
    codes = values % levels
    if kind == "float":
        return pd.Series(codes.astype(float))
    if kind == "int":
        return pd.Series(codes.astype(np.int64))
    if kind == "bool":
        return pd.Series(codes % 2 == 1)
    labels = pd.Series([f"v{c}é" for c in codes])
    dtypes = {"str": object, "category": "category", "string[python]": "string[python]"}
    return labels.astype(dtypes.get(kind, "str"))


@st.composite
def cases(draw):
    formula = draw(st.sampled_from(FORMULAS))
    x_kind, g_kind = draw(st.sampled_from(KINDS)), draw(st.sampled_from(KINDS))
    x_levels = draw(st.sampled_from([1, 2, 3, N]))
    g_levels = draw(st.sampled_from([1, 2, 4, N]))
    scale = draw(st.sampled_from([1.0, 1e-12, 1e6, 1e12, 1e80]))
    y_kind = draw(st.sampled_from(["normal", "constant", "huge"]))
    missing = draw(st.lists(st.integers(0, N - 1), max_size=4))
    seed = draw(st.integers(0, 2**16))
    rng = np.random.default_rng(seed)
    x = _column(x_kind, x_levels, rng.permutation(N))
    if x_kind == "float":
        x = x * scale + rng.uniform(0.1, 1.0, size=N) * scale
    g_codes = GROUP if g_levels == 4 else np.arange(N)
    data = pd.DataFrame({"x": x, "g": _column(g_kind, g_levels, g_codes)})
    data["y"] = {"normal": 1.0, "constant": 0.0, "huge": 1e200}[y_kind] * rng.normal(size=N) + 3
    for column, row in zip(["y", "x", "g", "y"], missing, strict=False):
        data[column] = data[column].where(data.index != row)  # a missing value, in any dtype
    well_posed = (
        formula in FORMULAS[:3]
        and x_kind == "float"
        and scale == 1.0
        and g_levels == 4
        and y_kind == "normal"
    )
    return formula, data, well_posed


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(cases())
def test_any_input_fits_or_raises_a_jaxlmm_error(case):
    formula, data, well_posed = case
    before = copy.deepcopy(data)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            fit = jaxlmm.lmer(formula, data)
    except jaxlmm.JaxlmmError:
        assert not well_posed
    else:
        assert np.isfinite(fit.objective)
        if well_posed:
            estimates = [fit.fixef.to_numpy(), fit.theta, [fit.sigma]]
            assert all(np.all(np.isfinite(e)) for e in estimates)
    pd.testing.assert_frame_equal(data, before)


@settings(max_examples=20, deadline=None)
@given(seed=st.integers(0, 2**31), n=st.integers(80, 300))
def test_interaction_levels_are_the_observed_combinations_in_order(seed, n):
    """``(1 | a:b:c)`` has one level per observed combination, ordered by a, then b, then c
    (each factor in its own level order), and every row carries its combination's code."""
    rng = np.random.default_rng(seed)
    data = pd.DataFrame(
        {
            "y": rng.normal(size=n),
            "a": rng.choice(["u", "v", "w10", "w9"], n),
            "b": rng.integers(-3, 3, n),
            "c": pd.Categorical(rng.choice(["z", "y", "x"], n), categories=["z", "y", "x"]),
        }
    )
    term = jaxlmm.build_design("y ~ 1 + (1 | a:b:c)", data).terms[0]
    order = [sorted(set(data["a"])), sorted(set(data["b"])), ["z", "y", "x"]]
    keys = [
        (order[0].index(a), order[1].index(b), order[2].index(c))
        for a, b, c in zip(data["a"], data["b"], data["c"], strict=True)
    ]
    expected = sorted(set(keys))
    labels = [f"{order[0][i]}:{order[1][j]}:{order[2][k]}" for i, j, k in expected]
    assert list(term.levels) == labels
    np.testing.assert_array_equal(term.codes, [expected.index(key) for key in keys])


def test_interaction_of_factors_with_many_levels():
    """Combinations too many to count (about 1,700 x 1,700 levels, 2,500 observed) are found
    by sorting, in the same order."""
    rng = np.random.default_rng(3)
    a, b = rng.integers(0, 3000, 2500), rng.integers(0, 3000, 2500)
    data = pd.DataFrame({"a": np.tile(a, 2), "b": np.tile(b, 2)})
    data["y"] = rng.normal(size=len(data))
    term = jaxlmm.build_design("y ~ 1 + (1 | a:b)", data).terms[0]
    pairs = sorted(set(zip(data["a"], data["b"], strict=True)))
    assert list(term.levels) == [f"{i}:{j}" for i, j in pairs]
    np.testing.assert_array_equal(
        term.codes, [pairs.index(key) for key in zip(data["a"], data["b"], strict=True)]
    )
