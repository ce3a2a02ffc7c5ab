"""Text summaries laid out as lme4's ``summary(merMod)``; no numerics beyond formatting."""

from __future__ import annotations

import math

import numpy as np

from .inference import ddf_method


def _decimals(values, digits: int = 4) -> int:
    """Decimals that show every finite nonzero value with ``digits`` significant digits (R)."""
    finite = np.abs(np.asarray(values, dtype=float))
    finite = finite[np.isfinite(finite) & (finite > 0)]
    if not len(finite):
        return 0
    return int(min(max(digits - 1 - math.floor(math.log10(finite.min())), 0), 7))


def _formatted(values, digits: int = 4) -> list[str]:
    values = np.asarray(values, dtype=float)
    decimals = _decimals(values, digits)
    return [f"{v:.{decimals}f}" for v in values]


def _table(header: list[str], rows: list[list[str]], left: int = 1) -> str:
    """Columns right-aligned except the first ``left`` ones."""
    widths = [max(len(str(r[j])) for r in [header, *rows]) for j in range(len(header))]
    lines = []
    for r in [header, *rows]:
        cells = [
            str(c).ljust(widths[j]) if j < left else str(c).rjust(widths[j])
            for j, c in enumerate(r)
        ]
        lines.append(" ".join(cells).rstrip())
    return "\n".join(lines)


def _abbreviate(name: str) -> str:
    return "(Intr)" if name == "(Intercept)" else name[:6]


def _random_effects(fit) -> str:
    vc = fit._variance_components()
    variances = vc[vc["var2"].isna()]
    var_text = dict(zip(variances.index, _formatted(variances["vcov"]), strict=True))
    sd_text = dict(zip(variances.index, _formatted(variances["sdcor"]), strict=True))
    rows, ncorr = [], 0
    for group, block in vc.groupby("group", sort=False):
        own = block[block["var2"].isna()]
        corrs = block[block["var2"].notna()]
        names = list(own["var1"])
        for a, (index, row) in enumerate(own.iterrows()):
            name = "" if group == "Residual" else row["var1"]
            cells = [group if a == 0 else "", name, var_text[index], sd_text[index]]
            for b in range(a):
                hit = corrs[(corrs["var1"] == names[b]) & (corrs["var2"] == names[a])]
                cells.append(f"{hit['sdcor'].iloc[0]:.2f}" if len(hit) else "")
            ncorr = max(ncorr, a)
            rows.append(cells)
    header = ["Groups", "Name", "Variance", "Std.Dev."] + ["Corr", *[""] * (ncorr - 1)][:ncorr]
    rows = [r + [""] * (len(header) - len(r)) for r in rows]
    return "\n".join(" " + line for line in _table(header, rows, left=2).splitlines())


def _p_text(p: float) -> str:
    """R's ``format.pval`` with 3 significant digits and its 2e-16 floor."""
    if not np.isfinite(p):
        return "NA"
    return "< 2e-16" if p < 2e-16 else f"{p:.3g}" if p >= 1e-4 else f"{p:.2e}"


def _stars(p: float) -> str:
    for cut, mark in ((0.001, "***"), (0.01, "**"), (0.05, "*"), (0.1, ".")):
        if p < cut:
            return mark
    return ""


def _fixed_effects(fit, ddf: str | None) -> str:
    table = fit.coef_table(ddf or "none")
    est, se, t = (table[c].to_numpy() for c in ("estimate", "std_error", "t_value"))
    both = _formatted(np.concatenate([est, se]))
    t_decimals = min(_decimals(t), 3)
    header = ["", "Estimate", "Std. Error", "t value"]
    rows = [
        [name, both[k], both[len(est) + k], f"{t[k]:.{t_decimals}f}"]
        for k, name in enumerate(table.index)
    ]
    if ddf is None:
        return _table(header, rows)
    dfs, ps = table["df"].to_numpy(), table["p_value"].to_numpy()
    header = header[:3] + ["df", "t value", "Pr(>|t|)", ""]
    df_text = _formatted(dfs)
    rows = [r[:3] + [df_text[k], r[3], _p_text(ps[k]), _stars(ps[k])] for k, r in enumerate(rows)]
    legend = "---\nSignif. codes:  0 '***' 0.001 '**' 0.01 '*' 0.05 '.' 0.1 ' ' 1"
    return _table(header, rows) + "\n" + legend


def _fixed_correlation(fit) -> str:
    v = fit.vcov.to_numpy()
    sd = np.sqrt(np.diag(v))
    corr = v / np.outer(sd, sd)
    names = list(fit.vcov.index)
    rows = [[names[i]] + [f"{corr[i, j]:.3f}" for j in range(i)] for i in range(1, len(names))]
    header = [""] + [_abbreviate(n) for n in names[:-1]]
    rows = [r + [""] * (len(header) - len(r)) for r in rows]
    return _table(header, rows)


_DDF_TITLES = {"satterthwaite": "Satterthwaite's", "kenward-roger": "Kenward-Roger's"}


def format_summary(fit, ddf: str | None = None) -> str:
    method = "REML" if fit.reml else "maximum likelihood "
    if ddf is None:
        lines = [f"Linear mixed model fit by {method} ['lmerMod']"]
    else:
        ddf = ddf_method(ddf)
        title = _DDF_TITLES.get(ddf)
        tests = f". t-tests use {title} method" if title else ""
        lines = [f"Linear mixed model fit by {method.rstrip()}{tests} ['lmerModLmerTest']"]
    lines.append(f"Formula: {fit.design.formula.text}")
    if fit.data_name:
        lines.append(f"   Data: {fit.data_name}")
    if fit.design.dropped_fixed:
        lines.append(f"Dropped aliased fixed effects: {', '.join(fit.design.dropped_fixed)}")
    lines.append("")
    if fit.reml:
        lines.append(f"REML criterion at convergence: {fit.objective:.1f}")
    else:
        header = ["AIC", "BIC", "logLik", "deviance", "df.resid"]
        values = [f"{fit.aic:.1f}", f"{fit.bic:.1f}", f"{fit.loglik:.1f}", f"{fit.objective:.1f}"]
        lines.append(_table(header, [values + [str(fit.df_residual)]], left=0))
    lines.append("")
    scaled = fit.residuals.to_numpy() * np.sqrt(fit.design.weights) / fit.sigma
    quantiles = np.quantile(scaled, [0, 0.25, 0.5, 0.75, 1])
    lines.append("Scaled residuals: ")
    lines.append(_table(["Min", "1Q", "Median", "3Q", "Max"], [[f"{q:.4f}" for q in quantiles]], 0))
    lines.append("")
    lines.append("Random effects:")
    lines.append(_random_effects(fit))
    groups = "; ".join(f"{g}, {n}" for g, n in fit.ngroups.items())
    lines.append(f"Number of obs: {fit.nobs}, groups:  {groups}")
    lines.append("")
    if len(fit.fixef):
        lines.append("Fixed effects:")
        lines.append(_fixed_effects(fit, ddf))
    if 1 < len(fit.fixef) <= 12:
        lines.append("")
        lines.append("Correlation of Fixed Effects:")
        lines.append(_fixed_correlation(fit))
    if fit.singular:
        lines.append("")
        lines.append("boundary (singular) fit: see help('isSingular')")
    if not fit.converged:
        lines.append("")
        lines.append(f"optimizer: {fit.status}")
    return "\n".join(lines)
