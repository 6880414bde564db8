"""The ``raymeta`` command.

Subcommands:
    raymeta demo [--store DIR]              the three methods end to end on local Ray
    raymeta validate CONFIG...              check job configs completely before launch
    raymeta run CONFIG [--store S]          run a job config on the current/local Ray
    raymeta results ls ROOT                 tables, rows, experiments in a store
    raymeta results show ROOT TABLE ...     print rows (filter by experiment, columns)
    raymeta results plot ROOT TABLE ...     median line plot with a 25-75% band -> PNG
    raymeta results gc ROOT                 remove temporary files of killed writers

Bad input ends with one line ``raymeta: error: <reason>`` and exit status 2.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from raymeta.errors import RaymetaError

__all__ = ["build_parser", "main"]


def _store(root: str, *, must_exist: bool = True):
    from raymeta.results import ResultStore

    if must_exist and "://" not in root and not Path(root).is_dir():
        raise RaymetaError(f"no results store at {root!r} (directory not found)")
    return ResultStore(root)


def _filters(args: argparse.Namespace, store: Any, table: str) -> list | None:
    """``--experiment`` / ``--where COL=VALUE`` as pyarrow filters, checked first.

    Each column must be one of the table's (the message lists them) and each value
    must convert to the column's type, so bad input never reaches pyarrow.
    """
    schema = store.schema(table)
    filters = [("experiment", "=", e) for e in [args.experiment] if e]
    for item in args.where or []:
        column, sep, text = item.partition("=")
        if not sep or not column:
            raise RaymetaError(f"--where expects COLUMN=VALUE, got {item!r}")
        if column not in schema.names:
            raise RaymetaError(
                f"--where {item!r}: table {table!r} has no column {column!r}; its "
                f"columns are {schema.names}"
            )
        filters.append((column, "=", _typed(text, schema.field(column), item)))
    return filters or None


def _typed(text: str, field: Any, item: str) -> Any:
    """The ``--where`` value ``text`` converted to the column's Arrow type."""
    import pyarrow as pa

    kind = field.type
    try:
        if pa.types.is_boolean(kind):
            lowered = text.lower()
            if lowered not in ("true", "false", "1", "0"):
                raise ValueError(text)
            return lowered in ("true", "1")
        if pa.types.is_integer(kind):
            return int(text)
        if pa.types.is_floating(kind):
            return float(text)
        if pa.types.is_timestamp(kind):
            return pa.scalar(text).cast(kind)
    except (ValueError, pa.ArrowInvalid):
        raise RaymetaError(
            f"--where {item!r}: column {field.name!r} holds {kind} values; "
            f"{text!r} is not one"
        ) from None
    if pa.types.is_string(kind) or pa.types.is_large_string(kind):
        return text
    raise RaymetaError(
        f"--where {item!r}: column {field.name!r} holds {kind} values, which "
        "--where cannot compare; filter on another column"
    )


def cmd_results_ls(args: argparse.Namespace) -> int:
    """List the store's tables with row counts and experiments."""
    store = _store(args.root)
    tables = store.tables()
    if not tables:
        print(f"{store.root}: empty store")
    for table in tables:
        experiments = store.read(table, columns=["experiment"]).column("experiment")
        names = sorted(set(experiments.to_pylist()))
        print(
            f"{table:<14} rows={len(experiments):<8} files={len(store.files(table)):<5}"
            f" experiments={names}"
        )
    return 0


def cmd_results_show(args: argparse.Namespace) -> int:
    """Print a table's rows."""
    import pandas as pd

    if args.limit < 0:
        raise RaymetaError(f"--limit must be >= 0 (0 = all rows), got {args.limit}")
    store = _store(args.root)
    columns = args.columns.split(",") if args.columns else None
    unknown = [c for c in columns or [] if c not in store.schema(args.table).names]
    if unknown:
        raise RaymetaError(
            f"--columns: table {args.table!r} has no column(s) {unknown}; its columns "
            f"are {store.schema(args.table).names}"
        )
    filters = _filters(args, store, args.table)
    df = store.to_pandas(args.table, filters=filters, columns=columns)
    shown = df.tail(args.limit) if args.limit else df
    with pd.option_context("display.max_columns", 30, "display.width", 160):
        print(shown.to_string(index=False) if len(df) else "(no rows)")
    print(f"[{len(df)} rows]")
    return 0


def cmd_results_plot(args: argparse.Namespace) -> int:
    """Plot a stored table to a PNG."""
    from raymeta.results.plots import plot_lines

    store = _store(args.root)
    df = store.to_pandas(args.table, filters=_filters(args, store, args.table))
    if df.empty:
        raise RaymetaError(f"table {args.table!r} has no rows matching the filters")
    out = plot_lines(df, x=args.x, y=args.y, by=args.by, out=args.out, logy=args.logy)
    print(f"wrote {out}")
    return 0


