"""Text output laid out as R prints it: lme4's ``summary(merMod)`` and ``VarCorr``, R's
``print.anova`` (lmerTest's type III tables, ``ranova``, ``drop1``, lme4's likelihood-ratio
tables) and ``confint`` matrices. No numerics beyond formatting.

Numbers are formatted by a port of R's ``formatReal`` (``format(x, digits = d)``: the fewest
decimals that show every value of a column to ``d`` significant digits, or scientific notation
when that is narrower) and tables by a port of ``printCoefmat``, so that a table printed here
lines up as R's does. Tables are never wrapped or truncated. Quotes in the significance legend
are ASCII (R uses typographic ones in UTF-8 locales).
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from .inference import ddf_method

_KP_MAX = 22
_EPS = float(np.finfo(float).eps)
LEGEND = "Signif. codes:  0 '***' 0.001 '**' 0.01 '*' 0.05 '.' 0.1 ' ' 1"


# --- R's number formatting ------------------------------------------------------------------
def _scientific(x: float, digits: int) -> tuple[int, int, int, bool]:
    """R's ``scientific()``: sign, decimal exponent, significant digits (at most ``digits``,
    trailing zeros dropped) and whether rounding to them widens the fixed notation."""
    if x == 0:
        return 0, 0, 1, False
    neg, r = int(x < 0), abs(x)
    kp = math.floor(math.log10(r)) - digits + 1
    r_prec = r / 10.0**kp if kp > 0 else r * 10.0**-kp
    if r_prec < 10.0 ** (digits - 1):
        r_prec *= 10.0
        kp -= 1
    alpha = float(round(r_prec))
    nsig = digits
    for _ in range(digits):
        alpha /= 10.0
        if alpha != math.floor(alpha):
            break
        nsig -= 1
    if nsig == 0 and digits > 0:
        nsig, kp = 1, kp + 1
    kpower = kp + digits - 1
    rgt = min(max(digits - kpower, 0), _KP_MAX)
    widens = 0 < kpower <= _KP_MAX and r < 10.0**kpower - 0.5 / 10.0**rgt
    return neg, kpower, nsig, widens


def _real_layout(values, digits: int, nsmall: int = 0) -> tuple[int, int, int]:
    """R's ``formatReal``: common (width, decimals, exponent digits; 0: fixed notation)."""
    finite = [float(v) for v in values if math.isfinite(v)]
    if not finite:
        return 0, 0, 0
    neg = rgt = 0
    mxl = mxsl = mxns = -(10**9)
    mnl = 10**9
    rgt = -(10**9)
    for x in finite:
        neg_i, kpower, nsig, widens = _scientific(x, digits)
        left = kpower + 1 - widens
        sleft = neg_i + (1 if left <= 0 else left)
        rgt = max(rgt, nsig - left)
        mxl, mnl, mxsl, mxns = max(mxl, left), min(mnl, left), max(mxsl, sleft), max(mxns, nsig)
        neg |= neg_i
    if mxl < 0:
        mxsl = 1 + neg
    rgt = max(rgt, 0)
    width_fixed = mxsl + rgt + (rgt != 0)
    e = 2 if (mxl > 100 or mnl <= -99) else 1
    d = mxns - 1
    width = neg + (d > 0) + d + 4 + e
    if width_fixed <= width:
        rgt = max(rgt, nsmall)
        return mxsl + rgt + (rgt != 0), rgt, 0
    return width, d, e


def _encode(x: float, width: int, d: int, e: int, na: str) -> str:
    if not math.isfinite(x):
        text = na if math.isnan(x) else ("Inf" if x > 0 else "-Inf")
    elif e:
        text = f"{x:.{d}e}"
    else:
        text = f"{x:.{d}f}"
    return text.rjust(width)


def format_real(values, digits: int = 7, nsmall: int = 0, na: str = "NA") -> list[str]:
    """R's ``format(x, digits = digits, nsmall = nsmall)`` of a numeric vector: one layout for
    all values, right-justified to a common width; NaN prints as ``na``."""
    values = [float(v) for v in np.asarray(values, dtype=float).ravel()]
    width, d, e = _real_layout(values, digits, nsmall)
    texts = [_encode(v, width, d, e, na) for v in values]
    width = max((len(t) for t in texts), default=0)
    return [t.rjust(width) for t in texts]


