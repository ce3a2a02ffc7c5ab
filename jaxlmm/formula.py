"""lme4 formula syntax: split ``y ~ fixed + (expr | g)`` into a fixed part and random terms.

Only the mixed-model syntax is handled here (bars, ``||``, ``a/b``, ``a:b`` grouping);
everything inside the fixed part and inside a bar's left side is ordinary R/Wilkinson
syntax that formulaic turns into model matrices.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cache

from formulaic import Formula as _FormulaicFormula

from .errors import FormulaError

_NAME = re.compile(r"^[A-Za-z_.][A-Za-z0-9_.]*$")


@dataclass(frozen=True)
class RandomTerm:
    """One ``(expr | group)`` term: ``expr`` in formulaic syntax, ``factors`` grouping columns."""

    expr: str
    factors: tuple[str, ...]

    @property
    def group(self) -> str:
        """lme4's name of the grouping factor (``a:b`` for an interaction)."""
        return ":".join(self.factors)


@dataclass(frozen=True)
class MixedFormula:
    """A parsed lme4 formula."""

    text: str
    response: str
    fixed: str
    random: tuple[RandomTerm, ...]


def _split_top_level(text: str, sep: str) -> list[str]:
    """Split ``text`` on ``sep`` where it is not inside parentheses."""
    parts, depth, start, i = [], 0, 0, 0
    while i < len(text):
        ch = text[i]
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
            if depth < 0:
                raise FormulaError(f"unbalanced ')' in formula {text!r}")
        elif depth == 0 and text.startswith(sep, i):
            parts.append(text[start:i])
            start = i + len(sep)
            i += len(sep)
            continue
        i += 1
    if depth != 0:
        raise FormulaError(f"unbalanced '(' in formula {text!r}")
    parts.append(text[start:])
    return parts


def _strip_parens(piece: str) -> str | None:
    """Return the inside of ``( ... )`` when the parentheses enclose the whole piece."""
    piece = piece.strip()
    if not (piece.startswith("(") and piece.endswith(")")):
        return None
    depth = 0
    for i, ch in enumerate(piece):
        depth += ch == "("
        depth -= ch == ")"
        if depth == 0 and i < len(piece) - 1:
            return None
    return piece[1:-1]


def _check_name(name: str, where: str) -> str:
    name = name.strip()
    if not _NAME.match(name):
        raise FormulaError(f"grouping factor {name!r} in {where!r} must be a column name")
    return name


def _grouping_factors(group: str, where: str) -> list[tuple[str, ...]]:
    """``a/b/c`` -> [(a,), (b, a), (c, b, a)] (lme4 names ``b:a``); ``a:b`` -> [(a, b)]."""
    nested = [part.strip() for part in group.split("/")]
    if any(not part for part in nested):
        raise FormulaError(f"empty grouping factor in {where!r}")
    result, outer = [], ()
    for part in nested:
        factors = tuple(_check_name(f, where) for f in part.split(":"))
        outer = factors + outer
        result.append(outer)
    return result


def _uncorrelated_exprs(expr: str, where: str) -> list[str]:
    """``(x + z || g)`` is ``(1 | g) + (0 + x | g) + (0 + z | g)`` (lme4's expansion)."""
    try:
        parsed = _FormulaicFormula(expr)
    except Exception as err:  # formulaic raises several exception types on bad syntax
        raise FormulaError(f"cannot parse {expr!r} in {where!r}: {err}") from None
    terms = [str(t) for t in parsed]
    exprs = ["1"] if "1" in terms else []
    exprs += [f"0 + {t}" for t in terms if t != "1"]
    return exprs


def _random_terms(inside: str) -> list[RandomTerm]:
    where = f"({inside})"
    double = len(_split_top_level(inside, "||")) > 1
    pieces = _split_top_level(inside, "||" if double else "|")
    if len(pieces) != 2:
        raise FormulaError(f"random-effects term {where!r} needs exactly one '|' or '||'")
    expr, group = pieces[0].strip(), pieces[1].strip()
    if not expr or not group:
        raise FormulaError(f"random-effects term {where!r} needs an expression on each side of '|'")
    exprs = _uncorrelated_exprs(expr, where) if double else [expr]
    return [
        RandomTerm(expr=e, factors=factors)
        for factors in _grouping_factors(group, where)
        for e in exprs
    ]


def r_arithmetic(text: str) -> str:
    """R's arithmetic inside function calls: ``^`` is a power there (``I(x^2)``, ``log(x^2)``),
    where Python (and so formulaic) would read a bitwise XOR. Outside calls ``^`` keeps its
    formula meaning (``(a + b)^2``: interactions up to order 2). Backticked names are kept."""
    out, calls, quote = [], [], None
    for k, ch in enumerate(text):
        if quote:
            quote = None if ch == quote else quote
        elif ch in "`'\"":
            quote = ch
        elif ch == "(":
            before = text[:k].rstrip()
            calls.append(bool(before) and (before[-1].isalnum() or before[-1] in "_."))
        elif ch == ")" and calls:
            calls.pop()
        elif ch == "^" and any(calls):
            out.append("**")
            continue
        out.append(ch)
    return "".join(out)


def parse_formula(text: str) -> MixedFormula:
    """Parse an lme4 formula string; raise :class:`FormulaError` with the fault named."""
    if not isinstance(text, str):
        raise FormulaError(f"formula must be a string, got {type(text).__name__}")
    return _parse(text)


@cache
def _parse(text: str) -> MixedFormula:
    sides = _split_top_level(r_arithmetic(text), "~")
    if len(sides) != 2 or not sides[0].strip() or not sides[1].strip():
        raise FormulaError(f"formula {text!r} must have the form 'response ~ terms'")
    response, rhs = sides[0].strip(), sides[1]
    fixed, random = [], []
    for plus_piece in _split_top_level(rhs, "+"):
        for k, piece in enumerate(_split_top_level(plus_piece, "-")):
            sign = "-" if k else "+"
            if not piece.strip():
                raise FormulaError(f"empty term (a stray '{sign}') in formula {text!r}")
            inside = _strip_parens(piece)
            if inside is not None and len(_split_top_level(inside, "|")) > 1:
                if sign == "-":
                    raise FormulaError(f"cannot subtract random-effects term ({inside})")
                random.extend(_random_terms(inside))
            elif "|" in piece:
                raise FormulaError(f"random-effects term {piece.strip()!r} must be in parentheses")
            else:
                fixed.append(f"{sign} {piece.strip()}")
    if not random:
        raise FormulaError(
            f"formula {text!r} has no random-effects term such as (1 | group); "
            "use a linear model for fixed effects only"
        )
    fixed_text = " ".join(fixed).removeprefix("+ ")
    if not any(term.startswith("+") for term in fixed):
        fixed_text = "1 " + fixed_text
    try:
        _FormulaicFormula(fixed_text)
    except Exception as err:
        raise FormulaError(f"cannot parse fixed part {fixed_text!r}: {err}") from None
    return MixedFormula(text=text, response=response, fixed=fixed_text, random=tuple(random))
