"""Blocks of the cross-product [Z X y]' W [Z X y], computed once on the host.

The first random term (the one with most levels) is kept block-diagonal: one ``s1 x s1`` block
per level. All later terms, X and y form the dense "rest" of size ``mz + p + 1``. The coupling
between term 1 and the rest Z columns is sparse: it is stored as entries (level, rest row,
values) and, for the Schur complement, as precomputed products of entry pairs that share a level.
Nothing stored here grows with the number of observations except through the design itself.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import jax
import numpy as np

from .design import Design


@jax.tree_util.register_dataclass
@dataclass(frozen=True)
class Blocks:
    """Cross-product blocks of one model (a pytree: arrays are leaves, sizes are static)."""

    a11: np.ndarray  # (ng1, s1, s1): term 1's diagonal blocks
    ax1: np.ndarray  # (ng1, s1, p+1): term 1 against [X y]
    axx: np.ndarray  # (p+1, p+1): [X y]' W [X y]
    azz: np.ndarray  # (mz, mz): later terms against each other
    azx: np.ndarray  # (mz, p+1): later terms against [X y]
    entry_level: np.ndarray  # (ne,) int: term-1 level of each coupling entry
    entry_row: np.ndarray  # (ne,) int: rest-Z row of each coupling entry
    entry_values: np.ndarray  # (ne, s1)
    pair_level: np.ndarray  # (npair,) int: the level shared by a pair of entries
    pair_target: np.ndarray  # (npair,) int: flat index row1 * mz + row2, row1 >= row2
    pair_products: np.ndarray  # (npair, s1, s1): outer products of the two entries' values
    nobs: np.ndarray  # () float: number of observations
    sum_log_weights: np.ndarray  # () float
    sizes: tuple[int, ...] = field(metadata=dict(static=True))  # columns per term
    n_levels: tuple[int, ...] = field(metadata=dict(static=True))  # levels per term

    @property
    def p(self) -> int:
        return self.axx.shape[-1] - 1

    @property
    def mz(self) -> int:
        return self.azz.shape[-1]


def _rest_slots(design: Design) -> list[tuple[np.ndarray, np.ndarray]]:
    """(row index into the rest Z columns, value) per observation, for every later-term column."""
    slots, offset = [], 0
    for term in design.terms[1:]:
        s = term.n_columns
        for b in range(s):
            slots.append((offset + term.codes * s + b, term.z[:, b]))
        offset += term.n_levels * s
    return slots


def _weighted_sum(index: np.ndarray, values: np.ndarray, length: int) -> np.ndarray:
    return np.bincount(index, weights=values, minlength=length)


def _pairs(level: np.ndarray, row: np.ndarray, values: np.ndarray, mz: int):
    """All entry pairs that share a term-1 level (lower triangle of rows), with their products."""
    counts = np.bincount(level, minlength=level.max(initial=-1) + 1)
    starts = np.cumsum(counts) - counts
    reps = counts[level]
    first = np.repeat(np.arange(len(level)), reps)
    block_start = np.repeat(np.cumsum(reps) - reps, reps)
    second = starts[level[first]] + np.arange(len(first)) - block_start
    lower = row[first] >= row[second]
    first, second = first[lower], second[lower]
    index_type = np.int32 if mz * mz < 2**31 else np.int64
    target = (row[first] * mz + row[second]).astype(index_type)
    order = np.argsort(target)  # sorted segment ids make the scatter-add faster
    first, second = first[order], second[order]
    products = values[first][:, :, None] * values[second][:, None, :]
    return level[first], target[order], products


def cross_products(design: Design) -> Blocks:
    """Compute the blocks once; later evaluations never touch the n observations again."""
    w = design.weights
    xy = np.column_stack([design.x, design.y])
    px = xy.shape[1]
    t1 = design.terms[0]
    ng1, s1 = t1.n_levels, t1.n_columns
    z1 = t1.z

    a11 = np.empty((ng1, s1, s1))
    ax1 = np.empty((ng1, s1, px))
    for a in range(s1):
        for b in range(s1):
            a11[:, a, b] = _weighted_sum(t1.codes, w * z1[:, a] * z1[:, b], ng1)
        for c in range(px):
            ax1[:, a, c] = _weighted_sum(t1.codes, w * z1[:, a] * xy[:, c], ng1)
    axx = xy.T @ (w[:, None] * xy)

    slots = _rest_slots(design)
    mz = sum(t.n_levels * t.n_columns for t in design.terms[1:])
    azz = np.zeros(mz * mz)
    azx = np.zeros((mz, px))
    for row_a, val_a in slots:
        for row_b, val_b in slots:
            azz += _weighted_sum(row_a * mz + row_b, w * val_a * val_b, mz * mz)
        for c in range(px):
            azx[:, c] += _weighted_sum(row_a, w * val_a * xy[:, c], mz)

    if slots:
        keys = np.concatenate([t1.codes * mz + row for row, _ in slots])
        unique_keys, inverse = np.unique(keys, return_inverse=True)
        entry_values = np.column_stack(
            [
                _weighted_sum(
                    inverse,
                    np.concatenate([w * z1[:, a] * val for _, val in slots]),
                    len(unique_keys),
                )
                for a in range(s1)
            ]
        )
        entry_level, entry_row = unique_keys // mz, unique_keys % mz
    else:
        entry_values = np.zeros((0, s1))
        entry_level = entry_row = np.zeros(0, dtype=np.int64)
    pair_level, pair_target, pair_products = _pairs(entry_level, entry_row, entry_values, mz)

    return Blocks(
        a11=a11,
        ax1=ax1,
        axx=axx,
        azz=azz.reshape(mz, mz),
        azx=azx,
        entry_level=entry_level.astype(np.int32),
        entry_row=entry_row.astype(np.int32),
        entry_values=entry_values,
        pair_level=pair_level.astype(np.int32),
        pair_target=pair_target,
        pair_products=pair_products,
        nobs=np.asarray(float(design.nobs)),
        sum_log_weights=np.asarray(float(np.sum(np.log(w)))),
        sizes=tuple(t.n_columns for t in design.terms),
        n_levels=tuple(t.n_levels for t in design.terms),
    )