def r_round(values, decimals: int) -> np.ndarray:
    """R's ``round(x, decimals)`` (Python's correctly rounded ``round`` per value)."""
    values = np.asarray(values, dtype=float)
    return np.array([v if not math.isfinite(v) else round(v, decimals) for v in values.ravel()])


def zapsmall(values, digits: int) -> np.ndarray:
    """R's ``zapsmall`` (R 4.2, that of the reference outputs): round to
    ``max(0, digits - log10(largest |value|))`` decimals, R's ``round`` taking the nearest
    whole number of decimals."""
    values = np.asarray(values, dtype=float)
    finite = np.abs(values[np.isfinite(values)])
    largest = finite.max() if len(finite) else 0.0
    decimals = max(0.0, digits - math.log10(largest)) if largest > 0 else digits
    return r_round(values, int(math.floor(decimals + 0.5)))


def format_pval(pvalues, digits: int, eps: float = _EPS) -> list[str]:
    """R's ``format.pval``: p-values below ``eps`` as ``< 2.2e-16``."""
    pv = np.asarray(pvalues, dtype=float)
    out = ["NA"] * len(pv)
    tiny = [k for k, p in enumerate(pv) if math.isfinite(p) and p < eps]
    rest = [k for k, p in enumerate(pv) if math.isfinite(p) and p >= eps]
    texts = []
    if rest:
        expo = [math.floor(math.log10(pv[k])) if pv[k] > 0 else -50 for k in rest]
        fixed = [k for k, x in zip(rest, expo, strict=True) if x >= -3 or (x == -4 and digits > 1)]
        sci = [k for k in rest if k not in fixed]
        for group in (fixed, sci):
            for k, text in zip(group, format_real(pv[group], digits), strict=True):
                out[k] = text
                texts.append(text)
    if tiny:
        small = max(1, digits - 2)
        if rest:
            nc = max(len(t) for t in texts)
            if small > 1 and small + 6 > nc:
                small = max(1, nc - 7)
            sep = "" if small == 1 and nc <= 6 else " "
        else:
            sep = "" if small == 1 else " "
        for k in tiny:
            out[k] = "<" + sep + format_real([eps], small)[0]
    return out


def _stars(p: float) -> str:
    if not math.isfinite(p):
        return ""
    for cut, mark in ((0.001, "***"), (0.01, "**"), (0.05, "*"), (0.1, ".")):
        if p < cut:
            return mark
    return " "


def matrix_lines(cells, rownames, colnames, right: bool = True) -> list[str]:
    """R's ``print(<character matrix>, quote = FALSE)``: row names left-justified, columns
    justified (right or left) to the wider of their header and cells, one space between.
    Trailing blanks are dropped."""
    rows = [list(r) for r in cells]
    rn_width = max((len(r) for r in rownames), default=4)  # R: 4 blanks when there are no rows
    widths = [max([len(colnames[j])] + [len(r[j]) for r in rows]) for j in range(len(colnames))]

    def line(label, entries):
        just = [(e.rjust(w) if right else e.ljust(w)) for e, w in zip(entries, widths, strict=True)]
        return " ".join([label.ljust(rn_width), *just]).rstrip()

    return [line("", colnames)] + [line(n, r) for n, r in zip(rownames, rows, strict=True)]


