"""lmerTest's ``ranova`` (likelihood-ratio tests of the random-effects terms) and ``drop1``
(F tests of the fixed-effect terms that can be dropped), as lmerTest builds them.

``ranova``: each random term ``(e | g)`` of the model (in lme4's ``findbars`` order: a nested
``(1 | a/b)`` gives ``(1 | b:a)`` then ``(1 | a)``) is removed when ``e`` is an intercept only;
otherwise each term of ``e`` that no other term of ``e`` contains is removed from it, a term
left with nothing becoming ``(1 | g)`` (so ``(0 + x | g)`` is reduced to ``(1 | g)``, as
lmerTest does). Each reduced model is refitted to the same data by the same criterion (REML
fits by REML); a model left with no random term is a linear model, whose (REML) log-likelihood
is R's ``logLik.lm``.

``drop1``: the terms of the fixed part that no other term contains; each is tested by the
F test that its coefficients are zero (lmerTest's marginal contrasts; with a single term, its
type I contrast), with Satterthwaite's or Kenward-Roger's denominator df.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from formulaic import Formula
from scipy import special

from .anova_tables import _type1_contrasts
from .errors import InferenceError
from .formula import (
    _random_terms,
    _split_top_level,
    _strip_parens,
    r_deparse,
    r_symbol,
    to_python,
)
from .inference import ddf_method
from .printing import anova_table
from .update import _is_bar, _sides, _signed_terms, update_formula


def _bars(text: str) -> list[tuple[str, str, str]]:
    """The model's random terms as lme4's ``findbars`` lists them: (expr in formulaic's
    spelling, ``expr | group`` in R's spelling, group in R's spelling)."""
    bars = []
    for _, piece in _signed_terms(_sides(to_python(text))[1]):
        inside = _strip_parens(piece)
        if inside is None or len(_split_top_level(inside, "|")) < 2:
            continue
        terms = sorted(_random_terms(inside), key=lambda t: -len(t.factors))
        for term in terms:
            group = ":".join(r_symbol(f) for f in term.factors)
            bars.append((term.expr, f"{r_deparse(term.expr)} | {group}", group))
    return bars


def _full_formula(fit) -> str:
    """The model's formula with its random terms written out one by one (lmerTest's
    ``full_form``): response, fixed terms, then ``(expr | group)`` per random term."""
    text = fit.design.formula.text
    lhs, rhs = _sides(text)
    fixed = [(s, t) for s, t in _signed_terms(rhs) if not _is_bar(t)]
    bars = [f"({bar})" for _, bar, _ in _bars(text)]
    parts = []
    intercept = True
    for sign, term in fixed:
        if term in ("0", "1"):
            intercept = (sign == "+") == (term == "1")
        elif sign == "+":
            parts.append(term)
        else:
            parts.append(f"- {term}")
    body = " + ".join([p for p in parts if not p.startswith("- ")] + bars)
    body += "".join(f" {p}" for p in parts if p.startswith("- "))
    if not intercept:
        body += " - 1"
    return f"{lhs} ~ {body}"


def _expr_terms(expr: str) -> list[tuple[str, frozenset[str]]]:
    """The non-intercept terms of a random term's left side: (R label, variables)."""
    result = []
    for term in Formula(expr):
        factors = [str(f) for f in term.factors if str(f) != "1"]
        if factors:
            label = ":".join(r_deparse(f) for f in factors)
            result.append((label, frozenset(factors)))
    return result


def _droppable(terms: list[tuple[str, frozenset[str]]]) -> list[int]:
    """R's ``drop.scope``: terms that no other term contains."""
    return [
        k
        for k, (_, v) in enumerate(terms)
        if not any(j != k and v <= w for j, (_, w) in enumerate(terms))
    ]


def _reduced_formulas(fit, reduce_terms: bool) -> dict[str, str]:
    """Row label -> formula of each reduced model (lmerTest's ``get_newforms``)."""
    full = _full_formula(fit)
    forms = {}
    for expr, bar, group in _bars(fit.design.formula.text):
        terms = _expr_terms(expr)
        scope = _droppable(terms) if reduce_terms else []
        if not terms or not scope:
            forms[f"({bar})"] = update_formula(full, f". ~ . - ({bar})")
            continue
        intercept = "1" in [str(t) for t in Formula(expr)]
        for k in scope:
            rest = [label for j, (label, _) in enumerate(terms) if j != k]
            if not rest:
                new_lhs = "1"
            else:
                new_lhs = " + ".join(rest) + ("" if intercept else " - 1")
            label = f"{terms[k][0]} in ({bar})"
            forms[label] = update_formula(full, f". ~ . - ({bar}) + ({new_lhs} | {group})")
    return forms


