"""``fit(config)``: the one entry that trains SAMA or HeTRoM on a ``TorchTrainer``.

The config's type picks the method (:class:`~raymeta.config.SamaJobConfig` or
:class:`~raymeta.config.HeTRoMConfig`); both run on the same worker skeleton
(:mod:`raymeta.training.skeleton`). Before any worker starts, :func:`preflight`
builds the run once in the driver and checks it: the config's rules (names
included), the user's model factory and data, the optimizer, and (SAMA) that λ
reaches the base loss. Rerunning with the same run name and storage path resumes
from the latest checkpoint; rank 0 writes the result rows as it goes.

Example:
    >>> from raymeta.config import load_config
    >>> result = fit(load_config("jobs/configs/sama_tiny.toml"))  # doctest: +SKIP
    >>> result.return_value["test_acc"]  # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from raymeta.config import HeTRoMConfig, SamaJobConfig, TrainingConfig, check_config
from raymeta.errors import TrainingSetupError
from raymeta.training.skeleton import WorkerContext, run_program

__all__ = ["fit", "hetrom_loop", "preflight", "sama_loop"]


def sama_loop(loop_config: dict[str, Any]) -> dict[str, Any] | None:
    """``TorchTrainer`` per-worker function of SAMA."""
    from raymeta.training.sama_program import SamaProgram

    return run_program(SamaProgram, loop_config)


def hetrom_loop(loop_config: dict[str, Any]) -> dict[str, Any] | None:
    """``TorchTrainer`` per-worker function of HeTRoM."""
    from raymeta.training.hetrom_program import HeTRoMProgram

    return run_program(HeTRoMProgram, loop_config)


def preflight(
    cfg: TrainingConfig, data: Any = None
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Check a run in this process before any worker starts.

    Returns:
        ``(loop_data, ray_datasets)`` for the workers and the trainer.

    Raises:
        ConfigError: The config breaks a rule (e.g. an unsafe run name).
        TrainingSetupError: The model, data, optimizer or problem is unusable.
    """
    check_config(cfg, source=f"{cfg.job} config")
    if isinstance(cfg, SamaJobConfig):
        return _preflight_sama(cfg, data)
    if isinstance(cfg, HeTRoMConfig):
        return _preflight_hetrom(cfg, data)
    raise TrainingSetupError(f"fit() trains SAMA or HeTRoM configs, got {cfg.job!r}")


def _preflight_sama(
    cfg: SamaJobConfig, data: Any
) -> tuple[dict[str, Any], dict[str, Any]]:
    import torch

    from raymeta.training.sama_program import SamaProgram
    from raymeta.training.sama_setup import RAY_SPLIT, prepare_sama_data

    loop_data, ray_sets = prepare_sama_data(cfg, data)
    if not ray_sets:  # Ray splits are checked by schema; arrays by a dry build
        ctx = WorkerContext(cfg, 0, 1, torch.device("cpu"), {}, loop_data, in_ray=False)
        SamaProgram(ctx).validate()
    elif loop_data.get("train") == RAY_SPLIT and cfg.data.keep_ids_path:
        raise TrainingSetupError("data.keep_ids_path applies to array data only")
    return loop_data, ray_sets


def _preflight_hetrom(
    cfg: HeTRoMConfig, data: Any
) -> tuple[dict[str, Any], dict[str, Any]]:
    from raymeta.tasks.fewshot import TASK_FAMILIES
    from raymeta.tasks.sources import load_user_data
    from raymeta.training.hetrom_program import build_hetrom_components

    if data is None and cfg.data.dataset not in TASK_FAMILIES:
        if ":" not in cfg.data.dataset:
            raise TrainingSetupError(
                f"data.dataset {cfg.data.dataset!r} is neither a task family "
                f"({sorted(TASK_FAMILIES)}) nor an import path 'package.module:fn'"
            )
        data = load_user_data(cfg.data)
    c = build_hetrom_components(cfg, data)  # raises on impossible episodes
    batch = c.train_stream.batch(0, rank=0, world_size=c.train_stream.tasks_per_batch)
    try:  # one task through the learner: a model whose widths do not fit fails here
        c.learner.task_losses(batch)
    except RuntimeError as err:
        raise TrainingSetupError(
            f"learner {cfg.learner!r} with model.factory {cfg.model.factory!r} "
            f"fails on one {cfg.data.ways}-way episode: {err}. The embedding must "
            f"output embedding_dim={cfg.embedding_dim} features (MAML: the network "
            f"must output {cfg.data.ways} logits)"
        ) from None
    return ({"labelled": data} if data is not None else {}), {}


def fit(
    cfg: TrainingConfig,
    *,
    data: Any = None,
    run_name: str | None = None,
    hooks: dict[str, Any] | None = None,
    callbacks: Sequence[Any] = (),
) -> Any:
    """Train ``cfg`` (SAMA or HeTRoM) on a ``TorchTrainer``; return Ray's ``Result``.

    Args:
        cfg: A validated training config.
        data: The user's data in code (SAMA: ``{"train", "meta"[, "test"]}`` splits,
            each a Ray Dataset, torch Dataset or arrays; HeTRoM: a labelled set or
            ``{"train", "test"}``); default: the ``[data]`` section's.
        run_name: Overrides ``cfg.run_name`` (also the store's ``run_id``).
        hooks: Test-only fault hooks (:mod:`raymeta.training.faults`).
        callbacks: ``ray.train.UserCallback`` objects (e.g. progress display).

    Returns:
        Ray's ``Result``; ``result.return_value`` is rank 0's summary.

    Raises:
        ConfigError, TrainingSetupError: Bad input, before any worker starts.
        TrainingFailedError: Workers failed more often than
            ``scaling.max_failures`` allows; names the checkpoint to resume from.
    """
    from raymeta.training.trainer import run_trainer

    if run_name is not None:
        cfg = dataclasses.replace(
            cfg, storage=dataclasses.replace(cfg.storage, run_name=run_name)
        )
    cfg = _absolute_paths(cfg)
    loop_data, ray_sets = preflight(cfg, data)
    is_sama = isinstance(cfg, SamaJobConfig)
    scaling = cfg.scaling
    return run_trainer(
        sama_loop if is_sama else hetrom_loop,
        {"config": cfg, "hooks": dict(hooks or {}), "data": loop_data},
        method="SAMA" if is_sama else "HeTRoM",
        run_name=cfg.run_name,
        storage_path=cfg.storage_path,
        num_workers=scaling.num_workers,
        use_gpu=scaling.use_gpu,
        placement_strategy=scaling.placement_strategy,
        max_failures=scaling.max_failures,
        timeout_minutes=scaling.timeout_minutes,
        callbacks=callbacks,
        datasets=ray_sets,
    )


def _absolute_paths(cfg: TrainingConfig) -> TrainingConfig:
    """Workers run in other directories: pin local store / storage paths."""
    storage = cfg.storage
    fixed = {
        name: str(Path(value).resolve())
        for name in ("storage_path", "store")
        if (value := getattr(storage, name)) and "://" not in value
    }
    return dataclasses.replace(cfg, storage=dataclasses.replace(storage, **fixed))
