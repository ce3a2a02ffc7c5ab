"""jaxlmm.plots: every figure renders, has its panels and labels, and shows the right numbers."""

import ast
import dataclasses
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats

matplotlib = pytest.importorskip("matplotlib")
matplotlib.use("Agg")

import matplotlib.image  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
from scipy.interpolate import PchipInterpolator  # noqa: E402

import jaxlmm  # noqa: E402
from jaxlmm import plots  # noqa: E402

FORMULA = "Reaction ~ Days + (Days | Subject)"


@pytest.fixture(scope="module")
def fit(sleepstudy):
    return jaxlmm.lmer(FORMULA, sleepstudy)


@pytest.fixture(scope="module")
def boot(fit):
    return fit.bootstrap(50, seed=1)


@pytest.fixture(scope="module")
def batch(sleepstudy):
    """20 responses on the sleepstudy design; the Days effect is 0 in the first 10."""
    rng = np.random.default_rng(5)
    subject = sleepstudy["Subject"].cat.codes.to_numpy()
    days = sleepstudy["Days"].to_numpy(dtype=float)
    slope = np.where(np.arange(20) < 10, 0.0, 8.0)
    b0 = rng.normal(0, 25, (20, subject.max() + 1))
    y = 250 + slope[:, None] * days + b0[:, subject] + rng.normal(0, 25, (20, len(days)))
    return jaxlmm.lmer_batch("y ~ Days + (1 | Subject)", sleepstudy, y, progress=False)


@pytest.fixture(scope="module")
def table(batch):
    return batch.coef_table()


@pytest.fixture(autouse=True)
def close_figures():
    yield
    plt.close("all")


def render(fig, tmp_path, name="figure"):
    """Save ``fig`` as a PNG and check that the image is not blank."""
    path = tmp_path / f"{name}.png"
    fig.savefig(path, dpi=60)
    image = matplotlib.image.imread(path)[..., :3]
    assert image.std() > 0.08
    assert (image.min(axis=-1) < 0.9).mean() > 0.03  # some ink beyond the frame
    return image


def by_gid(ax, gid):
    return [a for a in ax.get_children() if a.get_gid() == gid]


def vertical_positions(ax, gid):
    return sorted(line.get_xdata()[0] for line in by_gid(ax, gid))


# --- helpers -------------------------------------------------------------------------------
def test_matplotlib_is_imported_lazily(monkeypatch, fit):
    tree = ast.parse(Path(plots.__file__).read_text())
    top = [n for n in tree.body if isinstance(n, (ast.Import, ast.ImportFrom))]
    modules = [a.name for n in top if isinstance(n, ast.Import) for a in n.names]
    modules += [n.module or "" for n in top if isinstance(n, ast.ImportFrom)]
    assert not any(m.startswith("matplotlib") for m in modules)
    monkeypatch.setitem(sys.modules, "matplotlib.pyplot", None)
    with pytest.raises(ImportError, match=r'pip install "jaxlmm\[plot\]"'):
        plots.diagnostics(fit)


def test_ppoints_and_smoother():
    # R: ppoints(5); ppoints(12)
    np.testing.assert_allclose(
        plots.ppoints(5), [0.1190476, 0.3095238, 0.5, 0.6904762, 0.8809524], atol=1e-7
    )
    np.testing.assert_allclose(plots.ppoints(12), (np.arange(1, 13) - 0.5) / 12)
    x = np.random.default_rng(0).uniform(0, 10, 200)
    grid, trend = plots.smooth(x, 3 - 2 * x)
    np.testing.assert_allclose(trend, 3 - 2 * grid, atol=1e-9)  # local-linear: lines exact
    clean = plots.smooth(x, np.sin(x), span=0.2)[1]
    assert np.max(np.abs(clean - np.sin(grid))) < 0.2  # follows the curve
    outlier = np.sin(x) + np.where(np.arange(200) == 7, 50.0, 0.0)
    robust = plots.smooth(x, outlier, span=0.2)[1]
    assert np.max(np.abs(robust - clean)) < 0.1  # the robustness passes discount the outlier
    assert np.max(np.abs(plots.smooth(x, outlier, span=0.2, iterations=0)[1] - clean)) > 1
    assert plots.smooth(np.ones(10), np.arange(10.0)) is None


def test_require_term():
    assert plots.require_term("Days", ["(Intercept)", "Days"]) == "Days"
    with pytest.raises(jaxlmm.InferenceError, match=r"'days' is not in the fit.*Days"):
        plots.require_term("days", ["(Intercept)", "Days"])
    assert issubclass(jaxlmm.InferenceError, ValueError)


