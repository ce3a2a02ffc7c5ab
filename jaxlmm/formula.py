"""lme4 formula syntax: split ``y ~ fixed + (expr | g)`` into a fixed part, offsets and random
terms, and translate R's spelling to formulaic's (Python) spelling and back.

Only the mixed-model syntax is handled here (bars, ``||``, ``a/b``, ``a:b`` grouping,
``offset()``); everything inside the fixed part and inside a bar's left side is ordinary
R/Wilkinson syntax that formulaic turns into model matrices. Before formulaic sees a formula,
:func:`to_python` makes R's arithmetic Python's and turns every column name into a Python
identifier (:func:`python_name`); :func:`r_deparse` spells formulaic's names back as R does.
"""

from __future__ import annotations

import ast
import keyword
import re
from dataclasses import dataclass
from functools import cache

from formulaic import Formula as _FormulaicFormula
from formulaic.transforms import TRANSFORMS

from .errors import FormulaError

# R functions that formulaic does not define, and formulaic's (NumPy's) function for each;
# factor(x) is formulaic's C(x), a factor with treatment contrasts.
_R_FUNCTIONS = {
    "factor": "C",
    "sqrt": "np.sqrt",
    "log1p": "np.log1p",
    "expm1": "np.expm1",
    "floor": "np.floor",
    "ceiling": "np.ceil",
    "trunc": "np.trunc",
    "sign": "np.sign",
    "sin": "np.sin",
    "cos": "np.cos",
    "tan": "np.tan",
}
_PYTHON_TO_R = {python: r for r, python in _R_FUNCTIONS.items()}
_R_OPERATORS = {"^": "**", "%%": "%", "%/%": "//"}  # R's arithmetic inside calls, in Python
_ENCODED = "jaxlmm_col_"
_ENCODED_NAME = re.compile(_ENCODED + r"([0-9a-f]+)_")
_RESERVED = frozenset(TRANSFORMS) | frozenset(_R_FUNCTIONS)
_R_SYNTACTIC = re.compile(r"(?:[^\W\d_]|\.(?!\d))[\w.]*")
_R_KEYWORDS = frozenset(
    "if else repeat while function for in next break TRUE FALSE NULL Inf NaN NA NA_integer_ "
    "NA_real_ NA_character_ NA_complex_".split()
)
_NAMESPACES = frozenset({"np", "contr"})  # formulaic modules: np.pi, contr.sum are not columns
_ANSI_COLOUR = re.compile(r"\x1b\[[0-9;]*m")
_TOKEN = re.compile(
    r"""(?P<string>"(?:\\.|[^"\\])*"|'(?:\\.|[^'\\])*')
    |`(?P<quoted>[^`]*)`
    |(?P<number>(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?L?)
    |(?P<name>(?:[^\W\d]|\.(?!\d))[\w.]*)
    |(?P<percent>%[^%\s]*%)
    |(?P<other>==|!=|<=|>=|\*\*|::|.)""",
    re.VERBOSE | re.DOTALL,
)


def python_name(name: str) -> str:
    """The identifier that stands for column ``name`` in formulaic's expressions.

    A plain ASCII identifier stands for itself; any other name (dots, spaces, operators,
    non-ASCII letters, Python keywords, names of formulaic's functions) gets a reversible
    encoding, so formulaic never has to parse an unusual name.
    """
    plain = name.isascii() and name.isidentifier() and not keyword.iskeyword(name)
    if plain and name not in _RESERVED and not name.startswith(_ENCODED):
        return name
    return f"{_ENCODED}{name.encode().hex()}_"


def column_name(identifier: str) -> str:
    """The column that :func:`python_name` turned into ``identifier``."""
    match = _ENCODED_NAME.fullmatch(identifier)
    return bytes.fromhex(match.group(1)).decode() if match else identifier


def r_symbol(name: str) -> str:
    """A column name as R writes it in a formula: in backticks unless it is syntactic."""
    if _R_SYNTACTIC.fullmatch(name) and name not in _R_KEYWORDS:
        return name
    return "`" + name + "`"


def error_text(err: Exception) -> str:
    """A formulaic error message on one line, without terminal colours, names as R's."""
    return r_text(" ".join(_ANSI_COLOUR.sub("", str(err)).split()))


