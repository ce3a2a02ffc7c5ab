"""A neural network trained with the LMM likelihood as its loss (LMMNN; Simchoni and Rosset,
NeurIPS 2021 and JMLR 2023), with jaxlmm's functional core.

    pip install ".[nn]" && python experiments/lmmnn.py [--steps N] [--skip-insteval]

The network f(X) enters the model ``y ~ 0 + (1 | g)`` as an offset: its weights and theta are
trained together on the ML deviance ``Model.deviance(theta, offset=f(X))`` (optax Adam, full
batch). Predictions are f(X) plus the conditional mode of the row's level
(``jaxlmm.estimate`` at the trained offset; zero for a level not seen in training).

1. Simulated random intercepts as in the papers: N = 100,000 (80/20 split), X ~ U(-1, 1)^10,
   f = X b cos(X b) + 2 x0 x1, sigma_e^2 = sigma_b^2 = 1, q = 1,000 levels. Beside it: the same
   network ignoring the group (MSE loss) and a linear LMM (``jaxlmm.lmer``).
2. InstEval, 5-fold: crossed intercepts for s, d and dept; features studage, lectage and
   service (one-hot); predictions clipped to [1, 5]. Beside it: ``jaxlmm.lmer`` with the
   features as fixed effects.

Prints test MSE and seconds per fit beside the published figures. The network is float32 (as
deep-learning code usually is), so the deviance is computed in float32 too.
"""

from __future__ import annotations

import argparse
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pandas as pd

import jaxlmm

PUBLISHED = {
    "simulated": {"LMMNN": "1.103", "network ignoring the group": "2.15", "linear LMM": "2.94"},
    "InstEval": {"lme4": "1.447 +- 0.020", "LMMNN": "1.449 +- 0.011"},
}


def init_mlp(key, sizes):
    params = []
    layers = zip(sizes[:-1], sizes[1:], strict=True)
    for k, (n_in, n_out) in zip(jax.random.split(key, len(sizes) - 1), layers, strict=True):
        scale = jnp.sqrt(2.0 / n_in)
        params.append((scale * jax.random.normal(k, (n_in, n_out)), jnp.zeros(n_out)))
    return params


def mlp(params, x):
    for w, b in params[:-1]:
        x = jax.nn.relu(x @ w + b)
    w, b = params[-1]
    return (x @ w + b)[:, 0]


def train(loss, params, steps: int, learning_rate: float):
    optimiser = optax.adam(learning_rate)
    state = optimiser.init(params)

    @jax.jit
    def step(params, state):
        value, grads = jax.value_and_grad(loss)(params)
        updates, state = optimiser.update(grads, state, params)
        return optax.apply_updates(params, updates), state, value

    for _ in range(steps):
        params, state, _ = step(params, state)
    return params


def lmmnn(train_frame, test_frame, features, formula, steps, hidden, clip=None):
    """Train the network on the LMM deviance; test-set predictions."""
    model = jaxlmm.model(formula, train_frame, reml=False)
    x_train = jnp.asarray(train_frame[features].to_numpy(np.float32))
    x_test = jnp.asarray(test_frame[features].to_numpy(np.float32))
    key = jax.random.PRNGKey(0)
    params = {
        "net": init_mlp(key, [len(features), *hidden, 1]),
        "log_theta": jnp.zeros(model.n_theta),
    }
    n = len(train_frame)

    def loss(params):
        offset = mlp(params["net"], x_train)
        return model.deviance(jnp.exp(params["log_theta"]), offset=offset) / n

    params = train(loss, params, steps, 1e-3)
    offset = mlp(params["net"], x_train)
    estimates = jaxlmm.estimate(model, offset=offset, theta0=jnp.exp(params["log_theta"]))
    rows = model.new_rows(test_frame)
    predictions = np.asarray(
        jaxlmm.predict_rows(estimates, rows, offset=mlp(params["net"], x_test))
    )
    return predictions if clip is None else np.clip(predictions, *clip)


def plain_network(train_frame, test_frame, features, steps, hidden):
    x_train = jnp.asarray(train_frame[features].to_numpy(np.float32))
    y_train = jnp.asarray(train_frame["y"].to_numpy(np.float32))
    params = init_mlp(jax.random.PRNGKey(0), [len(features), *hidden, 1])
    params = train(lambda p: jnp.mean((mlp(p, x_train) - y_train) ** 2), params, steps, 1e-3)
    return np.asarray(mlp(params, jnp.asarray(test_frame[features].to_numpy(np.float32))))


