"""The dense inverse of large blocks: LAPACK's potri from the host on CPU, exact and safe."""

import jax
import jax.numpy as jnp
import numpy as np

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