def r_text(text: str) -> str:
    """``text`` with each encoded column name spelled as R spells it (for messages)."""
    return _ENCODED_NAME.sub(lambda m: r_symbol(column_name(m.group(0))), text)


def to_python(text: str) -> str:
    """R's spelling of a formula in formulaic's: each column name as its :func:`python_name`
    (backticks removed); inside function calls R's arithmetic as Python's (``x^2`` ->
    ``x**2``, ``%%`` -> ``%``, ``%/%`` -> ``//``, ``TRUE`` -> ``True``, ``2L`` -> ``2``) and
    R's functions that formulaic lacks as formulaic's (``sqrt`` -> ``np.sqrt``, ``factor`` ->
    ``C``). Outside calls ``^`` keeps its formula meaning (``(a + b)^2``: interactions up to
    order 2)."""
    tokens = [(m.lastgroup, m.group()) for m in _TOKEN.finditer(text)]
    significant = [k for k, (_, token) in enumerate(tokens) if not token.isspace()]
    pairs = list(zip(significant, significant[1:], strict=False))
    following = {a: tokens[b][1] for a, b in pairs}
    preceding = {b: tokens[a][0] for a, b in pairs}
    out, calls = [], []  # calls: per open parenthesis, whether it opens a function call
    for k, (kind, token) in enumerate(tokens):
        in_call = any(calls)
        if kind == "quoted":
            token = python_name(token[1:-1])
        elif kind == "name":
            token = _python_symbol(token, following.get(k, ""), in_call)
        elif kind == "number":
            token = token.removesuffix("L")
        elif in_call and token in _R_OPERATORS:
            token = _R_OPERATORS[token]
        elif token == "(":
            calls.append(preceding.get(k) == "name")
        elif token == ")" and calls:
            calls.pop()
        elif token == "`":
            raise FormulaError(f"unmatched backtick in formula {text!r}")
        elif token == "::":
            raise FormulaError(
                f"formula {text!r} names a package ('::'); write the function alone, "
                "e.g. bs(x, df = 4) for splines::bs(x, df = 4)"
            )
        out.append(token)
    return "".join(out)


def _python_symbol(name: str, following: str, in_call: bool) -> str:
    """A bare name in formulaic's spelling: a function, a keyword argument, an attribute of
    formulaic's namespaces (``contr.sum``, ``np.pi``), R's logical constants, or a column."""
    if following == "(":
        return _R_FUNCTIONS.get(name, name)
    if name == "." or (in_call and following == "=") or name.split(".")[0] in _NAMESPACES:
        return name
    if in_call and name in ("TRUE", "FALSE"):
        return name.title()
    return python_name(name)


def r_deparse(expr: str) -> str:
    """A Python expression from formulaic (``I(x ** 2)``, ``bs(x, df=4)``) spelled as R's
    ``deparse`` spells it (``I(x^2)``, ``bs(x, df = 4)``), column names as R writes them.
    Parentheses appear where R's precedence needs them (R would keep redundant ones)."""
    try:
        tree = ast.parse(expr.strip(), mode="eval").body
    except SyntaxError:
        return r_text(expr)
    return _deparse(tree)[0]


_ATOM = 20
_BINARY = {  # Python operator -> R operator, R precedence, spaced as R deparses it
    ast.Pow: ("^", 14, False),
    ast.Mod: ("%%", 11, False),
    ast.FloorDiv: ("%/%", 11, False),
    ast.Mult: ("*", 10, True),
    ast.Div: ("/", 10, False),
    ast.Add: ("+", 9, True),
    ast.Sub: ("-", 9, True),
    ast.BitAnd: ("&", 6, True),
    ast.BitOr: ("|", 5, True),
}
_UNARY = {ast.USub: ("-", 13), ast.UAdd: ("+", 13), ast.Not: ("!", 7), ast.Invert: ("!", 7)}
_COMPARE = {ast.Eq: "==", ast.NotEq: "!=", ast.Lt: "<", ast.LtE: "<=", ast.Gt: ">", ast.GtE: ">="}


