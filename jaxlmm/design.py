"""Formula + data -> Design: the model matrices, checked. Every data check lives here.

Data columns enter in one canonical form (:func:`_canonical`): numbers as float64 and every
other column as a factor whose levels are spelled as R spells them. Columns are keyed by the
identifiers of :func:`formula.python_name`, the spelling formulaic sees.
"""

from __future__ import annotations

import ast
import dataclasses
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache, partial

import numpy as np
import pandas as pd
from formulaic import Formula, model_matrix
from formulaic.errors import DataMismatchWarning
from formulaic.transforms import TRANSFORMS
from scipy import sparse

from .errors import DataError, FormulaError, RankDeficiencyWarning
from .formula import (
    MixedFormula,
    column_name,
    error_text,
    parse_formula,
    python_name,
    r_deparse,
    r_text,
)

_RANK_TOL = 1e-7
# Random-effect columns must have typical magnitudes within [1 / _RE_SCALE, _RE_SCALE]. theta
# is relative to a unit column: an effect whose SD is a tenth of the residual SD on a column of
# magnitude m has theta ~ 0.1 / m, which beyond m = 1e3 falls below lme4's singularity
# tolerance (1e-4) and cannot be told from zero; 1e3 is also lme4's own "consider rescaling"
# tolerance. The bound is symmetric: below 1e-3 theta must travel four orders of magnitude.
_RE_SCALE = 1e3
# Every fixed- and random-effect column must have typical magnitudes within
# [1 / _MAX_SCALE, _MAX_SCALE]: the criterion multiplies up to four data values (squares of
# cross-products), which must stay well inside float64's range of about 1e+-308. The response
# and the offset need no bound: the numerics divide them by a power of two near their scale.
_MAX_SCALE = 1e64
_NO_VARIATION = 1e-10  # relative residual norm below which the response is fitted exactly


@dataclass(frozen=True)
class ReTerm:
    """One random-effects term: ``Z`` columns per observation and the level of each row."""

    group: str  # lme4's name of the grouping factor, e.g. "Subject" or "cask:batch"
    names: tuple[str, ...]  # names of the s columns, e.g. ("(Intercept)", "Days")
    levels: tuple[str, ...]  # level labels, in factor order
    codes: np.ndarray  # (n,) int: level index of each observation
    z: np.ndarray  # (n, s) float64: the term's model-matrix columns
    expr: str = "1"  # the term's left-hand side, e.g. "1 + Days"
    spec: object = None  # formulaic ModelSpec that rebuilds z for new data (None: plain columns)
    factors: tuple[str, ...] = ()  # the grouping columns, e.g. ("cask", "batch")

    def new_levels(self, data: pd.DataFrame) -> tuple[np.ndarray, list[str]]:
        """Level index of each row of new data (-1 for a level the fit has not seen, or a
        missing value) and the row's level label, spelled as the fit spells its levels."""
        data = as_data_frame(data)
        sources = _sources(data, {python_name(f) for f in self.factors}, "new data")
        parts = [_labels(_canonical(data[sources[python_name(f)]], f)) for f in self.factors]
        labels = ["NA" if None in row else ":".join(row) for row in zip(*parts, strict=True)]
        index = {level: k for k, level in enumerate(self.levels)}
        return np.array([index.get(label, -1) for label in labels], dtype=np.int64), labels

    @property
    def n_levels(self) -> int:
        return len(self.levels)

    @property
    def n_columns(self) -> int:
        return self.z.shape[1]


@dataclass(frozen=True)
class FixedTerm:
    """One term of the fixed part (not the intercept) and the columns of X it owns."""

    label: str  # formulaic's spelling, e.g. "Days", "half", "Days:half", "np.sqrt(x)"
    variables: frozenset[str]  # the variables (formulaic factors) the term multiplies
    numeric: frozenset[str]  # those that are numeric rather than categorical
    columns: tuple[int, ...]  # its columns of X (aliased columns excluded)

    @property
    def name(self) -> str:
        """The term as R labels it (lmerTest's anova rows): ``sqrt(x)``, ``x.y:late``."""
        return r_name(self.label)


