"""``raymeta demo``: the three methods end to end on local Ray, built-in data only.

1. **Tuning with memory**: a ScaMLGPSearch run on a new Branin-family task,
   warm-started from meta-tasks in the results store (seeded into the store when it
   is empty) *and* from the target tasks of earlier demo runs, so each run of the demo
   learns from the previous ones.
2. **SAMA**: meta-weight-net reweighting on scikit-learn's digits with 40% symmetric
   label noise (one TorchTrainer worker).
3. **HeTRoM**: ranked-range episodic training on the Gaussian-cluster few-shot family
   with 20% noisy and 20% outlier tasks (one TorchTrainer worker).

Everything goes to one results store; the demo prints a summary table and saves plots
next to the store (``<store>/plots``).
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TextIO

from raymeta.config import HeTRoMConfig, SamaJobConfig, TuneScaMLGPConfig, parse_section
from raymeta.results import ResultStore
from raymeta.runner import JobSummary, run_job

__all__ = ["demo_configs", "run_demo"]

DEMO_TUNE_PREFIX = "demo-tune-"
HEADLINE = {
    "tune_scamlgp": ("trials", "best_regret"),
    "sama": ("test_acc", "weight_auc", "mean_weight_clean", "mean_weight_noisy"),
    "hetrom": ("test_metric", "dropped_top_precision", "dropped_top_recall"),
}


@contextmanager
def progress(
    label: str, out: TextIO = sys.stdout, every_s: float = 15.0
) -> Iterator[None]:
    """Print a start line, a heartbeat every ``every_s`` seconds, and the duration."""
    start = time.monotonic()
    done = threading.Event()

    def beat() -> None:
        while not done.wait(every_s):
            print(
                f"      ... {label}: {time.monotonic() - start:.0f} s",
                file=out,
                flush=True,
            )

    print(f"==> {label}", file=out, flush=True)
    thread = threading.Thread(target=beat, daemon=True)
    thread.start()
    try:
        yield
    finally:
        done.set()
        thread.join()
        print(
            f"    {label}: done in {time.monotonic() - start:.0f} s",
            file=out,
            flush=True,
        )


def earlier_demo_runs(store: ResultStore) -> list[str]:
    """Experiments of earlier demo tuning runs, in order."""
    if "trials" not in store.tables():
        return []
    names = set(
        store.read("trials", columns=["experiment"]).column("experiment").to_pylist()
    )
    runs = [n for n in names if n.startswith(DEMO_TUNE_PREFIX)]
    return sorted(runs, key=lambda n: int(n.removeprefix(DEMO_TUNE_PREFIX)))


def demo_configs(
    store: str, storage_path: str, run: int, earlier: list[str]
) -> list[Any]:
    """The three validated job configs of demo run number ``run`` (1-based)."""
    common = {"store": store, "storage_path": storage_path}
    tune = parse_section(
        TuneScaMLGPConfig,
        {
            "job": "tune_scamlgp",
            "seed": run,
            "experiment": f"{DEMO_TUNE_PREFIX}{run}",
            "family": "branin",
            "num_meta_tasks": 4,
            "n_meta": 16,
            "num_samples": 10,
            "max_concurrent": 1,
            "extra_meta_experiments": earlier,
            **common,
        },
        source="demo tuning config",
    )
    sama = parse_section(
        SamaJobConfig,
        {
            "job": "sama",
            "seed": 0,
            "experiment": "demo-sama",
            "run_name": f"demo-sama-{run}",
            "dataset": "digits",
            "noise_rate": 0.4,
            "hidden": [64],
            "steps": 600,
            "eval_every": 100,
            "report_every": 200,
            "checkpoint_every": 200,
            "num_workers": 1,
            **common,
        },
        source="demo SAMA config",
    )
    hetrom = parse_section(
        HeTRoMConfig,
        {
            "job": "hetrom",
            "seed": 0,
            "experiment": "demo-hetrom",
            "ways": 5,
            "shots": 1,
            "tasks_per_batch": 20,
            "rule": "sort",
            "m": 8,
            "k": 20,
            "warmup_steps": 50,
            "steps": 300,
            "test_tasks": 200,
            "num_workers": 1,
            "checkpoint_every": 100,
            **common,
        },
        source="demo HeTRoM config",
    )
    return [tune, sama, hetrom]


def run_demo(
    store_root: str = "raymeta-results", out: TextIO = sys.stdout
) -> list[JobSummary]:
    """Run the demo; return the three job summaries (printed as a table too)."""
    store = ResultStore(store_root)
    storage = str(Path(store.root).parent / (Path(store.root).name + "-runs"))
    earlier = earlier_demo_runs(store)
    run = len(earlier) + 1
    configs = demo_configs(store.root, storage, run, earlier)
    labels = [
        f"[1/3] ScaML-GP tuning, demo run {run} "
        f"({len(earlier)} earlier demo run(s) reused as meta-data)",
        "[2/3] SAMA reweighting on digits with 40% label noise",
        "[3/3] HeTRoM on Gaussian-cluster tasks, 40% contaminated",
    ]
    summaries = []
    run_names = [None, f"demo-sama-{run}", f"demo-hetrom-{run}"]
    for label, cfg, name in zip(labels, configs, run_names, strict=True):
        with progress(label, out):
            summaries.append(run_job(cfg, run_name=name))
    plots = _plots(store, Path(store.root) / "plots")
    _print_table(summaries, store, plots, out)
    return summaries


def _plots(store: ResultStore, folder: Path) -> list[Path]:
    from raymeta.results.plots import plot_histogram, plot_lines

    steps: list[tuple[str, Callable[[], Path]]] = [
        (
            "regret",
            lambda: plot_lines(
                store.to_pandas("metrics", filters=[("name", "=", "best_regret")]),
                x="step",
                y="value",
                by="experiment",
                logy=True,
                out=folder / "tuning_regret.png",
                title="ScaML-GP: best regret per demo run",
            ),
        ),
        (
            "weights",
            lambda: plot_histogram(
                store.to_pandas(
                    "data_weights", filters=[("experiment", "=", "demo-sama")]
                ),
                value="weight",
                by="is_noisy",
                out=folder / "sama_weights.png",
                title="SAMA: learned weights of clean vs noisy examples",
            ),
        ),
        (
            "hetrom",
            lambda: plot_lines(
                _dropped_top_share(store),
                x="step",
                y="dropped_top",
                by="task_kind",
                out=folder / "hetrom_selection.png",
                title="HeTRoM: share of tasks dropped as outliers, by kind",
            ),
        ),
    ]
    return [make() for _, make in steps]


def _dropped_top_share(store: ResultStore) -> Any:
    """Per step window and task kind, the share of tasks dropped at the top."""
    stats = store.to_pandas("task_stats", filters=[("experiment", "=", "demo-hetrom")])
    stats["dropped_top"] = (stats["dropped"] == "top").astype(float)
    stats["step"] = stats["step"] // 25 * 25  # smooth over windows of 25 steps
    return stats.groupby(["step", "task_kind"], as_index=False)["dropped_top"].mean()


def _print_table(
    summaries: list[JobSummary], store: ResultStore, plots: list[Path], out: TextIO
) -> None:
    print("\nraymeta demo summary", file=out)
    print(f"{'job':<14}{'experiment':<18}key figures", file=out)
    for s in summaries:
        keys = [k for k in HEADLINE.get(s.job, s.figures) if k in s.figures]
        figures = ", ".join(f"{k}={s.figures[k]:.4g}" for k in keys)
        print(f"{s.job:<14}{s.experiment:<18}{figures}", file=out)
        if s.details.get("meta_experiments") is not None:
            used = s.details["meta_experiments"]
            reused = [e for e in used if e.startswith(DEMO_TUNE_PREFIX)]
            print(
                f"{'':<32}meta-data: {len(used)} tasks, of which earlier demo runs: "
                f"{reused or 'none'}",
                file=out,
            )
    print(f"results store: {store.root}  (raymeta results ls {store.root})", file=out)
    for p in plots:
        print(f"plot: {p}", file=out)
