"""Plots of fitted models, profiles, bootstrap replicates and batch fits (matplotlib).

Each function takes a result object and returns a matplotlib ``Figure`` (it never calls
``plt.show``): display it as a notebook cell's value or with ``plt.show()``, or save it with
``fig.savefig``. The figures mirror the plots lme4 users look at:

- :func:`diagnostics`: residuals against fitted values, normal QQ plots of the scaled residuals
  and of the conditional modes, scale-location (``plot(m)``, ``qqnorm(resid(m))``, ...);
- :func:`ranef_caterpillar`: ``dotplot(ranef(m, condVar = TRUE))``;
- :func:`profile_zeta`, :func:`profile_density`: ``xyplot(profile(m))``,
  ``densityplot(profile(m))``;
- :func:`bootstrap_distributions`: histograms of ``bootMer`` replicates;
- :func:`pvalue_histogram`, :func:`volcano`: one coefficient across the responses of a batch.

matplotlib is imported when a function is called, so ``import jaxlmm`` never needs it
(``pip install "jaxlmm[plot]"``). Artists carrying the plotted numbers have a ``gid`` naming
what they show (``"interval"``, ``"estimate"``, ...), so figures can be inspected in code.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
from scipy import stats
from scipy.interpolate import CubicSpline, PchipInterpolator

from .errors import InferenceError

PROFILE_LEVELS = (0.5, 0.8, 0.9, 0.95, 0.99)  # lme4's xyplot(profile(m)) reference levels
MAX_LEVEL_LABELS = 40  # level labels per caterpillar panel before they are thinned
SMOOTH_SPAN = 2 / 3  # fraction of the points in each local fit (lowess's default)

_GREY = "0.45"


# --- shared helpers ----------------------------------------------------------------------
def _pyplot():
    try:
        import matplotlib.pyplot as plt
    except ImportError as err:
        raise ImportError(
            'jaxlmm\'s plots need matplotlib: pip install "jaxlmm[plot]" '
            "(or pip install matplotlib)"
        ) from err
    return plt


def require_term(term, available, what: str = "fixed-effect term") -> str:
    """``term`` if it is one of ``available``; otherwise an :class:`InferenceError` that lists
    the ones there are."""
    available = [str(a) for a in available]
    if not isinstance(term, str) or term not in available:
        raise InferenceError(f"{what} {term!r} is not in the fit; available: {available}")
    return term


def _check_fraction(value, name: str) -> float:
    if not isinstance(value, (int, float)) or not 0 < value < 1:
        raise InferenceError(f"{name} must be between 0 and 1, got {value!r}")
    return float(value)


def _panels(n: int, ncols: int = 3, width: float = 3.4, height: float = 2.9, **kwargs):
    """A figure with ``n`` panels in rows of at most ``ncols`` (unused grid cells removed), at
    most five x ticks each so that long tick labels do not collide."""
    plt = _pyplot()
    from matplotlib.ticker import MaxNLocator

    ncols = max(1, min(ncols, n))
    nrows = math.ceil(n / ncols)
    fig, axes = plt.subplots(
        nrows,
        ncols,
        figsize=(width * ncols, height * nrows + 0.4),
        layout="constrained",
        squeeze=False,
        **kwargs,
    )
    axes = list(axes.ravel())
    for ax in axes[n:]:
        ax.remove()
    for ax in axes[:n]:
        ax.xaxis.set_major_locator(MaxNLocator(5))
    return fig, axes[:n]


def ppoints(n: int) -> np.ndarray:
    """R's ``ppoints(n)``: probabilities at which ``qqnorm`` places sorted samples."""
    a = 3 / 8 if n <= 10 else 1 / 2
    return (np.arange(1, n + 1) - a) / (n + 1 - 2 * a)


def _qqline(sample: np.ndarray) -> tuple[float, float]:
    """R's ``qqline``: intercept and slope of the line through the quartiles."""
    y = np.quantile(sample, [0.25, 0.75])
    x = stats.norm.ppf([0.25, 0.75])
    slope = (y[1] - y[0]) / (x[1] - x[0])
    return y[0] - slope * x[0], slope