@dataclass(frozen=True)
class Design:
    """Everything the numerics need, with random terms in lme4's order (most levels first)."""

    formula: MixedFormula
    y: np.ndarray  # (n,)
    x: np.ndarray  # (n, p)
    fixed_names: tuple[str, ...]
    weights: np.ndarray  # (n,) prior weights
    offset: np.ndarray  # (n,) known part of the linear predictor (zeros when none)
    terms: tuple[ReTerm, ...]
    rows: pd.Index  # labels of the data rows used (after dropping missing values)
    dropped_fixed: tuple[str, ...]  # aliased fixed-effect columns removed
    fixed_terms: tuple[FixedTerm, ...] = ()
    fixed_spec: object = None  # formulaic ModelSpec of X before dropping (None: plain columns)
    kept_fixed: tuple[int, ...] = ()  # columns of that matrix kept in X
    data: _Columns | None = None  # the columns the model uses, on the rows used
    offset_spec: object = None  # formulaic ModelSpec of the formula's offset (None: no offset)

    @property
    def nobs(self) -> int:
        return len(self.y)

    @property
    def ngroups(self) -> dict[str, int]:
        """Number of levels per grouping factor (lme4's ``ngrps``), each factor once."""
        return {t.group: t.n_levels for t in self.terms}

    def random_effects_matrix(self):
        """Z (n x q), sparse CSC: terms in order, each level-major (level 1's columns, then
        level 2's, ...), the order of the conditional modes b and of Lambda's blocks."""
        rows, cols, vals, start = [], [], [], 0
        for term in self.terms:
            s = term.n_columns
            for a in range(s):
                rows.append(np.arange(self.nobs))
                cols.append(start + term.codes * s + a)
                vals.append(term.z[:, a])
            start += term.n_levels * s
        if not rows:
            return sparse.csc_matrix((self.nobs, 0))
        z = sparse.coo_matrix(
            (np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))),
            shape=(self.nobs, start),
        ).tocsc()
        z.eliminate_zeros()
        return z

    def with_response(self, y: np.ndarray, keep: np.ndarray) -> Design:
        """The same model for another response on the rows ``keep`` (levels and term order kept,
        so theta keeps its layout; a level without rows gets a zero conditional mode)."""
        terms = tuple(dataclasses.replace(t, codes=t.codes[keep], z=t.z[keep]) for t in self.terms)
        return dataclasses.replace(
            self,
            y=np.asarray(y, dtype=np.float64)[keep],
            x=self.x[keep],
            weights=self.weights[keep],
            offset=self.offset[keep],
            terms=terms,
            rows=self.rows[keep],
            data=None if self.data is None else self.data.subset(keep),
        )

    def offset_for(self, data: pd.DataFrame) -> np.ndarray:
        """The formula's ``offset(...)`` terms for new data (zeros when it has none; an
        ``offset=`` argument of the fit belongs to the fitted rows only)."""
        if self.offset_spec is None:
            return np.zeros(len(data))
        expr = _offset_expr(self.formula.offsets)
        return model_matrix_for(expr, self.offset_spec, data, "offset")[:, 0]


def r_name(name: str) -> str:
    """R's spelling of a formulaic column name: ``Intercept`` -> ``(Intercept)``,
    ``f[T.b]`` -> ``fb``, ``I(x ** 2)`` -> ``I(x^2)``, ``poly(x, 2)[1]`` -> ``poly(x, 2)1``;
    each factor of an interaction in turn (``x:f[T.b]`` -> ``x:fb``)."""
    if name == "Intercept":
        return "(Intercept)"
    return ":".join(_r_factor_name(part) for part in _split_factors(name))


def _split_factors(name: str) -> list[str]:
    """The parts of a column name joined by ``:`` outside brackets and parentheses."""
    parts, depth, start = [], 0, 0
    for i, ch in enumerate(name):
        depth += (ch in "([") - (ch in ")]")
        if ch == ":" and depth == 0:
            parts.append(name[start:i])
            start = i + 1
    return parts + [name[start:]]


def _r_factor_name(part: str) -> str:
    """``expr[T.level]`` or ``expr[level]`` -> R's ``expr`` followed by the level."""
    if not part.endswith("]"):
        return r_deparse(part)
    depth = 0
    for i in range(len(part) - 1, -1, -1):
        depth += (part[i] == "]") - (part[i] == "[")
        if depth == 0:
            return r_deparse(part[:i]) + _r_level(part[:i], part[i + 1 : -1])
    return r_deparse(part)


