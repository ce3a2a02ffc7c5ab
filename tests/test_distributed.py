"""lmer_batch across processes (jax.distributed on CPU): every process gets the one-process
tables. The processes import jaxlmm before ``jax.distributed.initialize()``, as the README's
script does, so importing jaxlmm must leave JAX's backends alone."""

import itertools
import os
import socket
import subprocess
import sys
import textwrap
import time

import numpy as np
import pandas as pd
import pytest

import jaxlmm
from jaxlmm import batch
from jaxlmm.optimize import BATCHED_ITERATIONS

FORMULA = "y ~ Days + (Days | Subject)"

CHILD = textwrap.dedent(
    """
    import sys
    from pathlib import Path

    import jax
    import numpy as np

    import jaxlmm

    port, process_id, folder, formula = sys.argv[1:]
    process_id, folder = int(process_id), Path(folder)
    jax.distributed.initialize(f"127.0.0.1:{port}", num_processes=2, process_id=process_id)
    data = jaxlmm.datasets.load("sleepstudy")
    bf = jaxlmm.lmer_batch(formula, data, np.load(folder / "y.npy"), progress=False)
    bf.to_frame().to_pickle(folder / f"p{process_id}-frame.pkl")
    bf.coef_table().to_pickle(folder / f"p{process_id}-coef.pkl")
    jax.distributed.shutdown()
    """
)


def responses(data: pd.DataFrame) -> np.ndarray:
    """41 simulated responses, some with missing values, one constant (fails screening), and
    four with little noise (more iterations than the batched optimiser's cap: refitted)."""
    rng = np.random.default_rng(7)
    days = data["Days"].to_numpy(dtype=float)
    subject = data["Subject"].cat.codes.to_numpy()
    b = rng.normal(0, [25, 6], (41, subject.max() + 1, 2))[:, subject]
    noise = np.where(np.arange(41) % 10 == 1, 1.0, 25.0)[:, None]
    y = 250 + (10 + b[..., 1]) * days + b[..., 0] + rng.normal(0, noise, (41, len(days)))
    y[::4, :15] = np.nan
    y[9] = 300.0
    return y


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_children(script, args, env, timeout: float) -> list[str]:
    """Start one child per argument list; their failures, with the end of their output."""
    logs = [script.with_name(f"log{i}.txt") for i in range(len(args))]
    children = []
    for a, log in zip(args, logs, strict=True):
        with open(log, "w") as out:
            command = [sys.executable, str(script), *a]
            children.append(subprocess.Popen(command, env=env, stdout=out, stderr=out))
    deadline = time.monotonic() + timeout
    failures = []
    for i, (child, log) in enumerate(zip(children, logs, strict=True)):
        try:
            code = child.wait(timeout=max(deadline - time.monotonic(), 1))
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()
            code = f"none: still running after {timeout} s"
        if code != 0:
            failures.append(f"process {i} (exit code {code}):\n{log.read_text()[-3000:]}")
    return failures


def test_two_processes_give_the_one_process_tables(tmp_path, sleepstudy):
    y = responses(sleepstudy)
    with pytest.MonkeyPatch.context() as patch:  # the vmapped program, as in the processes
        patch.setattr(batch, "ONE_BY_ONE", 0)
        one = jaxlmm.lmer_batch(FORMULA, sleepstudy, y, progress=False)
    assert one.status_code[9] == jaxlmm.Status.CONSTANT_RESPONSE
    assert np.all(one.result.opt.iterations[1::10] > sum(BATCHED_ITERATIONS))  # in both shares
    tables = {"frame": one.to_frame(), "coef": one.coef_table()}

    np.save(tmp_path / "y.npy", y)
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    env = dict(os.environ, JAX_PLATFORMS="cpu", JAXLMM_CACHE_DIR=str(tmp_path / "cache"))
    for run in ["compiling", "with the programs both processes left in the on-disk cache"]:
        port = str(free_port())
        args = [[port, str(i), str(tmp_path), FORMULA] for i in range(2)]
        failures = run_children(script, args, env, timeout=120)
        assert not failures, f"{run}:\n" + "\n".join(failures)
        for i, name in itertools.product(range(2), tables):
            written = pd.read_pickle(tmp_path / f"p{i}-{name}.pkl")
            pd.testing.assert_frame_equal(written, tables[name], rtol=1e-10, atol=1e-10)
            (tmp_path / f"p{i}-{name}.pkl").unlink()
