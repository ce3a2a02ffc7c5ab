"""Blocks of the cross-product [Z X y]' W [Z X y], padded to a size class.

The first random term (the one with most levels) is kept block-diagonal: one ``s1 x s1`` block
per level. All later terms, X and y form the dense "rest" of size ``mz + p + 1``. The coupling
between term 1 and the rest Z columns is sparse: it is stored as entries (level, rest row,
values). For the Schur complement, the levels with few entries index the pairs of their
entries (as strips of consecutive second entries, a byte or so per pair; the products are
formed in the fill-in's loop); the levels with many entries store their coupling as dense rows
(one product of matrices is cheaper than their many pairs). Nothing stored here grows with the
number of observations; finding the entries takes one sort of the codes, summing them O(n)
time and memory (vectorised segment sums, no per-observation or per-pair Python).

Every dimension is padded to a size class (:class:`SizeClass`): padded levels, columns and
entries are zero, padded fixed-effect columns get a unit diagonal, so the criterion is exactly
unchanged while models of similar size share one compiled program. Which theta entry fills
which entry of Lambda is data (``first_index``, ``rest_index``), not code.

The work is split in two: :func:`row_structure` finds, once per design, where each observation's
products land (host NumPy); :func:`blocks_from_rows` sums them for given ``y``, ``X`` and
weights. The latter is written for NumPy and JAX alike: on the host for a single fit, inside
JAX (differentiable, under ``vmap``) for the functional API and for batches.
"""

from __future__ import annotations

import mmap
from dataclasses import dataclass, field

import jax
import jax.numpy as jnp
import numpy as np

from . import parameters
from .design import Design
from .parameters import ThetaLayout


def _power_of_two(n: int, minimum: int) -> int:
    return max(minimum, 1 << max(int(n) - 1, 0).bit_length())


def _geometric(n: int, minimum: int) -> int:
    """The smallest m * 2^k >= n with m in 8..15 (at most 1/8 waste), at least ``minimum``."""
    n = max(int(n), minimum)
    if n <= 16:
        return n
    shift = n.bit_length() - 4
    return -(-n >> shift) << shift


STRIP = 8  # a light entry's pairs are taken this many at a time (the last strip masked)
STRIP_CHUNK = 2**17  # strips per step of the fill-in's loop (a million pairs: temporaries of MB)


