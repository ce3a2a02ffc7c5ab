"""The dense inverse of large blocks: LAPACK's potri from the host on CPU, exact and safe."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxlmm import linalg


def spd(n: int, seed: int = 0) -> np.ndarray:
    a = np.random.default_rng(seed).random((n, n))
    return a @ a.T + n * np.eye(n)


def test_host_inverse_of_a_large_matrix_equals_numpy():
    """At the host path's size, called the way jaxlmm's programs run (compiled in a float64
    context, run outside it, where the user's global setting is float32): exact inverse and
    log-determinant, NaN where not positive definite, the input dtype kept, batches and
    derivatives."""
    n = linalg.HOST_LAPACK_MIN
    m = spd(n)
    want_inv, want_logdet = np.linalg.inv(m), np.linalg.slogdet(m)[1]
    with jax.enable_x64(True):
        x = jnp.asarray(m)
        compiled = jax.jit(linalg.spd_inverse_and_logdet).lower(x).compile()
        assert "callback" in compiled.as_text()
    inv, logdet = compiled(x)
    with jax.enable_x64(True):
        assert inv.dtype == jnp.float64
        np.testing.assert_allclose(np.asarray(inv), want_inv, rtol=1e-10, atol=1e-14)
        np.testing.assert_allclose(float(logdet), want_logdet, rtol=1e-13)
        assert np.all(np.isnan(np.asarray(compiled(x.at[5, 5].set(-1.0))[0])))

        batched = jax.jit(jax.vmap(linalg.spd_inverse_and_logdet))(jnp.stack([x, 2 * x]))[1]
        np.testing.assert_allclose(batched, [want_logdet, want_logdet + n * np.log(2)])

        single = jax.jit(linalg.spd_inverse_and_logdet)(x.astype(jnp.float32))
        assert single[0].dtype == jnp.float32
        np.testing.assert_allclose(float(single[1]), want_logdet, rtol=1e-5)

        direction = jnp.asarray(spd(n, seed=1))
        _, (d_inv, d_logdet) = jax.jvp(linalg.spd_inverse_and_logdet, (x,), (direction,))
        np.testing.assert_allclose(float(d_logdet), np.sum(want_inv * spd(n, seed=1)))
        np.testing.assert_allclose(
            np.asarray(d_inv), -want_inv @ spd(n, seed=1) @ want_inv, rtol=1e-8, atol=1e-16
        )


def test_host_solve_of_a_large_matrix_equals_numpy():
    """The host's in-place solve: log-determinant, a^-1 b and the Schur complement as numpy's,
    NaN where not positive definite, and derivatives in both modes (its JVP uses the inverse,
    so reverse mode works through it)."""
    n = linalg.HOST_LAPACK_MIN
    a, b = spd(n), np.random.default_rng(1).normal(size=(n, 3))
    want = np.linalg.solve(a, b)
    with jax.enable_x64(True):
        x, y = jnp.asarray(a), jnp.asarray(b)
        compiled = jax.jit(linalg.spd_solve).lower(x, y).compile()
        assert "callback" in compiled.as_text()
        logdet, got = compiled(x, y)
        np.testing.assert_allclose(np.asarray(got), want, rtol=1e-10, atol=1e-15)
        np.testing.assert_allclose(float(logdet), np.linalg.slogdet(a)[1], rtol=1e-13)
        assert np.all(np.isnan(np.asarray(compiled(x.at[5, 5].set(-1e9), y)[1])))
        _, schur = jax.jit(linalg.logdet_and_schur)(x, y, jnp.eye(3))
        np.testing.assert_allclose(np.asarray(schur), np.eye(3) - b.T @ want, rtol=1e-10)

        def total(x, y):
            logdet, solution = linalg.spd_solve(x, y)
            return logdet + jnp.sum(solution)

        grad_a, grad_b = jax.jit(jax.grad(total, argnums=(0, 1)))(x, y)
        inv = np.linalg.inv(a)
        np.testing.assert_allclose(np.asarray(grad_b), inv @ np.ones((n, 3)), rtol=1e-9)
        np.testing.assert_allclose(
            np.asarray(grad_a), inv - inv @ np.ones((n, 3)) @ want.T, rtol=1e-8, atol=1e-13
        )


@pytest.mark.parametrize("block", [3, 8, 512])
@pytest.mark.parametrize("shifts", [1, 3])
def test_in_place_mirror_and_congruence_product(monkeypatch, block, shifts):
    """The symmetric matrix from a lower triangle and scale V' m V b with V banded, formed in
    place a pair of blocks or a strip of rows at a time (the last block shifted back to end at
    n), equal the whole products."""
    monkeypatch.setattr(linalg, "ROW_BLOCK", block)
    n = 21
    rng = np.random.default_rng(block + shifts)
    m, b = rng.normal(size=(n, n)), rng.normal(size=(n, n))
    v = rng.normal(size=(shifts, n)) * (np.arange(n)[None, :] + np.arange(shifts)[:, None] < n)
    band = sum(np.diag(v[d, : n - d], -d) for d in range(shifts))  # V[j + d, j] = v[d, j]
    with jax.enable_x64(True):
        symmetric = jax.jit(linalg.symmetric_from_lower)(jnp.asarray(m))
        np.testing.assert_array_equal(np.asarray(symmetric), np.tril(m) + np.tril(m, -1).T)
        product = jax.jit(linalg.congruence_product)(
            jnp.asarray(m), jnp.asarray(v), jnp.asarray(b), -2.0
        )
        np.testing.assert_allclose(np.asarray(product), -2 * band.T @ m @ band @ b, rtol=1e-12)
