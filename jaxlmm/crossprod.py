"""Blocks of the cross-product [Z X y]' W [Z X y], computed once per model.

The first random term (the one with most levels) is kept block-diagonal: one ``s1 x s1`` block
per level. All later terms, X and y form the dense "rest" of size ``mz + p + 1``. The coupling
between term 1 and the rest Z columns is sparse: it is stored as entries (level, rest row,
values) and, for the Schur complement, as precomputed products of entry pairs that share a level.
Nothing stored here grows with the number of observations.

The work is split in two: :func:`row_structure` finds, once per design, where each observation's
products land (host NumPy); :func:`blocks_from_rows` sums them for given ``y`` and weights. The
latter is written for NumPy and JAX alike, so a batch of responses (each with its own missing
rows, as zero weights) gets its blocks inside ``vmap``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import jax
import jax.numpy as jnp
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
    pair_target: np.ndarray  # (npair,) int: flat index row1 * mz + row2, row1 >= row2, sorted
    pair_products: np.ndarray  # (npair, s1, s1): outer products of the two entries' values
    nobs: np.ndarray  # () float: number of observations (rows with positive weight)
    sum_log_weights: np.ndarray  # () float
    sizes: tuple[int, ...] = field(metadata=dict(static=True))  # columns per term
    n_levels: tuple[int, ...] = field(metadata=dict(static=True))  # levels per term

    @property
    def p(self) -> int:
        return self.axx.shape[-1] - 1

    @property
    def mz(self) -> int:
        return self.azz.shape[-1]


@jax.tree_util.register_dataclass
@dataclass(frozen=True)
class RowStructure:
    """Where each observation's products land in the blocks (independent of y and weights)."""

    codes1: np.ndarray  # (n,) int: term-1 level per observation
    z1: np.ndarray  # (n, s1)
    x: np.ndarray  # (n, p)
    slot_rows: np.ndarray  # (C, n) int: rest-Z row per later-term column ("slot") and observation
    slot_values: np.ndarray  # (C, n): the Z value there
    slot_entries: np.ndarray  # (C, n) int: coupling entry each (slot, observation) adds to
    entry_level: np.ndarray  # (ne,) int
    entry_row: np.ndarray  # (ne,) int
    pair_first: np.ndarray  # (npair,) int: entry indices of each pair
    pair_second: np.ndarray  # (npair,) int
    pair_level: np.ndarray  # (npair,) int
    pair_target: np.ndarray  # (npair,) int
    sizes: tuple[int, ...] = field(metadata=dict(static=True))
    n_levels: tuple[int, ...] = field(metadata=dict(static=True))

    @property
    def mz(self) -> int:
        return sum(ng * s for ng, s in zip(self.n_levels[1:], self.sizes[1:], strict=True))


def _pairs(level: np.ndarray, row: np.ndarray, mz: int):
    """All entry pairs that share a term-1 level (lower triangle of rows), sorted by target.

    Entries come sorted by (level, row), so each entry pairs with the entries of its level
    from the first up to itself.
    """
    counts = np.bincount(level, minlength=level.max(initial=-1) + 1)
    starts = np.cumsum(counts) - counts
    entries = np.arange(len(level))
    reps = entries - starts[level] + 1
    first = np.repeat(entries, reps)
    second = np.arange(len(first)) - np.repeat(np.cumsum(reps) - reps - starts[level], reps)
    index_type = np.int32 if mz * mz < 2**31 else np.int64
    target = (row[first].astype(index_type) * mz + row[second]).astype(index_type)
    order = np.argsort(target)  # sorted segment ids make the scatter-add faster
    first, second = first[order], second[order]
    return first, second, level[first], target[order]


