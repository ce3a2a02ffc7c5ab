"""The batch engine: one model, many responses, fitted together with ``vmap``.

The right-hand side (X, Z, weights) is shared; each response brings its own values and its own
missing rows (zero weights). Cross-products, optimiser and estimates run per response inside one
compiled, vmapped program (:func:`estimate.fit_blocks`, the engine of every fit), chunk by
chunk, with the batch axis sharded over the local devices. In a multi-process JAX run
(``jax.distributed``) each process fits its share of the responses and the results are gathered,
so that every process holds them all. Responses that cannot be fitted get a :class:`Status` and
never disturb the others. Results objects live in :mod:`batch_fit`.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import Mesh, NamedSharding, PartitionSpec
from tqdm.auto import tqdm

from . import parameters, programs
from .crossprod import STRIP, RowStructure, blocked, blocks_from_rows
from .design import Design
from .estimate import Estimates, assemble, fit_blocks
from .inference import varpar_jacobians
from .model import Model, block_diagonal, from_design, response_scale
from .optimize import BATCHED_ITERATIONS, ITERATIONS, OptResult
from .solution import Solution
from .status import Status


def _chunk_blocks(rows: RowStructure, x, weights, y, observed, scale):
    return blocks_from_rows(
        rows, jnp.where(observed, y, 0.0) / scale, x, jnp.where(observed, weights, 0.0)
    )


def _fit_chunk(rows: RowStructure, x, weights, y, observed, scale, theta0, reml, iterations):
    """Fit a chunk of responses: (chunk, n) values and masks -> per-response results."""

    def one(y, observed, scale):
        blocks = _chunk_blocks(rows, x, weights, y, observed, scale)
        opt, solution = fit_blocks(
            blocks, theta0, reml, iterations, quasi_newton=True, vmapped=True
        )
        empty = jnp.zeros((0,), solution.beta.dtype)
        return opt, solution._replace(b1=empty.reshape(0, 0), b_rest=empty)

    return jax.vmap(one)(y, observed, scale)


def _derivative_chunk(rows: RowStructure, x, weights, y, observed, scale, varpar, reml):
    """Per response: the Hessian of the deviance in (theta, sigma) and d vcov(beta)/d varpar."""

    def one(y, observed, scale, varpar):
        blocks = _chunk_blocks(rows, x, weights, y, observed, scale)
        return varpar_jacobians(varpar, blocks, scale, reml)

    return jax.vmap(one)(y, observed, scale, varpar)


def screen(design: Design, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Masks of usable values and a :class:`Status` per response for problems seen before
    fitting (the first problem in the list wins)."""
    observed = ~np.isnan(y)
    nobs = observed.sum(axis=1)
    status = np.zeros(len(y), dtype=np.int32)
    filled = np.where(observed & np.isfinite(y), y, 0.0)
    mean = filled.sum(axis=1) / np.maximum(nobs, 1)
    spread = np.where(observed, np.abs(filled - mean[:, None]), 0.0).max(axis=1)
    weights = observed * design.weights
    xwx = np.einsum("bi,ij,ik->bjk", weights, design.x, design.x)
    p = design.x.shape[1]
    aliased = np.zeros(len(y), dtype=bool)
    if p:
        eig = np.linalg.eigvalsh(xwx)
        aliased = eig[:, 0] <= 1e-10 * np.maximum(eig[:, -1], 1e-300)
    too_few_levels = np.zeros(len(y), dtype=bool)
    too_few_obs = nobs <= p
    for term in design.terms:
        order = np.argsort(term.codes, kind="stable")
        counts = np.bincount(term.codes, minlength=term.n_levels)
        per_level = np.add.reduceat(observed[:, order], np.cumsum(counts) - counts, axis=1)
        levels = (per_level > 0).sum(axis=1)
        too_few_levels |= levels < 2
        too_few_obs |= (levels >= nobs) | (levels * term.n_columns >= nobs)
    checks = [
        (nobs == 0, Status.NO_OBSERVATIONS),
        (np.isinf(y).any(axis=1), Status.INFINITE_RESPONSE),
        (too_few_levels, Status.TOO_FEW_LEVELS),
        (too_few_obs, Status.TOO_FEW_OBSERVATIONS),
        (spread == 0, Status.CONSTANT_RESPONSE),
        (aliased, Status.FIXED_EFFECTS_ALIASED),
    ]
    for failed, code in reversed(checks):
        status = np.where(failed, code, status)
    return observed & np.isfinite(y), status