def _r_level(expr: str, level: str) -> str:
    """The level or column label after a factor's name, as R writes it: formulaic's ``T.``
    of treatment contrasts dropped; the columns of ``poly(x, k, raw=True)``, which formulaic
    numbers from 0, numbered from 1; numeric levels of ``factor(x)`` (formulaic's ``C(x)``)
    as R labels them (``1``, not ``1.0``)."""
    if expr.startswith("poly(") and "raw=True" in expr.replace(" ", "") and level.isdigit():
        return str(int(level) + 1)
    level = level.removeprefix("T.")
    if expr.startswith("C("):
        try:
            return _level_label(float(level))
        except ValueError:
            return level
    return level


@cache
def _parsed(expr: str, where: str) -> tuple[frozenset[str], tuple[str, ...]]:
    """The columns (as identifiers) an expression needs and its terms, from formulaic's parse.

    formulaic's own ``required_variables`` leaves out the arguments of stateful transforms
    (``poly(x, 2)``, ``scale(x)``), so the variables are read from each factor's code here.
    """
    try:
        terms = tuple(Formula(expr))
        variables = frozenset(v for t in terms for f in t.factors for v in _factor_variables(f))
    except Exception as err:  # formulaic raises several exception types on bad syntax
        raise FormulaError(
            f"cannot parse {r_text(expr)!r} in the {where}: {error_text(err)}"
        ) from None
    return variables, tuple(str(t) for t in terms)


def _factor_variables(factor) -> set[str]:
    """Names a formulaic factor reads from the data: a looked-up column, or the names in its
    Python code other than functions and formulaic's own namespace (``np``, ``contr``)."""
    method = factor.eval_method.value
    if method == "lookup":
        return {factor.expr}
    if method != "python":
        return set()
    tree = ast.parse(factor.expr, mode="eval")
    functions = {id(node.func) for node in ast.walk(tree) if isinstance(node, ast.Call)}
    return {
        node.id
        for node in ast.walk(tree)
        if isinstance(node, ast.Name) and id(node) not in functions and node.id not in TRANSFORMS
    }


def as_data_frame(data) -> pd.DataFrame:
    """``data`` as a pandas DataFrame: a DataFrame as it is; another library's data frame by
    its ``to_pandas()`` method (polars, pyarrow) or the dataframe interchange protocol
    (``__dataframe__``); a mapping of columns or an array by pandas' constructor."""
    if isinstance(data, pd.DataFrame):
        return data
    if hasattr(data, "to_pandas"):
        convert, how = data.to_pandas, "its to_pandas() method"
    elif hasattr(data, "__dataframe__"):
        convert, how = partial(_from_interchange, data), "the dataframe interchange protocol"
    elif isinstance(data, (Mapping, list, tuple, np.ndarray, pd.Series)):
        convert, how = partial(pd.DataFrame, data), "pandas.DataFrame()"
    else:
        raise DataError(
            "data must be a pandas DataFrame, a data frame with a to_pandas() method or the "
            f"interchange protocol, or a mapping of columns; got {type(data).__name__}"
        )
    try:
        converted = convert()
    except Exception as err:  # converters raise many exception types (a missing pyarrow...)
        raise DataError(
            f"cannot convert the {type(data).__name__} data to pandas with {how} ({err}); "
            "pass a pandas DataFrame instead"
        ) from None
    if not isinstance(converted, pd.DataFrame):
        raise DataError(f"{type(data).__name__} data did not convert to a pandas DataFrame")
    return converted


def _from_interchange(data) -> pd.DataFrame:
    with warnings.catch_warnings():  # pandas 3 deprecates the protocol that it still reads
        warnings.simplefilter("ignore", DeprecationWarning)
        return pd.api.interchange.from_dataframe(data)


def _sources(data: pd.DataFrame, needed: set[str], where: str = "data") -> dict[str, object]:
    """The column of ``data`` that each needed identifier names; missing or duplicated names
    are refused."""
    found: dict[str, list] = {}
    for c in data.columns:
        found.setdefault(python_name(str(c)), []).append(c)
    missing = sorted(column_name(v) for v in needed if v not in found)
    if missing:
        raise DataError(f"column(s) {missing} named in the formula are not in the {where}")
    duplicated = sorted(column_name(v) for v in needed if len(found[v]) > 1)
    if duplicated:
        raise DataError(f"column name(s) {duplicated} appear more than once in the {where}")
    return {v: found[v][0] for v in needed}