def row_structure(design: Design) -> RowStructure:
    """Index the design once: levels, later-term rows and the sparse coupling pattern."""
    t1 = design.terms[0]
    rows, values, offset = [], [], 0
    for term in design.terms[1:]:
        s = term.n_columns
        for b in range(s):
            rows.append(offset + term.codes * s + b)
            values.append(term.z[:, b])
        offset += term.n_levels * s
    mz, n = offset, design.nobs
    slot_rows = np.array(rows, dtype=np.int64).reshape(len(rows), n)
    keys = t1.codes[None, :] * mz + slot_rows
    unique_keys, inverse = np.unique(keys, return_inverse=True)
    entry_level, entry_row = unique_keys // mz, unique_keys % mz
    first, second, pair_level, pair_target = _pairs(entry_level, entry_row, mz)
    return RowStructure(
        codes1=t1.codes,
        z1=t1.z,
        x=design.x,
        slot_rows=slot_rows,
        slot_values=np.array(values, dtype=np.float64).reshape(len(rows), n),
        slot_entries=inverse.reshape(keys.shape),
        entry_level=entry_level.astype(np.int32),
        entry_row=entry_row.astype(np.int32),
        pair_first=first,
        pair_second=second,
        pair_level=pair_level.astype(np.int32),
        pair_target=pair_target,
        sizes=tuple(t.n_columns for t in design.terms),
        n_levels=tuple(t.n_levels for t in design.terms),
    )


def _segment_sum(values, ids, n: int):
    """Sum rows of ``values`` into ``n`` segments (NumPy bincount or JAX segment_sum)."""
    if isinstance(values, np.ndarray):
        flat = values.reshape(len(values), -1)
        sums = [np.bincount(ids, weights=flat[:, j], minlength=n) for j in range(flat.shape[1])]
        return np.stack(sums, axis=-1).reshape((n,) + values.shape[1:])
    return jax.ops.segment_sum(values, ids, num_segments=n)


def blocks_from_rows(rs: RowStructure, y, weights) -> Blocks:
    """The blocks for response ``y`` and prior weights (0 drops a row): NumPy in, NumPy out;
    JAX arrays in (e.g. under ``vmap``), JAX arrays out."""
    xp = np if isinstance(y, np.ndarray) else jnp
    w, mz = weights, rs.mz
    ng1, s1 = rs.n_levels[0], rs.sizes[0]
    xy = xp.concatenate([rs.x, y[:, None]], axis=1)
    wz1 = w[:, None] * rs.z1
    a11 = _segment_sum(wz1[:, :, None] * rs.z1[:, None, :], rs.codes1, ng1)
    ax1 = _segment_sum(wz1[:, :, None] * xy[:, None, :], rs.codes1, ng1)
    axx = xy.T @ (w[:, None] * xy)

    n_slots = rs.slot_rows.shape[0]
    azz = xp.zeros((mz, mz))
    azx = xp.zeros((mz, xy.shape[1]))
    entry_values = xp.zeros((len(rs.entry_level), s1))
    if n_slots:
        wv = w[None, :] * rs.slot_values  # (C, n)
        targets = rs.slot_rows[:, None, :] * mz + rs.slot_rows[None, :, :]  # (C, C, n)
        products = wv[:, None, :] * rs.slot_values[None, :, :]
        azz = _segment_sum(products.reshape(-1), targets.reshape(-1), mz * mz).reshape(mz, mz)
        azx = _segment_sum(
            (wv[:, :, None] * xy[None, :, :]).reshape(-1, xy.shape[1]),
            rs.slot_rows.reshape(-1),
            mz,
        )
        entry_values = _segment_sum(
            (wv[:, :, None] * rs.z1[None, :, :]).reshape(-1, s1),
            rs.slot_entries.reshape(-1),
            len(rs.entry_level),
        )
    pair_products = (
        entry_values[rs.pair_first][:, :, None] * entry_values[rs.pair_second][:, None, :]
    )
    positive = w > 0
    return Blocks(
        a11=a11,
        ax1=ax1,
        axx=axx,
        azz=azz,
        azx=azx,
        entry_level=rs.entry_level,
        entry_row=rs.entry_row,
        entry_values=entry_values,
        pair_level=rs.pair_level,
        pair_target=rs.pair_target,
        pair_products=pair_products,
        nobs=xp.sum(positive).astype(xy.dtype),
        sum_log_weights=xp.sum(xp.where(positive, xp.log(xp.where(positive, w, 1.0)), 0.0)),
        sizes=rs.sizes,
        n_levels=rs.n_levels,
    )


def cross_products(design: Design) -> Blocks:
    """Compute the blocks once; later evaluations never touch the n observations again."""
    return blocks_from_rows(row_structure(design), design.y, design.weights)
