"""Predictions and simulated responses from a fitted model (lme4's ``predict`` and
``simulate``); host-side NumPy, since each is one pass over the observations."""

from __future__ import annotations

import numpy as np
import pandas as pd
from formulaic import Formula

from . import parameters
from .design import as_data_frame, model_matrix_for, r_name
from .errors import InferenceError
from .formula import parse_formula


def _selected_columns(design, re_form) -> list[np.ndarray]:
    """Per random term, the indices of its columns that ``re_form`` keeps (lme4's ``re.form``:
    None keeps all, ``"~0"`` or ``"NA"`` none, a formula such as ``"~ (1 | g)"`` the columns
    it names on each grouping factor)."""
    terms = design.terms
    if re_form is None:
        return [np.arange(t.n_columns) for t in terms]
    text = str(re_form).replace(" ", "")
    if text in ("~0", "0", "NA", "~-1"):
        return [np.array([], dtype=int) for _ in terms]
    parsed = parse_formula(f"y {re_form if text.startswith('~') else '~ ' + str(re_form)}")
    wanted: dict[str, set[str]] = {}
    for term in parsed.random:
        names = {r_name("Intercept" if t == "1" else t) for t in _expr_terms(term.expr)}
        wanted.setdefault(term.group, set()).update(names)
    known = {t.group for t in terms}
    unknown = sorted(set(wanted) - known)
    if unknown:
        raise InferenceError(f"re_form names grouping factor(s) {unknown} not in the model")
    selected = []
    for t in terms:
        names = wanted.get(t.group, set())
        selected.append(np.array([a for a, n in enumerate(t.names) if n in names], dtype=int))
    found = {n for t, cols in zip(terms, selected, strict=True) for n in np.array(t.names)[cols]}
    missing = sorted(n for names in wanted.values() for n in names if n not in found)
    if missing:
        raise InferenceError(f"re_form names random effects {missing} that the model does not have")
    return selected


def _expr_terms(expr: str) -> list[str]:
    return [str(t) for t in Formula(expr)]


def predict(
    design, beta, effects, offset, newdata=None, re_form=None, allow_new_levels: bool = False
) -> pd.Series:
    """Fitted values of the model for its own rows or for ``newdata``: fixed effects ``beta``,
    conditional modes ``effects`` (per term, levels x columns) and the model's ``offset``.

    Random effects enter for the terms ``re_form`` keeps; in new data, a level the fit has not
    seen raises an error unless ``allow_new_levels``, when it gets the population value
    (random effects zero), as lme4's ``predict``. New rows get the formula's ``offset(...)``
    terms (an ``offset=`` argument belongs to the fitted rows only, as in lme4).
    """
    selected = _selected_columns(design, re_form)
    if newdata is None:
        values = design.x @ beta + offset
        for term, b, cols in zip(design.terms, effects, selected, strict=True):
            values = values + np.sum(term.z[:, cols] * b[term.codes][:, cols], axis=1)
        return pd.Series(values, index=design.rows)

    newdata = as_data_frame(newdata)
    x = model_matrix_for(design.formula.fixed, design.fixed_spec, newdata, "fixed part")
    values = x[:, list(design.kept_fixed)] @ beta + design.offset_for(newdata)
    for term, b, cols in zip(design.terms, effects, selected, strict=True):
        if not len(cols):
            continue
        codes, labels = term.new_levels(newdata)
        new = codes < 0
        if np.any(new) and not allow_new_levels:
            labels = sorted({labels[k] for k in np.flatnonzero(new)})
            raise InferenceError(
                f"new level(s) {labels[:5]} of grouping factor {term.group!r}; "
                "use allow_new_levels=True to predict them at the population level"
            )
        z = model_matrix_for(
            term.expr, term.spec, newdata, f"random term ({term.expr} | {term.group})"
        )
        contribution = np.sum(z[:, cols] * b[np.maximum(codes, 0)][:, cols], axis=1)
        values = values + np.where(new, 0.0, contribution)
    return pd.Series(values, index=newdata.index)


def simulate_responses(design, theta, sigma, beta, offset, nsim: int, rng) -> np.ndarray:
    """(nsim, n) responses drawn from the fitted model: new random effects and new noise
    (lme4's ``simulate`` with ``use.u = FALSE``)."""
    if not isinstance(nsim, (int, np.integer)) or nsim < 1:
        raise InferenceError(f"nsim must be a positive integer, got {nsim!r}")
    y = np.broadcast_to(design.x @ beta + offset, (nsim, design.nobs)).copy()
    sizes = tuple(t.n_columns for t in design.terms)
    for term, t in zip(design.terms, parameters.factor_arrays(theta, sizes), strict=True):
        b = sigma * rng.standard_normal((nsim, term.n_levels, term.n_columns)) @ t.T
        y += np.sum(term.z[None] * b[:, term.codes], axis=2)
    y += sigma * rng.standard_normal((nsim, design.nobs)) / np.sqrt(design.weights)
    return y