def _level_label(value) -> str:
    """A value as R labels a factor level: ``TRUE``/``FALSE`` for logicals, whole numbers
    without a decimal point (so that 308.0 and 308 are one level)."""
    if isinstance(value, (bool, np.bool_)):
        return "TRUE" if value else "FALSE"
    if isinstance(value, (float, np.floating)) and value.is_integer() and abs(value) < 2**53:
        return str(int(value))
    return str(value)


_NUMBERS = {"integer", "floating", "mixed-integer-float", "decimal", "empty"}
_UNSUPPORTED = {"complex", "datetime64", "datetime", "date", "timedelta64", "timedelta", "time"}


def _canonical(column: pd.Series, name: str) -> pd.Series:
    """A column as the model reads it: numbers as float64, anything else as a factor (a
    categorical of level labels, :func:`_level_label`; strings in code-point order, a
    categorical's categories in their order). Missing values stay missing."""
    if column.dtype.kind in "iuf":  # plain numbers: no need to look at the values
        return pd.Series(column.to_numpy(np.float64, copy=True), index=column.index)
    if isinstance(column.dtype, pd.CategoricalDtype) and all(
        type(c) is str for c in column.cat.categories
    ):  # already a factor of labels
        return column
    kind = pd.api.types.infer_dtype(column, skipna=True)
    if kind in _NUMBERS and not isinstance(column.dtype, pd.CategoricalDtype):
        try:
            return pd.Series(column.to_numpy(np.float64, na_value=np.nan), index=column.index)
        except (TypeError, ValueError):
            raise DataError(f"column {name!r} has values that are not numbers") from None
    if kind in _UNSUPPORTED or kind.startswith(("period", "interval")):
        raise DataError(
            f"column {name!r} holds {kind} values; convert it to numbers or strings first"
        )
    codes, uniques = pd.factorize(column)  # code -1: missing
    labels = [_level_label(u) for u in uniques]
    if isinstance(column.dtype, pd.CategoricalDtype):
        categories = list(dict.fromkeys(_level_label(c) for c in column.cat.categories))
    else:
        categories = sorted(set(labels))
    position = {label: k for k, label in enumerate(categories)}
    recode = np.array([position[label] for label in labels] + [-1], dtype=np.int64)
    factor = pd.Categorical.from_codes(recode[codes], categories=categories)
    return pd.Series(factor, index=column.index)


def _is_numeric(column: pd.Series) -> bool:
    return column.dtype.kind == "f"


def _labels(column: pd.Series) -> list[str | None]:
    """Level label of each value of a canonical column (None where missing)."""
    if _is_numeric(column):
        return [None if np.isnan(v) else _level_label(v) for v in column.to_numpy()]
    return [None if pd.isna(v) else v for v in column.astype(object)]


def _used_levels(codes: np.ndarray, n_levels: int) -> tuple[np.ndarray, np.ndarray]:
    """The levels that occur (ascending) and the codes renumbered over them: ``np.unique`` with
    ``return_inverse``, by counting instead of sorting."""
    used = np.flatnonzero(np.bincount(codes, minlength=n_levels))
    renumber = np.zeros(n_levels, dtype=np.int64)
    renumber[used] = np.arange(len(used))
    return used, renumber[codes]


def _factor_codes(column: pd.Series) -> tuple[np.ndarray, list[str]]:
    """Codes and level labels of a canonical grouping column (numbers in numeric order)."""
    if _is_numeric(column):
        uniques, codes = np.unique(column.to_numpy(), return_inverse=True)
        return codes.reshape(-1), [_level_label(u) for u in uniques]
    factor = column.array  # the Categorical itself (``.cat.codes`` builds a Series: slow)
    used, codes = _used_levels(factor.codes.astype(np.int64), len(factor.categories))
    return codes, [str(c) for c in factor.categories[used]]


def _grouping(data: _Columns, factors: tuple[str, ...]) -> tuple[np.ndarray, tuple[str, ...]]:
    """Codes and levels of a grouping factor; ``a:b`` groups by the observed combinations,
    ordered by the first factor, then the next."""
    parts = [_factor_codes(data[python_name(f)]) for f in factors]
    if len(parts) == 1:
        codes, labels = parts[0]
        return codes.astype(np.int64), tuple(labels)
    sizes = [len(labels) for _, labels in parts]
    n = len(parts[0][0])
    if np.prod(sizes, dtype=np.float64) <= 8 * n + 2**20:  # few enough combinations to count
        combined = np.ravel_multi_index([c for c, _ in parts], sizes)
        used, codes = _used_levels(combined, int(np.prod(sizes)))
        digits = np.stack(np.unravel_index(used, sizes), axis=1)
    else:
        digits, codes = np.unique(np.stack([c for c, _ in parts], 1), axis=0, return_inverse=True)
    labels = tuple(":".join(parts[k][1][c] for k, c in enumerate(row)) for row in digits)
    return codes.reshape(-1).astype(np.int64), labels


