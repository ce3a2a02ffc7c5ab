"""Render the plot gallery (docs/gallery/*.png) from jaxlmm's bundled data sets.

    python docs/gallery/make_gallery.py [output folder]

Needs matplotlib (``pip install "jaxlmm[plot]"``). Every figure comes from a real fit:

- sleepstudy, ``Reaction ~ Days + (Days | Subject)`` (REML): diagnostics, caterpillar,
  parametric bootstrap (500 replicates) and the profile of the ML deviance;
- Penicillin, ``diameter ~ 1 + (1 | plate) + (1 | sample)``: a caterpillar with two factors;
- 400 responses simulated on the sleepstudy design (the Days effect is 0 in 70% of them):
  p-value histogram and volcano plot of ``Days``.

The profile frame (parameter, value, zeta) is computed here on a grid of values between the
99.5% profile bounds of each parameter: at each value the ML deviance is minimised over the
other parameters with the same (private) vmapped steps that ``fit.confint(method="profile")``
uses, and zeta = sign(value - estimate) sqrt(deviance - minimum).
"""

from __future__ import annotations

import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import jax.numpy as jnp  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

import jaxlmm  # noqa: E402
from jaxlmm import parameters, plots  # noqa: E402
from jaxlmm.profile import _fixed_step, _varpar_step  # noqa: E402

HERE = Path(__file__).parent


def profile_frame(fit, n_points: int = 16, level: float = 0.995) -> pd.DataFrame:
    """lme4's ``profile(m)`` as a long frame: ``n_points`` values per parameter spanning its
    ``level`` profile interval, with the zeta of the ML deviance at each."""
    ml = fit.ml_fit()
    sizes = ml.blocks.sizes
    psi = np.asarray(parameters.sdcor(jnp.asarray(ml.theta), ml.sigma, sizes))
    beta = ml.fixef.to_numpy()
    names = parameters.sdcor_names(fit.design.terms) + list(fit.design.fixed_names)
    bounds = fit.confint(method="profile", level=level).loc[names]
    estimates = np.concatenate([psi, beta])
    half = n_points // 2  # points on each side of the estimate, evenly spaced
    grids = [
        np.concatenate([np.linspace(lo, est, half + 1)[:-1], np.linspace(est, hi, half + 1)])
        for (lo, hi), est in zip(bounds.to_numpy(), estimates, strict=True)
    ]
    for k, name in enumerate(names):
        if name.startswith("sd_"):  # an SD's profile may reach its edge, 0
            grids[k] = np.maximum(grids[k], 1e-8)

    n_psi = len(psi)
    js = np.concatenate([np.full(len(grids[j]), j) for j in range(n_psi)])
    xs = np.concatenate(grids[:n_psi])
    free0 = np.array([np.delete(psi, j) for j in js])
    _, psi_dev, _ = _varpar_step(ml.blocks, free0, js, xs)

    jb = np.concatenate([np.full(len(grids[n_psi + j]), j) for j in range(len(beta))])
    xb = np.concatenate(grids[n_psi:])
    _, beta_dev, _ = _fixed_step(ml.blocks, np.tile(ml.theta, (len(jb), 1)), jb, xb)

    deviance = np.concatenate([np.asarray(psi_dev), np.asarray(beta_dev)])
    value = np.concatenate([xs, xb])
    index = np.concatenate([js, n_psi + jb])
    rise = np.maximum(deviance - ml.objective, 0.0)
    zeta = np.sign(value - estimates[index]) * np.sqrt(rise)
    return pd.DataFrame({"parameter": [names[k] for k in index], "value": value, "zeta": zeta})


def simulated_batch(data: pd.DataFrame, n: int = 400, seed: int = 7):
    rng = np.random.default_rng(seed)
    subject = data["Subject"].cat.codes.to_numpy()
    days = data["Days"].to_numpy(dtype=float)
    slope = np.where(rng.random(n) < 0.3, rng.normal(0, 4, n), 0.0)
    b0 = rng.normal(0, 25, (n, subject.max() + 1))
    b1 = rng.normal(0, 6, (n, subject.max() + 1))
    noise = rng.normal(0, 25, (n, len(days)))
    y = 250 + slope[:, None] * days + b0[:, subject] + b1[:, subject] * days + noise
    return jaxlmm.lmer_batch("y ~ Days + (Days | Subject)", data, y, progress=False)


def main(out: Path = HERE) -> None:
    out.mkdir(parents=True, exist_ok=True)

    def save(fig, name):
        fig.savefig(out / f"{name}.png", dpi=110)
        plt.close(fig)
        print(out / f"{name}.png")

    sleep = jaxlmm.datasets.load("sleepstudy")
    fit = jaxlmm.lmer("Reaction ~ Days + (Days | Subject)", sleep)
    save(plots.diagnostics(fit), "diagnostics")
    save(plots.ranef_caterpillar(fit), "ranef_caterpillar")

    penicillin = jaxlmm.datasets.load("Penicillin")
    pen = jaxlmm.lmer("diameter ~ 1 + (1 | plate) + (1 | sample)", penicillin)
    save(plots.ranef_caterpillar(pen), "ranef_caterpillar_penicillin")

    profile = profile_frame(fit)
    save(plots.profile_zeta(profile, fit.confint(method="profile")), "profile_zeta")
    save(plots.profile_density(profile), "profile_density")

    save(plots.bootstrap_distributions(fit.bootstrap(500, seed=1)), "bootstrap")

    table = simulated_batch(sleep).coef_table()
    save(plots.pvalue_histogram(table, "Days"), "pvalue_histogram")
    save(plots.volcano(table, "Days", adjust="bh"), "volcano")


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else HERE)
