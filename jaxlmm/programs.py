"""jaxlmm's compiled programs: float64 whatever the user's JAX settings, one executable per
size class, kept in memory and on disk.

:func:`run` calls a pure JAX function through an executable chosen by the shapes and dtypes
of its arguments (padded to size classes by the callers, so models of similar size share it).
A new size class is traced and compiled once per process; the executable is also written to
an on-disk cache, from which a later process loads it without tracing or compiling. The cache
is jaxlmm's own (JAX's global compilation-cache settings are left alone): by default
``$XDG_CACHE_HOME/jaxlmm`` (``~/.cache/jaxlmm``), moved with ``JAXLMM_CACHE_DIR``, turned off
with ``JAXLMM_NO_CACHE=1``. Entries are keyed by the program, the argument shapes, jaxlmm's
source, the JAX version and the machine's CPU, so a change in any of them compiles afresh.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import pickle
import platform
import re
import tempfile
from functools import cache, partial
from pathlib import Path

import jax
import numpy as np
from jax.experimental import serialize_executable


def _cores() -> int:
    """CPU cores this process may run on."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


# Compiling is what a user waits for when fitting many small models. XLA's legacy fusion code
# generation compiles jaxlmm's programs 2-3x faster than its default fusion emitters, and LLVM's
# optimisation level 1 another 15% faster than 2; both run as fast (the programs' time goes to
# LAPACK, Eigen and loop control, not to generated code). Level 0 would halve compiling again
# but runs 2-3x slower and was seen to hang XLA's runtime. LLVM compiles the program in parts
# side by side: twice as many parts as cores keeps every core busy without the cost of many
# small parts (on two cores, 4 parts compile 15-20% faster than XLA's default). Hoisting
# loop-invariant code out of the optimiser's loops is one of XLA's costliest passes on these
# programs (10% of compiling a small fit); it is left out, and the criterion's theta-free parts
# are formed before the loops instead (``deviance.dense_system``), so fits run as fast.
# Large problems (a leaf of LARGE_LEAF elements or more: the dense block of a large crossed
# design) compute for seconds and compile once: XLA's defaults run them 10-20% faster, but for
# what would hold extra (mz, mz) arrays. Hoisting would hold constants (an identity) through
# the loop. XLA's tree reductions and its YNN library's reductions both take their operand as
# an array of its own, so a sum over the elementwise product of two (mz, mz) arrays would form
# that product (and YNN a broadcast of a vector to (mz, mz)); without them the product is fused
# into the sum. YNN still does the matrix products, which it runs faster than XLA's own
# (ML-1M: 0.97 s for the criterion and gradient against 1.07 s). The memory-optimised
# scheduler orders the rest.
# On other devices (GPU) XLA's defaults apply throughout.
COMPILER_OPTIONS = {
    "xla_cpu_use_fusion_emitters": False,
    "xla_backend_optimization_level": 1,
    "xla_cpu_parallel_codegen_split_count": 2 * _cores(),
    "xla_disable_hlo_passes": "while-loop-invariant-code-motion",
}
LARGE_LEAF = 2**20
LARGE_OPTIONS = {
    "xla_disable_hlo_passes": "while-loop-invariant-code-motion,tree_reduction_rewriter",
    "xla_cpu_scheduler_type": "CPU_SCHEDULER_TYPE_MEMORY_OPTIMIZED",
    "xla_cpu_experimental_ynn_fusion_type": "LIBRARY_FUSION_TYPE_INDIVIDUAL_DOT",
}


def compiler_options(args) -> dict:
    """XLA options for a program on ``args``: on CPU quick to compile unless the problem is
    large, and never hoisting loop-invariant code (which would hold a large design's (mz, mz)
    constants, such as an identity, across the optimiser's loop)."""
    if jax.default_backend() != "cpu":
        return {}
    return LARGE_OPTIONS if _large(args) else COMPILER_OPTIONS


def _large(args) -> bool:
    return any(np.size(a) >= LARGE_LEAF for a in jax.tree.leaves(args))


def _release_freed_memory() -> None:
    """Hand the heap freed so far back to the system (glibc keeps it otherwise) before a large
    program runs: the few hundred MB that building the model and compiling freed, which the
    program's large buffers, mapped apart, could not reuse."""
    try:
        ctypes.CDLL(None).malloc_trim(0)
    except (OSError, AttributeError, TypeError):  # not glibc
        pass


_executables: dict = {}  # key -> (executable, whether its problem is large)
_counts = {"compiled": 0, "loaded": 0}


def counts() -> dict[str, int]:
    """Programs this process has compiled and loaded from the disk cache so far."""
    return dict(_counts)


def float64():
    """A context in which JAX computes in float64 (jaxlmm's statistics), whatever the user's
    global ``jax_enable_x64``."""
    return jax.enable_x64(True)


