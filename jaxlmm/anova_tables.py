"""``anova()``: F tests of the fixed-effect terms of one model (lmerTest's type III table) and
likelihood-ratio tests between nested models (lme4's ``anova(m1, m2, ...)``)."""

from __future__ import annotations

import numpy as np
import pandas as pd
from formulaic import model_matrix
from scipy import special

from .design import Design, r_name
from .errors import InferenceError
from .inference import ddf_method
from .printing import anova_table


def _zapsmall(x: np.ndarray, digits: int = 7) -> np.ndarray:
    """R's ``zapsmall``: round away digits below ``digits`` significant ones of the largest."""
    largest = np.max(np.abs(x), initial=0.0)
    if largest == 0:
        return x
    return np.round(x, max(0, digits - int(np.ceil(np.log10(largest)))))


def _overparameterised(design: Design) -> tuple[np.ndarray, list[str]]:
    """The intercept and, per term, a column for every level of its factors (no contrasts)."""
    columns, names = [np.ones((design.nobs, 1))], ["(Intercept)"]
    frame = design.data.frame() if design.fixed_spec is not None else None
    for term in design.fixed_terms:
        if frame is None:
            columns.append(design.data[term.label].to_numpy(np.float64)[:, None])
            names.append(term.label)
            continue
        mm = model_matrix(f"0 + {term.label}", frame, ensure_full_rank=False)
        columns.append(np.asarray(mm, dtype=np.float64))
        names += [r_name(c) for c in mm.columns]
    return np.hstack(columns), names


def _type1_contrasts(design: Design) -> dict[str, np.ndarray]:
    """Sequential (type I) contrasts: rows of the unit upper-triangular factor of X'X."""
    r = np.linalg.cholesky(design.x.T @ design.x).T
    unit = r / np.diag(r)[:, None]
    return {t.name: unit[list(t.columns)] for t in design.fixed_terms}


def type3_contrasts(design: Design) -> dict[str, np.ndarray]:
    """lmerTest's type III contrasts per term, for treatment-coded factors.

    Each term's coefficients are expressed against the over-parameterised design and made
    orthogonal to the terms that contain it (same numeric variables, more factors), higher
    orders first; a model with a single term gets the type I contrasts (the same hypothesis).
    """
    if len(design.fixed_terms) <= 1 or design.x.shape[1] <= 1:
        return _type1_contrasts(design)
    full, names = _overparameterised(design)
    basic = _zapsmall(np.linalg.pinv(design.x) @ full).T  # (full columns, p)
    terms = sorted(design.fixed_terms, key=lambda t: -len(t.variables))
    for term in terms:
        containing = [
            c
            for c in design.fixed_terms
            if term.variables < c.variables and term.numeric == c.numeric
        ]
        if containing:
            own = list(term.columns)
            others = basic[:, [j for c in containing for j in c.columns]]
            coef = np.linalg.lstsq(others, basic[:, own], rcond=None)[0]
            basic[:, own] = _zapsmall(basic[:, own] - others @ coef)
    unknown = [n for n in design.fixed_names if n not in names]
    if unknown:
        raise InferenceError(
            f"type III contrasts need treatment-coded factors; cannot place columns {unknown}"
        )
    rows = [names.index(n) for n in design.fixed_names]
    result = {}
    for term in design.fixed_terms:
        contrast = basic[rows][:, list(term.columns)].T
        result[term.name] = contrast[np.sum(np.abs(contrast), axis=1) > 1e-8]
    return result


_METHODS = {"satterthwaite": "Satterthwaite's", "kenward-roger": "Kenward-Roger's"}


def fixed_effects_table(design: Design, f_test, ddf: str | None = None) -> pd.DataFrame:
    """Type III F test per fixed-effect term, laid out as lmerTest's ``anova(m)``; ``f_test``
    maps a contrast matrix to the test's figures. Prints as lmerTest prints it (the heading
    names the ``ddf`` method)."""
    rows = {label: f_test(contrast) for label, contrast in type3_contrasts(design).items()}
    columns = ["sum_sq", "mean_sq", "num_df", "den_df", "F_value", "p_value"]
    frame = pd.DataFrame.from_dict(rows, orient="index", columns=columns)
    if not rows:
        frame = pd.DataFrame(columns=columns, dtype=float)
    title = "Type III Analysis of Variance Table"
    if ddf is not None:
        title += f" with {_METHODS.get(ddf_method(ddf), ddf)} method"
    return anova_table(frame, [title])


def likelihood_ratio_table(fits, names=None) -> pd.DataFrame:
    """Likelihood-ratio tests of nested models in order of their number of parameters.

    REML fits are refitted by ML first (as lme4's ``anova``); the table's ``attrs["note"]``
    says so. Rows are named by ``names`` (default ``MODEL1``, ``MODEL2``, ... in the order
    given, lme4's names when it cannot find the models' names); it prints as lme4 prints it,
    under the heading ``Data:`` (when the fits name their data), ``Models:`` and each model's
    name and formula.
    """
    nobs = {f.nobs for f in fits}
    if len(nobs) > 1:
        raise InferenceError(
            f"models were fitted to different numbers of observations {sorted(nobs)}; "
            "likelihood-ratio tests need the same data"
        )
    names = (
        [str(n) for n in names]
        if names is not None
        else [f"MODEL{k + 1}" for k in range(len(fits))]
    )
    if len(names) != len(fits):
        raise InferenceError(f"{len(names)} names given for {len(fits)} models")
    if len(set(names)) != len(names):
        raise InferenceError(f"model names {names} are not unique")
    refitted = any(f.reml for f in fits)
    ml = [f.ml_fit() for f in fits]
    order = sorted(range(len(ml)), key=lambda k: ml[k].n_parameters)
    npar = np.array([ml[k].n_parameters for k in order])
    loglik = np.array([ml[k].loglik for k in order])
    chisq = np.concatenate([[np.nan], 2 * np.maximum(0, np.diff(loglik))])
    df = np.concatenate([[np.nan], np.diff(npar)])
    with np.errstate(invalid="ignore"):
        p = np.where(df > 0, special.chdtrc(np.where(df > 0, df, 1), chisq), np.nan)
    table = pd.DataFrame(
        {
            "npar": npar,
            "AIC": [ml[k].aic for k in order],
            "BIC": [ml[k].bic for k in order],
            "logLik": loglik,
            "deviance": -2 * loglik,
            "Chisq": chisq,
            "Df": df,
            "p_value": p,
        },
        index=[names[k] for k in order],
    )
    data_names = {f.data_name for f in fits}
    heading = (
        [f"Data: {data_names.pop()}"] if len(data_names) == 1 and None not in data_names else []
    )
    heading += ["Models:"] + [f"{names[k]}: {fits[k].design.formula.text}" for k in order]
    note = "refitting model(s) with ML (instead of REML)" if refitted else None
    return anova_table(table, heading, note)


def anova(*fits, ddf: str = "satterthwaite", names=None) -> pd.DataFrame:
    """One fit: type III F tests of its fixed-effect terms (lmerTest's ``anova``).
    Several fits: likelihood-ratio tests between them (lme4's ``anova(m1, m2, ...)``)."""
    if not fits:
        raise InferenceError("anova needs at least one fitted model")
    wrong = [type(f).__name__ for f in fits if not hasattr(f, "f_test")]
    if wrong:
        raise InferenceError(f"anova takes fitted models (from jaxlmm.lmer), got {wrong}")
    if len(fits) == 1:
        return fits[0].anova(ddf)
    return likelihood_ratio_table(fits, names)