def test_bh_adjust():
    # R: p.adjust(c(0.001, 0.01, 0.04, 0.5), "BH"); p.adjust(c(0.04, NA, 0.01), "BH")
    np.testing.assert_allclose(
        plots.bh_adjust([0.001, 0.01, 0.04, 0.5]), [0.004, 0.02, 0.04 * 4 / 3, 0.5]
    )
    np.testing.assert_allclose(plots.bh_adjust([0.04, np.nan, 0.01]), [0.04, np.nan, 0.02])
    np.testing.assert_allclose(plots.bh_adjust([0.01, 0.02, 0.03, 0.04, 0.05]), [0.05] * 5)


# --- single fits ---------------------------------------------------------------------------
def test_diagnostics(fit, tmp_path):
    fig = plots.diagnostics(fit)
    render(fig, tmp_path)
    axes = fig.axes
    assert [ax.get_title() for ax in axes] == [
        "Residuals vs fitted",
        "Normal Q-Q: scaled residuals",
        "Normal Q-Q: conditional modes",
        "Scale-location",
    ]
    assert all(ax.get_xlabel() and ax.get_ylabel() for ax in axes)
    assert fig._suptitle.get_text() == FORMULA
    fitted, residuals = fit.fitted.to_numpy(), fit.residuals.to_numpy()

    (points,) = by_gid(axes[0], "residuals")
    np.testing.assert_allclose(points.get_offsets(), np.column_stack([fitted, residuals]))
    assert len(by_gid(axes[0], "trend")) == 1

    (qq,) = by_gid(axes[1], "qq")
    theoretical = stats.norm.ppf((np.arange(1, 181) - 0.5) / 180)  # R: qnorm(ppoints(180))
    expected = np.column_stack([theoretical, np.sort(residuals / fit.sigma)])
    np.testing.assert_allclose(qq.get_offsets(), expected)

    modes = fit.ranef()["Subject"]
    for column in modes.columns:
        (marks,) = by_gid(axes[2], f"modes:Subject:{column}")
        values = modes[column].to_numpy()
        offsets = marks.get_offsets()
        np.testing.assert_allclose(offsets[:, 0], stats.norm.ppf((np.arange(1, 19) - 0.5) / 18))
        np.testing.assert_allclose(offsets[:, 1], np.sort(values / values.std(ddof=1)))
    labels = [t.get_text() for t in axes[2].get_legend().get_texts()]
    assert labels == ["Subject: (Intercept)", "Subject: Days"]

    (scale,) = by_gid(axes[3], "scale_location")
    np.testing.assert_allclose(scale.get_offsets()[:, 1], np.sqrt(np.abs(residuals / fit.sigma)))


@pytest.mark.parametrize("level", [0.95, 0.9])
def test_caterpillar(fit, tmp_path, level):
    fig = plots.ranef_caterpillar(fit, level=level)
    render(fig, tmp_path)
    assert [ax.get_title() for ax in fig.axes] == ["Subject: (Intercept)", "Subject: Days"]
    assert fig.axes[0].get_ylabel() == "Subject"
    assert all(ax.get_xlabel() == "conditional mode" for ax in fig.axes)
    ranef = fit.ranef(condvar=True)["Subject"]
    order = np.argsort(ranef["(Intercept)"].to_numpy())  # lme4: sorted by the first column
    ticks = [t.get_text() for t in fig.axes[0].get_yticklabels()]
    assert ticks == [str(s) for s in ranef.index[order]]
    z = stats.norm.ppf((1 + level) / 2)
    for ax, column in zip(fig.axes, ["(Intercept)", "Days"], strict=True):
        mode = ranef[column].to_numpy()[order]
        sd = ranef[f"condsd_{column}"].to_numpy()[order]
        (intervals,) = by_gid(ax, "interval")
        segments = np.array(intervals.get_segments())  # (levels, 2 ends, xy)
        np.testing.assert_allclose(segments[:, 0, 0], mode - z * sd)
        np.testing.assert_allclose(segments[:, 1, 0], mode + z * sd)
        np.testing.assert_allclose(segments[:, 0, 1], np.arange(18))
        (dots,) = by_gid(ax, "mode")
        np.testing.assert_allclose(dots.get_xdata(), mode)
    with pytest.raises(jaxlmm.InferenceError, match="level"):
        plots.ranef_caterpillar(fit, level=95)


class _RanefStub:
    """Just enough of a fit for the caterpillar: 300 levels of g, 20 of h with two columns."""

    def ranef(self, condvar=False):
        rng = np.random.default_rng(0)
        g = pd.DataFrame(
            {"(Intercept)": rng.normal(size=300), "condsd_(Intercept)": np.full(300, 0.3)},
            index=pd.Index([f"g{i}" for i in range(300)], name="g"),
        )
        h = pd.DataFrame(
            {
                "(Intercept)": rng.normal(size=20),
                "x": rng.normal(size=20),
                "condsd_(Intercept)": np.full(20, 0.2),
                "condsd_x": np.full(20, 0.1),
            },
            index=pd.Index([f"h{i}" for i in range(20)], name="h"),
        )
        return {"g": g, "h": h}


