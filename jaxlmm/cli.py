"""Command line: ``jaxlmm fit DATA FORMULA [--ml] [--ddf METHOD]`` prints lme4's summary of the
fit (lmerTest's, with df and p-values, when ``--ddf`` is given)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pandas as pd

from . import datasets
from .errors import JaxlmmError
from .fit import lmer


def _read_data(source: str) -> tuple[pd.DataFrame, str]:
    """A bundled data set by name, or a CSV / Parquet file by path."""
    path = Path(source)
    if path.suffix.lower() in {".csv", ".gz", ".parquet", ".pq"} or path.exists():
        if not path.exists():
            raise JaxlmmError(f"data file {source!r} does not exist")
        read = pd.read_parquet if path.suffix.lower() in {".parquet", ".pq"} else pd.read_csv
        try:
            return read(path), path.name
        except (ValueError, OSError) as err:  # pandas' parser errors are ValueErrors
            message = str(err).strip().replace("\n", " ")
            raise JaxlmmError(f"cannot read data file {source!r}: {message}") from None
    try:
        return datasets.load(source), source
    except KeyError:
        raise JaxlmmError(
            f"{source!r} is neither a file nor a bundled data set ({', '.join(datasets.names())})"
        ) from None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="jaxlmm", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    fit = commands.add_parser("fit", help="fit a linear mixed model and print its summary")
    fit.add_argument("data", help="bundled data set name or path to a CSV or Parquet file")
    fit.add_argument("formula", help='lme4 formula, e.g. "Reaction ~ Days + (Days | Subject)"')
    fit.add_argument("--ml", action="store_true", help="maximum likelihood instead of REML")
    fit.add_argument(
        "--ddf",
        choices=["satterthwaite", "kenward-roger"],
        help="add df and p-values to the fixed effects (lmerTest's summary)",
    )
    args = parser.parse_args(argv)
    try:
        data, name = _read_data(args.data)
        model = lmer(args.formula, data, reml=not args.ml, data_name=name)
        print(model.summary(ddf=args.ddf))
    except (JaxlmmError, OSError, ImportError) as err:
        print(f"jaxlmm: error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
