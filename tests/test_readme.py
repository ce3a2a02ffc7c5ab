"""Every ```python block of README.md runs as written, top to bottom, in one namespace.

A block whose preceding line is ``<!-- not run -->`` is skipped (it needs several processes
or a GPU); the README keeps such blocks few.
"""

import re
import warnings
from pathlib import Path

import jax

import jaxlmm

README = Path(__file__).parent.parent / "README.md"
SKIP = "<!-- not run -->"


def python_blocks(text: str) -> list[tuple[int, str, bool]]:
    """(line number, code, skipped) of each ```python block."""
    lines = text.split("\n")
    blocks, k = [], 0
    while k < len(lines):
        if lines[k].strip() == "```python":
            start = k + 1
            end = next(j for j in range(start, len(lines)) if lines[j].strip() == "```")
            previous = next(
                (lines[j].strip() for j in range(k - 1, -1, -1) if lines[j].strip()), ""
            )
            blocks.append((start + 1, "\n".join(lines[start:end]), previous == SKIP))
            k = end
        k += 1
    return blocks


def test_blocks_are_found():
    blocks = python_blocks(README.read_text())
    assert len(blocks) >= 5
    assert sum(skipped for _, _, skipped in blocks) <= 2
    assert not any(re.search(r"^\s*>>>", code, re.M) for _, code, _ in blocks)


def test_readme_python_blocks_run(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # a block that writes a file writes it here
    namespace: dict = {"__name__": "__readme__"}
    x64 = jax.config.jax_enable_x64  # the README switches JAX to float64; the suite does not
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", jaxlmm.ConvergenceWarning)
            for line, code, skipped in python_blocks(README.read_text()):
                if not skipped:
                    exec(compile(code, f"README.md:{line}", "exec"), namespace)
    finally:
        jax.config.update("jax_enable_x64", x64)
