"""Formula + DataFrame -> Design: the model matrices, checked. Every data check lives here."""

from __future__ import annotations

import dataclasses
import re
import warnings
from dataclasses import dataclass
from functools import cache

import numpy as np
import pandas as pd
from formulaic import Formula, model_matrix
from formulaic.errors import DataMismatchWarning

from .errors import DataError, FormulaError, RankDeficiencyWarning
from .formula import MixedFormula, RandomTerm, parse_formula

_RANK_TOL = 1e-7


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

    def new_levels(self, data: pd.DataFrame) -> tuple[np.ndarray, list[str]]:
        """Level index of each row of new data (-1 for a level the fit has not seen) and the
        row's level label, spelled as the fit spells its levels."""
        factors = self.group.split(":")
        missing = [f for f in factors if f not in data.columns]
        if missing:
            raise DataError(f"grouping column(s) {missing} are not in the new data")
        parts = [_labels(data[f]) for f in factors]
        labels = [":".join(row) for row in zip(*parts, strict=True)]
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

    label: str  # e.g. "Days", "half", "Days:half"
    variables: frozenset[str]  # the variables (formulaic factors) the term multiplies
    numeric: frozenset[str]  # those that are numeric rather than categorical
    columns: tuple[int, ...]  # its columns of X (aliased columns excluded)


@dataclass(frozen=True)
class Design:
    """Everything the numerics need, with random terms in lme4's order (most levels first)."""

    formula: MixedFormula
    y: np.ndarray  # (n,)
    x: np.ndarray  # (n, p)
    fixed_names: tuple[str, ...]
    weights: np.ndarray  # (n,) prior weights
    terms: tuple[ReTerm, ...]
    rows: pd.Index  # labels of the data rows used (after dropping missing values)
    dropped_fixed: tuple[str, ...]  # aliased fixed-effect columns removed
    fixed_terms: tuple[FixedTerm, ...] = ()
    fixed_spec: object = None  # formulaic ModelSpec of X before dropping (None: plain columns)
    kept_fixed: tuple[int, ...] = ()  # columns of that matrix kept in X
    data: _Columns | None = None  # the columns the model uses, on the rows used

    @property
    def nobs(self) -> int:
        return len(self.y)

    @property
    def ngroups(self) -> dict[str, int]:
        """Number of levels per grouping factor (lme4's ``ngrps``), each factor once."""
        return {t.group: t.n_levels for t in self.terms}

    def with_response(self, y: np.ndarray, keep: np.ndarray) -> Design:
        """The same model for another response on the rows ``keep`` (levels and term order kept,
        so theta keeps its layout; a level without rows gets a zero conditional mode)."""
        terms = tuple(dataclasses.replace(t, codes=t.codes[keep], z=t.z[keep]) for t in self.terms)
        return dataclasses.replace(
            self,
            y=np.asarray(y, dtype=np.float64)[keep],
            x=self.x[keep],
            weights=self.weights[keep],
            terms=terms,
            rows=self.rows[keep],
            data=None if self.data is None else self.data.subset(keep),
        )


def r_name(name: str) -> str:
    """R's spelling of formulaic names: ``Intercept`` -> ``(Intercept)``, ``f[T.b]`` -> ``fb``."""
    if name == "Intercept":
        return "(Intercept)"
    return re.sub(r"\[(?:T\.)?([^\]]*)\]", r"\1", name)


@cache
def _parsed(expr: str, where: str) -> tuple[frozenset[str], tuple[str, ...]]:
    """Variables an expression needs and its terms (formulaic's parse, cached per string)."""
    try:
        formula = Formula(expr)
    except Exception as err:  # formulaic raises several exception types on bad syntax
        raise FormulaError(f"cannot parse {expr!r} in the {where}: {err}") from None
    terms = tuple(str(t) for t in formula) if not hasattr(formula, "lhs") else ()
    return frozenset(formula.required_variables), terms


def _labels(column: pd.Series) -> list[str]:
    """Level labels of each value, spelled as :func:`_factor_codes` spells levels."""
    if isinstance(column.dtype, pd.CategoricalDtype):
        return [str(v) for v in column.astype(object)]
    values = column.to_numpy()
    if values.dtype.kind in "biuf":
        return [str(v) for v in values]
    return list(column.astype(str))


