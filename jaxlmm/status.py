"""Outcome codes of a fit, single or batched: the optimiser's verdict, or why a batch response
was not fitted. Inside JAX they are plain integers (status arrays); at the edge, :class:`Status`."""

from __future__ import annotations

import enum


class Status(enum.IntEnum):
    """Why a fit ended. ``converged``: the exact check at the optimum passed. ``fitted``: the
    optimiser ran (estimates exist, converged or not)."""

    CONVERGED = 0
    NONFINITE = 1  # the criterion is not finite at the solution
    GRADIENT_NOT_SMALL = 2  # the Newton step at the solution is too large
    HESSIAN_NOT_PD = 3  # the Hessian on the free parameters is not positive definite
    # Problems found in a batch response before fitting:
    NO_OBSERVATIONS = 10
    INFINITE_RESPONSE = 11
    CONSTANT_RESPONSE = 12
    TOO_FEW_OBSERVATIONS = 13
    TOO_FEW_LEVELS = 14
    FIXED_EFFECTS_ALIASED = 15

    @property
    def converged(self) -> bool:
        return self is Status.CONVERGED

    @property
    def fitted(self) -> bool:
        return self < Status.NO_OBSERVATIONS

    @property
    def message(self) -> str:
        return _MESSAGES[self]


_MESSAGES = {
    Status.CONVERGED: "converged",
    Status.NONFINITE: "criterion not finite at the solution",
    Status.GRADIENT_NOT_SMALL: "gradient not small at the solution (scaled gradient above "
    "tolerance)",
    Status.HESSIAN_NOT_PD: "Hessian not positive definite at the solution",
    Status.NO_OBSERVATIONS: "no observed values",
    Status.INFINITE_RESPONSE: "response has infinite values",
    Status.CONSTANT_RESPONSE: "response is constant on its observed rows",
    Status.TOO_FEW_OBSERVATIONS: "too few observations for the random effects",
    Status.TOO_FEW_LEVELS: "a grouping factor has fewer than 2 observed levels",
    Status.FIXED_EFFECTS_ALIASED: "fixed effects are aliased on the observed rows",
}