def _deparse(node: ast.AST) -> tuple[str, int]:
    """R's text of ``node`` and the precedence of its outermost operator."""
    match node:
        case ast.Name(id=name):
            return r_symbol(column_name(name)), _ATOM
        case ast.Constant(value=bool() | None as value):
            return {True: "TRUE", False: "FALSE", None: "NULL"}[value], _ATOM
        case ast.Constant(value=int() | float() as value):
            return _r_number(value), _ATOM
        case ast.Constant(value=str() as value):
            return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"', _ATOM
        case ast.Call(func=func, args=args, keywords=keywords):
            name = ast.unparse(func)
            inner = [_deparse(a)[0] for a in args]
            inner += [f"{k.arg} = {_deparse(k.value)[0]}" for k in keywords]
            if name != "C" or len(inner) == 1:  # C(x, contrasts) is formulaic's own
                name = _PYTHON_TO_R.get(name, name)
            return f"{name}({', '.join(inner)})", _ATOM
        case ast.List(elts=items) | ast.Tuple(elts=items):
            return f"c({', '.join(_deparse(item)[0] for item in items)})", _ATOM
        case ast.BinOp(left=left, op=op, right=right) if type(op) in _BINARY:
            symbol, precedence, spaced = _BINARY[type(op)]
            right_assoc = isinstance(op, ast.Pow)
            a = _operand(left, precedence, tight=right_assoc)
            b = _operand(right, precedence, tight=not right_assoc)
            return (f"{a} {symbol} {b}" if spaced else f"{a}{symbol}{b}"), precedence
        case ast.UnaryOp(op=op, operand=operand) if type(op) in _UNARY:
            symbol, precedence = _UNARY[type(op)]
            return symbol + _operand(operand, precedence, tight=False), precedence
        case ast.Compare(left=left, ops=[op], comparators=[right]) if type(op) in _COMPARE:
            a, b = _operand(left, 8, tight=False), _operand(right, 8, tight=True)
            return f"{a} {_COMPARE[type(op)]} {b}", 8
    return r_text(ast.unparse(node)), _ATOM


def _operand(node: ast.AST, precedence: int, tight: bool) -> str:
    """An operand's text, in parentheses where R would bind it differently without them
    (``tight``: also at equal precedence, the side an operator does not associate to)."""
    text, inner = _deparse(node)
    return f"({text})" if inner < precedence or (tight and inner == precedence) else text


def _r_number(value: float) -> str:
    """A number as R's ``deparse`` writes it: 15 significant digits, fixed or scientific
    notation, whichever is shorter (fixed on a tie): ``2``, ``0.5``, ``1e+05``, ``1e-04``."""
    if value == 0:
        return "0"
    sign = "-" if value < 0 else ""
    mantissa, exponent = f"{abs(value):.14e}".split("e")
    mantissa = mantissa.rstrip("0").rstrip(".")
    exponent = int(exponent)
    digits = len(mantissa.replace(".", ""))
    fixed = f"{abs(value):.{max(0, digits - 1 - exponent)}f}"
    scientific = f"{mantissa}e{exponent:+03d}"
    return sign + (fixed if len(fixed) <= len(scientific) else scientific)


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
    """A parsed lme4 formula; ``response``, ``fixed``, ``offsets`` and each term's ``expr`` are
    in formulaic's spelling (:func:`to_python`), ``text`` as the user wrote it."""

    text: str
    response: str
    fixed: str
    random: tuple[RandomTerm, ...]
    offsets: tuple[str, ...] = ()  # the argument of each ``offset(...)`` term of the fixed part


def _split_top_level(text: str, sep: str) -> list[str]:
    """Split ``text`` on ``sep`` where it is not inside parentheses or quotes."""
    parts, depth, start, i, quote = [], 0, 0, 0, None
    while i < len(text):
        ch = text[i]
        if quote:
            quote = None if ch == quote else quote
            i += 2 if ch == "\\" else 1
            continue
        if ch in "'\"`":
            quote = ch
        elif ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
            if depth < 0:
                raise FormulaError(f"unbalanced ')' in formula {r_text(text)!r}")
        elif depth == 0 and text.startswith(sep, i):
            parts.append(text[start:i])
            start = i + len(sep)
            i += len(sep)
            continue
        i += 1
    if depth != 0:
        raise FormulaError(f"unbalanced '(' in formula {r_text(text)!r}")
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
    """The column a grouping factor names (given as an identifier of :func:`to_python`)."""
    name = name.strip()
    if not name.isidentifier() or name == ".":
        raise FormulaError(
            f"grouping factor {r_text(name)!r} in {r_text(where)!r} must be a column name"
        )
    return column_name(name)