def model_matrix_for(expr: str, spec, data: pd.DataFrame, where: str) -> np.ndarray:
    """The model matrix of ``expr`` for new data, encoded as in the fit (``spec`` from
    :func:`_matrix`; None: plain numeric columns). Missing values give NaN rows."""
    if spec is None:
        terms = _parsed(expr, where)[1]
        missing = sorted(t for t in terms if t != "1" and t not in data.columns)
        if missing:
            raise DataError(f"column(s) {missing} needed by the {where} are not in the new data")
        try:
            columns = [
                np.ones(len(data)) if t == "1" else data[t].to_numpy(np.float64) for t in terms
            ]
        except (TypeError, ValueError):
            raise DataError(f"the {where} needs numeric columns {terms}") from None
        return np.column_stack(columns) if columns else np.zeros((len(data), 0))
    _check_known_levels(spec, data, where)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", DataMismatchWarning)
            mm = spec.get_model_matrix(data, na_action="ignore")
    except DataMismatchWarning as err:
        raise DataError(
            f"new data has a level the fit has not seen, in the {where}: {err}"
        ) from None
    except Exception as err:  # formulaic raises several exception types
        raise DataError(f"cannot build the {where} for the new data: {err}") from None
    return np.asarray(mm, dtype=np.float64)


def _check_known_levels(spec, data: pd.DataFrame, where: str) -> None:
    """Refuse levels of a factor column that the fit has not seen: formulaic would encode them
    as the reference level (an all-zero row of contrasts), a silently wrong prediction."""
    for factor, (kind, state) in spec.encoder_state.items():
        name = str(factor)
        if kind.value != "categorical" or name not in data.columns or "categories" not in state:
            continue
        column = data[name]
        known = {str(c) for c in state["categories"]}
        values = column[column.notna()]
        unseen = sorted({str(v) for v in values.astype(object)} - known)
        if unseen:
            raise DataError(
                f"column {name!r} has level(s) {unseen[:5]} that the fit has not seen "
                f"(known: {sorted(known)[:10]}); the {where} cannot be built for them"
            )


def _factor_codes(column: pd.Series) -> tuple[np.ndarray, list[str]]:
    """Codes and level labels of a grouping column, treated as a factor with R's level order."""
    if isinstance(column.dtype, pd.CategoricalDtype):
        used, codes = np.unique(column.cat.codes.to_numpy(), return_inverse=True)
        return codes.reshape(-1), column.cat.categories[used].astype(str).tolist()
    values = column.to_numpy()
    if values.dtype.kind in "biuf":
        uniques, codes = np.unique(values, return_inverse=True)
        return codes, [str(u) for u in uniques]
    labels = column.astype(str).to_numpy()
    uniques, codes = np.unique(labels, return_inverse=True)
    return codes, list(uniques)


def _grouping(data: _Columns, factors: tuple[str, ...]) -> tuple[np.ndarray, tuple[str, ...]]:
    """Codes and levels of a grouping factor; ``a:b`` groups by the observed combinations."""
    parts = [_factor_codes(data[f]) for f in factors]
    if len(parts) == 1:
        codes, labels = parts[0]
        return codes.astype(np.int64), tuple(labels)
    stacked = np.stack([c for c, _ in parts], axis=1)
    combos, codes = np.unique(stacked, axis=0, return_inverse=True)
    labels = tuple(":".join(parts[k][1][c] for k, c in enumerate(row)) for row in combos)
    return codes.reshape(-1).astype(np.int64), labels


@dataclass(frozen=True)
class _Columns:
    """The columns a model uses, complete rows only; a DataFrame is made only for formulaic."""

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


def _is_numeric(column: pd.Series) -> bool:
    return column.dtype.kind in "biuf"


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
        columns = [np.ones(data.n) if t == "1" else data[t].to_numpy(np.float64) for t in terms]
        values = np.column_stack(columns) if columns else np.zeros((data.n, 0))
        names = [r_name("Intercept") if t == "1" else t for t in terms]
    else:
        try:
            mm = model_matrix(expr, data.frame(), na_action="raise")
        except Exception as err:
            raise DataError(f"cannot build the {where} from {expr!r}: {err}") from None
        values = np.asarray(mm, dtype=np.float64)
        names = [r_name(c) for c in mm.columns]
        spec = mm.model_spec
    for j, name in enumerate(names):
        if not np.all(np.isfinite(values[:, j])):
            raise DataError(f"column {name!r} of the {where} has infinite or undefined values")
    return values, names, spec


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
    if expr in data:
        column = data[expr]
        if not _is_numeric(column):
            raise DataError(f"response {expr!r} must be numeric, got dtype {column.dtype}")
        y = column.to_numpy(dtype=np.float64)
    else:
        values, names, _ = _matrix(f"0 + {expr}", data, "response")
        if values.shape[1] != 1:
            raise DataError(f"response {expr!r} must be numeric (it expands to {names})")
        y = values[:, 0]
    if not np.all(np.isfinite(y)):
        raise DataError(f"response {expr!r} has infinite or undefined values")
    return y


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