def mse(frame, predictions) -> float:
    return float(np.mean((frame["y"].to_numpy() - predictions) ** 2))


def simulated(steps: int):
    rng = np.random.default_rng(2021)
    n, q, p = 100_000, 1_000, 10
    x = rng.uniform(-1, 1, (n, p))
    coefficients = rng.uniform(-1, 1, p)
    xb = x @ coefficients
    f = xb * np.cos(xb) + 2 * x[:, 0] * x[:, 1]
    g = rng.integers(0, q, n)
    y = f + rng.normal(0, 1, q)[g] + rng.normal(0, 1, n)
    features = [f"x{k}" for k in range(p)]
    frame = pd.DataFrame(x, columns=features).assign(g=g, y=y)
    test = rng.permutation(n) < n // 5
    train_frame, test_frame = frame[~test], frame[test]
    hidden = (100, 50, 25, 12)
    rows = []
    start = time.perf_counter()
    predictions = lmmnn(train_frame, test_frame, features, "y ~ 0 + (1 | g)", steps, hidden)
    rows.append(("LMMNN (jaxlmm)", mse(test_frame, predictions), time.perf_counter() - start))
    start = time.perf_counter()
    predictions = plain_network(train_frame, test_frame, features, steps, hidden)
    rows.append(
        ("network ignoring the group", mse(test_frame, predictions), time.perf_counter() - start)
    )
    start = time.perf_counter()
    fit = jaxlmm.lmer("y ~ " + " + ".join(features) + " + (1 | g)", train_frame, reml=False)
    predictions = fit.predict(test_frame, allow_new_levels=True).to_numpy()
    rows.append(("linear LMM", mse(test_frame, predictions), time.perf_counter() - start))
    return rows


def insteval(steps: int):
    data = jaxlmm.datasets.load("InstEval")
    features_frame = pd.get_dummies(data[["studage", "lectage", "service"]], dtype=float)
    features = list(features_frame.columns)
    frame = pd.concat([data, features_frame], axis=1)
    folds = np.random.default_rng(5).permutation(len(frame)) % 5
    results = {"LMMNN (jaxlmm)": ([], []), "linear LMM (jaxlmm.lmer)": ([], [])}
    for k in range(5):
        train_frame, test_frame = frame[folds != k], frame[folds == k]
        start = time.perf_counter()
        predictions = lmmnn(
            train_frame,
            test_frame,
            features,
            "y ~ 0 + (1 | s) + (1 | d) + (1 | dept)",
            steps,
            (10, 5),
            clip=(1, 5),
        )
        results["LMMNN (jaxlmm)"][0].append(mse(test_frame, predictions))
        results["LMMNN (jaxlmm)"][1].append(time.perf_counter() - start)
        start = time.perf_counter()
        fit = jaxlmm.lmer(
            "y ~ studage + lectage + service + (1 | s) + (1 | d) + (1 | dept)", train_frame
        )
        predictions = np.clip(fit.predict(test_frame, allow_new_levels=True).to_numpy(), 1, 5)
        results["linear LMM (jaxlmm.lmer)"][0].append(mse(test_frame, predictions))
        results["linear LMM (jaxlmm.lmer)"][1].append(time.perf_counter() - start)
    return [(name, mses, seconds) for name, (mses, seconds) in results.items()]


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--steps", type=int, default=1000, help="Adam steps per network")
    parser.add_argument("--skip-insteval", action="store_true")
    args = parser.parse_args()
    print("Simulated random intercepts (N = 100,000, q = 1,000): test MSE, seconds per fit")
    for name, value, seconds in simulated(args.steps):
        print(f"  {name:<28} MSE {value:6.3f}  {seconds:7.1f}s")
    print("  published: " + ", ".join(f"{k} {v}" for k, v in PUBLISHED["simulated"].items()))
    if args.skip_insteval:
        return
    print("InstEval, 5-fold: test MSE (mean +- SD over folds), seconds per fold")
    for name, mses, seconds in insteval(args.steps):
        print(
            f"  {name:<28} MSE {np.mean(mses):.3f} +- {np.std(mses):.3f}  {np.mean(seconds):7.1f}s"
        )
    print("  published: " + ", ".join(f"{k} {v}" for k, v in PUBLISHED["InstEval"].items()))


if __name__ == "__main__":
    main()
