"""Benchmark HeTRoM against the plain average and the clean-task oracle.

    python jobs/bench_hetrom.py [--settings gauss-1shot,gauss-5shot,sinusoid]
        [--methods plain,oracle,hetrom-sort,...] [--contaminations 0,0.4]
        [--seeds 0,1,2] [--steps 1500] [--test-tasks 600] [--threads 1]
        [--store bench-results/store] [--plot bench-results/hetrom_vs_contamination.png]
        [--report-only]

Glyph settings (``glyphs-{1,5}shot-{protonet,anil}``, ``glyphs-1shot-maml``,
``glyphs-1shot-protonet-easy`` with 20% easy tasks on top of the contamination):
5-way episodes with 5 queries per class of rendered glyphs on a Conv4, 50 warm-up
steps; outlier tasks are upscaled scikit-learn digits. Run them with ``--steps``
sized to the machine (a Conv4 meta step on 20 tasks is ~0.5 s on 2 CPU cores).

Protocol (hetrom.md (f)): meta-batches of 20 tasks, half of the contamination noisy
(80% of labels resampled) and half outliers, 100 plain-average warm-up steps, then
the selection rule; evaluation on ``--test-tasks`` clean test tasks (95% CI).
Methods: plain average, oracle (clean tasks only), HeTRoM sort (m=8, k=20), HeTRoM
dual (m=8, k=18), log-normal thresholds (c_hi=1, c_lo=2.5); for one- vs two-sided
bands, sort with k=16 (``hetrom-twosided``) and dual with k=20
(``hetrom-dual-onesided``). Each finished run is
appended to the ``benchmarks`` table (key = setting/contamination/method/seed, so a
rerun skips what is stored); ``--report-only`` prints the summary and plot.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import shlex
import sys
import time
from pathlib import Path

import torch

from raymeta.config import HeTRoMConfig, override
from raymeta.metalearn.hetrom import selection_quality
from raymeta.results import ResultStore
from raymeta.results.benchmark import describe_machine
from raymeta.tasks.episodes import TASK_KINDS
from raymeta.training import train_hetrom_in_process
from raymeta.training.hetrom_program import evaluate_components

BENCH = "bench_hetrom"
SETTINGS = {
    "gauss-1shot": {"data.dataset": "gaussian_clusters", "data.shots": 1},
    "gauss-5shot": {"data.dataset": "gaussian_clusters", "data.shots": 5},
    "sinusoid": {
        "data.dataset": "sinusoid",
        "data.shots": 10,
        "data.queries": 10,
        "model.hidden": (40, 40),
        "embedding_dim": 40,
        "embedding_scale": 4.0,
        "inner_lr": 0.05,
    },
}
GLYPHS = {
    "data.dataset": "glyphs",
    "data.queries": 5,
    "model.factory": "conv4",
    "model.hidden": (),
    "embedding_dim": 64,
    "warmup_steps": 50,
}
for _shots in (1, 5):
    for _learner in ("protonet", "anil"):
        SETTINGS[f"glyphs-{_shots}shot-{_learner}"] = GLYPHS | {
            "data.shots": _shots,
            "learner": _learner,
        }
SETTINGS["glyphs-1shot-maml"] = GLYPHS | {
    "data.shots": 1,
    "learner": "maml",
    "inner_steps": 1,
    "inner_lr": 0.4,
}
SETTINGS["glyphs-1shot-protonet-easy"] = SETTINGS["glyphs-1shot-protonet"] | {
    "data.easy_fraction": 0.2
}
METHODS = {
    "plain": {"rule": "plain"},
    "oracle": {"rule": "oracle"},
    "hetrom-sort": {"rule": "sort", "m": 8, "k": 20},
    "hetrom-dual": {"rule": "dual", "m": 8, "k": 18, "threshold_lr": 0.02},
    "lognormal": {"rule": "lognormal", "c_hi": 1.0, "c_lo": 2.5},
}
# One- vs two-sided bands: the same rule with the other k.
METHODS["hetrom-twosided"] = METHODS["hetrom-sort"] | {"k": 16}
METHODS["hetrom-dual-onesided"] = METHODS["hetrom-dual"] | {"k": 20}


def run_one(cfg: HeTRoMConfig) -> dict[str, float]:
    """Train in-process, evaluate on clean test tasks, collect selection statistics."""
    dropped, selected, kinds, rank_s, step_s = [], [], [], 0.0, 0.0

    def on_step(rec) -> None:
        nonlocal rank_s, step_s
        rank_s, step_s = rank_s + rec.ranking_time_s, step_s + rec.step_time_s
        if rec.step >= cfg.warmup_steps:
            dropped.append(rec.selection.dropped_top)
            selected.append(rec.selection.selected)
            kinds.append(rec.kind_code)

    start = time.perf_counter()
    components = train_hetrom_in_process(cfg, on_step=on_step)
    train_s = time.perf_counter() - start
    mean, ci = evaluate_components(components, test_tasks=cfg.test_tasks)
    all_kinds = torch.cat(kinds)
    precision, recall = selection_quality(torch.cat(dropped), all_kinds)
    kept = torch.cat(selected)
    kept_share = {  # share of each kind's tasks that drove the meta-gradient
        f"kept_{kind}": float(kept[all_kinds == code].double().mean())
        for code, kind in enumerate(TASK_KINDS)
        if bool((all_kinds == code).any())
    }
    name = "mse" if cfg.data.dataset == "sinusoid" else "accuracy"
    return kept_share | {
        name: mean,
        f"{name}_ci95": ci,
        "precision_top": precision,
        "recall_top": recall,
        "ranking_overhead_pct": 100.0 * rank_s / step_s,
        "step_time_ms": 1e3 * step_s / cfg.steps,
        "train_time_s": train_s,
    }


def store_run(store, key, setting, contamination, method, seed, steps, figures) -> None:
    stamp = {
        "experiment": BENCH,
        "benchmark": BENCH,
        "family": setting,
        "method": method,
        "seed": seed,
        "step": steps,
        "contamination": contamination,
        "machine": describe_machine(),
        "command": shlex.join([os.path.basename(sys.executable), *sys.argv]),
        "recorded_at": dt.datetime.now(dt.UTC),
    }
    rows = [stamp | {"metric": k, "value": float(v)} for k, v in figures.items()]
    store.append("benchmarks", rows, key=key)


def stored_keys(store: ResultStore) -> set[tuple]:
    if "benchmarks" not in store.tables():
        return set()
    df = store.to_pandas("benchmarks", filters=[("experiment", "=", BENCH)])
    if df.empty or "contamination" not in df:
        return set()
    cols = ["family", "contamination", "method", "seed", "step"]
    return {tuple(r) for r in df[cols].drop_duplicates().itertuples(index=False)}


def report(store: ResultStore, plot: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    df = store.to_pandas("benchmarks", filters=[("experiment", "=", BENCH)])
    main = df[df["metric"].isin(["accuracy", "mse"])]
    table = main.groupby(["family", "step", "contamination", "method"])["value"].agg(
        ["mean", "std", "count"]
    )
    ci = (
        df[df["metric"].str.endswith("_ci95")]
        .groupby(["family", "step", "contamination", "method"])["value"]
        .mean()
    )
    extra = df[
        df["metric"].isin(
            [
                "precision_top",
                "recall_top",
                "kept_clean",
                "kept_easy",
                "ranking_overhead_pct",
                "step_time_ms",
            ]
        )
    ].pivot_table(
        index=["family", "step", "contamination", "method"],
        columns="metric",
        values="value",
    )
    summary = table.join(ci.rename("mean_ci95")).join(extra)
    with_pd_opts = summary.to_string(float_format=lambda v: f"{v:.4f}")
    print("mean and std over seeds, count = seeds, mean_ci95 = mean per-run 95% CI")
    print(with_pd_opts)
    present = [s for s in SETTINGS if (main["family"] == s).any()]
    fig, axes = plt.subplots(
        1, len(present), figsize=(5 * len(present), 4), squeeze=False
    )
    axes = axes[0]
    for ax, setting in zip(axes, present):
        sub = main[main["family"] == setting]
        for method in METHODS:
            m = sub[sub["method"] == method].groupby("contamination")["value"]
            if len(m.mean()):
                ax.errorbar(
                    m.mean().index,
                    m.mean().values,
                    yerr=m.std().fillna(0),
                    marker="o",
                    capsize=3,
                    label=method,
                )
        ax.set_title(setting)
        ax.set_xlabel("contaminated fraction of training tasks")
        ax.set_ylabel("clean-test MSE" if setting == "sinusoid" else "clean-test acc.")
    axes[0].legend()
    fig.tight_layout()
    Path(plot).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(plot, dpi=120)
    print(f"plot: {plot}")


def ranking_overhead(store: ResultStore, setting: str, steps: int, workers: int):
    """Ranking (all-gather + selection) share of the step on a real TorchTrainer."""
    import statistics
    import tempfile

    from raymeta.training import fit

    with tempfile.TemporaryDirectory(prefix="hetrom-overhead-") as tmp:
        changes = {
            "steps": steps,
            "report_every": 1,
            "checkpoint_every": steps,
            "test_tasks": 50,
            "scaling.num_workers": workers,
            "storage.storage_path": f"{tmp}/runs",
            "storage.store": f"{tmp}/store",
            "data.noisy_fraction": 0.2,
            "data.outlier_fraction": 0.2,
            **SETTINGS[setting],
            **METHODS["hetrom-sort"],
        }
        cfg = override(HeTRoMConfig(job="hetrom"), changes)
        fit(cfg, run_name="overhead")
        rows = ResultStore(cfg.store).to_pandas("metrics")
    wide = rows.pivot_table(index="step", columns="name", values="value")
    wide = wide[wide.index > 5]  # skip start-up steps
    share = 100.0 * wide["ranking_time_s"] / wide["step_time_s"]
    figures = {
        "ranking_overhead_pct_median": float(statistics.median(share)),
        "ranking_time_ms_median": 1e3 * float(wide["ranking_time_s"].median()),
        "step_time_ms_median": 1e3 * float(wide["step_time_s"].median()),
    }
    stamp = dt.datetime.now(dt.UTC).isoformat()  # each measurement is new
    key = f"overhead/{setting}/{workers}/{steps}/{stamp}"
    store_run(store, key, setting, 0.4, f"overhead-{workers}w", 0, steps, figures)
    print(key, {k: round(v, 3) for k, v in figures.items()}, flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--settings", default=",".join(SETTINGS))
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--contaminations", default="0,0.4")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--steps", type=int, default=1500)
    parser.add_argument("--test-tasks", type=int, default=600)
    parser.add_argument("--store", default="bench-results/store")
    parser.add_argument("--plot", default="bench-results/hetrom_vs_contamination.png")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--report-only", action="store_true")
    parser.add_argument(
        "--overhead-workers",
        type=int,
        default=0,
        help="instead: ranking overhead of --settings on a TorchTrainer of N workers",
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    store = ResultStore(args.store)
    if args.overhead_workers:
        for setting in args.settings.split(","):
            ranking_overhead(store, setting, args.steps, args.overhead_workers)
        return
    done = stored_keys(store)
    for setting in [] if args.report_only else args.settings.split(","):
        for contamination in map(float, args.contaminations.split(",")):
            for method in args.methods.split(","):
                if method == "oracle" and contamination == 0:
                    continue  # identical to the plain average without contamination
                for seed in map(int, args.seeds.split(",")):
                    if (setting, contamination, method, seed, args.steps) in done:
                        continue
                    changes = {
                        "seed": seed,
                        "steps": args.steps,
                        "test_tasks": args.test_tasks,
                        "data.noisy_fraction": contamination / 2,
                        "data.outlier_fraction": contamination / 2,
                        "scaling.num_workers": 0,
                        **SETTINGS[setting],
                        **METHODS[method],
                    }
                    cfg = override(HeTRoMConfig(job="hetrom"), changes)
                    figures = run_one(cfg)
                    key = f"{setting}/{contamination}/{method}/{seed}/{args.steps}"
                    store_run(
                        store,
                        key,
                        setting,
                        contamination,
                        method,
                        seed,
                        args.steps,
                        figures,
                    )
                    print(key, {k: round(v, 4) for k, v in figures.items()}, flush=True)
    report(store, args.plot)


if __name__ == "__main__":
    main()