def test_caterpillar_many_levels_and_factors(tmp_path):
    fig = plots.ranef_caterpillar(_RanefStub())
    render(fig, tmp_path)
    titles = [ax.get_title() for ax in fig.axes]
    assert titles == ["g: (Intercept)", "h: (Intercept)", "h: x"]
    g_labels = fig.axes[0].get_yticklabels()
    assert 20 <= len(g_labels) <= plots.MAX_LEVEL_LABELS  # thinned: every 8th of 300
    assert len(fig.axes[1].get_yticklabels()) == 20  # all 20 of h
    assert len(by_gid(fig.axes[0], "interval")[0].get_segments()) == 300


# --- profiles ------------------------------------------------------------------------------
M, S = 2.0, 0.5  # parameter "a": a quadratic deviance, zeta = (a - M) / S
L, T = 1.5, 0.3  # parameter "b": zeta = log(b / L) / T (its density is log-normal)


@pytest.fixture(scope="module")
def profile():
    a = M + S * np.linspace(-3, 3, 13)
    b = L * np.exp(T * np.linspace(-3, 3, 25))
    frame = pd.DataFrame(
        {
            "parameter": ["a"] * 13 + ["b"] * 25,
            "value": np.concatenate([a, b]),
            "zeta": np.concatenate([(a - M) / S, np.log(b / L) / T]),
        }
    )
    noise = pd.DataFrame({"parameter": ["a"], "value": [M + 0.3], "zeta": [-0.1]})
    return pd.concat([frame, noise], ignore_index=True)  # a non-monotone point is dropped


def test_profile_zeta(profile, tmp_path):
    confint = pd.DataFrame({"lower": [M - 1.96 * S], "upper": [M + 1.96 * S]}, index=["a"])
    fig = plots.profile_zeta(profile, confint)
    render(fig, tmp_path)
    assert [ax.get_title() for ax in fig.axes] == ["a", "b"]
    assert fig.axes[0].get_ylabel() == r"$\zeta$" and fig.axes[0].get_xlabel() == "value"
    zs = stats.norm.ppf((1 + np.array(plots.PROFILE_LEVELS)) / 2)
    crossings = np.sort(np.concatenate([-zs, zs]))
    np.testing.assert_allclose(vertical_positions(fig.axes[0], "crossing"), M + S * crossings)
    np.testing.assert_allclose(
        vertical_positions(fig.axes[1], "crossing"), L * np.exp(T * crossings), rtol=1e-3
    )
    (curve,) = by_gid(fig.axes[0], "curve")
    np.testing.assert_allclose(curve.get_ydata(), (curve.get_xdata() - M) / S, atol=1e-12)
    (points,) = by_gid(fig.axes[0], "points")
    assert len(points.get_xdata()) == 13
    assert vertical_positions(fig.axes[0], "confint_lower") == [M - 1.96 * S]
    assert vertical_positions(fig.axes[0], "confint_upper") == [M + 1.96 * S]
    assert not by_gid(fig.axes[1], "confint_lower")  # b has no interval in confint
    assert "confidence interval" in fig._suptitle.get_text()


def test_profile_density(profile, tmp_path):
    fig = plots.profile_density(profile)
    render(fig, tmp_path)
    assert [ax.get_title() for ax in fig.axes] == ["a", "b"]
    assert fig.axes[0].get_ylabel() == "density"
    (line,) = by_gid(fig.axes[0], "density")
    x, density = line.get_xdata(), line.get_ydata()
    np.testing.assert_allclose(x[[0, -1]], [M - 3 * S, M + 3 * S])
    np.testing.assert_allclose(density, stats.norm.pdf(x, M, S), rtol=1e-10)  # exactly normal
    (line,) = by_gid(fig.axes[1], "density")
    x, density = line.get_xdata(), line.get_ydata()
    np.testing.assert_allclose(density, stats.lognorm.pdf(x, T, scale=L), rtol=2e-3)
    assert vertical_positions(fig.axes[0], "estimate") == pytest.approx([M])
    assert vertical_positions(fig.axes[1], "estimate") == pytest.approx([L], rel=1e-4)


def test_profile_input_checks():
    with pytest.raises(jaxlmm.InferenceError, match="zeta"):
        plots.profile_zeta(pd.DataFrame({"parameter": ["a"], "value": [1.0]}))
    with pytest.raises(jaxlmm.InferenceError, match="no rows"):
        plots.profile_density(pd.DataFrame(columns=["parameter", "value", "zeta"]))