def _grouping_factors(group: str, where: str) -> list[tuple[str, ...]]:
    """``a/b/c`` -> [(a,), (b, a), (c, b, a)] (lme4 names ``b:a``); ``a:b`` -> [(a, b)]."""
    nested = [part.strip() for part in group.split("/")]
    if any(not part for part in nested):
        raise FormulaError(f"empty grouping factor in {r_text(where)!r}")
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
        raise FormulaError(
            f"cannot parse {r_text(expr)!r} in {r_text(where)!r}: {error_text(err)}"
        ) from None
    terms = [str(t) for t in parsed]
    exprs = ["1"] if "1" in terms else []
    exprs += [f"0 + {t}" for t in terms if t != "1"]
    return exprs


def _random_terms(inside: str) -> list[RandomTerm]:
    where = f"({inside})"
    double = len(_split_top_level(inside, "||")) > 1
    pieces = _split_top_level(inside, "||" if double else "|")
    if len(pieces) != 2:
        raise FormulaError(f"random-effects term {r_text(where)!r} needs exactly one '|' or '||'")
    expr, group = pieces[0].strip(), pieces[1].strip()
    if not expr or not group:
        raise FormulaError(
            f"random-effects term {r_text(where)!r} needs an expression on each side of '|'"
        )
    exprs = _uncorrelated_exprs(expr, where) if double else [expr]
    return [
        RandomTerm(expr=e, factors=factors)
        for factors in _grouping_factors(group, where)
        for e in exprs
    ]


def _offset_argument(piece: str) -> str | None:
    """The argument of a fixed-part piece ``offset(expr)``; None for any other piece."""
    piece = piece.strip()
    if not piece.startswith("offset"):
        return None
    inside = _strip_parens(piece.removeprefix("offset"))
    if inside is None:
        return None
    if not inside.strip():
        raise FormulaError("offset() needs an expression, e.g. offset(log(exposure))")
    return inside.strip()


def parse_formula(text: str) -> MixedFormula:
    """Parse an lme4 formula string; raise :class:`FormulaError` with the fault named."""
    if not isinstance(text, str):
        raise FormulaError(
            f"formula must be a string such as 'y ~ x + (1 | g)', got {type(text).__name__}"
        )
    return _parse(text)


@cache
def _parse(text: str) -> MixedFormula:
    sides = _split_top_level(to_python(text), "~")
    if len(sides) != 2 or not sides[0].strip() or not sides[1].strip():
        raise FormulaError(f"formula {text!r} must have the form 'response ~ terms'")
    response, rhs = sides[0].strip(), sides[1]
    fixed, random, offsets = [], [], []
    for plus_piece in _split_top_level(rhs, "+"):
        for k, piece in enumerate(_split_top_level(plus_piece, "-")):
            sign = "-" if k else "+"
            if not piece.strip():
                raise FormulaError(f"empty term (a stray '{sign}') in formula {text!r}")
            inside = _strip_parens(piece)
            offset = _offset_argument(piece)
            if inside is not None and len(_split_top_level(inside, "|")) > 1:
                if sign == "-":
                    raise FormulaError(f"cannot subtract random-effects term ({r_text(inside)})")
                random.extend(_random_terms(inside))
            elif "|" in piece:
                raise FormulaError(
                    f"random-effects term {r_text(piece.strip())!r} must be in parentheses"
                )
            elif offset is not None:
                if sign == "-":
                    raise FormulaError(f"cannot subtract offset term {r_text(piece.strip())!r}")
                offsets.append(offset)
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
    fixed_text = fixed_text.strip()
    try:
        _FormulaicFormula(fixed_text)
    except Exception as err:
        raise FormulaError(
            f"cannot parse fixed part {r_text(fixed_text)!r}: {error_text(err)}"
        ) from None
    return MixedFormula(text, response, fixed_text, tuple(random), tuple(offsets))