def _weights(weights, data: pd.DataFrame) -> tuple[np.ndarray | None, str | None]:
    if weights is None:
        return None, None
    if isinstance(weights, str):
        if weights not in data.columns:
            raise DataError(f"weights column {weights!r} is not in the data")
        return data[weights].to_numpy(dtype=np.float64), weights
    try:
        w = np.asarray(weights, dtype=np.float64).reshape(-1)
    except (TypeError, ValueError):
        raise DataError("weights must be numeric (an array or a column name)") from None
    if len(w) != len(data):
        raise DataError(f"weights has length {len(w)} but the data has {len(data)} rows")
    return w, None


def build_design(formula: str | MixedFormula, data: pd.DataFrame, weights=None) -> Design:
    """Check ``data`` against ``formula`` and build the model matrices (lme4's ``lFormula``)."""
    parsed = parse_formula(formula) if isinstance(formula, str) else formula
    if not isinstance(data, pd.DataFrame):
        try:
            data = pd.DataFrame(data)
        except Exception:
            raise DataError(f"data must be a pandas DataFrame, got {type(data).__name__}") from None
    w_all, w_column = _weights(weights, data)

    needed = set(_parsed(f"{parsed.response} ~ {parsed.fixed}", "fixed part")[0])
    for term in parsed.random:
        needed |= _parsed(term.expr, f"term ({term.expr} | {term.group})")[0] | set(term.factors)
    missing = sorted(v for v in needed if v not in data.columns)
    if missing:
        raise DataError(f"column(s) {missing} named in the formula are not in the data")
    used = [c for c in data.columns if c in needed]

    keep = np.ones(len(data), dtype=bool)
    for c in used:
        keep &= ~data[c].isna().to_numpy()
    if w_all is not None:
        keep &= ~np.isnan(w_all)
    if not keep.any():
        raise DataError("no rows left after dropping rows with missing values")
    everything = keep.all()
    n = int(keep.sum())
    columns = _Columns({c: data[c] if everything else data[c][keep] for c in used}, n)

    w = np.ones(n) if w_all is None else w_all[keep]
    label = repr(w_column) if w_column else "weights"
    if not np.all(np.isfinite(w)):
        raise DataError(f"{label} has infinite values")
    if np.any(w < 0):
        raise DataError(f"{label} has negative values")
    if np.any(w == 0):
        raise DataError(f"{label} has zeros; drop those rows instead")

    y = _response(parsed.response, columns)
    x_all, x_names, x_spec = _matrix(parsed.fixed, columns, "fixed-effects model matrix")
    kept = _independent_columns(x_all)
    dropped = tuple(x_names[j] for j in range(len(x_names)) if j not in kept)
    if dropped:
        warnings.warn(
            f"fixed-effect model matrix is rank deficient so dropping {len(dropped)} "
            f"column(s): {list(dropped)}",
            RankDeficiencyWarning,
            stacklevel=3,
        )

    terms = [_re_term(term, columns) for term in parsed.random]
    terms.sort(key=lambda t: -t.n_levels)  # stable, as lme4 orders its terms
    return Design(
        formula=parsed,
        y=y,
        x=x_all[:, kept],
        fixed_names=tuple(x_names[j] for j in kept),
        weights=w,
        terms=tuple(terms),
        rows=data.index[keep],
        dropped_fixed=dropped,
        fixed_terms=_fixed_terms(parsed.fixed, x_spec, kept),
        fixed_spec=x_spec,
        kept_fixed=tuple(kept),
        data=columns,
    )


def _re_term(term: RandomTerm, columns: _Columns) -> ReTerm:
    where = f"random-effects term ({term.expr} | {term.group})"
    z, names, spec = _matrix(term.expr, columns, where)
    if z.shape[1] == 0:
        raise FormulaError(f"{where} has no columns")
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
    )
