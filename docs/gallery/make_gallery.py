"""Render the plot gallery (docs/gallery/*.png) from jaxlmm's bundled data sets.

    python docs/gallery/make_gallery.py [output folder]

Needs matplotlib (``pip install "jaxlmm[plot]"``). Every figure comes from a real fit:

- sleepstudy, ``Reaction ~ Days + (Days | Subject)`` (REML): diagnostics, caterpillar,
  parametric bootstrap (500 replicates) and the profile of the ML deviance;
- Penicillin, ``diameter ~ 1 + (1 | plate) + (1 | sample)``: a caterpillar with two factors;
- 400 responses simulated on the sleepstudy design (the Days effect is 0 in 70% of them):
  p-value histogram and volcano plot of ``Days``.
"""

from __future__ import annotations

import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

import jaxlmm  # noqa: E402

HERE = Path(__file__).parent


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
    save(fit.plot(), "diagnostics")
    save(fit.plot_ranef(), "ranef_caterpillar")

    penicillin = jaxlmm.datasets.load("Penicillin")
    pen = jaxlmm.lmer("diameter ~ 1 + (1 | plate) + (1 | sample)", penicillin)
    save(pen.plot_ranef(), "ranef_caterpillar_penicillin")

    save(fit.plot_profile(), "profile_zeta")
    save(fit.plot_profile(density=True), "profile_density")
    save(fit.bootstrap(500, seed=1).plot(), "bootstrap")

    batch = simulated_batch(sleep)
    save(batch.plot_pvalues("Days"), "pvalue_histogram")
    save(batch.plot_volcano("Days", adjust="bh"), "volcano")


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else HERE)
