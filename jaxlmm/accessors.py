"""lme4's accessors of a fitted model: ``coef()`` and the model matrices of ``getME``
(``X``, ``Z``, ``Lambda``). Host-side NumPy / SciPy only; nothing here refits.

Column order of ``Z`` and ``Lambda`` is lme4's: random terms in the model's order (most levels
first), and within a term level-major (level 1's columns, then level 2's, ...), the order of
the conditional modes ``b``.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import sparse

from . import parameters


def coef(fit) -> dict[str, pd.DataFrame]:
    """lme4's ``coef(m)``: per grouping factor, the fixed effects plus that factor's
    conditional modes, one row per level. Fixed effects without a random effect for the factor
    are constant columns; a random effect without a fixed effect is a column of its own
    (first, as lme4 puts them)."""
    fixef = fit.fixef
    ranef = fit.ranef()
    random_names = [name for frame in ranef.values() for name in frame.columns]
    missing = list(dict.fromkeys(n for n in random_names if n not in fixef.index))
    base = pd.concat([pd.Series(0.0, index=missing, dtype=float), fixef])
    result = {}
    for group, modes in ranef.items():
        values = np.tile(base.to_numpy(), (len(modes), 1))
        frame = pd.DataFrame(values, index=modes.index, columns=base.index)
        for name in modes.columns:
            frame[name] = frame[name] + modes[name].to_numpy()
        result[group] = frame
    return result


def fixed_matrix(fit) -> pd.DataFrame:
    """``getME(m, "X")``: the fixed-effects model matrix (aliased columns dropped)."""
    design = fit.design
    return pd.DataFrame(design.x, index=design.rows, columns=list(design.fixed_names))


def random_matrix(fit) -> sparse.csc_matrix:
    """``getME(m, "Z")``: the n x q random-effects model matrix, sparse (CSC)."""
    return fit.design.random_effects_matrix()


def relative_factor(fit) -> sparse.csc_matrix:
    """``getME(m, "Lambda")``: the q x q relative covariance factor, block diagonal with one
    lower-triangular T per level of each term (b = sigma Lambda u)."""
    factors = parameters.factor_arrays(fit.theta, fit.sizes)
    blocks = [
        sparse.kron(sparse.identity(term.n_levels), sparse.csc_matrix(t), format="csc")
        for term, t in zip(fit.design.terms, factors, strict=True)
    ]
    return sparse.block_diag(blocks, format="csc") if blocks else sparse.csc_matrix((0, 0))


def data_positions(fit) -> tuple[pd.Index, np.ndarray]:
    """The index of the fit's data and the position in it of each row used."""
    from .design import as_data_frame, build_design

    frame = as_data_frame(fit.data)
    if frame.index.is_unique:
        return frame.index, frame.index.get_indexer(fit.design.rows)
    call = fit.call or {}
    positional = frame.reset_index(drop=True)
    design = build_design(fit.design.formula, positional, call.get("weights"), call.get("offset"))
    return frame.index, design.rows.to_numpy()