def coefmat_lines(
    values,
    rownames,
    colnames,
    digits: int,
    cs_ind=(),
    tst_ind=(),
    zap_ind=(),
    has_p: bool = False,
    na_print: str = "NA",
    signif_stars: bool = True,
) -> list[str]:
    """R's ``printCoefmat`` (column indices 0-based): coefficient-like columns ``cs_ind``
    formatted together, test statistics ``tst_ind``, the last column as p-values with
    significance stars, any other column on its own; the legend when stars are shown."""
    xm = np.array(values, dtype=float, ndmin=2).copy()
    nrow, nc = xm.shape
    cells = np.full((nrow, nc), "", dtype=object)
    ok = np.isfinite(xm)
    for i in zap_ind:
        xm[:, i] = zapsmall(xm[:, i], digits)
    cs_ind, tst_ind = list(cs_ind), list(tst_ind)
    if cs_ind:
        block = xm[:, cs_ind]
        acs = np.abs(block[np.isfinite(block)])
        if len(acs):
            nonzero = acs[acs != 0]
            digmin = 1 + math.floor(math.log10(nonzero.min())) if len(nonzero) else 1
            rounded = r_round(block, max(1, digits - digmin)).reshape(block.shape)
            cells[:, cs_ind] = np.array(format_real(rounded, digits)).reshape(block.shape)
    if tst_ind:
        dig_tst = max(1, min(5, digits - 1))
        block = r_round(xm[:, tst_ind], dig_tst)
        cells[:, tst_ind] = np.array(format_real(block, digits)).reshape(nrow, len(tst_ind))
    p_col = nc - 1 if has_p else None
    for i in range(nc):
        if i not in cs_ind and i not in tst_ind and i != p_col:
            cells[:, i] = format_real(xm[:, i], digits)
    ok_fmt = ok.copy()
    ok_fmt[:, tst_ind] = False
    if p_col is not None:
        ok_fmt[:, p_col] = False
    where = np.argwhere(ok_fmt)
    wrong_zero = [(i, j) for i, j in where if (xm[i, j] == 0) != (float(cells[i, j]) == 0)]
    if wrong_zero:
        texts = format_real([xm[i, j] for i, j in wrong_zero], max(1, digits - 1))
        for (i, j), text in zip(wrong_zero, texts, strict=True):
            cells[i, j] = text
    cells[~ok] = na_print
    stars = False
    if p_col is not None:
        pv = xm[:, p_col]
        good = np.isfinite(pv)
        if good.any():
            dig_tst = max(1, min(5, digits - 1))
            cells[good, p_col] = format_pval(pv[good], dig_tst)
            stars = signif_stars and bool(np.any(pv[good] < 0.1))
    colnames = list(colnames)
    if stars:
        marks = [_stars(p) for p in xm[:, p_col]]
        width = max(len(m) for m in marks)
        cells = np.column_stack([cells, [m.ljust(width) for m in marks]])
        colnames.append("")
    lines = matrix_lines(cells.tolist(), list(rownames), colnames)
    if stars:
        lines += ["---", LEGEND]
    return lines


# --- anova-like tables (R's print.anova) ----------------------------------------------------
_R_COLUMNS = {
    "sum_sq": "Sum Sq",
    "mean_sq": "Mean Sq",
    "num_df": "NumDF",
    "den_df": "DenDF",
    "F_value": "F value",
}


def _r_column_names(frame: pd.DataFrame) -> list[str]:
    p_name = "Pr(>F)" if "F_value" in frame.columns else "Pr(>Chisq)"
    return [p_name if c == "p_value" else _R_COLUMNS.get(c, str(c)) for c in frame.columns]


def anova_lines(frame: pd.DataFrame, digits: int = 5) -> list[str]:
    """R's ``print.anova`` of a table: its heading, then ``printCoefmat`` with the columns R
    zaps, treats as statistics and as p-values by their names."""
    names = _r_column_names(frame)
    nc = len(names)
    lines = []
    for item in frame.attrs.get("heading", []):
        lines += str(item).split("\n")
    has_p = nc > 0 and (names[-1].startswith("Pr(") or names[-1].startswith("P("))
    zap = list(range(nc - 1 if has_p else nc))
    tst = [i for i, n in enumerate(names) if n[1:7] == " value" or n in ("F", "Cp", "Chisq")]
    zap = [i for i in zap if i not in tst and not names[i].endswith("Df")]
    values = frame.to_numpy(dtype=float)
    lines += coefmat_lines(
        values, [str(r) for r in frame.index], names, digits, (), tst, zap, has_p, na_print=""
    )
    return lines