CHUNK_MEMORY = 2**31  # bytes that one chunk's per-response work may take
DENSE_COPIES = 48  # (mz, mz) arrays per response: the exact Hessian's ~20, with headroom


def work_bytes(rows: RowStructure) -> int:
    """Bytes that one response's fit holds while it runs: copies of the dense block (the exact
    Hessian's), a step of its fill-in's loop over pairs and values per observation."""
    pairs = rows.strip_first.shape[-1] * STRIP * rows.z1.shape[1]
    return 8 * (DENSE_COPIES * rows.mz**2 + 4 * pairs + 16 * rows.codes1.shape[0])


def chunk_size_for(n_responses: int, chunk_size: int, n_devices: int, rows: RowStructure) -> int:
    """Responses per compiled call: a power of two (at least 16 when memory allows) up to
    ``chunk_size`` and within :data:`CHUNK_MEMORY`, so that batches of different sizes share
    compiled code and large crossed designs do not hold responses x pairs at once; a multiple
    of the device count."""
    fits = max(1, CHUNK_MEMORY // work_bytes(rows))
    size = min(chunk_size, max(16, 1 << max(n_responses - 1, 0).bit_length()))
    size = min(size, 1 << (fits.bit_length() - 1))
    return -(-size // n_devices) * n_devices


def _sharding(n_devices: int):
    mesh = Mesh(np.array(jax.local_devices()[:n_devices]), ("batch",))
    return NamedSharding(mesh, PartitionSpec("batch")), NamedSharding(mesh, PartitionSpec())


@dataclass(frozen=True)
class BatchResult:
    """What the engine returns: per-response results (NaN where not fitted), padded as the
    model's blocks, for responses divided by ``scale``."""

    model: Model
    y: np.ndarray  # (B, n) responses on the model's rows (offset not removed)
    observed: np.ndarray  # (B, n) bool
    scale: np.ndarray  # (B,)
    opt: OptResult
    solution: Solution  # without conditional modes

    @property
    def estimates(self) -> Estimates:
        """Per-response estimates (no conditional modes: ``b`` is empty)."""
        nobs = self.observed.sum(axis=1).astype(np.float64)
        opt = self.opt
        return assemble(
            opt.theta, self.solution, opt.value, opt.status, nobs, self.scale, self.model
        )


ONE_BY_ONE = 256  # responses of small models fitted one at a time before batching compiles


_fitted_one_by_one: Counter = Counter()  # per batched program: responses fitted one at a time


def fit_responses(
    design: Design,
    y: np.ndarray,
    reml: bool = True,
    chunk_size: int = 512,
    progress: bool = False,
    devices: int | None = None,
    theta0=None,
    iterations=BATCHED_ITERATIONS,
) -> tuple[BatchResult, np.ndarray]:
    """Fit the model of ``design`` to each row of ``y`` (B, nobs) (NaN: missing), starting
    from ``theta0`` (default lme4's identity start); ``iterations`` caps the vmapped optimiser
    (responses it leaves unconverged are refitted one by one). Returns the results and the
    status of every response. With several JAX processes, every process must make the same
    call: each fits its share of the responses and all return the whole batch.

    Compiling the vmapped program takes seconds. Until it is compiled (or on disk), a
    one-device, one-process run fits the responses of small models (every random effect in
    lmer's dense block) one at a time with lmer's own program, for up to :data:`ONE_BY_ONE`
    responses per batched program: a first bootstrap or small batch costs milliseconds per
    response and no compiling."""
    observed, status = screen(design, y)
    n_devices = min(devices or jax.local_device_count(), jax.local_device_count())
    response = y - design.offset
    scale = response_scale(np.where(observed, response, 0.0), observed * design.weights)
    theta0 = parameters.initial_theta(_sizes(design)) if theta0 is None else theta0
    good = np.flatnonzero(status == Status.CONVERGED)
    mine = _share(good)

    core = from_design(design, reml, shared=False)
    size = chunk_size_for(len(y), chunk_size, n_devices, core.rows)
    start = parameters.pad_theta(theta0, core.rows.layout.active.shape[0])

    def chunk_of(index):  # padded to the chunk size
        padded = np.concatenate([index, np.full(size - len(index), index[0])])
        return response[padded], observed[padded], scale[padded]

    fitted = None
    if len(mine):
        shared = (core.rows, core.x, core.weights)
        rest = (start, bool(reml), np.asarray(iterations))
        key = programs.program_key(_fit_chunk, *shared, *chunk_of(mine[:size]), *rest)
        if _one_at_a_time(design, key, len(mine), n_devices):
            core = from_design(design, reml, shared=True)  # lmer's layout: its program
            start = parameters.pad_theta(theta0, core.rows.layout.active.shape[0])
            fitted = _fit_one_by_one(
                core, response[mine], observed[mine], scale[mine], start, reml, progress
            )
        else:
            fitted = _fit_batched(shared, chunk_of, rest, mine, size, n_devices, progress)
            fitted = _retry_unconverged(
                fitted, core, response[mine], observed[mine], scale[mine], start, reml
            )

    n_theta, p = core.rows.layout.active.shape[0], core.rows.p
    nan = partial(np.full, fill_value=np.nan)
    opt = OptResult(
        theta=nan((len(y), n_theta)),
        value=nan(len(y)),
        gradient=nan((len(y), n_theta)),
        hessian=nan((len(y), n_theta, n_theta)),
        on_boundary=np.zeros((len(y), n_theta), dtype=bool),
        iterations=np.zeros(len(y), dtype=np.int32),
        status=status,
    )
    solution = Solution(
        beta=nan((len(y), p)),
        b1=np.zeros((len(y), 0, 0)),
        b_rest=np.zeros((len(y), 0)),
        pwrss=nan(len(y)),
        vcov_unscaled=nan((len(y), p, p)),
    )
    if fitted is not None:
        opt, solution = jax.tree.map(partial(_scatter, index=mine), (opt, solution), fitted)
    if jax.process_count() > 1:
        gathered = _gather(jax.tree.map(lambda a: a[mine], (opt, solution)), len(good))
        opt, solution = jax.tree.map(partial(_scatter, index=good), (opt, solution), gathered)
    return BatchResult(core, y, observed, scale, opt, solution), np.asarray(opt.status)


def _one_at_a_time(design: Design, key: tuple, n: int, n_devices: int) -> bool:
    """Whether ``n`` responses are fitted one at a time rather than by the batched program of
    ``key`` (see :func:`fit_responses`); they count against its budget if so."""
    alone = n_devices == 1 and jax.process_count() == 1
    small = not blocked(design, shared=True)
    if not alone or not small or programs.available(key):
        return False
    if _fitted_one_by_one[key] + n > ONE_BY_ONE:
        return False
    _fitted_one_by_one[key] += n
    return True


def _sizes(design: Design) -> tuple[int, ...]:
    return tuple(t.n_columns for t in design.terms)


def _fit_batched(shared, chunk_of, rest, index: np.ndarray, size: int, n_devices: int, progress):
    """The responses ``index`` fitted by the vmapped program, ``size`` at a time:
    ``_fit_chunk(*shared, *chunk_of(part), *rest)``."""
    rows_sharding, replicated = _sharding(n_devices)
    with programs.float64():
        shared = jax.device_put(shared, replicated)
    results = []
    for start in tqdm(range(0, len(index), size), disable=not progress, unit="chunk"):
        part = index[start : start + size]
        with programs.float64():
            chunk = jax.device_put(chunk_of(part), rows_sharding)
        out = programs.run(_fit_chunk, *shared, *chunk, *rest)
        results.append(jax.tree.map(partial(_head, k=len(part)), out))
    return jax.tree.map(lambda *a: np.concatenate(a), *results)


def _fit_one_by_one(core: Model, y, observed, scale, theta0, reml: bool, progress=False, **options):
    """Responses fitted one at a time by the single-fit program (lmer's, unless ``options``
    of :func:`fit_blocks` say otherwise): stacked (OptResult, Solution), no conditional
    modes."""
    fits = []
    for k in tqdm(range(len(y)), disable=not progress, unit="response"):
        w = core.weights * observed[k]
        blocks = blocks_from_rows(core.rows, np.where(observed[k], y[k], 0.0) / scale[k], core.x, w)
        opt, solution = programs.run(
            fit_blocks, blocks, theta0, bool(reml), np.asarray(ITERATIONS), **options
        )
        no_modes = solution._replace(b1=np.zeros((0, 0)), b_rest=np.zeros(0))
        fits.append(jax.tree.map(np.asarray, (opt, no_modes)))
    return jax.tree.map(lambda *a: np.stack(a), *fits)


def _share(index: np.ndarray) -> np.ndarray:
    """This process's part of ``index`` (all of it in a one-process run); the parts of the
    processes, in process order, make up ``index``."""
    return np.array_split(index, jax.process_count())[jax.process_index()]


def _gather(part, total: int):
    """Every process's ``part`` (NumPy arrays over its :func:`_share` of ``total`` responses)
    joined in process order, in every process. Shares differ in length by one at most: they
    travel padded to the longest."""
    lengths = [len(s) for s in np.array_split(np.arange(total), jax.process_count())]

    def pad(a):
        return np.pad(a, [(0, max(lengths) - len(a))] + [(0, 0)] * (a.ndim - 1))

    with programs.float64():
        stacked = multihost_utils.process_allgather(jax.tree.map(pad, part))
    return jax.tree.map(
        lambda a: np.concatenate([a[i, :n] for i, n in enumerate(lengths)]), stacked
    )


def _head(a, k: int) -> np.ndarray:
    return np.asarray(a)[:k]


def _scatter(full: np.ndarray, part, index: np.ndarray) -> np.ndarray:
    full = np.array(full)
    full[index] = np.asarray(part)
    return full


def _retry_unconverged(fitted, core: Model, y, observed, scale, theta0, reml: bool):
    """Refit, one at a time with uncapped iterations, the few responses that the batched
    pass (capped iterations) left unconverged; keep whichever result is better."""
    opt, _ = fitted
    retry = np.flatnonzero(np.isin(opt.status, [Status.GRADIENT_NOT_SMALL, Status.HESSIAN_NOT_PD]))
    if not len(retry):
        return fitted
    singles = _fit_one_by_one(  # with the batch's BFGS start
        core, y[retry], observed[retry], scale[retry], theta0, reml, quasi_newton=True
    )
    better = (singles[0].status == Status.CONVERGED) | (singles[0].value < opt.value[retry])
    for full, part in zip(jax.tree.leaves(fitted), jax.tree.leaves(singles), strict=True):
        full[retry[better]] = part[better]
    return fitted


def satterthwaite_parts(result: BatchResult, fitted: np.ndarray, chunk_size: int):
    """(Hessian in varpar, Jacobian of vcov(beta)) of the responses ``fitted``, real sizes.
    Computed in this process alone, also in a multi-process run (it costs little next to the
    fits), so that one process can make the tables. The derivatives are vmapped in the
    batches' layout (:func:`model.block_diagonal`), also for responses fitted one at a time in
    lmer's."""
    core = block_diagonal(result.model)
    est = result.estimates
    n_theta = core.rows.layout.active.shape[0]
    varpar = np.column_stack([parameters.pad_theta(est.theta, n_theta), est.sigma])[fitted]
    size = chunk_size_for(len(fitted), chunk_size, 1, core.rows)
    real = np.append(np.arange(core.n_theta), n_theta)
    p = core.info.n_fixed
    hessians, jacobians = [], []
    for start in range(0, len(fitted), size):
        index = np.arange(start, min(start + size, len(fitted)))
        padded = np.concatenate([index, np.full(size - len(index), index[0])])
        rows = fitted[padded]
        response = result.y[rows] - core.offset
        h, j = programs.run(
            _derivative_chunk,
            core.rows,
            core.x,
            core.weights,
            response,
            result.observed[rows],
            result.scale[rows],
            varpar[padded],
            core.reml,
        )
        hessians.append(np.asarray(h)[: len(index)][:, real][:, :, real])
        jacobians.append(np.asarray(j)[: len(index)][:, real][:, :, :p, :p])
    return np.concatenate(hessians), np.concatenate(jacobians)
