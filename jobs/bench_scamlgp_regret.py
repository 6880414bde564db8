"""ScaML-GP vs plain GP-BO vs random search: simple regret on seeded task families.

    python jobs/bench_scamlgp_regret.py
        [--families branin,hartmann3,digits_svm,digits_svm_noisy] [--seeds 16]
        [--first-seed 0] [--num-meta 8] [--n-meta 32] [--budget 40]
        [--max-fit-tasks 128] [--out bench-results] [--summary-only]

``--max-fit-tasks``: proposals with more meta-tasks than this screen to the ones with
the highest marginal-likelihood gain (``raymeta.gp.screen``); set it to
``--num-meta`` to measure the exact, unscreened model on the same seeds.

Per (family, seed, method) the per-step regrets go to the ``benchmarks`` table of the
store at ``<out>/store`` as soon as a study finishes (idempotent keys, so an interrupted
run resumes where it stopped). The summary (median regret at T=1,5,10,20,40, ratio to
GP-BO, paired Wilcoxon on cumulative regret, CPU seconds per study) is printed, stored,
and the curves saved to ``<out>/scamlgp_regret_<family>.png``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

from raymeta.gp.benchmark import METHODS, compare_methods, run_bo
from raymeta.gp.propose import MAX_FIT_TASKS
from raymeta.results import ResultStore
from raymeta.results.benchmark import record_benchmark
from raymeta.results.plots import plot_lines
from raymeta.search.fitting import fit_meta_tasks
from raymeta.tasks.bo import FAMILIES, draw_study

BENCH = "scamlgp_regret"
DEFAULT_FAMILIES = ("branin", "hartmann3", "digits_svm", "digits_svm_noisy")


def done_keys(store: ResultStore) -> set[tuple[str, int, str]]:
    if "benchmarks" not in store.tables():
        return set()
    df = store.to_pandas(
        "benchmarks",
        filters=[("experiment", "=", BENCH)],
        columns=["family", "seed", "method", "metric"],
    )
    df = df[df.metric == "regret"]
    return {(f, int(s), m) for f, s, m in zip(df.family, df.seed, df.method)}


def run_family(store, family, seeds, args, done) -> None:
    fam = FAMILIES[family]
    for seed in seeds:
        todo = [m for m in args.methods if (family, seed, m) not in done]
        if not todo:
            continue
        study = draw_study(fam, seed=seed, num_meta=args.num_meta, n_meta=args.n_meta)
        f_star = study.target.optimum()
        states = fit_meta_tasks(study.meta_tasks, seed=seed, num_workers=0)
        fit_s = sum(s.fit_seconds for s in states)
        for method in todo:
            res = run_bo(
                study,
                method,
                states,
                budget=args.budget,
                f_star=f_star,
                max_fit_tasks=args.max_fit_tasks,
            )
            rows = [
                {
                    "family": family,
                    "method": method,
                    "seed": seed,
                    "step": t + 1,
                    "metric": "regret",
                    "value": float(r),
                }
                for t, r in enumerate(res.regret)
            ]
            rows += [
                {
                    "family": family,
                    "method": method,
                    "seed": seed,
                    "metric": "cpu_seconds_study",
                    "value": res.cpu_seconds,
                },
                {
                    "family": family,
                    "method": method,
                    "seed": seed,
                    "metric": "meta_fit_seconds",
                    "value": fit_s,
                },
                {
                    "family": family,
                    "method": method,
                    "seed": seed,
                    "metric": "fallback_steps",
                    "value": float(sum(f is not None for f in res.fallbacks)),
                },
            ]
            record_benchmark(store, BENCH, rows)
            print(
                f"{family} seed={seed} {method}: regret@10={res.regret[9]:.4g} "
                f"@{args.budget}={res.regret[-1]:.4g} cpu={res.cpu_seconds:.1f}s "
                f"(meta-fit {fit_s:.1f}s)",
                flush=True,
            )


def summarise(store: ResultStore, families, out: Path) -> None:
    df = store.to_pandas("benchmarks", filters=[("experiment", "=", BENCH)])
    figures = []
    for family in families:
        sub = df[(df.family == family) & (df.metric == "regret")]
        if sub.empty:
            continue
        by_method = {}
        seeds = set.intersection(
            *[set(sub[sub.method == m].seed) for m in sub.method.unique()]
        )
        for method, g in sub[sub.seed.isin(seeds)].groupby("method"):
            table = g.pivot_table(index="seed", columns="step", values="value")
            by_method[method] = table.sort_index().to_numpy()
        stats = compare_methods(by_method, steps=(1, 5, 10, 20, 40, 80))
        cpu = df[(df.family == family) & (df.metric == "cpu_seconds_study")]
        for method, g in cpu.groupby("method"):
            stats[f"median_cpu_seconds_study/{method}"] = float(g.value.median())
        stats["num_paired_seeds"] = float(len(seeds))
        print(f"== {family} ({len(seeds)} paired seeds)")
        for key, value in stats.items():
            print(f"  {key} = {value:.4g}")
            metric, _, method = key.partition("/")
            figures.append(
                {
                    "family": family,
                    "method": method or None,
                    "metric": "summary/" + metric,
                    "value": value,
                }
            )
        paired = sub[sub.seed.isin(seeds)].assign(regret=sub.value.clip(lower=1e-6))
        png = plot_lines(
            paired, x="step", y="regret", by="method", logy=True,
            out=out / f"scamlgp_regret_{family}.png",
            title=f"{family}: simple regret, median and 25-75% ({len(seeds)} seeds)",
        )  # fmt: skip
        print(f"saved {png}")
    record_benchmark(store, BENCH + "_summary", figures)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--families", default=",".join(DEFAULT_FAMILIES))
    parser.add_argument("--seeds", type=int, default=16)
    parser.add_argument("--first-seed", type=int, default=0)
    parser.add_argument("--num-meta", type=int, default=8)
    parser.add_argument("--n-meta", type=int, default=32)
    parser.add_argument("--budget", type=int, default=40)
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--max-fit-tasks", type=int, default=MAX_FIT_TASKS)
    parser.add_argument("--out", default="bench-results")
    parser.add_argument("--summary-only", action="store_true")
    args = parser.parse_args()
    args.methods = args.methods.split(",")
    torch.set_num_threads(1)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    store = ResultStore(out / "store")
    families = args.families.split(",")
    if not args.summary_only:
        seeds = list(range(args.first_seed, args.first_seed + args.seeds))
        done = done_keys(store)
        for family in families:
            run_family(store, family, seeds, args, done)
    summarise(store, families, out)


if __name__ == "__main__":
    np.seterr(all="ignore")
    main()
