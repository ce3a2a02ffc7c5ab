"""Command line: ``jaxlmm fit DATA FORMULA [options]`` prints lme4's summary of the fit
(lmerTest's, with df and p-values, when ``--ddf`` is given), optionally with confidence
intervals, conditional modes and a diagnostics plot, or writes the estimates as JSON or CSV.
Malformed input gives one ``jaxlmm: error: ...`` line on stderr and exit status 2.
"""

from __future__ import annotations

import argparse
import csv
import importlib.util
import io
import json
import math
import sys
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd

from . import datasets, parameters
from .errors import JaxlmmError
from .fit import lmer
from .printing import matrix_lines

DESCRIPTION = """\
Fit a linear mixed model with lme4's formula syntax and print lme4's summary of it.

{data}
"""

EPILOG = """\
examples:
  jaxlmm fit sleepstudy "Reaction ~ Days + (Days | Subject)"
  jaxlmm fit sleepstudy "Reaction ~ Days + (Days | Subject)" --ddf satterthwaite --confint profile
  jaxlmm fit data.csv "y ~ x + (1 | g)" --weights w --output json > fit.json
"""


class _UsageError(Exception):
    pass


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, no usage block
        raise _UsageError(message)


def _version() -> str:
    from . import __version__

    return __version__


def _data_help() -> str:
    text = (
        f"DATA is a bundled data set ({', '.join(datasets.names())}) or the path of a CSV or "
        'Parquet file (Parquet needs: pip install "jaxlmm[parquet]").'
    )
    return textwrap.fill(text, 79)


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="jaxlmm",
        description="Linear mixed-effects models in JAX with lme4's formula syntax and numbers.",
        epilog='Run "jaxlmm fit --help" for the options of a fit.',
    )
    parser.add_argument("--version", action="version", version=f"jaxlmm {_version()}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    fit = commands.add_parser(
        "fit",
        help="fit a linear mixed model and print its summary",
        description=DESCRIPTION.format(data=_data_help()),
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    fit.add_argument("data", help="bundled data set name or path to a CSV or Parquet file")
    fit.add_argument("formula", help='lme4 formula, e.g. "Reaction ~ Days + (Days | Subject)"')
    fit.add_argument("--ml", action="store_true", help="maximum likelihood instead of REML")
    fit.add_argument(
        "--ddf",
        choices=["satterthwaite", "kenward-roger"],
        help="add df and p-values to the fixed effects (lmerTest's summary)",
    )
    fit.add_argument("--weights", metavar="COLUMN", help="column of prior weights")
    fit.add_argument(
        "--confint",
        choices=["wald", "profile", "bootstrap"],
        help="confidence intervals by this method",
    )
    fit.add_argument("--level", type=float, default=0.95, help="confidence level (default 0.95)")
    fit.add_argument("--nsim", type=int, default=1000, help="bootstrap replicates (default 1000)")
    fit.add_argument("--seed", type=int, help="random seed of the bootstrap")
    fit.add_argument(
        "--ranef", action="store_true", help="print the conditional modes (lme4's ranef)"
    )
    fit.add_argument(
        "--plot",
        metavar="FILE.png",
        help="save residual diagnostics to FILE (needs matplotlib)",
    )
    fit.add_argument(
        "--output",
        choices=["text", "json", "csv"],
        default="text",
        help="text (lme4's summary, default) or machine-readable estimates",
    )
    return parser


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


def _check_options(args) -> None:
    if not 0 < args.level < 1:
        raise JaxlmmError(f"--level must be between 0 and 1, got {args.level}")
    if args.nsim < 1:
        raise JaxlmmError(f"--nsim must be a positive integer, got {args.nsim}")
    if args.plot is not None and importlib.util.find_spec("matplotlib") is None:
        raise JaxlmmError('--plot needs matplotlib: pip install "jaxlmm[plot]"')


def _number(value):
    """A JSON-safe number: NaN and infinities become null."""
    if value is None:
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def _sdcor_names(fit) -> list[str]:
    """The confint name of each row of ``fit.varcorr`` (``sd_Days|Subject``, ..., ``sigma``)."""
    names = parameters.sdcor_names(fit.design.terms)
    return [names[k] for k in parameters.varcorr_order(fit.sizes)]


def _records(fit, ddf, intervals, ranef) -> dict:
    """Everything the machine-readable outputs hold."""
    table = fit.coef_table(ddf or "none")
    fixed = []
    for term, row in table.iterrows():
        entry = {"term": term, "estimate": row["estimate"], "std_error": row["std_error"]}
        if ddf:
            entry["df"] = row["df"]
        entry["t_value"] = row["t_value"]
        if ddf:
            entry["p_value"] = row["p_value"]
        fixed.append(entry)
    random = []
    vc = fit.varcorr
    for name, (_, row) in zip(_sdcor_names(fit), vc.iterrows(), strict=True):
        random.append(
            {
                "parameter": name,
                "group": row["group"],
                "var1": row["var1"],
                "var2": row["var2"],
                "vcov": row["vcov"],
                "sdcor": row["sdcor"],
                "std_error": row["std_error"],
            }
        )
    statistics = {
        "REMLcrit" if fit.reml else "deviance": fit.objective,
        "logLik": fit.loglik,
        "AIC": fit.aic,
        "BIC": fit.bic,
        "sigma": fit.sigma,
        "nobs": fit.nobs,
        "df_residual": fit.df_residual,
    }
    result = {
        "formula": fit.design.formula.text,
        "data": fit.data_name,
        "reml": fit.reml,
        "ddf": ddf,
        "converged": fit.converged,
        "singular": fit.singular,
        "status": fit.status,
        "ngroups": fit.ngroups,
        "theta": list(fit.theta),
        "statistics": statistics,
        "fixed_effects": fixed,
        "random_effects": random,
    }
    if intervals is not None:
        result["confint"] = [
            {"parameter": name, "lower": row["lower"], "upper": row["upper"]}
            for name, row in intervals.iterrows()
        ]
    if ranef is not None:
        result["ranef"] = {
            group: [{"level": str(level), **row.to_dict()} for level, row in frame.iterrows()]
            for group, frame in ranef.items()
        }
    return result


def _clean(value):
    """Plain Python values for json: NumPy scalars unwrapped, NaN as null."""
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return _number(value)
    if value is None or (not isinstance(value, str) and pd.isna(value)):
        return None
    return value


CSV_COLUMNS = [
    "section", "group", "level", "name", "name2", "estimate", "std_error", "df", "statistic",
    "p_value", "lower", "upper",
]  # fmt: skip


def _csv_text(record: dict) -> str:
    """One long table: fixed effects, random-effect SDs and correlations, fit statistics,
    and with --ranef the conditional modes (``std_error``: conditional SD)."""
    bounds = {c["parameter"]: (c["lower"], c["upper"]) for c in record.get("confint", [])}
    rows = []
    for f in record["fixed_effects"]:
        lower, upper = bounds.get(f["term"], (None, None))
        rows.append(
            {"section": "fixed", "name": f["term"], "estimate": f["estimate"],
             "std_error": f["std_error"], "df": f.get("df"), "statistic": f["t_value"],
             "p_value": f.get("p_value"), "lower": lower, "upper": upper}
        )  # fmt: skip
    for r in record["random_effects"]:
        lower, upper = bounds.get(r["parameter"], (None, None))
        rows.append(
            {"section": "random", "group": r["group"], "name": r["var1"], "name2": r["var2"],
             "estimate": r["sdcor"], "std_error": r["std_error"], "lower": lower,
             "upper": upper}
        )  # fmt: skip
    for name, value in record["statistics"].items():
        rows.append({"section": "statistic", "name": name, "estimate": value})
    for group, levels in record.get("ranef", {}).items():
        for entry in levels:
            names = [k for k in entry if k != "level" and not k.startswith("condsd_")]
            for name in names:
                rows.append(
                    {"section": "ranef", "group": group, "level": entry["level"],
                     "name": name, "estimate": entry[name],
                     "std_error": entry.get(f"condsd_{name}")}
                )  # fmt: skip
    out = io.StringIO()
    writer = csv.DictWriter(out, CSV_COLUMNS, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: ("" if v is None else v) for k, v in _clean(row).items()})
    return out.getvalue()