@dataclass(frozen=True)
class _Columns:
    """The columns a model uses (canonical, keyed by identifier), complete rows only; a
    DataFrame is made only for formulaic."""

    series: dict[str, pd.Series]
    n: int

    def __getitem__(self, name: str) -> pd.Series:
        return self.series[name]

    def __contains__(self, name: str) -> bool:
        return name in self.series

    def subset(self, keep: np.ndarray) -> _Columns:
        return _Columns({c: s[keep] for c, s in self.series.items()}, int(np.sum(keep)))

    def frame(self) -> pd.DataFrame:
        frame = pd.DataFrame(self.series)
        for c in frame.columns:
            if isinstance(frame[c].dtype, pd.CategoricalDtype):
                frame[c] = frame[c].cat.remove_unused_categories()
        return frame


def _plain_columns(expr: str, data: _Columns, where: str) -> list[str] | None:
    """The terms of ``expr`` when each is 1 or a numeric column (no formulaic needed), else None."""
    terms = _parsed(expr, where)[1]
    if all(t == "1" or (t in data and _is_numeric(data[t])) for t in terms):
        return list(terms)
    return None


def _matrix(expr: str, data: _Columns, where: str):
    """Model matrix of ``expr``, its column names and the formulaic ModelSpec that rebuilds it
    for new data (None when every term is 1 or a numeric column and formulaic is skipped)."""
    terms = _plain_columns(expr, data, where)
    spec = None
    if terms is not None:
        columns = [np.ones(data.n) if t == "1" else data[t].to_numpy() for t in terms]
        values = np.column_stack(columns) if columns else np.zeros((data.n, 0))
        names = [r_name("Intercept" if t == "1" else t) for t in terms]
    else:
        try:
            with np.errstate(all="ignore"):  # undefined values are refused below, by column
                mm = model_matrix(expr, data.frame(), na_action="raise", context={})
        except Exception as err:
            raise DataError(
                f"cannot build the {where} from {r_text(expr)!r}: {error_text(err)}"
            ) from None
        values = np.asarray(mm, dtype=np.float64)
        names = [r_name(c) for c in mm.columns]
        spec = mm.model_spec
    for j, name in enumerate(names):
        if not np.all(np.isfinite(values[:, j])):
            raise DataError(f"column {name!r} of the {where} has infinite or undefined values")
    return values, names, spec


def model_matrix_for(expr: str, spec, data: pd.DataFrame, where: str) -> np.ndarray:
    """The model matrix of ``expr`` for new data, encoded as in the fit (``spec`` from
    :func:`_matrix`; None: plain numeric columns), stateful transforms (``scale``, ``poly``,
    ``bs``...) with the fitted data's state. Missing values give NaN rows."""
    data = as_data_frame(data)
    variables = _parsed(expr, where)[0]
    sources = _sources(data, set(variables), "new data")
    frame = pd.DataFrame(
        {v: _canonical(data[c], column_name(v)) for v, c in sources.items()}, index=data.index
    )
    if spec is None:
        terms = _parsed(expr, where)[1]
        if any(t != "1" and not _is_numeric(frame[t]) for t in terms):
            raise DataError(f"the {where} needs numeric columns {[r_name(t) for t in terms]}")
        columns = [np.ones(len(frame)) if t == "1" else frame[t].to_numpy() for t in terms]
        return np.column_stack(columns) if columns else np.zeros((len(frame), 0))
    _check_known_levels(spec, frame, where)
    try:
        with warnings.catch_warnings(), np.errstate(all="ignore"):
            warnings.simplefilter("error", DataMismatchWarning)
            mm = spec.get_model_matrix(frame, na_action="ignore", context={})
    except DataMismatchWarning as err:
        raise DataError(
            f"new data has a level the fit has not seen, in the {where}: {error_text(err)}"
        ) from None
    except Exception as err:  # formulaic raises several exception types
        raise DataError(f"cannot build the {where} for the new data: {error_text(err)}") from None
    return np.asarray(mm, dtype=np.float64)


