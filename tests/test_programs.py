"""Compiling jaxlmm's programs."""

import jax
import jax.numpy as jnp
import pytest

from jaxlmm import programs


def test_compile_options_unknown_to_xla_are_left_out():
    """Options come and go between versions of jaxlib: one this XLA does not know is dropped
    and the others still apply; an error of another kind is not swallowed."""
    lowered = jax.jit(lambda x: jnp.sum(x**2)).lower(jnp.arange(4.0))
    options = {"xla_no_such_option_anywhere": True, "xla_backend_optimization_level": 1}
    assert float(programs._compile(lowered, options)(jnp.arange(4.0))) == 14.0
    with pytest.raises(jax.errors.JaxRuntimeError):
        programs._compile(lowered, {"xla_backend_optimization_level": "not a number"})
