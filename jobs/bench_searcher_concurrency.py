"""Benchmark (check C11): does ScaMLGPSearch keep concurrent trials busy?

Usage::

    python jobs/bench_searcher_concurrency.py --num-samples 16 --trial-seconds 2 \
        --max-concurrent 4 --store bench-results/store

Runs the same Tune experiment twice on a local 2-CPU Ray: ``num_samples`` trials
that sleep ``trial_seconds`` (0.5 CPU each, so 4 fit), suggested by ScaMLGPSearch
behind ``ConcurrencyLimiter(max_concurrent=N)`` and then behind
``ConcurrencyLimiter(max_concurrent=1)`` (sequential; the concurrent run goes first,
so it also pays the process's Ray start-up). Wall times are whole ``Tuner.fit``
calls. Prints and records (table ``benchmarks``, benchmark ``searcher_concurrency``)
both wall times, their ratio and the peak RUNNING count; the target is concurrent
<= 0.5 x sequential (guards against ray PR #63770-style regressions where the
searcher serialises trials).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time

import ray
from ray import tune
from ray.tune.search import ConcurrencyLimiter

from raymeta.results import ResultStore
from raymeta.results.benchmark import describe_machine, record_benchmark
from raymeta.search.callback import PeakRunningCallback
from raymeta.search.searcher import ScaMLGPSearch
from raymeta.search.tuning import TimedSearcher

BENCH = "searcher_concurrency"


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--num-samples", type=int, default=16)
    p.add_argument("--trial-seconds", type=float, default=2.0)
    p.add_argument("--max-concurrent", type=int, default=4)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--store", default="bench-results/store")
    return p.parse_args()


def sleeping_trial(config: dict) -> None:
    time.sleep(config["seconds"])
    tune.report({"loss": (config["x"] - 0.3) ** 2 + config["y"] ** 2})


def wall_time(
    args: argparse.Namespace, max_concurrent: int, storage: str
) -> tuple[float, int, float]:
    """Seconds of one Tune run, its peak RUNNING and median seconds per suggestion."""
    peak = PeakRunningCallback()
    searcher = TimedSearcher(ScaMLGPSearch(metric="loss", mode="min", seed=args.seed))
    tuner = tune.Tuner(
        tune.with_resources(sleeping_trial, {"cpu": 0.5}),
        param_space={
            "x": tune.uniform(-1, 1),
            "y": tune.uniform(-1, 1),
            "seconds": args.trial_seconds,
        },
        tune_config=tune.TuneConfig(
            search_alg=ConcurrencyLimiter(searcher, max_concurrent=max_concurrent),
            num_samples=args.num_samples,
            reuse_actors=True,
        ),
        run_config=tune.RunConfig(
            name=f"conc{max_concurrent}",
            storage_path=storage,
            callbacks=[peak],
            verbose=0,
        ),
    )
    start = time.perf_counter()
    grid = tuner.fit()
    seconds = time.perf_counter() - start
    if len(grid) != args.num_samples or grid.errors:
        raise RuntimeError(f"run with max_concurrent={max_concurrent} failed")
    return seconds, peak.peak, statistics.median(searcher.suggest_seconds)


def main() -> None:
    args = parse_args()
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    storage = tempfile.mkdtemp(prefix="bench-conc-")
    # concurrent first: the first run in the process also pays Ray's worker start-up
    concurrent, peak, suggest_conc = wall_time(args, args.max_concurrent, storage)
    sequential, _, suggest_seq = wall_time(args, 1, storage)
    ratio = concurrent / sequential
    print(
        f"{BENCH}: {args.num_samples} trials of {args.trial_seconds:g} s; wall "
        f"sequential {sequential:.1f} s, max_concurrent={args.max_concurrent} "
        f"{concurrent:.1f} s (peak RUNNING {peak}), ratio {ratio:.3f} "
        f"(target <= 0.5); median suggest {suggest_seq:.3f} s sequential, "
        f"{suggest_conc:.3f} s concurrent [{describe_machine()}]"
    )
    base = {"family": "sleep", "method": "scamlgp", "seed": args.seed}
    record_benchmark(
        ResultStore(args.store),
        BENCH,
        [
            {**base, "metric": "wall_time_s_sequential", "value": sequential},
            {
                **base,
                "metric": f"wall_time_s_concurrent{args.max_concurrent}",
                "value": concurrent,
            },
            {**base, "metric": "wall_time_ratio", "value": ratio},
            {**base, "metric": "peak_running", "value": float(peak)},
            {**base, "metric": "suggest_s_median_sequential", "value": suggest_seq},
            {
                **base,
                "metric": f"suggest_s_median_concurrent{args.max_concurrent}",
                "value": suggest_conc,
            },
        ],
    )


if __name__ == "__main__":
    main()