def _check_known_levels(spec, frame: pd.DataFrame, where: str) -> None:
    """Refuse levels of a factor column that the fit has not seen: formulaic would encode them
    as the reference level (an all-zero row of contrasts), a silently wrong prediction."""
    for factor, (kind, state) in spec.encoder_state.items():
        name = str(factor)
        if kind.value != "categorical" or name not in frame.columns or "categories" not in state:
            continue
        known = {str(c) for c in state["categories"]}
        unseen = sorted({v for v in _labels(frame[name]) if v is not None} - known)
        if unseen:
            raise DataError(
                f"column {column_name(name)!r} has level(s) {unseen[:5]} that the fit has not "
                f"seen (known: {sorted(known)[:10]}); the {where} cannot be built for them"
            )


def _fixed_terms(expr: str, spec, kept: list[int]) -> tuple[FixedTerm, ...]:
    """The fixed part's terms (intercept excluded) with the kept X columns each owns."""
    position = {j: k for k, j in enumerate(kept)}
    terms = []
    if spec is None:
        for j, t in enumerate(_parsed(expr, "fixed part")[1]):
            if t != "1" and j in position:
                terms.append(FixedTerm(t, frozenset([t]), frozenset([t]), (position[j],)))
        return tuple(terms)
    categorical = {str(f) for f in spec.factor_contrasts}
    for term, columns in spec.term_slices.items():
        variables = frozenset(str(f) for f in term.factors if str(f) != "1")
        owned = tuple(position[j] for j in range(columns.start, columns.stop) if j in position)
        if variables and owned:
            terms.append(FixedTerm(str(term), variables, variables - categorical, owned))
    return tuple(terms)


def _response(expr: str, data: _Columns) -> np.ndarray:
    name = r_text(expr)
    if expr in data:
        column = data[expr]
        if not _is_numeric(column):
            raise DataError(f"response {name!r} must be numeric, not a factor or strings")
        y = column.to_numpy()
    else:
        values, names, _ = _matrix(f"0 + {expr}", data, "response")
        if values.shape[1] != 1:
            raise DataError(f"response {name!r} must be numeric (it expands to {names})")
        y = values[:, 0]
    if not np.all(np.isfinite(y)):
        raise DataError(f"response {name!r} has infinite or undefined values")
    return y


def _offset_expr(offsets: tuple[str, ...]) -> str:
    """One formulaic term whose single column is the sum of the formula's offsets."""
    return "0 + I(" + " + ".join(f"({e})" for e in offsets) + ")"


def _formula_offset(offsets: tuple[str, ...], data: _Columns):
    """The sum of the formula's ``offset(...)`` terms and the spec that rebuilds it."""
    if not offsets:
        return np.zeros(data.n), None
    values, _, spec = _matrix(_offset_expr(offsets), data, "offset")
    if values.shape[1] != 1:
        raise DataError(f"offset {[r_text(e) for e in offsets]} must be numeric")
    return values[:, 0], spec


def _independent_columns(x: np.ndarray) -> list[int]:
    """Indices of columns kept by a pivot-free Gram-Schmidt pass (later aliased columns drop)."""
    kept, basis = [], np.zeros((x.shape[0], 0))
    for j in range(x.shape[1]):
        col = x[:, j]
        norm = np.linalg.norm(col)
        resid = col - basis @ (basis.T @ col)
        resid = resid - basis @ (basis.T @ resid)
        rnorm = np.linalg.norm(resid)
        if norm > 0 and rnorm > _RANK_TOL * norm:
            kept.append(j)
            basis = np.column_stack([basis, resid / rnorm])
    return kept


def _numeric_argument(value, data: pd.DataFrame, label: str) -> tuple[np.ndarray | None, str]:
    """``weights=`` or ``offset=``: a column name or an array of one number per data row;
    returns the values (None when not given) and how to name them in messages."""
    if value is None:
        return None, label
    if isinstance(value, str):
        matches = [c for c in data.columns if str(c) == value]
        if len(matches) != 1:
            problem = "is not in" if not matches else "appears more than once in"
            raise DataError(f"{label} column {value!r} {problem} the data")
        column = data[matches[0]]
        if pd.api.types.infer_dtype(column, skipna=True) not in _NUMBERS:
            raise DataError(f"{label} column {value!r} must be numeric, got dtype {column.dtype}")
        return column.to_numpy(np.float64, na_value=np.nan), f"{label} column {value!r}"
    try:
        values = np.asarray(value, dtype=np.float64).reshape(-1)
    except (TypeError, ValueError):
        raise DataError(f"{label} must be numeric (an array or a column name)") from None
    if len(values) != len(data):
        raise DataError(f"{label} has length {len(values)} but the data has {len(data)} rows")
    return values, label