def confint_lines(frame: pd.DataFrame, digits: int = 7) -> list[str]:
    """R's ``print`` of a ``confint`` matrix: columns formatted one by one, headed by their
    percentages (``2.5 %``, ``97.5 %``)."""
    level = frame.attrs.get("level")
    names = list(map(str, frame.columns))
    if level is not None and names == ["lower", "upper"]:
        tails = [(1 - level) / 2, (1 + level) / 2]
        names = [format_real([100 * t], 3)[0].strip() + " %" for t in tails]
    columns = [format_real(frame[c].to_numpy(dtype=float), digits) for c in frame.columns]
    cells = [list(row) for row in zip(*columns, strict=True)] if columns else []
    return matrix_lines(cells, [str(r) for r in frame.index], names)


class _RTable(pd.DataFrame):
    """A DataFrame that prints as R prints the table; anything derived from it (a selection,
    a copy, arithmetic) is a plain DataFrame."""

    @property
    def _constructor(self):
        return pd.DataFrame

    def _r_lines(self) -> list[str]:
        raise NotImplementedError

    def __repr__(self) -> str:
        try:
            return "\n".join(self._r_lines())
        except (ValueError, TypeError, KeyError):  # not a table R would print
            return pd.DataFrame(self).__repr__()

    __str__ = __repr__

    def _repr_html_(self):  # notebooks show the R layout too
        return None

    def to_text(self) -> str:
        """The table as R prints it."""
        return repr(self)


class AnovaTable(_RTable):
    """An anova-like table (type III F tests, ``ranova``, ``drop1``, likelihood-ratio tests):
    a DataFrame whose ``repr`` is R's ``print.anova``, its heading from ``attrs["heading"]``
    (and ``attrs["note"]`` above it, as R's message)."""

    def _r_lines(self) -> list[str]:
        note = self.attrs.get("note")
        return ([note] if note else []) + anova_lines(self)


class ConfintTable(_RTable):
    """Confidence intervals (``lower``, ``upper``) whose ``repr`` is R's matrix print, headed
    by the tail percentages of ``attrs["level"]``."""

    def _r_lines(self) -> list[str]:
        return confint_lines(self)


def anova_table(frame: pd.DataFrame, heading=None, note=None) -> AnovaTable:
    table = AnovaTable(frame)
    table.attrs = dict(frame.attrs)
    if heading is not None:
        table.attrs["heading"] = list(heading)
    if note is not None:
        table.attrs["note"] = note
    return table


def confint_table(frame: pd.DataFrame, level: float) -> ConfintTable:
    table = ConfintTable(frame)
    table.attrs = dict(frame.attrs) | {"level": float(level)}
    return table


# --- VarCorr ----------------------------------------------------------------------------------
def varcorr_lines(vc: pd.DataFrame, digits: int = 5, comp=("Std.Dev.",)) -> list[str]:
    """lme4's ``formatVC`` of variance components laid out as ``as.data.frame(VarCorr(m))``
    (``group, var1, var2, sdcor``): groups, names, variances and/or SDs (each column formatted
    with ``digits``), correlations rounded to ``max(2, digits - 2)`` decimals."""
    if isinstance(comp, str):
        comp = (comp,)
    wanted = [c for c in ("Variance", "Std.Dev.") if any(str(k).startswith(c[:3]) for k in comp)]
    if not wanted:
        raise ValueError("comp must name 'Variance' and/or 'Std.Dev.'")
    sd_rows = vc[vc["var2"].isna()]
    groups = list(dict.fromkeys(sd_rows["group"]))
    lens = [int((sd_rows["group"] == g).sum()) for g in groups]
    sds = sd_rows["sdcor"].to_numpy(dtype=float)
    nr = len(sds)
    group_cells = []
    for g, n in zip(groups, lens, strict=True):
        group_cells += [g] + [""] * (n - 1)
    name_cells = [
        "" if g == "Residual" else str(n)
        for g, n in zip(sd_rows["group"], sd_rows["var1"], strict=True)
    ]
    columns = {"Groups": group_cells, "Name": name_cells}
    if "Variance" in wanted:
        columns["Variance"] = format_real(sds**2, digits)
    if "Std.Dev." in wanted:
        columns["Std.Dev."] = format_real(sds, digits)
    maxlen = max(lens)
    corr_cols: list[list[str]] = []
    if maxlen > 1:
        dig = max(2, digits - 2)
        rows = []
        for g, n in zip(groups, lens, strict=True):
            if g == "Residual":
                continue
            block = vc[vc["group"] == g]
            names = list(block[block["var2"].isna()]["var1"])
            corr = np.eye(n)
            for _, row in block[block["var2"].notna()].iterrows():
                a, b = names.index(row["var1"]), names.index(row["var2"])
                corr[a, b] = corr[b, a] = row["sdcor"]
            texts = np.array(format_real(r_round(corr, dig), nsmall=dig)).reshape(n, n)
            for a in range(n):
                cells = [texts[a, b] if b < a else "" for b in range(n)]
                rows.append(cells + [""] * (maxlen - n))
        rows = [r[: maxlen - 1] for r in rows]
        rows += [[""] * (maxlen - 1)] * (nr - len(rows))
        corr_cols = [list(c) for c in zip(*rows, strict=True)]
    header = list(columns) + (["Corr"] + [""] * (len(corr_cols) - 1) if corr_cols else [])
    cells = [list(r) for r in zip(*columns.values(), *corr_cols, strict=True)]
    return matrix_lines(cells, [""] * nr, header, right=False)