def smooth(x, y, span: float = SMOOTH_SPAN, n_grid: int = 80, iterations: int = 2):
    """A lowess-like trend: local-linear fits with tricube weights on the nearest ``span``
    fraction of the points, evaluated on a grid over the range of ``x``, with ``iterations``
    robustness passes (bisquare weights of the residuals, as lowess). Returns ``(grid, trend)``,
    or ``None`` when ``x`` has no spread."""
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    keep = np.isfinite(x) & np.isfinite(y)
    x, y = x[keep], y[keep]
    if len(x) < 3 or np.ptp(x) == 0:
        return None
    k = min(len(x), max(3, math.ceil(span * len(x))))
    grid = np.linspace(x.min(), x.max(), n_grid)
    robustness = np.ones_like(x)
    for step in range(iterations + 1):
        trend = np.array([_local_linear(x, y, robustness, g, k) for g in grid])
        if step == iterations:
            break
        residuals = y - np.interp(x, grid, trend)
        scale = np.median(np.abs(residuals))
        if not scale > 0:
            break
        u = residuals / (6 * scale)
        robustness = np.where(np.abs(u) < 1, (1 - u**2) ** 2, 0.0)
    return grid, trend


def _local_linear(x, y, robustness, at: float, k: int) -> float:
    distance = np.abs(x - at)
    h = max(np.partition(distance, k - 1)[k - 1], 1e-12 * np.ptp(x))
    w = np.clip(1 - (distance / h) ** 3, 0, None) ** 3 * robustness
    total = w.sum()
    if not total > 0:
        return np.nan
    xm, ym = w @ x / total, w @ y / total
    sxx = w @ (x - xm) ** 2
    slope = w @ ((x - xm) * (y - ym)) / sxx if sxx > 0 else 0.0
    return ym + slope * (at - xm)


def _scatter(ax, x, y, n: int, **kwargs):
    """Points whose size and opacity shrink as there get more of them."""
    alpha = 0.8 if n <= 500 else 0.5 if n <= 5000 else 0.25
    return ax.scatter(x, y, s=_scatter_size(n), alpha=alpha, linewidths=0, **kwargs)


def _scatter_size(n: int) -> float:
    return 14 if n <= 500 else 6 if n <= 5000 else 2


# --- single fits -------------------------------------------------------------------------
def diagnostics(fit):
    """Four residual panels of a :class:`~jaxlmm.LinearMixedModelFit`, as lme4 users draw them.

    Pearson residuals (``sqrt(w) (y - fitted)``, lme4's ``resid(m, type = "pearson")``) against
    fitted values with a zero line and a smooth trend; a normal QQ plot of the scaled residuals
    (Pearson / sigma, R's ``qqnorm`` and ``qqline``); a normal QQ plot of the conditional modes,
    each random-effect column divided by its standard deviation across levels so that columns
    of different scales share the panel (reference line y = x); and scale-location: the
    square root of |scaled residual| against fitted values, with a smooth trend.
    """
    plt = _pyplot()
    fitted = np.asarray(fit.fitted, dtype=np.float64)
    pearson = np.sqrt(np.asarray(fit.design.weights)) * np.asarray(fit.residuals)
    scaled = pearson / fit.sigma
    n = len(fitted)

    fig, axes = plt.subplots(2, 2, figsize=(10, 8), layout="constrained")
    (ax_rf, ax_qq), (ax_re, ax_sl) = axes

    _scatter(ax_rf, fitted, pearson, n, color="C0", gid="residuals")
    ax_rf.axhline(0, color=_GREY, lw=1, ls="--")
    _trend(ax_rf, fitted, pearson)
    ax_rf.set(title="Residuals vs fitted", xlabel="fitted values", ylabel="Pearson residuals")

    theoretical = stats.norm.ppf(ppoints(n))
    ax_qq.scatter(
        theoretical, np.sort(scaled), s=_scatter_size(n), color="C0", linewidths=0, gid="qq"
    )
    intercept, slope = _qqline(scaled)
    ax_qq.axline((0, intercept), slope=slope, color=_GREY, lw=1, ls="--", gid="qqline")
    ax_qq.set(
        title="Normal Q-Q: scaled residuals",
        xlabel="theoretical quantiles",
        ylabel="scaled residuals",
    )

    marker_sets = 0
    for group, frame in fit.ranef().items():
        for column in frame.columns:
            modes = frame[column].to_numpy(dtype=np.float64)
            modes = modes[np.isfinite(modes)]
            if not len(modes):
                continue
            spread = np.std(modes, ddof=1) if len(modes) > 1 else 0.0
            values = np.sort(modes / spread if spread > 0 else modes)
            ax_re.scatter(
                stats.norm.ppf(ppoints(len(values))),
                values,
                s=_scatter_size(len(values)),
                marker="osD^v<>"[marker_sets % 7],
                color=f"C{marker_sets % 10}",
                linewidths=0,
                label=f"{group}: {column}",
                gid=f"modes:{group}:{column}",
            )
            marker_sets += 1
    ax_re.axline((0, 0), slope=1, color=_GREY, lw=1, ls="--")
    ax_re.set(
        title="Normal Q-Q: conditional modes",
        xlabel="theoretical quantiles",
        ylabel="conditional mode / SD across levels",
    )
    ax_re.legend(fontsize="small", loc="upper left")

    root = np.sqrt(np.abs(scaled))
    _scatter(ax_sl, fitted, root, n, color="C0", gid="scale_location")
    _trend(ax_sl, fitted, root)
    ax_sl.set(
        title="Scale-location",
        xlabel="fitted values",
        ylabel=r"$\sqrt{|\mathrm{scaled\ residuals}|}$",
    )
    fig.suptitle(fit.design.formula.text, fontsize="medium")
    return fig


