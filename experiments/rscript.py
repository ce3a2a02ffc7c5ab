"""Run an R script on data frames, for the benchmarks' side-by-side lme4 figures."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path

import pandas as pd


def run_rscript(script: str, frames: list[pd.DataFrame], args: list[str]) -> str | None:
    """Write ``frames`` as CSV files beside ``script`` in a temporary folder and run
    ``Rscript script <csv files> <args>``. Returns the last line R printed, or None (with R's
    error printed) when R is not installed or fails."""
    if shutil.which("Rscript") is None:
        return None
    with tempfile.TemporaryDirectory() as tmp:
        paths = [Path(tmp) / f"data{k}.csv" for k in range(len(frames))]
        for frame, path in zip(frames, paths, strict=True):
            frame.to_csv(path, index=False)
        script_path = Path(tmp) / "bench.R"
        script_path.write_text(script)
        command = ["Rscript", str(script_path), *map(str, paths), *map(str, args)]
        result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        print(f"  R failed: {result.stderr.strip()[-300:]}")
        return None
    return result.stdout.strip().splitlines()[-1]