def _strip_count(n: int, minimum: int) -> int:
    """:func:`_geometric`, and a multiple of the fill-in loop's width past it."""
    n = _geometric(n, minimum)
    return -(-n // STRIP_CHUNK) * STRIP_CHUNK if n > STRIP_CHUNK else n


@dataclass(frozen=True)
class SizeClass:
    """Padded dimensions of a model's blocks; models of one size class share compiled code."""

    ng1: int  # levels of term 1
    s1: int  # columns of term 1
    mz: int  # rows of the dense rest (later terms)
    shifts: int  # columns of the widest later term (Lambda_z has that many diagonals)
    ne: int  # coupling entries
    nstrips: int  # strips of pairs of coupling entries of the light levels
    nheavy: int  # heavy levels (coupling stored as dense rows)
    p: int  # fixed-effect columns
    n_theta: int


DENSE_MAX = 256  # shared size classes put every random effect in the dense block up to this


def blocked(design: Design, shared: bool) -> bool:
    """Whether the first term is kept block-diagonal. Shared classes of small models keep every
    term in the dense block instead: the simplest program (fast to compile) serves them all."""
    return not shared or sum(t.n_levels * t.n_columns for t in design.terms) > DENSE_MAX


def size_class(
    design: Design, ne: int, nstrips: int, nheavy: int, shared: bool = True
) -> SizeClass:
    """The size class of ``design`` with ``ne`` coupling entries, ``nstrips`` strips and
    ``nheavy`` heavy levels.
    ``shared`` pads generously (small models of all usual shapes fall in one class: single
    fits, where compiling costs more than computing); otherwise only a little (batches, where
    every response pays for the padding). A large dense block is padded only a little either
    way: there computing costs more than compiling, and each padded parameter adds work."""
    terms = design.terms
    first, rest = (terms[:1], terms[1:]) if blocked(design, shared) else ((), terms)
    ng1 = first[0].n_levels if first else 0
    s1 = first[0].n_columns if first else 1
    mz = sum(t.n_levels * t.n_columns for t in rest)
    shifts = max((t.n_columns for t in rest), default=0)
    n_theta = sum(parameters.n_theta(t.n_columns) for t in terms)
    p = design.x.shape[1]
    if shared and mz <= DENSE_MAX:
        return SizeClass(
            ng1=_power_of_two(ng1, 32) if first else 0,
            s1=max(s1, 2) if first else 1,
            mz=_power_of_two(mz, 64) if mz else 0,
            shifts=max(shifts, 2),
            ne=_geometric(ne + 1, 256 if first else 1),
            nstrips=_strip_count(nstrips, 128 if first else 0),
            nheavy=_geometric(nheavy, 0),
            p=_power_of_two(p, 4),
            n_theta=_power_of_two(n_theta, 4),
        )
    return SizeClass(
        ng1=_geometric(ng1, 1),
        s1=s1,
        mz=_geometric(mz, 0) if mz <= 256 else -(-mz // 32) * 32,
        shifts=shifts,
        ne=_geometric(ne + 1, 1),
        nstrips=_strip_count(nstrips, 0),
        nheavy=_geometric(nheavy, 0),
        p=p,
        n_theta=n_theta,
    )


@jax.tree_util.register_dataclass
@dataclass(frozen=True)
class Blocks:
    """Cross-product blocks of one model (a pytree of arrays; sizes are the array shapes)."""

    a11: np.ndarray  # (ng1, s1, s1): term 1's diagonal blocks
    ax1: np.ndarray  # (ng1, s1, p+1): term 1 against [X y]
    axx: np.ndarray  # (p+1, p+1): [X y]' W [X y]
    azz: np.ndarray  # (mz, mz): later terms against each other
    azx: np.ndarray  # (mz, p+1): later terms against [X y]
    entry_level: np.ndarray  # (ne,) int: term-1 level of each coupling entry
    entry_row: np.ndarray  # (ne,) int: rest-Z row of each coupling entry
    entry_values: np.ndarray  # (ne, s1)
    strip_first: np.ndarray  # (chunks, width) int: the light levels' strips of entry pairs:
    strip_base: np.ndarray  # (ne,) int: first entry, and where its seconds start (_strips)
    heavy_level: np.ndarray  # (nheavy,) int: the heavy levels
    heavy_rows: np.ndarray  # (nheavy, s1, mz): their coupling with the later terms, dense
    nobs: np.ndarray  # () float: number of observations (rows with positive weight)
    sum_log_weights: np.ndarray  # () float
    n_fixed: np.ndarray  # () float: fixed-effect columns before padding (REML's p)
    first_index: np.ndarray  # (s1, s1) int: theta entry of each entry of T1 (-1: zero)
    rest_index: np.ndarray  # (shifts, mz) int: theta entry of Lambda_z[j + d, j] (-1: zero)
    layout: ThetaLayout

    @property
    def p(self) -> int:
        """Padded number of fixed-effect columns."""
        return self.axx.shape[-1] - 1

    @property
    def mz(self) -> int:
        return self.azz.shape[-1]

    @property
    def n_theta(self) -> int:
        return self.layout.active.shape[-1]

    @property
    def width(self) -> int:
        """Columns of the widest term (the size of each term's T in padded stacks)."""
        return max(self.first_index.shape[-1], self.rest_index.shape[-2])


@jax.tree_util.register_dataclass
@dataclass(frozen=True)
class RowStructure:
    """Where each observation's products land in the blocks (independent of y, X and weights)."""

    codes1: np.ndarray  # (n,) int: term-1 level per observation
    z1: np.ndarray  # (n, s1)
    slot_rows: np.ndarray  # (C, n) int: rest-Z row per later-term column ("slot") and observation
    slot_values: np.ndarray  # (C, n): the Z value there
    slot_entries: np.ndarray  # (C, n) int: coupling entry each (slot, observation) adds to
    entry_level: np.ndarray  # (ne,) int
    entry_row: np.ndarray  # (ne,) int
    strip_first: np.ndarray  # (chunks, width) int: the light levels' pairs (see _strips)
    strip_base: np.ndarray  # (ne,) int
    entry_heavy: np.ndarray  # (ne,) int: heavy level of each entry (nheavy: a light level)
    heavy_level: np.ndarray  # (nheavy,) int
    first_index: np.ndarray  # (s1, s1) int
    rest_index: np.ndarray  # (shifts, mz) int
    layout: ThetaLayout
    ng1: int = field(metadata=dict(static=True))
    mz: int = field(metadata=dict(static=True))
    p: int = field(metadata=dict(static=True))  # padded fixed-effect columns


def _coupling(design: Design, first: bool):
    """Rest rows per slot and observation, and the coupling entries (term-1 level, rest row).
    Without a block-diagonal ``first`` term, every term is in the rest and nothing couples."""
    rows, values, offset = [], [], 0
    for term in design.terms[1:] if first else design.terms:
        s = term.n_columns
        for b in range(s):
            rows.append(offset + term.codes * s + b)
            values.append(term.z[:, b])
        offset += term.n_levels * s
    n = design.nobs
    slot_rows = np.array(rows, dtype=_index_type(offset)).reshape(len(rows), n)
    slot_values = np.array(values, dtype=np.float64).reshape(len(rows), n)
    if not first:
        empty = np.zeros(0, dtype=np.int64)
        return slot_rows, slot_values, np.zeros(slot_rows.shape, dtype=np.int64), empty, empty
    keys = design.terms[0].codes[None, :] * max(offset, 1) + slot_rows
    unique_keys, inverse = np.unique(keys, return_inverse=True)
    entry_level, entry_row = unique_keys // max(offset, 1), unique_keys % max(offset, 1)
    slot_entries = inverse.reshape(keys.shape).astype(_index_type(len(unique_keys)))
    return slot_rows, slot_values, slot_entries, entry_level, entry_row


PAIR_BUDGET = 2**28  # most light pairs (half a byte each, as strips)
PAIR_COST_RATIO = 0.09  # a level is cheaper as a dense row from about this many entries per mz


def _heavy_levels(counts: np.ndarray, mz: int, s1: int) -> np.ndarray:
    """Levels whose coupling is kept as dense rows: those with more entries than a level's
    pairs cost against one dense row in the fill-in's product of matrices (about
    ``PAIR_COST_RATIO * mz`` entries, measured), and more where the pairs of the rest would
    pass ``PAIR_BUDGET``."""
    limit = max(int(PAIR_COST_RATIO * mz / np.sqrt(s1)), 1)
    ordered = np.sort(counts)
    within = np.cumsum(ordered * (ordered + 1) // 2) <= PAIR_BUDGET
    if not within.all():
        limit = min(limit, int(ordered[np.argmin(within) - 1]) if within[0] else 0)
    return np.flatnonzero(counts > limit)


def _strips(level, row, counts, light, nstrips: int) -> tuple[np.ndarray, np.ndarray]:
    """The pairs of ``light`` entries that share a term-1 level, second row at most the first's,
    as strips: strip i with first entry e stands for the pairs (e, start + k) for k < STRIP and
    start + k <= e, where start = base[e] + STRIP i. Entries come sorted by (level, row), so an
    entry pairs with the entries of its level from the first up to itself: ceil(position /
    STRIP) consecutive strips. Ordered by the first entry's row (that keeps the fill-in's
    scatter-add local in memory), padded to ``nstrips`` with strips of the last (padded,
    all-zero) entry, and shaped (chunks, width) for the fill-in's loop (:func:`strip_shape`):
    (first, base). ``level``, ``row`` and ``light`` are padded, ``counts`` the real entries per
    level. A pair costs about half a byte here, not the 24 of a stored pair with its product."""
    entries = np.flatnonzero(light)
    entries = entries[np.argsort(row[entries], kind="stable")]
    level_start, per_entry = _strips_per_entry(entries, level, counts)
    ends = np.cumsum(per_entry)
    total = int(ends[-1]) if len(ends) else 0
    first = _aligned_empty(strip_shape(nstrips), _index_type(len(level))).reshape(-1)
    first[:total] = np.repeat(entries.astype(first.dtype), per_entry)
    first[total:] = len(level) - 1
    base = np.zeros(len(level), _index_type(len(level) + STRIP * nstrips))
    base[entries] = level_start - STRIP * (ends - per_entry)  # minus STRIP x its first strip
    return first.reshape(strip_shape(nstrips)), _in_place(base)


def _index_type(bound: int):
    """The integer type of indices below ``bound``."""
    return np.int32 if bound < 2**31 else np.int64


def strip_shape(nstrips: int) -> tuple[int, int]:
    """(chunks, width) of ``nstrips`` strips (a multiple of the width, see :func:`size_class`)."""
    width = min(nstrips, STRIP_CHUNK)
    return (nstrips // width if width else 0), width


def count_strips(level, counts, light) -> int:
    """How many strips the pairs of the ``light`` entries take (see :func:`_strips`)."""
    return int(np.sum(_strips_per_entry(np.flatnonzero(light), level, counts)[1]))


def _strips_per_entry(entries, level, counts):
    """For ``entries`` (indices into entries sorted by level, then row): where their level's
    entries start, and how many strips their pairs with those, themselves included, take."""
    level_start = (np.cumsum(counts) - counts)[level[entries]]
    return level_start, -(-(entries - level_start + 1) // STRIP)


def _lambda_indices(design: Design, sizes: SizeClass, first: bool):
    """Theta entries of T1 (s1 x s1) and of the diagonals of Lambda_z (shifts x mz)."""
    offsets = parameters.theta_offsets(tuple(t.n_columns for t in design.terms))

    def position(k: int, a: int, b: int) -> int:
        rows, cols = parameters.tril_indices(design.terms[k].n_columns)
        return int(offsets[k] + np.flatnonzero((rows == a) & (cols == b))[0])

    first_index = -np.ones((sizes.s1, sizes.s1), dtype=np.int32)
    if first:
        s = design.terms[0].n_columns
        for a in range(s):
            for b in range(a + 1):
                first_index[a, b] = position(0, a, b)
    rest = -np.ones((sizes.shifts, sizes.mz), dtype=np.int32)
    start = 0
    for k in range(1 if first else 0, len(design.terms)):
        term = design.terms[k]
        s = term.n_columns
        for b in range(s):
            for d in range(s - b):
                rest[d, start + b : start + term.n_levels * s : s] = position(k, b + d, b)
        start += term.n_levels * s
    return first_index, rest


def row_structure(design: Design, shared: bool = True) -> RowStructure:
    """Index the design once: levels, later-term rows and the sparse coupling pattern, padded
    to the design's size class (see :func:`size_class` for ``shared``)."""
    first = blocked(design, shared)
    slot_rows, slot_values, slot_entries, entry_level, entry_row = _coupling(design, first)
    t1 = design.terms[0]
    counts = np.bincount(entry_level, minlength=t1.n_levels if first else 0)
    mz = sum(t.n_levels * t.n_columns for t in design.terms[1 if first else 0 :])
    heavy = _heavy_levels(counts, mz, t1.n_columns)
    is_heavy = np.zeros(len(counts), dtype=bool)
    is_heavy[heavy] = True
    light = ~is_heavy[entry_level]
    n_strips = count_strips(entry_level, counts, light)
    sizes = size_class(design, len(entry_level), n_strips, len(heavy), shared)
    heavy_number = np.full(len(counts), sizes.nheavy, dtype=np.int32)
    heavy_number[heavy] = np.arange(len(heavy))
    entry_heavy = _padded(heavy_number[entry_level], sizes.ne, sizes.nheavy)
    light = _padded(light, sizes.ne, False)
    entry_level = _in_place(_padded(entry_level, sizes.ne, 0, np.int32))  # blocks reuse them
    entry_row = _in_place(_padded(entry_row, sizes.ne, 0, np.int32))
    strip_first, strip_base = _strips(entry_level, entry_row, counts, light, sizes.nstrips)
    first_index, rest_index = _lambda_indices(design, sizes, first)
    n = design.nobs
    return RowStructure(
        codes1=t1.codes if first else np.zeros(n, dtype=np.int64),
        z1=_padded_columns(t1.z, sizes.s1) if first else np.zeros((n, 1)),
        slot_rows=slot_rows,
        slot_values=slot_values,
        slot_entries=slot_entries,
        entry_level=entry_level,
        entry_row=entry_row,
        strip_first=strip_first,
        strip_base=strip_base,
        entry_heavy=entry_heavy,
        heavy_level=_padded(heavy, sizes.nheavy, 0, np.int32),
        first_index=first_index,
        rest_index=rest_index,
        layout=parameters.theta_layout(tuple(t.n_columns for t in design.terms), sizes.n_theta),
        ng1=sizes.ng1,
        mz=sizes.mz,
        p=sizes.p,
    )


def _padded_columns(z: np.ndarray, width: int) -> np.ndarray:
    """``z`` with zero columns up to ``width`` (itself where it has them all: no copy)."""
    return z if z.shape[1] == width else np.pad(z, ((0, 0), (0, width - z.shape[1])))


def _padded(a: np.ndarray, length: int, value, dtype=None) -> np.ndarray:
    """``a`` extended to ``length`` with ``value`` (``np.pad`` costs more on small arrays)."""
    out = np.full(length, value, dtype=dtype or a.dtype)
    out[: len(a)] = a
    return out


def _segment_sum(values, ids, n: int):
    """Sum rows of ``values`` into ``n`` segments, dropping ids past the last (NumPy bincount or
    JAX segment_sum)."""
    if isinstance(values, np.ndarray):
        flat = values.reshape(len(values), -1)
        sums = [np.bincount(ids, weights=flat[:, j], minlength=n)[:n] for j in range(flat.shape[1])]
        return np.stack(sums, axis=-1).reshape((n,) + values.shape[1:])
    return jax.ops.segment_sum(values, ids, num_segments=n)


def _heavy_rows(rs: RowStructure, entry_values, mz: int):
    """The heavy levels' coupling entries as dense rows (nheavy, s1, mz)."""
    shape = (rs.heavy_level.shape[0], entry_values.shape[1], mz)
    if isinstance(entry_values, np.ndarray):
        rows = _aligned_empty(shape, np.float64, zeros=True)  # aligned at once: a large block
        keep = rs.entry_heavy < shape[0]
        rows[rs.entry_heavy[keep], :, rs.entry_row[keep]] = entry_values[keep]
        return rows
    rows = jnp.zeros(shape, entry_values.dtype)
    return rows.at[rs.entry_heavy, :, rs.entry_row].add(entry_values, mode="drop")


def blocks_from_rows(rs: RowStructure, y, x, weights) -> Blocks:
    """The blocks for response ``y``, fixed-effect columns ``x`` (n, p) and prior weights (0
    drops a row): NumPy in, NumPy out; JAX arrays in (e.g. under ``vmap``), JAX arrays out."""
    host = all(isinstance(a, np.ndarray) for a in (y, x, weights))
    xp = np if host else jnp
    w, mz, ng1 = weights, rs.mz, rs.ng1
    s1 = rs.z1.shape[1]
    p = x.shape[1]
    n = y.shape[0]
    xy = xp.concatenate([x, xp.zeros((n, rs.p - p), dtype=y.dtype), y[:, None]], axis=1)
    wz1 = w[:, None] * rs.z1
    a11 = _segment_sum(wz1[:, :, None] * rs.z1[:, None, :], rs.codes1, ng1)
    ax1 = _segment_sum(wz1[:, :, None] * xy[:, None, :], rs.codes1, ng1)
    padded_fixed = np.arange(rs.p + 1) >= p
    padded_fixed[-1] = False
    axx = xy.T @ (w[:, None] * xy) + np.diag(padded_fixed.astype(np.float64))

    n_slots = rs.slot_rows.shape[0]
    azz = _aligned_empty((mz, mz), y.dtype, zeros=True) if host else jnp.zeros((mz, mz), y.dtype)
    azx = xp.zeros((mz, xy.shape[1]), dtype=y.dtype)
    entry_values = xp.zeros((len(rs.entry_level), s1), dtype=y.dtype)
    if n_slots:
        wv = w[None, :] * rs.slot_values  # (C, n)
        targets = (rs.slot_rows[:, None, :] * mz + rs.slot_rows[None, :, :]).reshape(-1)
        products = (wv[:, None, :] * rs.slot_values[None, :, :]).reshape(-1)  # (C, C, n)
        if host:  # into the aligned block: no (mz, mz) temporary
            np.add.at(azz.reshape(-1), targets, products)
        else:
            azz = _segment_sum(products, targets, mz * mz).reshape(mz, mz)
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
    heavy_rows = _heavy_rows(rs, entry_values, mz)
    positive = w > 0
    blocks = Blocks(
        a11=a11,
        ax1=ax1,
        axx=axx,
        azz=azz,
        azx=azx,
        entry_level=rs.entry_level,
        entry_row=rs.entry_row,
        entry_values=entry_values,
        strip_first=rs.strip_first,
        strip_base=rs.strip_base,
        heavy_level=rs.heavy_level,
        heavy_rows=heavy_rows,
        nobs=xp.sum(positive).astype(y.dtype),
        sum_log_weights=xp.sum(xp.where(positive, xp.log(xp.where(positive, w, 1.0)), 0.0)),
        n_fixed=xp.asarray(p, dtype=y.dtype),
        first_index=rs.first_index,
        rest_index=rs.rest_index,
        layout=rs.layout,
    )
    return jax.tree.map(_in_place, blocks) if host else blocks


IN_PLACE_ALIGNMENT = 64  # XLA's CPU client reads a host array in place when it is this aligned
IN_PLACE_MIN_BYTES = 2**20


def _in_place(a: np.ndarray) -> np.ndarray:
    """``a``, in memory that XLA's CPU client uses without a copy of its own (NumPy aligns to
    16 bytes only): a large design's blocks are read by the compiled fit where they lie."""
    if a.nbytes < IN_PLACE_MIN_BYTES or a.ctypes.data % IN_PLACE_ALIGNMENT == 0:
        return a
    out = _aligned_empty(a.shape, a.dtype)
    out[...] = a
    return out


def _aligned_empty(shape: tuple[int, ...], dtype, zeros: bool = False) -> np.ndarray:
    """An array whose data starts IN_PLACE_ALIGNMENT-aligned: uninitialised, or ``zeros``.

    Large ones are mapped from the system directly: page-aligned, in ordinary pages, zero and
    taking no memory until written (a large design's heavy rows are mostly zeros). NumPy asks
    for transparent huge pages for its own large arrays, and where the system's memory is
    fragmented each page fault then waits for the kernel to compact memory: writing a 1M-row
    design's blocks took 2-3x as long the first time in a process."""
    nbytes = int(np.prod(shape)) * np.dtype(dtype).itemsize
    if nbytes >= IN_PLACE_MIN_BYTES and hasattr(mmap, "MAP_ANONYMOUS"):
        memory = mmap.mmap(-1, nbytes, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
        return np.frombuffer(memory, dtype).reshape(shape)
    buffer = (np.zeros if zeros else np.empty)(nbytes + IN_PLACE_ALIGNMENT, dtype=np.uint8)
    start = -buffer.ctypes.data % IN_PLACE_ALIGNMENT
    return buffer[start : start + nbytes].view(dtype).reshape(shape)