class VarCorr:
    """lme4's ``VarCorr(m)``: printed as ``print(VarCorr(m))`` (SDs and correlations; choose
    with ``comp``), indexed by group label for a covariance matrix (``vc["Subject"]``).
    ``frame`` is :attr:`LinearMixedModelFit.varcorr` (``as.data.frame(VarCorr(m))``)."""

    def __init__(self, fit, digits: int = 5, comp=("Std.Dev.",)):
        self._fit = fit
        self.digits = digits
        self.comp = comp

    @property
    def frame(self) -> pd.DataFrame:
        return self._fit.varcorr

    def groups(self) -> list[str]:
        return self._fit.term_group_names()

    def __getitem__(self, group: str) -> pd.DataFrame:
        from . import parameters

        fit = self._fit
        covs = parameters.covariances(fit.theta, fit.sizes, fit.sigma)
        for term, name, cov in zip(fit.design.terms, self.groups(), covs, strict=True):
            if name == group:
                return pd.DataFrame(cov, index=list(term.names), columns=list(term.names))
        raise KeyError(f"no random-effects group {group!r}; groups: {self.groups()}")

    def format(self, digits: int | None = None, comp=None) -> str:
        """The table as lme4 prints it; ``comp=("Variance", "Std.Dev.")`` shows both."""
        digits = self.digits if digits is None else digits
        components = self._fit.variance_components()
        return "\n".join(varcorr_lines(components, digits, self.comp if comp is None else comp))

    def __repr__(self) -> str:
        return self.format()

    __str__ = __repr__


# --- summary ------------------------------------------------------------------------------------
def _abbreviate(name: str) -> str:
    return "(Intr)" if name == "(Intercept)" else name[:6]


def _fixed_effects(fit, ddf: str | None, digits: int) -> list[str]:
    table = fit.coef_table(ddf or "none")
    names = list(table.index)
    if ddf is None:
        values = table[["estimate", "std_error", "t_value"]].to_numpy(dtype=float)
        header = ["Estimate", "Std. Error", "t value"]
        return coefmat_lines(values, names, header, digits, cs_ind=(0, 1), tst_ind=(2,))
    values = table[["estimate", "std_error", "df", "t_value", "p_value"]].to_numpy(dtype=float)
    header = ["Estimate", "Std. Error", "df", "t value", "Pr(>|t|)"]
    return coefmat_lines(values, names, header, digits, (0, 1, 2), (3,), has_p=True)


def _fixed_correlation(fit) -> list[str]:
    v = fit.vcov.to_numpy()
    sd = np.sqrt(np.diag(v))
    corr = v / np.outer(sd, sd)
    names = list(fit.vcov.index)
    p = len(names)
    texts = np.array(format_real(r_round(corr, 3), nsmall=3)).reshape(p, p)
    rows = [[texts[i, j] if j < i else "" for j in range(p - 1)] for i in range(1, p)]
    header = [_abbreviate(n) for n in names[:-1]]
    return matrix_lines(rows, names[1:], header)