def cmd_results_gc(args: argparse.Namespace) -> int:
    """Remove temporary files of killed writers."""
    removed = _store(args.root).gc(older_than_s=args.older_than_s)
    print(f"removed {removed} temporary file(s)")
    return 0


def cmd_validate(args: argparse.Namespace) -> int:
    """Validate job configs; every problem of every file is reported."""
    from raymeta.config import load_config

    problems = []
    for path in args.configs:
        try:
            cfg = load_config(path)
            print(f"{path}: ok (job {cfg.job!r})")
        except RaymetaError as err:
            problems.append(str(err))
    if problems:
        raise RaymetaError(" | ".join(problems))
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    """Run one job config."""
    from raymeta.config import load_config
    from raymeta.runner import run_job, with_overrides

    cfg = with_overrides(
        load_config(args.config),
        store=args.store,
        storage_path=args.storage_path,
        run_name=args.run_name,
    )
    print(run_job(cfg).text)
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    """Run the demo."""
    from raymeta.demo import STAGES, run_demo

    stages = args.stages.split(",") if args.stages else STAGES
    run_demo(args.store, verbose=args.verbose, stages=stages)
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``raymeta`` command."""
    parser = argparse.ArgumentParser(
        prog="raymeta",
        description="Ray-distributed meta-learning (ScaML-GP, SAMA, HeTRoM).",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    demo = sub.add_parser("demo", help="run the three methods end to end on local Ray")
    demo.add_argument("--store", default="raymeta-results", help="results store root")
    demo.add_argument(
        "--verbose",
        action="store_true",
        help="show Ray's own output too (default: written to <store>/logs/)",
    )
    demo.add_argument(
        "--stages",
        metavar="S1,S2",
        help="run only these of tune,baseline,sama,hetrom (plots need all four)",
    )
    demo.set_defaults(fn=cmd_demo)
    validate = sub.add_parser("validate", help="validate job config files")
    validate.add_argument("configs", nargs="+", metavar="CONFIG", help="TOML files")
    validate.set_defaults(fn=cmd_validate)
    run = sub.add_parser(
        "run", help="run a job config (resumes a run of the same name)"
    )
    run.add_argument("config", metavar="CONFIG", help="TOML file")
    run.add_argument("--store", help="override the results store root")
    run.add_argument("--storage-path", help="override the Ray storage path")
    run.add_argument("--run-name", help="training run name (rerunning resumes)")
    run.set_defaults(fn=cmd_run)
    _add_results(sub)
    return parser


def _add_results(sub: argparse._SubParsersAction) -> None:
    results = sub.add_parser("results", help="inspect and plot a results store")
    rsub = results.add_subparsers(dest="action", required=True, metavar="ACTION")

    def add(name: str, fn: Callable[[argparse.Namespace], int], help: str):
        p = rsub.add_parser(name, help=help, description=help)
        p.add_argument("root", metavar="ROOT", help="store root (path or URI)")
        p.set_defaults(fn=fn)
        return p

    add("ls", cmd_results_ls, "list tables, row counts and experiments")
    for name, fn, help in (
        ("show", cmd_results_show, "print rows of a table"),
        ("plot", cmd_results_plot, "plot median y vs x (25-75%% band) to a PNG"),
    ):
        p = add(name, fn, help)
        p.add_argument(
            "table", metavar="TABLE", help="e.g. metrics, trials, benchmarks"
        )
        p.add_argument("--experiment", help="only rows of this experiment")
        p.add_argument("--where", action="append", metavar="COL=VALUE", help="filter")
    show = rsub.choices["show"]
    show.add_argument("--columns", help="comma-separated columns to print")
    show.add_argument(
        "--limit", type=int, default=50, help="print the last N rows (0 = all)"
    )
    plot = rsub.choices["plot"]
    plot.add_argument("--x", default="step", help="x column (default: step)")
    plot.add_argument("--y", default="value", help="y column (default: value)")
    plot.add_argument("--by", help="one line per value of this column")
    plot.add_argument("--logy", action="store_true", help="log-scale y axis")
    plot.add_argument("--out", default="raymeta-plot.png", help="PNG path")
    gc = add("gc", cmd_results_gc, "remove temporary files left by killed writers")
    gc.add_argument("--older-than-s", type=float, default=3600.0)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``raymeta`` console script."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.fn(args)
    except (RaymetaError, OSError) as err:
        message = " ".join(str(err).split())
        print(f"raymeta: error: {message}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
