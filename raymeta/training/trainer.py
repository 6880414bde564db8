"""Build a Ray Train V2 ``TorchTrainer`` for any raymeta per-worker loop.

One function, :func:`build_trainer`, translates flat, typed arguments into Ray's
``ScalingConfig`` / ``RunConfig`` / ``FailureConfig`` / ``CheckpointConfig`` /
``TorchConfig``. It is method-agnostic: SAMA and HeTRoM pass their own loop function
and loop config.

Defaults that matter on purpose:

* ``timeout_minutes=5``: a hung collective fails the attempt in minutes, not the
  torch default of 30 (ray #22349), so ``FailureConfig`` can restart it.
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

import datetime
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
from ray.train.torch import TorchConfig, TorchTrainer

from raymeta.errors import TrainingSetupError

__all__ = ["build_trainer"]


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
        timeout_minutes: Collective timeout of the torch process group.
        backend: torch.distributed backend; None picks gloo on CPU, nccl on GPU.
        placement_strategy: How workers are placed on nodes ("PACK", "SPREAD",
            "STRICT_PACK", "STRICT_SPREAD").

    Returns:
        A configured ``TorchTrainer``; call ``fit()`` on it.

    Raises:
        TrainingSetupError: A numeric argument is out of range.
    """
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
    return TorchTrainer(
        train_loop,
        train_loop_config=loop_config,
        torch_config=TorchConfig(
            backend=backend,
            timeout_s=int(datetime.timedelta(minutes=timeout_minutes).total_seconds()),
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
        ),
    )