def test_monotone_spline():
    x = np.array([0.0, 1, 2, 3, 4])
    linear = plots.monotone_spline(x, 2 * x + 1)
    np.testing.assert_allclose(linear.derivative()(np.linspace(0, 4, 9)), 2.0)
    step = plots.monotone_spline(x, np.array([0, 0.01, 0.02, 5, 5.01]))
    assert isinstance(step, PchipInterpolator)  # the cubic spline would overshoot
    assert np.all(step.derivative()(np.linspace(0, 4, 200)) >= 0)


# --- bootstrap -----------------------------------------------------------------------------
def test_bootstrap_distributions(boot, tmp_path):
    fig = plots.bootstrap_distributions(boot, level=0.9)
    render(fig, tmp_path)
    names = list(boot.samples.columns)
    assert [ax.get_title() for ax in fig.axes] == names
    assert len(fig.axes) == 6
    assert fig.axes[0].get_ylabel() == "replicates"
    bounds = boot.confint(0.9)
    converged = int(boot.converged.sum())
    for ax, name in zip(fig.axes, names, strict=True):
        assert vertical_positions(ax, "estimate") == pytest.approx([boot.estimates[name]])
        assert vertical_positions(ax, "ci_lower") == pytest.approx([bounds.loc[name, "lower"]])
        assert vertical_positions(ax, "ci_upper") == pytest.approx([bounds.loc[name, "upper"]])
        finite = np.isfinite(boot.samples.loc[boot.converged, name]).sum()
        assert sum(p.get_height() for p in ax.patches) == finite
    assert f"{converged} converged of 50" in fig._suptitle.get_text()

    converged = boot.converged.copy()
    converged[:5] = False
    fewer = dataclasses.replace(boot, converged=converged)
    fig = plots.bootstrap_distributions(fewer)
    assert f"{int(converged.sum())} converged of 50" in fig._suptitle.get_text()
    assert sum(p.get_height() for p in fig.axes[-1].patches) == converged.sum()


# --- batch fits ----------------------------------------------------------------------------
def test_pvalue_histogram(batch, table, tmp_path):
    fig = plots.pvalue_histogram(batch, "Days", bins=10)  # from the BatchFit itself
    render(fig, tmp_path)
    (ax,) = fig.axes
    assert ax.get_xlabel() == "p-value" and ax.get_ylabel() == "responses"
    assert ax.get_title() == "Days: p-values of 20 responses"
    p = table.xs("Days", level="term")["p_value"].to_numpy()
    counts, _ = np.histogram(p, bins=np.linspace(0, 1, 11))
    np.testing.assert_array_equal([patch.get_height() for patch in ax.patches], counts)
    (uniform,) = by_gid(ax, "uniform")
    assert uniform.get_ydata()[0] == pytest.approx(20 / 10)

    fig = plots.pvalue_histogram(table, "(Intercept)")  # from a table already computed
    assert len(fig.axes[0].patches) == 20
    with pytest.raises(jaxlmm.InferenceError, match=r"'day' is not in the fit"):
        plots.pvalue_histogram(batch, "day")
    with pytest.raises(jaxlmm.InferenceError, match="available"):
        plots.pvalue_histogram(table, "day")
    with pytest.raises(jaxlmm.InferenceError, match="bins"):
        plots.pvalue_histogram(table, "Days", bins=0)


@pytest.mark.parametrize("adjust", [None, "bh"])
def test_volcano(table, tmp_path, adjust):
    fig = plots.volcano(table, "Days", alpha=0.01, adjust=adjust)
    render(fig, tmp_path)
    (ax,) = fig.axes
    assert ax.get_xlabel() == "estimate of Days" and "log" in ax.get_ylabel()
    rows = table.xs("Days", level="term")
    p, estimate = rows["p_value"].to_numpy(), rows["estimate"].to_numpy()
    tested = plots.bh_adjust(p) if adjust else p
    significant = tested < 0.01
    assert 5 <= significant.sum() <= 15  # the 10 responses with a Days effect, roughly
    (hits,) = by_gid(ax, "significant")
    (rest,) = by_gid(ax, "not_significant")
    expected = np.column_stack([estimate, -np.log10(p)])
    np.testing.assert_allclose(hits.get_offsets(), expected[significant])
    np.testing.assert_allclose(rest.get_offsets(), expected[~significant])
    (threshold,) = by_gid(ax, "threshold")
    cut = 0.01 if adjust is None else p[significant].max()
    assert threshold.get_ydata()[0] == pytest.approx(-np.log10(cut))
    assert f"{significant.sum()} of 20 responses" in ax.get_title()


def test_volcano_refuses(batch, table):
    with pytest.raises(jaxlmm.InferenceError, match="adjust"):
        plots.volcano(table, "Days", adjust="holm")
    with pytest.raises(jaxlmm.InferenceError, match="alpha"):
        plots.volcano(table, "Days", alpha=5)
    with pytest.raises(jaxlmm.InferenceError, match="not in the fit"):
        plots.volcano(batch, "Age")