def run(fn, *args, **static):
    """``fn(*args, **static)`` by a compiled executable for the arguments' shapes and dtypes.
    ``static`` values are baked into the program (hashable, part of the key)."""
    with float64():
        key = program_key(fn, *args, **static)
        entry = _executables.get(key)
        if entry is None:
            entry = _executables[key] = (_load_or_compile(fn, args, static, key), _large(args))
        executable, large = entry
        if large:
            _release_freed_memory()
        return executable(*args)


def program_key(fn, *args, **static) -> tuple:
    """What identifies the executable of ``run(fn, *args, **static)``: the program and the
    arguments' shapes, dtypes and shardings."""
    leaves, treedef = jax.tree.flatten(args)
    signature = tuple((np.shape(a), _dtype(a), _sharding(a)) for a in leaves)
    return (fn.__module__, fn.__qualname__, tuple(sorted(static.items())), treedef, signature)


def available(key: tuple) -> bool:
    """Whether the executable of ``key`` is in memory or in the disk cache (no compiling)."""
    path = _cache_path(key)
    return key in _executables or (path is not None and path.exists())


def _dtype(a) -> str:
    return np.dtype(a.dtype).str if hasattr(a, "dtype") else np.result_type(a).str


def _sharding(a):
    sharding = getattr(a, "sharding", None)
    return None if sharding is None or len(sharding.device_set) == 1 else sharding


def _load_or_compile(fn, args, static, key):
    path = _cache_path(key)
    if path is not None and path.exists():
        try:
            _prepare_lapack()
            serialized, in_tree, out_tree = pickle.loads(path.read_bytes())
            executable = serialize_executable.deserialize_and_load(serialized, in_tree, out_tree)
            _counts["loaded"] += 1
            return executable
        except Exception:  # a stale or damaged entry: compile afresh and overwrite it
            pass
    compiled = _compile(jax.jit(partial(fn, **static)).lower(*args), compiler_options(args))
    _counts["compiled"] += 1
    if path is not None:
        _store(path, compiled)
    return compiled


def _compile(lowered, options: dict):
    """``lowered`` compiled with ``options``, but for those this XLA does not know (they come
    and go between versions of jaxlib)."""
    try:
        return lowered.compile(options)
    except jax.errors.JaxRuntimeError as error:
        unknown = re.search(r"No such compile option: '(\w+)'", str(error))
        if unknown is None or unknown.group(1) not in options:
            raise
        return _compile(lowered, {k: v for k, v in options.items() if k != unknown.group(1)})


@cache
def _prepare_lapack() -> None:
    """Register JAX's LAPACK kernels, as lowering a linear-algebra op would: a loaded
    executable calls them without lowering anything."""
    from jax._src.lax import linalg

    linalg.initialize_lapack()


def _store(path: Path, compiled) -> None:
    """Write the executable atomically; a cache that cannot be written is simply not used."""
    try:
        payload = pickle.dumps(serialize_executable.serialize(compiled))
        path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path.parent, delete=False) as tmp:
            tmp.write(payload)
        os.replace(tmp.name, path)
    except Exception:
        pass


def cache_dir() -> Path | None:
    """Where compiled programs are kept on disk (None when the cache is off)."""
    if os.environ.get("JAXLMM_NO_CACHE"):
        return None
    if os.environ.get("JAXLMM_CACHE_DIR"):
        return Path(os.environ["JAXLMM_CACHE_DIR"])
    home = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(home) / "jaxlmm"


def _cache_path(key) -> Path | None:
    root = cache_dir()
    if root is None or any(s is not None for *_, s in key[-1]):  # multi-device: memory only
        return None
    digest = hashlib.sha256(repr((key, _environment())).encode()).hexdigest()[:32]
    return root / "programs" / f"{digest}.bin"


@cache
def _environment() -> tuple:
    """What an executable depends on beyond its program: jaxlmm's source, JAX, the device and
    (on CPU) the instruction set it was compiled for. The device's id counts too: an executable
    runs on the device it was compiled for, and the processes of a multi-process run (which may
    share the cache) each have their own. So does the number of devices: an executable loaded
    where there are more expects its arguments on all of them."""
    source = hashlib.sha256()
    for file in sorted(Path(__file__).parent.glob("*.py")):
        source.update(file.read_bytes())
    device = jax.local_devices()[0]
    return (
        source.hexdigest(),
        jax.__version__,
        device.platform,
        device.device_kind,
        device.id,
        jax.local_device_count(),
        jax.process_count(),
        platform.machine(),
        _cpu_flags(),
    )


def _cpu_flags() -> str:
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return platform.processor()
    wanted = [line for line in lines if line.startswith(("flags", "model name", "Features"))]
    return hashlib.sha256("\n".join(sorted(set(wanted))).encode()).hexdigest()
