"""Run any validated job config: the one path shared by jobs, the CLI and the demo.

``jobs/*.py``, ``raymeta run CONFIG`` and ``raymeta demo`` all call :func:`run_job`,
which dispatches on the config type, writes results to the config's results store and
returns a :class:`JobSummary` (headline figures and a one-line text).

Every job resumes when rerun with the same name and storage path: tuning through
``Tuner.restore``, training through ``ray.train.get_checkpoint()``.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from raymeta.config import (
    HeTRoMConfig,
    JobConfig,
    SamaJobConfig,
    TrainingConfig,
    TuneScaMLGPConfig,
    check_config,
)
from raymeta.errors import ClusterUnreachableError, ConfigError, RaymetaError

__all__ = [
    "JobSummary",
    "check_ray_address",
    "connect_ray",
    "job_main",
    "run_job",
    "with_overrides",
    "with_store",
]


@dataclass
class JobSummary:
    """What a job reports back.

    Attributes:
        job: The job name (``tune_scamlgp``, ``sama``, ``hetrom``).
        experiment: The results-store experiment the job wrote.
        figures: Headline numbers (name -> value).
        text: One human-readable line.
        details: Job-specific extras (e.g. the meta-tasks a tuning run used).
    """

    job: str
    experiment: str
    figures: dict[str, float]
    text: str
    details: dict[str, Any] = field(default_factory=dict)


def with_store(
    cfg: JobConfig, store: str | None, storage_path: str | None
) -> JobConfig:
    """Return ``cfg`` with its results store / Ray storage path overridden.

    Local paths are made absolute, because Ray workers run in other directories.
    """
    return with_overrides(cfg, store=store, storage_path=storage_path)


def with_overrides(
    cfg: JobConfig,
    *,
    store: str | None = None,
    storage_path: str | None = None,
    run_name: str | None = None,
) -> JobConfig:
    """Return ``cfg`` with command-line overrides applied and checked again.

    Local paths are made absolute, because Ray workers run in other directories.
    The result passes :func:`~raymeta.config.check_config` (names included), so a
    ``--run-name ../x`` fails here, before Ray starts.

    Raises:
        ConfigError: A run name for a job that has none, or any problem of the
            overridden config.
    """
    changes: dict[str, Any] = {}
    if store is not None:
        changes["store"] = store
    if storage_path is not None:
        changes["storage_path"] = storage_path
    if run_name is not None:
        if not isinstance(cfg, TrainingConfig):
            raise ConfigError(
                f"--run-name does not apply to job {cfg.job!r}: a tuning run is named "
                'by its experiment; set experiment = "..." in the config instead'
            )
        changes["run_name"] = run_name
    cfg = check_config(
        _replace_paths(cfg, changes), source="config with command-line overrides"
    )
    paths = cfg.storage if isinstance(cfg, TrainingConfig) else cfg
    absolute = {
        name: _absolute(getattr(paths, name))
        for name in ("store", "storage_path")
        if getattr(paths, name, None)
    }
    return _replace_paths(cfg, absolute)


def _replace_paths(cfg: JobConfig, changes: dict[str, Any]) -> JobConfig:
    """Replace store / storage path / run name (in ``[storage]`` for training)."""
    if isinstance(cfg, TrainingConfig):
        storage = dataclasses.replace(cfg.storage, **changes)
        return dataclasses.replace(cfg, storage=storage)
    return dataclasses.replace(cfg, **changes)  # type: ignore[arg-type]


def _absolute(path: str) -> str:
    return path if "://" in path else os.path.abspath(os.path.expanduser(path))


def check_ray_address() -> None:
    """Fail in one line when RAY_ADDRESS names a cluster that does not answer."""
    import socket

    address = os.environ.get("RAY_ADDRESS", "")
    if not address or address in ("local", "auto") or "://" in address:
        return
    host, _, port = address.rpartition(":")
    try:
        socket.create_connection((host, int(port)), timeout=5).close()
    except (OSError, ValueError):
        raise ClusterUnreachableError(
            f"cannot reach the Ray cluster at RAY_ADDRESS={address!r}; start it "
            "(ray up cluster.yaml) or unset RAY_ADDRESS to run locally"
        ) from None


def connect_ray() -> None:
    """Join the cluster ``RAY_ADDRESS`` names, else start a local Ray of our own.

    Under ``ray job submit`` the job server sets ``RAY_ADDRESS``; anything else
    gets a fresh local cluster (``address="local"``), never a stray ``ray start``
    head or another user's Ray found on the machine. Ray's State API, which Ray
    Train's placement-group cleaner calls from inside the cluster, is pointed at
    this cluster's own dashboard (``RAY_API_SERVER_ADDRESS``), since with several
    Ray instances on one machine its auto-detection fails ("Found multiple active
    Ray instances").
    """
    import ray

    check_ray_address()  # also when connected: the user named this cluster
    if ray.is_initialized():
        return
    if os.environ.get("RAY_ADDRESS"):
        ray.init()
        return
    port = _free_port()
    os.environ["RAY_API_SERVER_ADDRESS"] = f"http://127.0.0.1:{port}"
    ray.init(
        address="local",
        include_dashboard=True,
        dashboard_host="127.0.0.1",
        dashboard_port=port,
    )


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def run_job(
    cfg: JobConfig,
    *,
    run_name: str | None = None,
    progress_file: str | os.PathLike[str] | None = None,
) -> JobSummary:
    """Run a validated config on Ray (see :func:`connect_ray`).

    Args:
        cfg: A config from :func:`raymeta.config.load_config`.
        run_name: Training run name (default: the config's); rerunning resumes.
        progress_file: Where the job records its progress (finished trials or the
            reported training step) for :func:`raymeta.progress.show_progress`.

    Raises:
        ConfigError: The config's job has no runner, or a problem of the config
            (e.g. an unsafe run or experiment name), before Ray starts.
    """

    from raymeta.results import ResultStore

    if run_name is not None:
        cfg = with_overrides(cfg, run_name=run_name)
    check_config(cfg)
    store = getattr(cfg, "store", None)
    if store:
        ResultStore(store)  # fail now, not after training, if it is unwritable
    connect_ray()
    if isinstance(cfg, TuneScaMLGPConfig):
        return _run_tune(cfg, _tune_progress(cfg, progress_file))
    if isinstance(cfg, SamaJobConfig | HeTRoMConfig):
        return _run_training(cfg, _train_progress(cfg, progress_file))
    raise ConfigError(f"job {cfg.job!r} has no runner")


def _tune_progress(cfg: TuneScaMLGPConfig, path: Any) -> list[Any]:
    from raymeta.progress import TuneProgress

    return [TuneProgress(path, total=cfg.num_samples, metric="loss")] if path else []


def _train_progress(cfg: SamaJobConfig | HeTRoMConfig, path: Any) -> list[Any]:
    from raymeta.progress import TrainProgress

    return [TrainProgress(path, total=cfg.steps)] if path else []


def _run_tune(cfg: TuneScaMLGPConfig, callbacks: list[Any]) -> JobSummary:
    from raymeta.results import ResultStore
    from raymeta.search.metadata import StoreMetaData
    from raymeta.search.trainables import draw_family_study, record_meta_tasks
    from raymeta.search.tuning import (
        best_regret_curve,
        build_searcher,
        run_family_tuning,
    )

    study = draw_family_study(
        cfg.family,
        seed=cfg.seed,
        num_meta=cfg.num_meta_tasks,
        n_meta=cfg.n_meta,
        target=cfg.target,
        noisy=cfg.noisy,
    )
    store = ResultStore(cfg.store)
    experiments = record_meta_tasks(store, study) + list(cfg.extra_meta_experiments)
    searcher = build_searcher(
        "scamlgp" if cfg.use_meta_data else "scamlgp_nometa",
        metric="loss",
        mode="min",
        seed=cfg.seed,
        meta_data=StoreMetaData(store, experiments=experiments),
        options=cfg.searcher_options(),
    )
    grid, _ = run_family_tuning(
        study,
        searcher=searcher,
        experiment=cfg.experiment,
        storage_path=cfg.storage_path,
        num_samples=cfg.num_samples,
        max_concurrent=cfg.max_concurrent,
        store=store,
        callbacks=callbacks,
    )
    regret = best_regret_curve(grid, study.target.optimum())
    store.append(
        "metrics",
        [
            {
                "experiment": cfg.experiment,
                "run_id": cfg.experiment,
                "method": "scamlgp" if cfg.use_meta_data else "scamlgp_nometa",
                "step": i + 1,
                "name": "best_regret",
                "value": r,
            }
            for i, r in enumerate(regret)
        ],
        key=("tune-regret", cfg.experiment, len(regret)),
    )
    figures = {"trials": float(len(grid)), "best_regret": float(regret[-1])}
    used = experiments if cfg.use_meta_data else []
    text = (
        f"{cfg.experiment}: {len(grid)} trials on a {cfg.family} task, "
        f"{len(used)} meta-tasks, best regret {regret[-1]:.4g}"
    )
    return JobSummary(
        cfg.job, cfg.experiment, figures, text, {"meta_experiments": used}
    )


def _run_training(
    cfg: SamaJobConfig | HeTRoMConfig, callbacks: list[Any]
) -> JobSummary:
    """Train (or resume) a SAMA / HeTRoM run; a finished one shows its summary."""
    from raymeta.results import ResultStore
    from raymeta.training import fit, hetrom_summary, read_summary, summary_metrics

    store = ResultStore(cfg.store) if cfg.store else None
    prefix = f"{cfg.experiment}/{cfg.run_name}: "
    stored = (
        read_summary(store, cfg.experiment, cfg.run_name, step=cfg.steps)
        if store
        else {}
    )
    if stored:  # finished earlier: say so instead of a zero-step "attempt"
        text = prefix + "already complete; stored summary: " + _figures_text(stored)
        return JobSummary(
            cfg.job, cfg.experiment, stored, text, {"already_complete": True}
        )
    summary = fit(cfg, callbacks=callbacks).return_value
    if isinstance(cfg, HeTRoMConfig):
        figures = hetrom_summary(
            summary, store, run_id=cfg.run_name, after_step=cfg.warmup_steps
        )
    else:
        figures = summary_metrics(summary)
    if summary["restored_from_step"] == summary["steps"]:
        prefix += f"already trained to step {summary['steps']} (no step this attempt); "
        figures.pop("samples_per_s", None)
    return JobSummary(cfg.job, cfg.experiment, figures, prefix + _figures_text(figures))


def _figures_text(figures: dict[str, float]) -> str:
    return ", ".join(f"{k}={v:.4g}" for k, v in figures.items())


def job_main(job: str, description: str, argv: Sequence[str] | None = None) -> int:
    """Entry point shared by ``jobs/*.py``: parse, validate, run, print one line.

    Args:
        job: The job name the config must declare (``job = "..."``).
        description: Help text (the script's docstring).
        argv: Arguments (default: ``sys.argv[1:]``).

    Returns:
        The process exit status (2 with one line on stderr for bad input).
    """
    from raymeta.config import load_config

    parser = argparse.ArgumentParser(
        description=description, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("config", help=f"TOML file with job = {job!r}")
    parser.add_argument("--store", help="results store root (path or URI)")
    parser.add_argument("--storage-path", help="Ray storage path (shared on clusters)")
    parser.add_argument("--run-name", help="training run name (rerunning resumes)")
    args = parser.parse_args(argv)
    try:
        cfg = with_overrides(
            load_config(args.config),
            store=args.store,
            storage_path=args.storage_path,
            run_name=args.run_name,
        )
        if cfg.job != job:
            raise ConfigError(f"{args.config}: expected job = {job!r}, got {cfg.job!r}")
        print(run_job(cfg).text, flush=True)
    except RaymetaError as err:
        print(f"{job}: error: {' '.join(str(err).split())}", file=sys.stderr)
        return 2
    return 0