def _has_bars(text: str) -> bool:
    return any(_is_bar(t) for _, t in _signed_terms(_sides(text)[1]))


def _lm_loglik(design, reml: bool) -> tuple[float, int]:
    """R's ``logLik.lm`` (REML or ML) of the fixed part alone, and its df (p + 1)."""
    w = design.weights
    sw = np.sqrt(w)
    x, y = design.x * sw[:, None], (design.y - design.offset) * sw
    p = x.shape[1]
    if p:
        q, r = np.linalg.qr(x)
        resid = y - q @ (q.T @ y)
    else:
        r, resid = np.zeros((0, 0)), y
    n = len(y) - (p if reml else 0)
    value = 0.5 * (
        np.sum(np.log(w)) - n * (np.log(2 * np.pi) + 1 - np.log(n) + np.log(resid @ resid))
    )
    if reml and p:
        value -= np.sum(np.log(np.abs(np.diag(r))))
    return float(value), p + 1


def ranova(fit, reduce_terms: bool = True) -> pd.DataFrame:
    """Likelihood-ratio tests of the random-effects terms (lmerTest's ``ranova``): one row
    for the model (``<none>``) and one per reduced model, with ``npar, logLik, AIC, LRT, Df,
    p_value``. REML fits are compared by their REML likelihoods, as lmerTest does (the fixed
    part does not change). ``attrs["formulae"]`` holds each reduced model's formula."""
    forms = _reduced_formulas(fit, reduce_terms)
    rows = {"<none>": (fit.n_parameters, fit.loglik)}
    for label, text in forms.items():
        if _has_bars(text):
            reduced = fit.update(formula=text)
            if reduced.nobs != fit.nobs:
                raise InferenceError(
                    f"the reduced model {text!r} uses {reduced.nobs} rows, the model "
                    f"{fit.nobs}: remove the rows with missing values first"
                )
            rows[label] = (reduced.n_parameters, reduced.loglik)
        else:
            loglik, npar = _lm_loglik(fit.design, fit.reml)
            rows[label] = (npar, loglik)
    npar = np.array([v[0] for v in rows.values()], dtype=float)
    loglik = np.array([v[1] for v in rows.values()])
    lrt = np.concatenate([[np.nan], 2 * (loglik[0] - loglik[1:])])
    df = np.concatenate([[np.nan], npar[0] - npar[1:]])
    with np.errstate(invalid="ignore"):
        p = np.where(df > 0, special.chdtrc(np.where(df > 0, df, 1), lrt), np.nan)
    frame = pd.DataFrame(
        {
            "npar": npar,
            "logLik": loglik,
            "AIC": -2 * loglik + 2 * npar,
            "LRT": lrt,
            "Df": df,
            "p_value": p,
        },
        index=list(rows),
    )
    heading = [
        "ANOVA-like table for random-effects: Single term deletions",
        "\nModel:",
        _full_formula(fit),
    ]
    table = anova_table(frame, heading)
    table.attrs["formulae"] = forms
    return table


_TITLES = {"satterthwaite": "Satterthwaite's", "kenward-roger": "Kenward-Roger's"}


def drop1(fit, ddf: str = "satterthwaite") -> pd.DataFrame:
    """F tests of dropping each fixed-effect term that no other term contains (lmerTest's
    ``drop1``): ``sum_sq, mean_sq, num_df, den_df, F_value, p_value`` per term."""
    method = ddf_method(ddf)
    if method not in _TITLES:
        raise InferenceError("drop1 needs ddf='satterthwaite' or 'kenward-roger'")
    design = fit.design
    terms = list(design.fixed_terms)
    scope = [t for t in terms if not any(o is not t and t.variables <= o.variables for o in terms)]
    if design.x.shape[1] <= 1 or len(terms) <= 1:
        contrasts = _type1_contrasts(design)
    else:
        eye = np.eye(design.x.shape[1])
        contrasts = {t.name: eye[list(t.columns)] for t in terms}
    rows = {t.name: fit.f_test(contrasts[t.name], method) for t in scope}
    columns = ["sum_sq", "mean_sq", "num_df", "den_df", "F_value", "p_value"]
    frame = pd.DataFrame.from_dict(rows, orient="index", columns=columns)
    if not rows:
        frame = pd.DataFrame(columns=columns, dtype=float)
    heading = [
        f"Single term deletions using {_TITLES[method]} method:",
        "\nModel:",
        design.formula.text,
    ]
    return anova_table(frame, heading)
