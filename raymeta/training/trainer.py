"""Build a Ray Train V2 ``TorchTrainer`` for any raymeta per-worker loop.

:func:`build_trainer` translates flat, typed arguments into Ray's
``ScalingConfig`` / ``RunConfig`` / ``FailureConfig`` / ``CheckpointConfig`` /
``TorchConfig``; :func:`fit_trainer` runs it and turns Ray's
``TrainingFailedError`` (failure budget used up) into
:class:`raymeta.errors.TrainingFailedError` naming the newest checkpoint
(:func:`training_failed_error`). Both are method-agnostic: SAMA and HeTRoM pass their
own loop function and loop config.

Defaults that matter on purpose:

* ``timeout_minutes=5``: a hung collective fails the attempt in minutes, not the
  torch default of 30 (ray #22349), so ``FailureConfig`` can restart it. A stuck
  (e.g. stopped) worker is noticed only this way: Ray's own worker health check
  allows it 10 minutes. After the surviving ranks fail, Ray Train waits up to
  ``TORCH_PROCESS_GROUP_SHUTDOWN_TIMEOUT_S`` (default 30 s) for the stuck worker's
  process-group teardown, then about 5 s more, before killing the group. That
  variable is read by the Train controller from the environment of the Ray node
  (set it before ``ray.init``/``ray start``; Ray does not forward it from the
  driver). Measured in the C3 test (2 CPU workers, gloo, ``timeout_minutes=0.5``):
  SIGSTOP to restarted attempt 72.9-74.5 s; to the raised error (``max_failures=0``)
  65.3 s, or 40.4 s with the variable set to 5.
* ``backend=None``: gloo on CPU, nccl on GPU.
* ``num_workers=0`` runs the loop in the driver process (Ray's local mode), handy for
  quick checks; ``>= 1`` starts Ray workers.
* Rerunning with the same ``run_name`` and ``storage_path`` resumes from the latest
  checkpoint (the loop must call ``checkpointing.restore_from_ray``).

Example:
    >>> def loop(config):  # doctest: +SKIP
    ...     ...
    >>> trainer = build_trainer(loop, {"steps": 10}, num_workers=2,  # doctest: +SKIP
    ...                         run_name="demo", storage_path="/tmp/runs")
    >>> result = trainer.fit()  # doctest: +SKIP
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
from ray.train.torch import TorchConfig, TorchTrainer

from raymeta.errors import TrainingFailedError, TrainingSetupError
from raymeta.names import validate_name
from raymeta.training.checkpointing import newest_checkpoint

__all__ = ["build_trainer", "fit_trainer", "run_trainer", "training_failed_error"]

_CAUSE_CHARS = 300


def build_trainer(
    train_loop: Callable[[dict[str, Any]], Any],
    loop_config: dict[str, Any],
    *,
    run_name: str,
    storage_path: str | Path,
    num_workers: int = 1,
    use_gpu: bool = False,
    cpus_per_worker: float = 1.0,
    max_failures: int = 0,
    num_to_keep: int | None = 2,
    timeout_minutes: float = 5.0,
    backend: str | None = None,
    placement_strategy: str = "PACK",
    callbacks: Sequence[Any] = (),
    datasets: dict[str, Any] | None = None,
    split_datasets: Sequence[str] = ("train",),
) -> TorchTrainer:
    """Create a ``TorchTrainer`` running ``train_loop(loop_config)`` on each worker.

    Args:
        train_loop: The per-worker function (must be picklable: module level).
        loop_config: Passed to ``train_loop`` as its only argument.
        run_name: Ray run name; reusing it with the same ``storage_path`` resumes.
        storage_path: Directory (or URI) for checkpoints; shared on multi-node runs.
        num_workers: Training workers; 0 runs in the driver (local mode).
        use_gpu: One GPU per worker when True.
        cpus_per_worker: CPUs reserved per worker (fractions allowed).
        max_failures: Worker-group restarts allowed (-1 = unlimited).
        num_to_keep: Checkpoints kept on storage (None keeps all).
        timeout_minutes: Collective timeout of the torch process group (rounded up
            to whole seconds).
        backend: torch.distributed backend; None picks gloo on CPU, nccl on GPU.
        placement_strategy: How workers are placed on nodes ("PACK", "SPREAD",
            "STRICT_PACK", "STRICT_SPREAD").
        callbacks: ``ray.train.UserCallback`` objects, run in the Train controller
            (e.g. :class:`raymeta.progress.TrainProgress`).
        datasets: Ray Datasets by name; workers read them with
            ``ray.train.get_dataset_shard(name)``.
        split_datasets: Names of ``datasets`` split across workers (the others are
            read whole by every worker).

    Returns:
        A configured ``TorchTrainer``; call ``fit()`` on it.

    Raises:
        TrainingSetupError: A numeric argument is out of range.
        InvalidNameError: ``run_name`` could escape ``storage_path``.
    """
    validate_name(run_name, what="run")
    problems = []
    if num_workers < 0:
        problems.append(f"num_workers must be >= 0, got {num_workers}")
    if max_failures < -1:
        problems.append(f"max_failures must be >= -1, got {max_failures}")
    if timeout_minutes <= 0:
        problems.append(f"timeout_minutes must be > 0, got {timeout_minutes}")
    if cpus_per_worker <= 0:
        problems.append(f"cpus_per_worker must be > 0, got {cpus_per_worker}")
    if problems:
        raise TrainingSetupError("; ".join(problems))
    resources = {"CPU": cpus_per_worker}
    if use_gpu:
        resources["GPU"] = 1
    data_options: dict[str, Any] = {}
    if datasets:
        split = [name for name in split_datasets if name in datasets]
        data_options = {
            "datasets": datasets,
            "dataset_config": _whole_splits_config(split),
        }
    return TorchTrainer(
        train_loop,
        train_loop_config=loop_config,
        **data_options,
        torch_config=TorchConfig(
            backend=backend,
            timeout_s=math.ceil(timeout_minutes * 60),
        ),
        scaling_config=ScalingConfig(
            num_workers=num_workers,
            use_gpu=use_gpu,
            resources_per_worker=resources,
            placement_strategy=placement_strategy,
        ),
        run_config=RunConfig(
            name=run_name,
            storage_path=str(storage_path),
            failure_config=FailureConfig(max_failures=max_failures),
            checkpoint_config=CheckpointConfig(num_to_keep=num_to_keep),
            callbacks=list(callbacks),
        ),
    )


def _whole_splits_config(split: list[str]) -> Any:
    """A ``DataConfig`` whose split datasets keep every row.

    Ray Train's own splits with ``streaming_split(equal=True)``, which drops up to
    ``world_size - 1`` rows so that shards are equally long; a method that samples
    from its shard (SAMA) needs no equal lengths, and a dropped example would be
    missing from the per-example results. The others are read whole by each worker.
    """
    from ray.train import DataConfig

    class WholeSplits(DataConfig):
        def configure(  # type: ignore[override]
            self, datasets, world_size, worker_handles, worker_node_ids, **kwargs
        ):
            rest = {k: v for k, v in datasets.items() if k not in split}
            output = super().configure(
                rest, world_size, worker_handles, worker_node_ids, **kwargs
            )
            hints = worker_node_ids if self._enable_shard_locality else None
            for name in (n for n in split if n in datasets):  # V2: one at a time
                ds = datasets[name].copy(datasets[name])
                ds.context.execution_options = self._resolve_execution_options(name)
                shards = ds.streaming_split(
                    world_size, equal=False, locality_hints=hints
                )
                for i, shard in enumerate(shards):
                    output[i][name] = shard
            return output

    return WholeSplits(datasets_to_split=split)


def fit_trainer(
    trainer: TorchTrainer,
    *,
    method: str,
    run_name: str,
    storage_path: str | Path,
    max_failures: int,
) -> Any:
    """``trainer.fit()``; a used-up failure budget raises naming the restore path.

    Args:
        trainer: From :func:`build_trainer`.
        method: Name used in the error message (e.g. ``"SAMA"``).
        run_name: As passed to :func:`build_trainer`.
        storage_path: As passed to :func:`build_trainer`.
        max_failures: As passed to :func:`build_trainer`.

    Returns:
        Ray's ``Result``.

    Raises:
        TrainingFailedError: Workers failed more often than ``max_failures`` allows
            (see :func:`training_failed_error`).
    """
    import ray.train

    try:
        return trainer.fit()
    except ray.train.TrainingFailedError as err:
        raise training_failed_error(
            err,
            method=method,
            run_name=run_name,
            storage_path=storage_path,
            max_failures=max_failures,
        ) from err


def run_trainer(
    train_loop: Callable[[dict[str, Any]], Any],
    loop_config: dict[str, Any],
    *,
    method: str,
    run_name: str,
    storage_path: str | Path,
    max_failures: int = 0,
    **options: Any,
) -> Any:
    """:func:`build_trainer` then :func:`fit_trainer` with the same run settings.

    Args:
        train_loop: The per-worker function.
        loop_config: Passed to ``train_loop``.
        method: Name used in the error message (e.g. ``"SAMA"``).
        run_name: Ray run name; reusing it with the same ``storage_path`` resumes.
        storage_path: Directory (or URI) for checkpoints.
        max_failures: Worker-group restarts allowed.
        options: Further :func:`build_trainer` arguments (workers, GPU, timeout...).

    Returns:
        Ray's ``Result``.
    """
    run = {"run_name": run_name, "storage_path": storage_path}
    trainer = build_trainer(
        train_loop, loop_config, **run, max_failures=max_failures, **options
    )
    return fit_trainer(trainer, method=method, **run, max_failures=max_failures)


def training_failed_error(
    err: Exception,
    *,
    method: str,
    run_name: str,
    storage_path: str | Path,
    max_failures: int,
) -> TrainingFailedError:
    """The error to raise when a run used up its failure budget.

    Names the run, ``max_failures``, the start of Ray's message, the newest
    checkpoint (:func:`~raymeta.training.checkpointing.newest_checkpoint`; on remote
    storage, the run directory) and how to resume from it.

    Args:
        err: Ray's exception (any exception; its type and message are quoted).
        method: Name used in the message (e.g. ``"SAMA"``, ``"HeTRoM"``).
        run_name: The run's name.
        storage_path: The run's storage path (local directory or URI).
        max_failures: The failure budget that was used up.
    """
    cause = " ".join(str(err).split())  # Ray's message spans lines; keep its start
    if len(cause) > _CAUSE_CHARS:
        cause = cause[: _CAUSE_CHARS - 3] + "..."
    run_dir = f"{str(storage_path).rstrip('/')}/{run_name}"
    if "://" in str(storage_path):
        where = f"the newest checkpoint_step* directory under {run_dir}"
    else:
        newest = newest_checkpoint(storage_path, run_name)
        where = (
            f"the newest checkpoint is {newest}"
            if newest is not None
            else f"no checkpoint was written under {run_dir}"
        )
    return TrainingFailedError(
        f"{method} run {run_name!r} failed after using up max_failures="
        f"{max_failures} ({type(err).__name__}: {cause}); restore path: {where}. "
        "Fix the cause, then rerun with the same run_name and storage_path to resume "
        "from it (or raise max_failures)."
    )
