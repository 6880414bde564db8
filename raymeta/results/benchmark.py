"""Recording benchmark figures, and the results store's own throughput benchmark.

Every ``jobs/bench_*.py`` script stores its figures with :func:`record_benchmark` in the
``benchmarks`` table, tagged with the machine and the command that produced them.
"""

from __future__ import annotations

import datetime as dt
import multiprocessing as mp
import os
import platform
import shlex
import sys
import time
from collections.abc import Mapping, Sequence
from typing import Any

from raymeta.results.store import ResultStore

__all__ = [
    "describe_machine",
    "measure_appends",
    "measure_reads",
    "record_benchmark",
    "stored_runs",
]


def describe_machine() -> str:
    """One line naming the machine a figure was measured on."""
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    return (
        f"{platform.node()} {platform.machine()} cpus={os.cpu_count()} "
        f"python={platform.python_version()} load1={load:.1f}"
    )


def record_benchmark(
    store: ResultStore, benchmark: str, rows: Sequence[Mapping[str, Any]]
) -> int:
    """Append benchmark figures, each tagged with machine, command and time.

    Args:
        store: Where to write (table ``benchmarks``).
        benchmark: Benchmark name, used as the experiment partition.
        rows: Dicts with at least ``metric`` and ``value``; optional ``family``,
            ``method``, ``seed``, ``step`` and any extra columns.

    Returns:
        Rows written (0, and nothing appended, when ``rows`` is empty).
    """
    if not rows:
        return 0
    stamp = {
        "experiment": benchmark,
        "benchmark": benchmark,
        "machine": describe_machine(),
        "command": shlex.join([os.path.basename(sys.executable), *sys.argv]),
        "recorded_at": dt.datetime.now(dt.UTC),
    }
    return store.append("benchmarks", [{**stamp, **row} for row in rows])


def stored_runs(
    store: ResultStore, benchmark: str, *, metric: str = "regret"
) -> set[tuple[str, int, str]]:
    """``(family, seed, method)`` of the runs of ``benchmark`` that stored ``metric``.

    Benchmark scripts skip these on a rerun, so an interrupted run resumes.
    """
    if "benchmarks" not in store.tables():
        return set()
    df = store.to_pandas(
        "benchmarks",
        filters=[("experiment", "=", benchmark)],
        columns=["family", "seed", "method", "metric"],
    )
    df = df[df.metric == metric]
    return {(f, int(s), m) for f, s, m in zip(df.family, df.seed, df.method)}


def _writer(root: str, writer: int, appends: int, rows: int, start: Any) -> None:
    store = ResultStore(root)
    batch = [
        {"experiment": "bench", "run_id": f"w{writer}", "name": "x", "value": float(i)}
        for i in range(rows)
    ]
    start.wait()
    for seq in range(appends):
        store.append("metrics", batch, key=(writer, seq))


def measure_appends(
    root: str, *, writers: int, appends: int, rows: int
) -> dict[str, float]:
    """Time ``writers`` processes, each making ``appends`` keyed appends of ``rows``.

    Returns:
        ``seconds``, ``appends_per_s`` and ``rows_per_s`` over all writers.
    """
    ctx = mp.get_context("spawn")
    start = ctx.Event()
    procs = [
        ctx.Process(target=_writer, args=(root, w, appends, rows, start))
        for w in range(writers)
    ]
    for p in procs:
        p.start()
    time.sleep(2.0)  # let the children import pyarrow before the clock starts
    t0 = time.perf_counter()
    start.set()
    for p in procs:
        p.join()
        if p.exitcode != 0:
            raise RuntimeError(f"writer process exited with {p.exitcode}")
    seconds = time.perf_counter() - t0
    total = writers * appends
    return {
        "seconds": seconds,
        "appends_per_s": total / seconds,
        "rows_per_s": total * rows / seconds,
    }


def measure_reads(
    store: ResultStore, table: str, *, repeats: int = 5
) -> dict[str, float]:
    """Median time of a full read of ``table``, and rows/s and files/s at that time."""
    times, rows = [], 0
    for _ in range(repeats):
        t0 = time.perf_counter()
        rows = store.read(table).num_rows
        times.append(time.perf_counter() - t0)
    median = sorted(times)[len(times) // 2]
    files = len(store.files(table))
    return {
        "seconds": median,
        "rows_per_s": rows / median,
        "files_per_s": files / median,
    }