def _check_weights(w: np.ndarray, label: str) -> None:
    if not np.all(np.isfinite(w)):
        raise DataError(f"{label} has infinite values")
    if np.any(w < 0):
        raise DataError(f"{label} has negative values")
    if np.any(w == 0):
        raise DataError(f"{label} has zeros; drop those rows instead")


def _magnitude(values: np.ndarray) -> float:
    """Typical size of a column's values: the median absolute non-zero value (0 if none)."""
    nonzero = np.abs(values[values != 0])
    return float(np.median(nonzero)) if len(nonzero) else 0.0


def _check_scale(values: np.ndarray, name: str, where: str, limit: float) -> None:
    """Refuse a column whose typical magnitude lies outside [1 / limit, limit], saying by
    how much to rescale it."""
    sizes = np.abs(values)
    if np.all((sizes == 0) | ((sizes >= 1 / limit) & (sizes <= limit))):
        return  # every value in range, so is the typical one
    size = _magnitude(values)
    if size == 0 or 1 / limit <= size <= limit:
        return
    power = int(np.floor(np.log10(size)))
    advice = f"divide it by 1e{power}" if power > 0 else f"multiply it by 1e{-power}"
    raise DataError(
        f"{name!r} in the {where} has values of magnitude {size:.1e}, outside "
        f"[{1 / limit:.0e}, {limit:.0e}], where the fit is numerically degenerate; "
        f"rescale it ({advice})"
    )


def _check_variation(y: np.ndarray, x: np.ndarray, w: np.ndarray, name: str) -> None:
    """Refuse a constant response, or one that the fixed effects fit exactly: its residual
    variance is zero and the criterion has no minimum."""
    if np.ptp(y) == 0:
        raise DataError(f"response {name!r} is constant: it has no variation to model")
    a, b = x * np.sqrt(w)[:, None], y * np.sqrt(w)
    resid = b - a @ np.linalg.lstsq(a, b, rcond=None)[0] if a.shape[1] else b
    if np.linalg.norm(resid) <= _NO_VARIATION * np.linalg.norm(b):
        raise DataError(
            f"response {name!r} is an exact linear function of the fixed-effect columns: "
            "it has no residual variation to model"
        )


def _needed(parsed: MixedFormula) -> set[str]:
    """The columns (as identifiers) that the formula reads."""
    needed = set(_parsed(parsed.response, "response")[0] | _parsed(parsed.fixed, "fixed part")[0])
    for expr in parsed.offsets:
        needed |= _parsed(f"I({expr})", "offset")[0]
    for term in parsed.random:
        where = f"term ({r_deparse(term.expr)} | {term.group})"
        needed |= _parsed(term.expr, where)[0] | {python_name(f) for f in term.factors}
    return needed


def _complete_rows(n: int, columns: list[pd.Series], *arrays) -> np.ndarray:
    """Of ``n`` rows, those with a value in every column the model uses and in each array."""
    keep = np.ones(n, dtype=bool)
    for column in columns:
        keep &= ~np.asarray(column.array.isna())
    for values in arrays:
        if values is not None:
            keep &= ~np.isnan(values)
    if not keep.any():
        raise DataError("no rows left after dropping rows with missing values")
    return keep


def _fixed_effects(expr: str, columns: _Columns):
    """X before dropping aliased columns, its column names and spec, and the columns kept
    (aliased ones drop with a warning, as in lme4); X must be well scaled and have fewer
    columns than observations."""
    x_all, x_names, x_spec = _matrix(expr, columns, "fixed-effects model matrix")
    kept = _independent_columns(x_all)
    dropped = [x_names[j] for j in range(len(x_names)) if j not in kept]
    if dropped:
        warnings.warn(
            f"fixed-effect model matrix is rank deficient so dropping {len(dropped)} "
            f"column(s): {dropped}",
            RankDeficiencyWarning,
            stacklevel=4,
        )
    if len(kept) >= columns.n:
        raise DataError(
            f"{len(kept)} fixed-effect columns for {columns.n} observations: the model needs "
            "fewer fixed-effect columns than observations"
        )
    for j in kept:
        _check_scale(x_all[:, j], x_names[j], "fixed-effects model matrix", _MAX_SCALE)
    return x_all, x_names, x_spec, kept


