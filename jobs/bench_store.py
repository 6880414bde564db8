"""Benchmark the results store: appends/s and rows/s for 1, 4, 8 writers; reads.

    python jobs/bench_store.py [--out bench-results/store] [--appends 50] [--rows 20]

Prints the figures and appends them to the ``benchmarks`` table of the store at --out.
"""

from __future__ import annotations

import argparse
import tempfile

from raymeta.results import ResultStore
from raymeta.results.benchmark import measure_appends, measure_reads, record_benchmark


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="bench-results/store")
    parser.add_argument("--appends", type=int, default=50)
    parser.add_argument("--rows", type=int, default=20)
    args = parser.parse_args()

    figures = []
    for writers in (1, 4, 8):
        with tempfile.TemporaryDirectory() as scratch:
            w = measure_appends(
                scratch, writers=writers, appends=args.appends, rows=args.rows
            )
            r = measure_reads(ResultStore(scratch), "metrics")
        print(
            f"writers={writers}: {w['appends_per_s']:.0f} appends/s, "
            f"{w['rows_per_s']:.0f} rows/s ({w['seconds']:.2f} s); full read of "
            f"{writers * args.appends} files: {r['seconds'] * 1e3:.0f} ms "
            f"({r['rows_per_s']:.0f} rows/s, {r['files_per_s']:.0f} files/s)"
        )
        for metric, value in [
            *(("write_" + k, v) for k, v in w.items()),
            *(("read_" + k, v) for k, v in r.items()),
        ]:
            figures.append(
                {"method": f"{writers}-writers", "metric": metric, "value": value}
            )
    record_benchmark(ResultStore(args.out), "bench_store", figures)
    print(f"stored {len(figures)} figures in {args.out} (table benchmarks)")


if __name__ == "__main__":
    main()