def _residual_quantiles(fit, digits: int) -> list[str]:
    """lme4's ``.prt.resids``: quantiles of the scaled residuals, zapped to ``digits + 1``
    and printed as a named vector (one width for every entry)."""
    resid = fit.residuals.dropna().to_numpy()  # the rows used (na_action="exclude" adds NaN)
    scaled = resid * np.sqrt(fit.design.weights) / fit.sigma
    quantiles = zapsmall(np.quantile(scaled, [0, 0.25, 0.5, 0.75, 1]), digits + 1)
    values = format_real(quantiles, digits)
    names = ["Min", "1Q", "Median", "3Q", "Max"]
    width = max(len(t) for t in values + names)
    return [" ".join(t.rjust(width) for t in row) for row in (names, values)]


def _criterion_lines(fit) -> list[str]:
    """lme4's ``.prt.aictab``: the REML criterion, or AIC ... df.resid as a named vector."""
    if fit.reml:
        return [f"REML criterion at convergence: {format_real(r_round([fit.objective], 1))[0]}"]
    values = r_round([fit.aic, fit.bic, fit.loglik, fit.objective], 1)
    texts = format_real(np.append(values, fit.df_residual))[:4] + [str(fit.df_residual)]
    names = ["AIC", "BIC", "logLik", "deviance", "df.resid"]
    width = max(len(t) for t in texts + names)
    return [" ".join(t.rjust(width) for t in row) for row in (names, texts)]


def _call_lines(fit) -> list[str]:
    """lme4's ``.prt.call``: formula, data, and weights or offset given as column names."""
    lines = [f"Formula: {fit.design.formula.text}"]
    if fit.data_name:
        lines.append(f"   Data: {fit.data_name}")
    call = fit.call or {}
    if isinstance(call.get("weights"), str):
        lines.append(f"Weights: {call['weights']}")
    if isinstance(call.get("offset"), str):
        lines.append(f" Offset: {call['offset']}")
    return lines


_DDF_TITLES = {"satterthwaite": "Satterthwaite's", "kenward-roger": "Kenward-Roger's"}


def format_summary(fit, ddf: str | None = None) -> str:
    digits = 4  # lme4: max(3, getOption("digits") - 3)
    method = "REML" if fit.reml else "maximum likelihood "
    if ddf is None:
        lines = [f"Linear mixed model fit by {method} ['lmerMod']"]
    else:
        ddf = ddf_method(ddf)
        title = _DDF_TITLES.get(ddf)
        tests = f". t-tests use {title} method" if title else ""
        lines = [f"Linear mixed model fit by {method.rstrip()}{tests} ['lmerModLmerTest']"]
    lines += _call_lines(fit)
    if fit.design.dropped_fixed:
        lines.append(f"Dropped aliased fixed effects: {', '.join(fit.design.dropped_fixed)}")
    lines.append("")
    lines += _criterion_lines(fit)
    lines.append("")
    lines.append("Scaled residuals: ")
    lines += _residual_quantiles(fit, digits)
    lines.append("")
    lines.append("Random effects:")
    lines += varcorr_lines(fit.variance_components(), digits, ("Variance", "Std.Dev."))
    groups = "; ".join(f"{g}, {n}" for g, n in fit.ngroups.items())
    lines.append(f"Number of obs: {fit.nobs}, groups:  {groups}")
    p = len(fit.fixef)
    if p:
        lines += ["", "Fixed effects:"]
        lines += _fixed_effects(fit, ddf, digits)
    if 1 < p <= 12:
        lines += ["", "Correlation of Fixed Effects:"]
        lines += _fixed_correlation(fit)
    elif p > 12:
        lines += [
            "",
            f"Correlation matrix not shown by default, as p = {p} > 12.",
            "Use fit.vcov if you need it",
        ]
    if fit.singular:
        lines.append("boundary (singular) fit: see help('isSingular')")
    if not fit.converged:
        lines.append(f"optimizer: {fit.status}")
    return "\n".join(line.rstrip() if line.strip() else line for line in lines)
