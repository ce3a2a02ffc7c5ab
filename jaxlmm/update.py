"""``fit.update()``: the same call with a changed formula or arguments (R's ``update``).

Formulas may use R's ``.`` shorthand: ``". ~ . - Days"``, ``". ~ . + (1 | g)"``,
``"log(.) ~ ."``. The algebra works on the formula's top-level terms, as written: a term is
removed when the same term (up to spaces) is there, added when it is not; ``- 1`` / ``+ 0``
remove the intercept. A subtracted term that is not written as such (``Days:half`` from
``Days * half``) stays in the formula as ``- Days:half``, which the formula's parser expands.
"""

from __future__ import annotations

import re

from .errors import FormulaError, JaxlmmError
from .formula import _split_top_level, _strip_parens

_DOT = re.compile(r"(?<![\w.])\.(?![\w.])")
_NAME_OR_CALL = re.compile(r"[\w.]+(\(.*\))?", re.DOTALL)


def _sides(text: str) -> tuple[str, str]:
    sides = _split_top_level(text, "~")
    if len(sides) != 2:
        raise FormulaError(f"formula {text!r} must have the form 'response ~ terms'")
    return sides[0].strip(), sides[1].strip()


def _signed_terms(rhs: str) -> list[tuple[str, str]]:
    """Top-level terms of a right-hand side with their signs: ``a - b + c`` ->
    [("+", "a"), ("-", "b"), ("+", "c")]."""
    terms = []
    for plus in _split_top_level(rhs, "+"):
        for k, piece in enumerate(_split_top_level(plus, "-")):
            if not piece.strip():
                if k == 0:  # a leading "-" (as in "-1 + x")
                    continue
                raise FormulaError(f"empty term in {rhs!r}")
            terms.append(("-" if k else "+", piece.strip()))
    return terms


def _is_bar(term: str) -> bool:
    inside = _strip_parens(term)
    return inside is not None and len(_split_top_level(inside, "|")) > 1


def _spaced_bar(term: str) -> str:
    """``(1|g)`` -> ``(1 | g)`` (as R deparses a random-effects term)."""
    inside = _strip_parens(term)
    double = len(_split_top_level(inside, "||")) > 1
    bar = "||" if double else "|"
    left, right = _split_top_level(inside, bar)
    return f"({left.strip()} {bar} {right.strip()})"


def _key(term: str) -> str:
    return "".join(term.split())


def update_formula(old: str, new: str) -> str:
    """R's ``update.formula`` for lme4 formulas: ``.`` on the left stands for the old response,
    ``.`` on the right for the old terms. A formula without ``.`` replaces the old one."""
    if not isinstance(new, str):
        raise FormulaError(f"formula must be a string, got {type(new).__name__}")
    if "~" not in new:
        raise FormulaError(f"formula {new!r} needs a '~' (e.g. '. ~ . - x')")
    new_lhs, new_rhs = _sides(new) if new.strip()[0] != "~" else ("", new.strip()[1:].strip())
    if not _DOT.search(new):
        return new if new_lhs else f"{_sides(old)[0]} ~ {new_rhs}"
    old_lhs, old_rhs = _sides(old)
    if new_lhs in ("", "."):
        lhs = old_lhs
    else:
        simple = _NAME_OR_CALL.fullmatch(old_lhs) is not None
        lhs = _DOT.sub(lambda _: old_lhs if simple else f"({old_lhs})", new_lhs)

    terms: list[str] = []  # the added terms, in order
    intercept = True
    kept_minus: list[str] = []  # subtracted terms that are not written as terms
    pieces = []
    for sign, term in _signed_terms(new_rhs):
        if term == ".":
            if sign == "-":
                raise FormulaError("'- .' is not a valid formula update")
            pieces += _signed_terms(old_rhs)
        elif _DOT.search(term):
            raise FormulaError(
                f"update() takes '.' as a whole term or response, not inside {term!r}"
            )
        else:
            pieces.append((sign, term))
    for sign, term in pieces:
        key = _key(term)
        if key in ("0", "1"):
            intercept = (sign == "+") == (key == "1")
            continue
        if _is_bar(term):
            term = _spaced_bar(term)
            key = _key(term)
        present = [t for t in terms if _key(t) == key]
        if sign == "+":
            if not present:
                terms.append(term)
            kept_minus = [t for t in kept_minus if _key(t) != key]
        elif present:
            terms = [t for t in terms if _key(t) != key]
        elif not _is_bar(term) and key not in map(_key, kept_minus):
            kept_minus.append(term)
    rhs = " + ".join(terms) if terms else ("1" if intercept else "0")
    if not intercept and terms:
        rhs += " - 1"
    rhs += "".join(f" - {t}" for t in kept_minus)
    return f"{lhs} ~ {rhs}"


_ARGUMENTS = ("reml", "weights", "offset", "data", "data_name", "na_action")


def update(fit, formula: str | None = None, **changes):
    """Refit ``fit`` with a changed formula (R's ``.`` shorthand accepted) and/or changed
    arguments of :func:`jaxlmm.lmer` (``reml``, ``weights``, ``offset``, ``data``,
    ``data_name``, ``na_action``); everything else as in the original call."""
    from .fit import lmer

    unknown = sorted(set(changes) - set(_ARGUMENTS))
    if unknown:
        raise TypeError(f"update() got unexpected argument(s) {unknown}; it takes {_ARGUMENTS}")
    if fit.data is None:
        raise JaxlmmError(
            "this fit does not hold its data (it was made by lmer_batch or from a design); "
            "call jaxlmm.lmer() instead"
        )
    text = fit.design.formula.text
    if formula is not None:
        text = update_formula(text, formula)
    call = fit.call or {}
    arguments = {
        "reml": fit.reml,
        "weights": call.get("weights"),
        "offset": call.get("offset"),
        "data": fit.data,
        "data_name": fit.data_name,
        "na_action": fit.na_action,
    }
    if "data" in changes and "data_name" not in changes:
        arguments["data_name"] = None
    arguments |= changes
    data = arguments.pop("data")
    return lmer(text, data, **arguments)