def _frame_text(frame: pd.DataFrame) -> str:
    """A numeric frame as R prints a matrix (each column formatted on its own)."""
    from .printing import format_real

    columns = [format_real(frame[c].to_numpy(dtype=float)) for c in frame.columns]
    cells = [list(row) for row in zip(*columns, strict=True)]
    return "\n".join(matrix_lines(cells, [str(i) for i in frame.index], list(frame.columns)))


def _run(args) -> None:
    _check_options(args)
    data, name = _read_data(args.data)
    fit = lmer(args.formula, data, reml=not args.ml, weights=args.weights, data_name=name)
    intervals = None
    if args.confint:
        intervals = fit.confint(args.confint, args.level, nsim=args.nsim, seed=args.seed)
    ranef = fit.ranef(condvar=True) if args.ranef else None
    if args.plot:
        fig = fit.plot()
        fig.savefig(args.plot)
        import matplotlib.pyplot as plt

        plt.close(fig)
    if args.output == "text":
        parts = [fit.summary(ddf=args.ddf)]
        if intervals is not None:
            parts.append(f"{args.confint.capitalize()} confidence intervals:\n{intervals!r}")
        if ranef is not None:
            for group, frame in ranef.items():
                modes = frame[[c for c in frame.columns if not c.startswith("condsd_")]]
                parts.append(f"${group}\n{_frame_text(modes)}")
        print("\n\n".join(parts))
        return
    record = _records(fit, args.ddf, intervals, ranef)
    if args.output == "json":
        print(json.dumps(_clean(record), indent=2))
    else:
        sys.stdout.write(_csv_text(record))


def main(argv: list[str] | None = None) -> int:
    """Run the command line; returns the exit status (2 for malformed input)."""
    parser = _parser()
    try:
        args = parser.parse_args(argv)
        _run(args)
    except SystemExit as done:  # --help and --version
        return done.code if isinstance(done.code, int) else 0
    except (_UsageError, JaxlmmError, OSError, ImportError) as err:
        message = " ".join(str(err).splitlines())
        print(f"jaxlmm: error: {message}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
