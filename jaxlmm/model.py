"""The functional core: a model as a JAX pytree and its criterion as a pure function of the data.

``model(formula, data)`` does all host work once (formula, pandas, factor levels, checks, the
row structure of the cross-products). The result is a pytree whose array leaves are the
response, the fixed-effect matrix, the weights, the offset and the index arrays; everything
else is static. ``Model.deviance`` and :func:`jaxlmm.estimate` are pure JAX functions of those
arrays, differentiable in each of them, usable under ``jit``, ``vmap``, ``grad`` and
``jacfwd``. They compute in the dtype of JAX's current setting: float64 when
``jax_enable_x64`` is on (globally or in a ``with jax.enable_x64(True)`` block), float32 in a
float32 program.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd

from . import parameters
from .crossprod import Blocks, RowStructure, blocks_from_rows, row_structure
from .design import Design, as_data_frame, build_design, model_matrix_for
from .deviance import objective
from .errors import JaxlmmError


@dataclass(frozen=True, eq=False)
class ModelInfo:
    """The host side of a model (names, levels, formulaic specs): static in the pytree, compared
    by identity, so a model reused across calls is traced once."""

    design: Design
    reml: bool

    @cached_property
    def sizes(self) -> tuple[int, ...]:
        return tuple(t.n_columns for t in self.design.terms)

    @cached_property
    def n_theta(self) -> int:
        return int(parameters.theta_offsets(self.sizes)[-1])

    @property
    def n_fixed(self) -> int:
        return len(self.design.fixed_names)

    @cached_property
    def start(self) -> np.ndarray:
        """lmer's starting theta for the model's own data (:func:`parameters.starting_theta`)."""
        return parameters.starting_theta(self.design)

    @cached_property
    def n_random(self) -> int:
        return sum(t.n_levels * t.n_columns for t in self.design.terms)


@jax.tree_util.register_dataclass
@dataclass(frozen=True)
class Model:
    """A linear mixed model ready for the numerics (see the module docstring)."""

    rows: RowStructure
    y: np.ndarray  # (n,) response
    x: np.ndarray  # (n, p) fixed-effect columns
    weights: np.ndarray  # (n,) prior weights
    offset: np.ndarray  # (n,) known part of the linear predictor
    info: ModelInfo = field(metadata=dict(static=True))

    def __repr__(self) -> str:
        design = self.design
        return (
            f"<Model {design.formula.text!r}: {design.nobs} observations, "
            f"{len(design.fixed_names)} fixed effects, {self.info.n_random} random effects, "
            f"{'REML' if self.reml else 'ML'}>"
        )

    @property
    def design(self) -> Design:
        return self.info.design

    @property
    def reml(self) -> bool:
        return self.info.reml

    @property
    def fixed_names(self) -> list[str]:
        return list(self.design.fixed_names)

    @property
    def n_theta(self) -> int:
        return self.info.n_theta

    def blocks(self, y=None, X=None, weights=None, offset=None) -> tuple[Blocks, jax.Array]:
        """The cross-product blocks for these arrays (None: the model's own) and the factor
        ``scale`` by which the response was divided (a power of two, so that the blocks
        neither overflow nor underflow whatever the response's units; not differentiated)."""
        y = self.y if y is None else y
        x = self.x if X is None else X
        w = self.weights if weights is None else weights
        offset = self.offset if offset is None else offset
        response = y - offset
        scale = response_scale(response, w)
        return blocks_from_rows(self.rows, response / scale, x, w), scale

    def deviance(self, theta, *, y=None, X=None, weights=None, offset=None):
        """The profiled REML criterion (REML models) or deviance (ML models) at ``theta``, a
        pure function of ``theta`` and of every array given (None: the model's own)."""
        theta = jnp.asarray(theta)
        if theta.shape != (self.n_theta,):
            raise JaxlmmError(f"theta must have shape ({self.n_theta},), got {theta.shape}")
        blocks, scale = self.blocks(y, X, weights, offset)
        padded = jnp.pad(theta, (0, blocks.n_theta - self.n_theta))
        value = objective(padded, blocks, self.reml)
        return value + 2 * degrees_of_freedom(blocks, self.reml) * jnp.log(scale)

    def random_effect_labels(self) -> pd.DataFrame:
        """The entry of ``Estimates.b`` each row describes: grouping factor, level and column.
        ``b`` holds term after term (the model's term order, most levels first), each level by
        level with its columns together."""
        parts = []
        for term in self.design.terms:
            levels = np.repeat(np.array(term.levels, dtype=object), term.n_columns)
            names = np.tile(np.array(term.names, dtype=object), term.n_levels)
            parts.append(pd.DataFrame({"group": term.group, "level": levels, "column": names}))
        return pd.concat(parts, ignore_index=True)

    def new_rows(self, newdata: pd.DataFrame) -> NewRows:
        """The arrays :meth:`predict_rows` needs for the rows of ``newdata`` (host work, done
        once): fixed-effect columns encoded as in the fit, and for every random-effect column
        the entry of ``b`` it multiplies (-1 for a level the model has not seen)."""
        design = self.design
        newdata = as_data_frame(newdata)
        x = model_matrix_for(design.formula.fixed, design.fixed_spec, newdata, "fixed part")
        index, values, start = [], [], 0
        for term in design.terms:
            codes, _ = term.new_levels(newdata)
            where = f"random term ({term.expr} | {term.group})"
            z = model_matrix_for(term.expr, term.spec, newdata, where)
            for a in range(term.n_columns):
                index.append(np.where(codes >= 0, start + codes * term.n_columns + a, -1))
                values.append(np.where(codes >= 0, z[:, a], 0.0))
            start += term.n_levels * term.n_columns
        return NewRows(
            x=x[:, list(design.kept_fixed)],
            effect_index=np.array(index, dtype=np.int64),
            effect_values=np.array(values, dtype=np.float64),
            offset=design.offset_for(newdata),
        )

    def own_rows(self) -> NewRows:
        """:class:`NewRows` of the model's own observations."""
        index, values, start = [], [], 0
        for term in self.design.terms:
            for a in range(term.n_columns):
                index.append(start + term.codes * term.n_columns + a)
                values.append(term.z[:, a])
            start += term.n_levels * term.n_columns
        return NewRows(self.x, np.array(index, dtype=np.int64), np.array(values), self.offset)

    def predict(self, estimates, newdata=None, *, X=None, offset=None):
        """Predictions X beta + Z b + offset for the model's rows (``newdata`` None) or the rows
        of a data frame, with the conditional modes for known levels and zero for levels the
        model has not seen. ``offset`` (None: the model's, or the formula's offset terms on
        new rows) and ``X`` replace the rows' own. Differentiable in ``estimates``, ``X`` and
        ``offset``."""
        rows = self.own_rows() if newdata is None else self.new_rows(newdata)
        return predict_rows(estimates, rows, X=X, offset=offset)


@jax.tree_util.register_dataclass
@dataclass(frozen=True)
class NewRows:
    """Rows to predict, as arrays (see :meth:`Model.new_rows`)."""

    x: np.ndarray  # (m, p)
    effect_index: np.ndarray  # (C, m) int: entry of b per random-effect column (-1: none)
    effect_values: np.ndarray  # (C, m): the Z value there
    offset: np.ndarray  # (m,)


def predict_rows(estimates, rows: NewRows, *, X=None, offset=None):
    """The array-level form of :meth:`Model.predict`, for a jitted training loop:
    ``X @ beta + Z b + offset`` for precomputed :class:`NewRows` (``X`` and ``offset`` replace
    the rows' own)."""
    x = rows.x if X is None else X
    offset = rows.offset if offset is None else offset
    b = jnp.asarray(estimates.b)
    effects = jnp.where(rows.effect_index >= 0, b[jnp.maximum(rows.effect_index, 0)], 0.0)
    return x @ estimates.beta + jnp.sum(rows.effect_values * effects, axis=0) + offset


def response_scale(response, weights):
    """A power of two near the largest absolute response with positive weight (1 where that is
    0 or undefined), per row of a (..., n) response: dividing by it keeps every product of
    the numerics far from overflow and underflow, and changes no digit."""
    xp = np if isinstance(response, np.ndarray) and isinstance(weights, np.ndarray) else jnp
    largest = xp.max(xp.where(weights > 0, xp.abs(response), 0.0), axis=-1)
    exponent = xp.round(xp.log2(xp.where(largest > 0, largest, 1.0)))
    scale = xp.where(xp.isfinite(exponent), 2.0**exponent, 1.0)
    return scale if xp is np else jax.lax.stop_gradient(scale)


def degrees_of_freedom(blocks: Blocks, reml):
    """n - p for REML, n for ML: the power of the residual scale in the criterion."""
    return jnp.where(reml, blocks.nobs - blocks.n_fixed, blocks.nobs)


def from_design(design: Design, reml: bool = True, shared: bool = False) -> Model:
    """A model from a checked design. ``shared`` pads its blocks to a generous size class (see
    :func:`crossprod.size_class`)."""
    return Model(
        rows=row_structure(design, shared),
        y=design.y,
        x=design.x,
        weights=design.weights,
        offset=design.offset,
        info=ModelInfo(design, bool(reml)),
    )


def block_diagonal(core: Model) -> Model:
    """``core`` in the batches' layout, its first term block-diagonal: lmer's dense layout of
    small models made afresh, any other model as it is. Vmapped programs and searches that
    take many Hessians run in it (a vmapped program of the dense layout, whose batched LAPACK
    calls run in XLA's loops, was seen to stall XLA's CPU runtime)."""
    return core if core.rows.ng1 else from_design(core.design, core.reml)


def model(formula: str, data: pd.DataFrame, reml: bool = True, weights=None, offset=None) -> Model:
    """Build a :class:`Model` from an lme4 formula and a data frame (lme4's ``lFormula``),
    laid out as batches lay it out: the first term block-diagonal, so that ``vmap`` over
    :func:`jaxlmm.estimate` runs the batch engine's numerics (a vmapped program of lmer's dense
    layout, whose batched LAPACK calls run in XLA's loops, was seen to stall XLA's CPU
    runtime). ``weights`` and ``offset``: an array or a column name."""
    return from_design(build_design(formula, data, weights, offset), reml)