def build_design(
    formula: str | MixedFormula, data: pd.DataFrame, weights=None, offset=None
) -> Design:
    """Check ``data`` against ``formula`` and build the model matrices (lme4's ``lFormula``).

    ``weights`` and ``offset`` are arrays of one value per data row or column names. The
    design's offset is ``offset`` plus the formula's ``offset(...)`` terms. A response that
    the fixed effects fit exactly is refused when the formula is given as text; a parsed
    formula's response is the caller's to check (``lmer_batch`` screens each of its own).
    """
    parsed = formula if isinstance(formula, MixedFormula) else parse_formula(formula)
    data = as_data_frame(data)
    w_all, w_label = _numeric_argument(weights, data, "weights")
    offset_all, offset_label = _numeric_argument(offset, data, "offset")
    sources = _sources(data, _needed(parsed))
    used = {v: data[source] for v, source in sources.items()}
    keep = _complete_rows(len(data), list(used.values()), w_all, offset_all)
    ordered = dict.fromkeys(v for v in map(python_name, map(str, data.columns)) if v in sources)
    complete = bool(keep.all())  # selecting every row still costs pandas a copy per column

    def column(v):
        return _canonical(used[v] if complete else used[v][keep], column_name(v))

    columns = _Columns({v: column(v) for v in ordered}, int(keep.sum()))

    w = np.ones(columns.n) if w_all is None else w_all[keep]
    _check_weights(w, w_label)
    formula_offset, offset_spec = _formula_offset(parsed.offsets, columns)
    extra_offset = np.zeros(columns.n) if offset_all is None else offset_all[keep]
    if not np.all(np.isfinite(extra_offset)):
        raise DataError(f"{offset_label} has infinite values")
    total_offset = formula_offset + extra_offset
    y = _response(parsed.response, columns)
    x_all, x_names, x_spec, kept = _fixed_effects(parsed.fixed, columns)
    if isinstance(formula, str):
        _check_variation(y - total_offset, x_all[:, kept], w, r_text(parsed.response))

    terms = [_re_term(term, columns) for term in parsed.random]
    terms.sort(key=lambda t: -t.n_levels)  # stable, as lme4 orders its terms
    return Design(
        formula=parsed,
        y=y,
        x=x_all[:, kept],
        fixed_names=tuple(x_names[j] for j in kept),
        weights=w,
        offset=total_offset,
        terms=tuple(terms),
        rows=data.index[keep],
        dropped_fixed=tuple(x_names[j] for j in range(len(x_names)) if j not in kept),
        fixed_terms=_fixed_terms(parsed.fixed, x_spec, kept),
        fixed_spec=x_spec,
        kept_fixed=tuple(kept),
        data=columns,
        offset_spec=offset_spec,
    )


def _re_term(term, columns: _Columns) -> ReTerm:
    where = f"random-effects term ({r_deparse(term.expr)} | {term.group})"
    z, names, spec = _matrix(term.expr, columns, where)
    if z.shape[1] == 0:
        raise FormulaError(f"{where} has no columns")
    for j, name in enumerate(names):
        _check_scale(z[:, j], name, where, _RE_SCALE)
    codes, levels = _grouping(columns, term.factors)
    n, nlev = columns.n, len(levels)
    if nlev < 2:
        raise DataError(f"grouping factor {term.group!r} has {nlev} level(s); it needs at least 2")
    if nlev >= n:
        raise DataError(
            f"grouping factor {term.group!r} has {nlev} levels for {n} observations; "
            "it must have fewer levels than observations"
        )
    if nlev * z.shape[1] >= n:
        raise DataError(
            f"{where} has {nlev * z.shape[1]} random effects for {n} observations; "
            "the random effects and the residual variance are not identifiable"
        )
    return ReTerm(
        group=term.group,
        names=tuple(names),
        levels=levels,
        codes=codes,
        z=z,
        expr=term.expr,
        spec=spec,
        factors=term.factors,
    )
