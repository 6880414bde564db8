"""Benchmark Tune searchers inside real Tune runs on benchmark task families.

Usage::

    python jobs/bench_tune_searchers.py --families branin,digits_svm_noisy --seeds 8 \
        --store bench-results/store

For every family, seed and searcher (ScaMLGPSearch with meta-data, ScaMLGPSearch
without, OptunaSearch TPE, random search, OptunaSearch with a CMA-ES warm-started
from the meta-data, ``CmaEsSampler(source_trials=...)``) one Tune run of
``--num-samples`` sequential trials tunes the study's target task. Per run it
records best (noise-free) regret after 10 and 20 trials, each suggestion's searcher
overhead and the run's wall time in the store table ``benchmarks`` (keyed, so a
rerun skips finished runs), then prints the medians over seeds: regret at 10/20
trials, overhead median/p95, total wall time.

A family is a parametric one (``branin``) or a tabular target
(``fcnet/protein_structure``, ``hpobench_mlp/car``: leave-one-out meta-data of
``--n-meta-tabular`` configurations per other dataset). On tabular families the
CMA-ES searcher tunes the continuous relaxation of the grid (CMA-ES cannot sample the
ordinal choices the others get); every trial evaluates the nearest grid point.
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
import tempfile
import time
from datetime import UTC, datetime

import numpy as np
import ray

from raymeta.results import ResultStore
from raymeta.search.trainables import draw_family_study, optuna_source_trials
from raymeta.search.tuning import (
    SEARCHERS,
    build_searcher,
    run_family_tuning,
    trial_values,
)
from raymeta.tasks.tabular import TABULAR_FAMILIES

BENCH = "tune_searchers"
STEPS = (10, 20)


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--families", default="branin,digits_svm_noisy")
    p.add_argument("--methods", default=",".join(SEARCHERS))
    p.add_argument("--seeds", type=int, default=8)
    p.add_argument("--first-seed", type=int, default=0)
    p.add_argument("--num-samples", type=int, default=20)
    p.add_argument("--num-meta", type=int, default=8)
    p.add_argument("--n-meta", type=int, default=32)
    p.add_argument("--n-meta-tabular", type=int, default=256)
    p.add_argument("--restarts", type=int, default=5)
    p.add_argument("--raw-samples", type=int, default=1024)
    p.add_argument("--num-restarts", type=int, default=4)
    p.add_argument("--meta-restarts", type=int, default=5)
    p.add_argument("--store", default="bench-results/store")
    p.add_argument("--experiment", default=BENCH)
    p.add_argument("--machine", default=f"{os.cpu_count()}-core shared CPU box")
    return p.parse_args()


def run_one(args, family, seed, method, storage):
    base, _, target = family.partition("/")
    study = draw_family_study(
        base,
        seed=seed,
        num_meta=args.num_meta,
        n_meta=args.n_meta_tabular if target else args.n_meta,
        target=target,
    )
    warm = method == "optuna_cmaes_ws"
    options = {
        "restarts": args.restarts,
        "raw_samples": args.raw_samples,
        "num_restarts": args.num_restarts,
        "meta_restarts": args.meta_restarts,
    }
    searcher = build_searcher(
        method,
        metric="loss",
        mode="min",
        seed=seed,
        meta_data=study.meta_tasks,
        options=options,
        source_trials=optuna_source_trials(study) if warm else None,
    )
    start = time.perf_counter()
    grid, timed = run_family_tuning(
        study,
        searcher=searcher,
        experiment=f"{family.replace('/', '-')}-s{seed}-{method}",
        storage_path=storage,
        num_samples=args.num_samples,
        relaxed=warm,
    )
    wall = time.perf_counter() - start
    best = np.minimum.accumulate(trial_values(grid, "true_loss"))
    regret = best - study.target.optimum()
    return regret, timed.suggest_seconds, wall


WARM_METHODS = ("scamlgp", "optuna_cmaes_ws")


def meta_task_count(args, family: str) -> int:
    """M of a family key: ``--num-meta``, or every other dataset of a tabular one."""
    base, _, target = family.partition("/")
    return TABULAR_FAMILIES[base].num_meta if target else args.num_meta


def rows_for(args, family, seed, method, regret, overhead, wall):
    base = {
        "experiment": args.experiment,
        "benchmark": BENCH,
        "family": family,
        "method": method,
        "seed": seed,
        "machine": args.machine,
        "command": shlex.join([sys.executable, *sys.argv]),
        "recorded_at": datetime.now(UTC),
    }
    rows = [
        {**base, "step": k, "metric": "best_regret", "value": float(regret[k - 1])}
        for k in STEPS
        if k <= len(regret)
    ]
    rows += [
        {**base, "step": i + 1, "metric": "suggest_seconds", "value": float(s)}
        for i, s in enumerate(overhead)
    ]
    rows.append({**base, "step": None, "metric": "wall_time_s", "value": wall})
    rows.append(
        {
            **base,
            "step": None,
            "metric": "num_meta_tasks",
            "value": float(
                meta_task_count(args, family) if method in WARM_METHODS else 0
            ),
        }
    )
    return rows


def summarise(store, args):
    frame = store.to_pandas(
        "benchmarks", filters=[("experiment", "=", args.experiment)]
    )
    print(
        f"\n{args.experiment}: regret = median over seeds; overhead = over all "
        "suggestions; wall = total of all runs"
    )
    print(
        f"{'family':<28}{'method':<16}{'seeds':>5}{'regret@10':>11}{'regret@20':>11}"
        f"{'ovh med s':>10}{'ovh p95 s':>10}{'wall s':>9}"
    )
    for (family, method), g in frame.groupby(["family", "method"]):
        reg = g[g.metric == "best_regret"]
        r10 = reg[reg.step == 10].value.median()
        r20 = reg[reg.step == 20].value.median()
        ovh = g[g.metric == "suggest_seconds"].value
        wall = g[g.metric == "wall_time_s"].value.sum()
        print(
            f"{family:<28}{method:<16}{reg.seed.nunique():>5}{r10:>11.4g}{r20:>11.4g}"
            f"{ovh.median():>10.3f}{np.percentile(ovh, 95):>10.3f}{wall:>9.0f}"
        )


def main() -> None:
    args = parse_args()
    store = ResultStore(args.store)
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    storage = tempfile.mkdtemp(prefix="bench-tune-")
    done = set()
    if "benchmarks" in store.tables():
        old = store.to_pandas(
            "benchmarks", filters=[("experiment", "=", args.experiment)]
        )
        done = set(zip(old.family, old.seed, old.method))
    for seed in range(args.first_seed, args.first_seed + args.seeds):
        for family in args.families.split(","):
            for method in args.methods.split(","):
                if (family, seed, method) in done:
                    continue
                regret, overhead, wall = run_one(args, family, seed, method, storage)
                store.append(
                    "benchmarks",
                    rows_for(args, family, seed, method, regret, overhead, wall),
                    key=(args.experiment, family, seed, method),
                )
                r10 = regret[min(10, len(regret)) - 1]
                print(
                    f"{family} seed {seed} {method}: regret@10 {r10:.4g} "
                    f"@{len(regret)} {regret[-1]:.4g} overhead median "
                    f"{np.median(overhead):.3f}s wall {wall:.0f}s",
                    flush=True,
                )
    summarise(store, args)


if __name__ == "__main__":
    main()