def _trend(ax, x, y):
    line = smooth(x, y)
    if line is not None:
        ax.plot(*line, color="C3", lw=1.5, gid="trend")


def ranef_caterpillar(fit, level: float = 0.95):
    """lme4's ``dotplot(ranef(m, condVar = TRUE))``: the conditional modes of every level with
    the interval mode +- z * conditional SD (z the normal quantile of ``level``).

    One panel per random-effect column, one row of panels per grouping factor. As in lme4, the
    levels of a factor are sorted by their mode in its first column and keep that order in its
    other columns, so a row of panels reads across one level. A factor with many levels gets
    every k-th level label (at most ``MAX_LEVEL_LABELS`` per panel).
    """
    plt = _pyplot()
    level = _check_fraction(level, "level")
    z = float(stats.norm.ppf((1 + level) / 2))
    groups = []
    for group, frame in fit.ranef(condvar=True).items():
        columns = [c for c in frame.columns if not str(c).startswith("condsd_")]
        groups.append((group, frame, columns))
    ncols = max(len(columns) for _, _, columns in groups)
    heights = [min(max(0.17 * len(frame) + 0.9, 2.4), 9.0) for _, frame, _ in groups]
    width = max(1.2 + 3.2 * ncols, 5.6)
    fig = plt.figure(figsize=(width, sum(heights) + 0.5), layout="constrained")
    grid = fig.add_gridspec(len(groups), ncols, height_ratios=heights)
    for row, (group, frame, columns) in enumerate(groups):
        order = np.argsort(frame[columns[0]].to_numpy(), kind="stable")
        labels = [str(label) for label in frame.index[order]]
        positions = np.arange(len(order))
        first = None
        for col, column in enumerate(columns):
            ax = fig.add_subplot(grid[row, col], sharey=first)
            first = first or ax
            modes = frame[column].to_numpy(dtype=np.float64)[order]
            half = z * frame[f"condsd_{column}"].to_numpy(dtype=np.float64)[order]
            many = len(order) > 100
            ax.hlines(
                positions,
                modes - half,
                modes + half,
                color="C0",
                lw=0.6 if many else 1.2,
                gid="interval",
            )
            ax.plot(modes, positions, "o", color="C0", ms=1.5 if many else 3.5, gid="mode")
            ax.axvline(0, color=_GREY, lw=1, ls="--")
            ax.set_title(f"{group}: {column}", fontsize="medium")
            ax.set_ylim(-0.8, len(order) - 0.2)
            if col == 0:
                step = max(1, math.ceil(len(order) / MAX_LEVEL_LABELS))
                ax.set_yticks(positions[::step], labels[::step], fontsize="small")
                ax.set_ylabel(group)
            else:
                ax.tick_params(labelleft=False)
            if row == len(groups) - 1:
                ax.set_xlabel("conditional mode")
    fig.suptitle(
        f"Conditional modes, {_percent(level)} intervals: mode ± {z:.2f} conditional SD",
        fontsize="medium",
    )
    return fig


def _percent(level: float) -> str:
    return f"{100 * level:g}%"


