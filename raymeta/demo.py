"""``raymeta demo``: the three methods end to end on local Ray, built-in data only.

1. **Tuning with memory**: a ScaMLGPSearch run on a new Branin-family task,
   warm-started from meta-tasks in the results store (seeded into the store when it
   is empty) *and* from the target tasks of earlier demo runs, so each run of the demo
   learns from the previous ones. The same target is tuned again, with the same
   budget, by the same searcher *without* meta-data: the summary and the regret plot
   show both, so the effect of the memory is visible, not claimed.
2. **SAMA**: meta-weight-net reweighting on scikit-learn's digits with 40% symmetric
   label noise (one TorchTrainer worker).
3. **HeTRoM**: ranked-range episodic training on the Gaussian-cluster few-shot family
   with 20% noisy and 20% outlier tasks (one TorchTrainer worker).

The demo starts a local Ray of its own (never another instance on the machine) and,
unless ``verbose``, sends everything Ray prints to ``<store>/logs/demo-<run>.log``;
the terminal shows the demo's own progress (trial and step counts, ETA), a summary
table, and where the plots (``<store>/plots``) and the log are.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TextIO

from raymeta.config import HeTRoMConfig, SamaJobConfig, TuneScaMLGPConfig, parse_section
from raymeta.errors import ConfigError
from raymeta.progress import show_progress
from raymeta.results import ResultStore
from raymeta.runner import JobSummary, connect_ray, run_job

__all__ = ["STAGES", "demo_configs", "ray_output_to", "run_demo"]

STAGES = ("tune", "baseline", "sama", "hetrom")
DEMO_TUNE_PREFIX = "demo-tune-"
DEMO_BASELINE_PREFIX = "demo-baseline-"
METHOD_LABELS = {
    "scamlgp": "ScaML-GP with memory (meta-data)",
    "scamlgp_nometa": "same searcher, no meta-data",
}
HEADLINE = {
    "tune_scamlgp": ("trials", "best_regret"),
    "sama": ("test_acc", "weight_auc", "mean_weight_clean", "mean_weight_noisy"),
    "hetrom": ("test_metric", "dropped_top_precision", "dropped_top_recall"),
}


@contextmanager
def ray_output_to(log_path: Path, *, verbose: bool) -> Iterator[TextIO]:
    """Send everything written to this process's stdout/stderr to ``log_path``.

    Ray's own output (its Python logging, Tune's tables, Train's report lines, the
    workers' forwarded output and the C++ core's messages) goes to file descriptors
    1 and 2, so both are pointed at the log file for the block; Ray's processes
    started inside it keep writing there. Yields a stream to the real terminal for
    the demo's own lines. With ``verbose`` nothing is redirected.
    """
    if verbose:
        yield sys.stdout
        return
    log_path.parent.mkdir(parents=True, exist_ok=True)
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    with open(log_path, "a") as log, os.fdopen(os.dup(saved[0]), "w") as console:
        os.dup2(log.fileno(), 1)
        os.dup2(log.fileno(), 2)
        try:
            yield console
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            for fd in saved:
                os.close(fd)


def earlier_demo_runs(store: ResultStore) -> list[str]:
    """Experiments of earlier demo tuning runs with memory, in order."""
    if "trials" not in store.tables():
        return []
    names = set(
        store.read("trials", columns=["experiment"]).column("experiment").to_pylist()
    )
    runs = [n for n in names if n.startswith(DEMO_TUNE_PREFIX)]
    return sorted(runs, key=lambda n: int(n.removeprefix(DEMO_TUNE_PREFIX)))


def demo_configs(
    store: str, storage_path: str, run: int, earlier: list[str]
) -> dict[str, Any]:
    """The validated job configs of demo run number ``run`` (1-based), by stage.

    ``tune`` and ``baseline`` tune the same target (same seed, same budget);
    only ``tune`` uses meta-data.
    """
    common = {"store": store, "storage_path": storage_path}
    tuning = {
        "job": "tune_scamlgp",
        "seed": run,
        "family": "branin",
        "num_meta_tasks": 8,  # the ScaML-GP benchmark protocol (M=8, N_m=32)
        "n_meta": 32,
        "num_samples": 10,
        "max_concurrent": 1,
        **common,
    }
    tune = parse_section(
        TuneScaMLGPConfig,
        tuning
        | {"experiment": f"{DEMO_TUNE_PREFIX}{run}", "extra_meta_experiments": earlier},
        source="demo tuning config",
    )
    baseline = parse_section(
        TuneScaMLGPConfig,
        tuning | {"experiment": f"{DEMO_BASELINE_PREFIX}{run}", "use_meta_data": False},
        source="demo baseline tuning config",
    )
    sama = parse_section(
        SamaJobConfig,
        {
            "job": "sama",
            "seed": 0,
            "steps": 600,
            "eval_every": 100,
            "report_every": 100,
            "checkpoint_every": 200,
            "data": {"dataset": "digits", "noise_rate": 0.4},
            "model": {"hidden": [64]},
            "scaling": {"num_workers": 1},
            "storage": {
                "experiment": "demo-sama",
                "run_name": f"demo-sama-{run}",
                **common,
            },
        },
        source="demo SAMA config",
    )
    hetrom = parse_section(
        HeTRoMConfig,
        {
            "job": "hetrom",
            "seed": 0,
            "tasks_per_batch": 20,
            "rule": "sort",
            "m": 8,
            "k": 20,
            "warmup_steps": 50,
            "steps": 300,
            "test_tasks": 200,
            "report_every": 10,
            "checkpoint_every": 50,
            "data": {"ways": 5, "shots": 1},
            "scaling": {"num_workers": 1},
            "storage": {
                "experiment": "demo-hetrom",
                "run_name": f"demo-hetrom-{run}",
                **common,
            },
        },
        source="demo HeTRoM config",
    )
    return {"tune": tune, "baseline": baseline, "sama": sama, "hetrom": hetrom}


def _labels(run: int, earlier: list[str]) -> dict[str, str]:
    return {
        "tune": f"[1/4] ScaML-GP tuning with memory, demo run {run} "
        f"({len(earlier)} earlier demo run(s) reused as meta-data)",
        "baseline": "[2/4] the same target and budget, same searcher, no meta-data",
        "sama": "[3/4] SAMA reweighting on digits with 40% label noise",
        "hetrom": "[4/4] HeTRoM on Gaussian-cluster tasks, 40% contaminated",
    }


def run_demo(
    store_root: str = "raymeta-results",
    out: TextIO | None = None,
    *,
    verbose: bool = False,
    stages: Sequence[str] = STAGES,
) -> list[JobSummary]:
    """Run the demo; return the job summaries (printed as a table too).

    Args:
        store_root: Results store root; runs go to ``<store_root>-runs``.
        out: Where the demo's own lines go (default: the terminal).
        verbose: Show Ray's own output too, instead of writing it to the log.
        stages: Which of :data:`STAGES` to run (the plots need all of them).

    Raises:
        ConfigError: An unknown stage name.
    """
    unknown = sorted(set(stages) - set(STAGES))
    if unknown:
        raise ConfigError(f"unknown demo stage(s) {unknown}; choose from {STAGES}")
    store = ResultStore(store_root)
    storage = str(Path(store.root).parent / (Path(store.root).name + "-runs"))
    earlier = earlier_demo_runs(store)
    run = len(earlier) + 1
    configs = demo_configs(store.root, storage, run, earlier)
    labels = _labels(run, earlier)
    log_path = Path(store.root) / "logs" / f"demo-{run}.log"
    progress_dir = Path(store.root) / "logs" / f"demo-{run}-progress"
    summaries: dict[str, JobSummary] = {}
    with ray_output_to(log_path, verbose=verbose) as terminal:
        out = out or terminal
        try:
            connect_ray()
            for stage in (s for s in STAGES if s in stages):
                path = progress_dir / f"{stage}.json"
                path.unlink(missing_ok=True)  # an interrupted earlier attempt's
                with show_progress(labels[stage], path, out):
                    summaries[stage] = run_job(configs[stage], progress_file=path)
        except BaseException:
            if not verbose:
                print(f"demo stopped; Ray's own output is in {log_path}", file=out)
            raise
        plots = (
            _plots(store, Path(store.root) / "plots")
            if set(stages) == set(STAGES)
            else []
        )
        _print_table(summaries, store, plots, out)
        if not verbose:
            print(f"Ray's own output: {log_path}  (--verbose shows it here)", file=out)
    return list(summaries.values())


def _plots(store: ResultStore, folder: Path) -> list[Path]:
    from raymeta.results.plots import plot_histogram, plot_lines

    steps: list[Callable[[], Path]] = [
        lambda: plot_lines(
            _demo_regret(store),
            x="step",
            y="value",
            by="method",
            logy=True,
            out=folder / "tuning_regret.png",
            title="ScaML-GP on new Branin tasks: with vs without memory",
            xlabel="trials",
            ylabel="best regret so far (log scale)",
        ),
        lambda: plot_histogram(
            store.to_pandas("data_weights", filters=[("experiment", "=", "demo-sama")]),
            value="weight",
            by="is_noisy",
            out=folder / "sama_weights.png",
            title="SAMA: learned weights of clean vs noisy examples",
            xlabel="learned example weight (0 = ignored, 1 = full weight)",
            labels={False: "clean label", True: "noisy label"},
        ),
        lambda: plot_lines(
            _dropped_top_share(store),
            x="step",
            y="dropped_top",
            by="task_kind",
            out=folder / "hetrom_selection.png",
            title="HeTRoM: share of tasks dropped as outliers, by kind",
            xlabel="training step",
            ylabel="share of tasks dropped at the top",
        ),
    ]
    return [make() for make in steps]


def _demo_regret(store: ResultStore) -> Any:
    """Best-regret curves of every demo tuning run, labelled by method."""
    rows = store.to_pandas("metrics", filters=[("name", "=", "best_regret")])
    demo = rows["experiment"].str.startswith((DEMO_TUNE_PREFIX, DEMO_BASELINE_PREFIX))
    rows = rows[demo].copy()
    rows["method"] = rows["method"].map(METHOD_LABELS).fillna(rows["method"])
    return rows


def _dropped_top_share(store: ResultStore) -> Any:
    """Per step window and task kind, the share of tasks dropped at the top."""
    stats = store.to_pandas("task_stats", filters=[("experiment", "=", "demo-hetrom")])
    stats["dropped_top"] = (stats["dropped"] == "top").astype(float)
    stats["step"] = stats["step"] // 25 * 25  # smooth over windows of 25 steps
    return stats.groupby(["step", "task_kind"], as_index=False)["dropped_top"].mean()


def _print_table(
    summaries: dict[str, JobSummary],
    store: ResultStore,
    plots: list[Path],
    out: TextIO,
) -> None:
    print("\nraymeta demo summary", file=out)
    print(f"{'job':<14}{'experiment':<20}key figures", file=out)
    for s in summaries.values():
        keys = [k for k in HEADLINE.get(s.job, s.figures) if k in s.figures]
        figures = ", ".join(f"{k}={s.figures[k]:.4g}" for k in keys)
        print(f"{s.job:<14}{s.experiment:<20}{figures}", file=out)
        if s.details.get("meta_experiments"):
            used = s.details["meta_experiments"]
            reused = [e for e in used if e.startswith(DEMO_TUNE_PREFIX)]
            print(
                f"{'':<34}meta-data: {len(used)} tasks, of which earlier demo runs: "
                f"{reused or 'none'}",
                file=out,
            )
    _print_memory_effect(summaries, out)
    print(f"results store: {store.root}  (raymeta results ls {store.root})", file=out)
    for p in plots:
        print(f"plot: {p}", file=out)


def _print_memory_effect(summaries: dict[str, JobSummary], out: TextIO) -> None:
    """One line comparing the two tuning runs on the same target, if both ran."""
    if {"tune", "baseline"} <= set(summaries):
        memory = summaries["tune"].figures["best_regret"]
        none = summaries["baseline"].figures["best_regret"]
        trials = int(summaries["tune"].figures["trials"])
        verdict = "lower" if memory < none else "not lower"
        print(
            f"memory effect (same target, {trials} trials each): best regret "
            f"{memory:.4g} with meta-data vs {none:.4g} without ({verdict})",
            file=out,
        )