# --- profiles ----------------------------------------------------------------------------
def _profile_curves(profile: pd.DataFrame) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Per parameter (in order of appearance): values and zetas sorted by value, reduced to
    points where both strictly increase. Points closer than 1e-4 of the parameter's range to
    the previous one are dropped: they carry no shape, only the noise of sqrt(deviance rise)
    near the estimate, which the slope (and so the density) would magnify."""
    if not isinstance(profile, pd.DataFrame):
        raise InferenceError("profile must be a DataFrame with parameter, value, zeta columns")
    missing = [c for c in ("parameter", "value", "zeta") if c not in profile.columns]
    if missing:
        raise InferenceError(f"profile frame lacks column(s) {missing}")
    curves = {}
    for name in pd.unique(profile["parameter"]):
        part = profile[profile["parameter"] == name]
        value = part["value"].to_numpy(dtype=np.float64)
        zeta = part["zeta"].to_numpy(dtype=np.float64)
        keep = np.isfinite(value) & np.isfinite(zeta)
        order = np.argsort(value[keep], kind="stable")
        value, zeta = value[keep][order], zeta[keep][order]
        gap = 1e-4 * np.ptp(value) if len(value) else 0.0
        monotone = np.zeros(len(value), dtype=bool)
        last_value, last_zeta = -np.inf, -np.inf
        for i in range(len(value)):
            if value[i] > last_value + gap and zeta[i] > last_zeta:
                monotone[i] = True
                last_value, last_zeta = value[i], zeta[i]
        curves[str(name)] = (value[monotone], zeta[monotone])
    if not curves:
        raise InferenceError("profile frame has no rows")
    return curves


def monotone_spline(x, y):
    """An increasing interpolant of increasing points: the cubic spline (not-a-knot ends; exact
    for points on a cubic, with a continuous derivative, as lme4's ``interpSpline``) when it is
    increasing between the points, otherwise the shape-preserving PCHIP interpolant."""
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    if len(x) >= 3:
        spline = CubicSpline(x, y)
        fine = np.linspace(x[0], x[-1], 20 * len(x))
        if np.all(spline.derivative()(fine) > 0):
            return spline
    return PchipInterpolator(x, y)


def profile_zeta(profile: pd.DataFrame, confint: pd.DataFrame | None = None):
    """lme4's ``xyplot(profile(m))``: zeta against the parameter, one panel per parameter.

    ``profile``: a long frame with ``parameter, value, zeta`` (zeta is the signed square root
    of the deviance's rise along the parameter's profile, 0 at the estimate). Points are joined
    by a monotone interpolation (:func:`monotone_spline`). Horizontal lines mark +-z for 50, 80,
    90, 95 and 99% confidence, with vertical lines where the curve reaches them, as lme4 draws
    them.
    ``confint`` (a frame indexed by parameter with ``lower, upper``, e.g. ``fit.confint()``)
    adds its bounds in red.
    """
    curves = _profile_curves(profile)
    if confint is not None and not {"lower", "upper"} <= set(confint.columns):
        raise InferenceError("confint must have 'lower' and 'upper' columns")
    zs = stats.norm.ppf((1 + np.asarray(PROFILE_LEVELS)) / 2)
    reach = max([np.max(np.abs(z)) for _, z in curves.values() if len(z)] + [zs[-1]])
    limit = 1.06 * reach
    fig, axes = _panels(len(curves), sharey=True)
    for ax, (name, (value, zeta)) in zip(axes, curves.items(), strict=True):
        ax.plot(value, zeta, "o", color="C0", ms=3.5, gid="points")
        if len(value) >= 2:
            grid = np.linspace(value[0], value[-1], 200)
            ax.plot(grid, monotone_spline(value, zeta)(grid), color="C0", lw=1.3, gid="curve")
            inverse = monotone_spline(zeta, value)
            for z in np.concatenate([-zs, zs]):
                ax.axhline(z, color=_GREY, lw=0.6, ls=":")
                if zeta[0] <= z <= zeta[-1]:
                    x = float(inverse(z))
                    ax.plot([x, x], [-limit, z], color=_GREY, lw=0.6, ls=":", gid="crossing")
        if confint is not None and name in confint.index:
            for bound in ("lower", "upper"):
                x = float(confint.loc[name, bound])
                if np.isfinite(x):
                    ax.axvline(x, color="C3", lw=1.2, ls="--", gid=f"confint_{bound}")
        ax.axhline(0, color=_GREY, lw=0.8)
        ax.set_ylim(-limit, limit)
        ax.set_title(name, fontsize="medium")
        ax.set_xlabel("value")
    for ax in axes[:: min(3, len(axes))]:
        ax.set_ylabel(r"$\zeta$")
    note = "dotted: 50, 80, 90, 95, 99% levels"
    if confint is not None:
        note += "; dashed red: confidence interval"
    fig.suptitle(f"Profile zeta ({note})", fontsize="medium")
    return fig


def profile_density(profile: pd.DataFrame):
    """lme4's ``densityplot(profile(m))``: the profile's implied density of each parameter,
    ``dnorm(zeta) * d zeta / d value``, from a monotone interpolation (:func:`monotone_spline`)
    of the value as a function of zeta, over the range of zeta in the frame. A profile whose
    zeta is linear in the value gives exactly a normal density. The dotted line marks the
    estimate (zeta = 0)."""
    curves = _profile_curves(profile)
    fig, axes = _panels(len(curves))
    for ax, (name, (value, zeta)) in zip(axes, curves.items(), strict=True):
        if len(value) >= 2:
            x, density = _profile_density_curve(value, zeta)
            ax.plot(x, density, color="C0", lw=1.5, gid="density")
            ax.fill_between(x, density, color="C0", alpha=0.15)
            if zeta[0] <= 0 <= zeta[-1]:
                estimate = float(monotone_spline(zeta, value)(0.0))
                ax.axvline(estimate, color=_GREY, lw=1, ls=":", gid="estimate")
        ax.set_ylim(bottom=0)
        ax.set_title(name, fontsize="medium")
        ax.set_xlabel("value")
    for ax in axes[:: min(3, len(axes))]:
        ax.set_ylabel("density")
    fig.suptitle("Profile densities", fontsize="medium")
    return fig


def _profile_density_curve(value, zeta, n: int = 200):
    spline = monotone_spline(zeta, value)
    grid = np.linspace(zeta[0], zeta[-1], n)
    with np.errstate(divide="ignore"):
        density = stats.norm.pdf(grid) / spline.derivative()(grid)
    return spline(grid), density


# --- bootstrap ---------------------------------------------------------------------------
def bootstrap_distributions(boot, level: float = 0.95):
    """A histogram per parameter of a :class:`~jaxlmm.bootstrap.BootstrapResult`'s converged
    replicates, with the fitted estimate (solid) and the ``level`` percentile interval
    (dashed) of ``boot.confint(level)``."""
    level = _check_fraction(level, "level")
    used = boot.samples[np.asarray(boot.converged, dtype=bool)]
    if not len(used):
        raise InferenceError("no bootstrap replicate converged")
    bounds = boot.confint(level)
    fig, axes = _panels(len(used.columns))
    for ax, name in zip(axes, used.columns, strict=True):
        values = used[name].to_numpy(dtype=np.float64)
        values = values[np.isfinite(values)]
        bins = int(np.clip(np.sqrt(len(values)), 10, 50))
        ax.hist(values, bins=bins, color="C0", alpha=0.7, gid="histogram")
        ax.axvline(boot.estimates[name], color="C3", lw=1.5, gid="estimate")
        for bound in ("lower", "upper"):
            ax.axvline(bounds.loc[name, bound], color="k", lw=1.2, ls="--", gid=f"ci_{bound}")
        ax.set_title(name, fontsize="medium")
        ax.set_xlabel("value")
    for ax in axes[:: min(3, len(axes))]:
        ax.set_ylabel("replicates")
    fig.suptitle(
        f"Parametric bootstrap: {len(used)} converged of {len(boot.samples)} replicates "
        f"(red: estimate; dashed: {_percent(level)} percentile interval)",
        fontsize="medium",
    )
    return fig


# --- batch fits --------------------------------------------------------------------------
def _term_rows(batch, term) -> pd.DataFrame:
    """Rows of one term of ``batch.coef_table()`` (or of a table already computed)."""
    if isinstance(batch, pd.DataFrame):
        table = batch
        if table.index.nlevels != 2 or "term" not in table.index.names:
            raise InferenceError("a table must be indexed by (response, term), as coef_table()")
        require_term(term, pd.unique(table.index.get_level_values("term")))
    else:
        require_term(term, batch.design.fixed_names)
        table = batch.coef_table()
    return table.xs(term, level="term")


def bh_adjust(p) -> np.ndarray:
    """Benjamini-Hochberg adjusted p-values (R's ``p.adjust(p, "BH")``); NaN stays NaN and is
    not counted."""
    p = np.asarray(p, dtype=np.float64)
    out = np.full_like(p, np.nan)
    valid = np.flatnonzero(np.isfinite(p))
    m = len(valid)
    if not m:
        return out
    order = valid[np.argsort(p[valid], kind="stable")]
    scaled = p[order] * m / np.arange(1, m + 1)
    out[order] = np.minimum(np.minimum.accumulate(scaled[::-1])[::-1], 1.0)
    return out


def pvalue_histogram(batch, term: str, bins: int = 20):
    """Histogram of one coefficient's p-values across the responses of a batch fit, with the
    count a uniform (null) distribution expects per bin.

    ``batch``: a :class:`~jaxlmm.BatchFit` or a table it already made with ``coef_table()``.
    """
    plt = _pyplot()
    if not isinstance(bins, (int, np.integer)) or bins < 1:
        raise InferenceError(f"bins must be a positive integer, got {bins!r}")
    p = _term_rows(batch, term)["p_value"].to_numpy(dtype=np.float64)
    p = p[np.isfinite(p)]
    if not len(p):
        raise InferenceError(f"no response has a p-value for {term!r}")
    fig, ax = plt.subplots(figsize=(6, 4.2), layout="constrained")
    ax.hist(p, bins=np.linspace(0, 1, bins + 1), color="C0", alpha=0.75, gid="histogram")
    ax.axhline(len(p) / bins, color="C3", lw=1.5, ls="--", label="uniform", gid="uniform")
    ax.set(xlim=(0, 1), xlabel="p-value", ylabel="responses")
    ax.set_title(f"{term}: p-values of {len(p)} responses", fontsize="medium")
    ax.legend(fontsize="small")
    return fig


def volcano(batch, term: str, alpha: float = 0.05, adjust: str | None = None):
    """Volcano plot of one coefficient across a batch: estimate against -log10(p), responses
    with p < ``alpha`` highlighted. ``adjust="bh"`` tests Benjamini-Hochberg adjusted p-values
    instead (the dashed line is then the largest raw p-value still significant).

    ``batch``: a :class:`~jaxlmm.BatchFit` or a table it already made with ``coef_table()``.
    """
    plt = _pyplot()
    alpha = _check_fraction(alpha, "alpha")
    method = "none" if adjust is None else str(adjust).lower()
    if method not in ("none", "bh", "fdr"):
        raise InferenceError(f"adjust must be None or 'bh', got {adjust!r}")
    rows = _term_rows(batch, term)
    estimate = rows["estimate"].to_numpy(dtype=np.float64)
    p = rows["p_value"].to_numpy(dtype=np.float64)
    keep = np.isfinite(estimate) & np.isfinite(p)
    estimate, p = estimate[keep], p[keep]
    if not len(p):
        raise InferenceError(f"no response has a p-value for {term!r}")
    tested = bh_adjust(p) if method != "none" else p
    significant = tested < alpha
    positive = p[p > 0]
    floor = positive.min() if len(positive) else 1e-300
    height = -np.log10(np.maximum(p, floor))

    fig, ax = plt.subplots(figsize=(6.5, 4.8), layout="constrained")
    n = len(p)
    what = "BH-adjusted p" if method != "none" else "p"
    _scatter(
        ax,
        estimate[~significant],
        height[~significant],
        n,
        color="0.6",
        label=f"not significant ({int((~significant).sum())})",
        gid="not_significant",
    )
    _scatter(
        ax,
        estimate[significant],
        height[significant],
        n,
        color="C3",
        label=f"{what} < {alpha:g} ({int(significant.sum())})",
        gid="significant",
    )
    threshold = alpha if method == "none" else (p[significant].max() if significant.any() else 0)
    if threshold > 0:
        ax.axhline(-np.log10(threshold), color=_GREY, lw=1, ls="--", gid="threshold")
    ax.axvline(0, color=_GREY, lw=0.8)
    ax.set(xlabel=f"estimate of {term}", ylabel=r"$-\log_{10}(p)$")
    ax.set_title(
        f"{term}: {int(significant.sum())} of {n} responses with {what} < {alpha:g}",
        fontsize="medium",
    )
    fig.legend(fontsize="small", loc="outside lower center", ncols=2, frameon=False)
    return fig
