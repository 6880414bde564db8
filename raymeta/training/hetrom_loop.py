"""HeTRoM on Ray Train: the per-worker loop, its builders and an in-process twin.

- :func:`build_hetrom_components` turns a :class:`~raymeta.config.HeTRoMConfig` into
  the embedding, head, objective, optimizer and episode streams.
- :func:`hetrom_train_loop` is the ``TorchTrainer`` per-worker function: every rank
  draws its slice of the global meta-batch, all ranks all-gather the detached task
  losses, indices and kinds, select identically, backpropagate the rescaled band
  loss and average gradients (one flattened all-reduce). Lambda / lambda-hat of the
  dual rule are computed from the same gathered losses on every rank, so they stay
  identical; they are checkpointed with the model, the optimizer and the step (the
  episode cursor: streams are pure functions of the step). Rank 0 writes per-step
  task statistics to the store table ``task_stats`` and step metrics to ``metrics``,
  keyed so that a resumed attempt never duplicates rows.
- :func:`fit_hetrom` builds the trainer and runs it
  (``raymeta.training.trainer.run_trainer``); :func:`train_hetrom_in_process` runs
  the same meta step without Ray (benchmarks, notebooks).

Example:
    >>> from raymeta.config import load_config
    >>> cfg = load_config("jobs/configs/hetrom_tiny.toml")  # doctest: +SKIP
    >>> result = fit_hetrom(cfg, run_name="tiny")  # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

from raymeta.config import HeTRoMConfig, check_config
from raymeta.metalearn.heads import EpisodicHead, build_head
from raymeta.metalearn.hetrom import (
    NormalizedMLP,
    RobustTaskObjective,
    StepRecord,
    build_selection_rule,
    evaluate_episodic,
    hetrom_meta_step,
    selection_quality,
)
from raymeta.names import validate_name
from raymeta.tasks.episodes import TASK_KINDS
from raymeta.tasks.fewshot import EpisodeStream, build_task_family
from raymeta.training import collectives
from raymeta.training.checkpointing import (
    TrainingState,
    report_checkpoint,
    restore_from_ray,
)

__all__ = [
    "DistributedCollectives",
    "HeTRoMComponents",
    "build_hetrom_components",
    "evaluate_components",
    "fit_hetrom",
    "hetrom_train_loop",
    "train_hetrom_in_process",
]


@dataclasses.dataclass
class HeTRoMComponents:
    """Everything one HeTRoM run trains and evaluates with."""

    model: NormalizedMLP
    head: EpisodicHead
    objective: RobustTaskObjective
    optimizer: torch.optim.Optimizer
    train_stream: EpisodeStream
    test_stream: EpisodeStream


def _rule_kwargs(cfg: HeTRoMConfig) -> dict[str, Any]:
    return {
        "plain": {},
        "oracle": {},
        "sort": {"m": cfg.m, "k": cfg.k},
        "dual": {
            "m": cfg.m,
            "k": cfg.k,
            "n": cfg.tasks_per_batch,
            "lr": cfg.threshold_lr,
        },
        "lognormal": {"c_hi": cfg.c_hi, "c_lo": cfg.c_lo},
    }[cfg.rule]


def build_hetrom_components(cfg: HeTRoMConfig) -> HeTRoMComponents:
    """Build model, head, objective, optimizer and streams from a config.

    The embedding is initialised from ``cfg.seed`` (identical on every rank); the
    training stream carries the configured contamination, the test stream (stream
    id 1) is clean.
    """
    family_kwargs: dict[str, Any] = {"shots": cfg.shots, "queries": cfg.queries}
    if cfg.family != "sinusoid":
        family_kwargs["ways"] = cfg.ways
    family = build_task_family(cfg.family, **family_kwargs)
    model = NormalizedMLP(
        family.in_features,
        hidden=cfg.hidden,
        out_features=cfg.embedding_dim,
        scale=cfg.embedding_scale,
        generator=torch.Generator().manual_seed(cfg.seed),
    )
    if cfg.head == "linear":
        head = build_head(
            "linear",
            out_features=family.ways,
            steps=cfg.inner_steps,
            lr=cfg.inner_lr,
            l2=cfg.l2,
            first_order=cfg.first_order,
            problem=family.problem,
        )
    else:
        head = build_head(cfg.head, out_features=family.ways, problem=family.problem)
    rule = build_selection_rule(cfg.rule, **_rule_kwargs(cfg))
    train = EpisodeStream(
        family=family,
        tasks_per_batch=cfg.tasks_per_batch,
        seed=cfg.seed,
        noisy_fraction=cfg.noisy_fraction,
        outlier_fraction=cfg.outlier_fraction,
        noise_prob=cfg.noise_prob,
    )
    test = EpisodeStream(
        family=family, tasks_per_batch=cfg.test_batch, seed=cfg.seed, stream=1
    )
    return HeTRoMComponents(
        model=model,
        head=head,
        objective=RobustTaskObjective(rule, warmup_steps=cfg.warmup_steps),
        optimizer=torch.optim.Adam(model.parameters(), lr=cfg.meta_lr),
        train_stream=train,
        test_stream=test,
    )


def evaluate_components(c: HeTRoMComponents, *, test_tasks: int) -> tuple[float, float]:
    """Mean metric (accuracy or MSE) and 95% CI over ``test_tasks`` clean tasks."""
    n_batches = max(test_tasks // c.test_stream.tasks_per_batch, 1)
    batches = [c.test_stream.batch(i) for i in range(n_batches)]
    return evaluate_episodic(c.model, c.head, batches)


def train_hetrom_in_process(
    cfg: HeTRoMConfig, *, on_step: Callable[[StepRecord], None] | None = None
) -> HeTRoMComponents:
    """Train in this process (no Ray) with the same meta step as the Ray loop."""
    c = build_hetrom_components(cfg)
    for step in range(cfg.steps):
        record = hetrom_meta_step(
            c.model, c.head, c.objective, c.optimizer, c.train_stream.batch(step)
        )
        if on_step is not None:
            on_step(record)
    return c


class DistributedCollectives:
    """:class:`~raymeta.metalearn.hetrom.Collectives` over ``torch.distributed``."""

    def __init__(self) -> None:
        """Read the world size of the active process group (1 if none)."""
        self.world_size = collectives.world_size()

    def all_gather(self, tensor: torch.Tensor) -> torch.Tensor:
        """Concatenate every rank's 1-D tensor in rank order."""
        return collectives.all_gather_flat(tensor, tag="hetrom_rank").reshape(-1)

    def all_reduce_mean_(self, tensors: list[torch.Tensor]) -> None:
        """Average gradients across ranks (one flattened all-reduce)."""
        collectives.all_reduce_mean_(tensors, tag="hetrom_grad")


def _step_metric_rows(record: StepRecord, attempt: int) -> list[dict[str, Any]]:
    sel = record.selection
    values = {
        "band_loss": record.band_loss,
        "num_selected": float(sel.selected.sum()),
        "threshold_upper": sel.threshold_upper,
        "threshold_lower": sel.threshold_lower,
        "ranking_time_s": record.ranking_time_s,
        "step_time_s": record.step_time_s,
    }
    return [
        {"step": record.step, "name": k, "value": float(v), "attempt": attempt}
        for k, v in values.items()
    ]


def _flush_rows(
    store: Any, run_id: str, experiment: str, step: int, tasks: list, metrics: list
) -> None:
    """Append buffered rows; keys make a re-run of the same steps a no-op."""
    if store is None or not tasks:
        return
    common = {"experiment": experiment, "run_id": run_id}
    store.append("task_stats", [common | r for r in tasks], key=f"{run_id}/to-{step}")
    metric_rows = [common | {"method": "hetrom", "rank": 0} | r for r in metrics]
    store.append("metrics", metric_rows, key=f"{run_id}/to-{step}")
    tasks.clear()
    metrics.clear()


def _maybe_inject_failure(loop_config: dict[str, Any], step: int, rank: int) -> None:
    """Test hook: fail the last rank once at ``fail_at_step`` (marker file guards)."""
    marker = loop_config.get("fail_marker")
    if marker is None or step != loop_config.get("fail_at_step"):
        return
    if rank == collectives.world_size() - 1 and not os.path.exists(marker):
        Path(marker).write_text(f"failed at step {step}\n")
        raise RuntimeError(f"injected worker failure at step {step}")


def _check_replicas(c: HeTRoMComponents) -> None:
    """Raise RankDivergenceError unless parameters and thresholds match on all ranks."""
    scalars = torch.tensor(
        [float(v) for v in c.objective.state_dict().values()], dtype=torch.float64
    )
    tensors = [p.detach() for p in c.model.parameters()] + [scalars]
    collectives.assert_identical_across_ranks(
        tensors, what="HeTRoM embedding parameters and lambda/lambda-hat"
    )


def hetrom_train_loop(loop_config: dict[str, Any]) -> dict[str, Any]:
    """Per-worker HeTRoM loop for ``TorchTrainer`` (see the module docstring).

    Args:
        loop_config: ``{"config": asdict(HeTRoMConfig), "run_id": str}`` plus the
            optional test hooks ``fail_at_step`` / ``fail_marker``.

    Returns:
        On every rank: test metric and CI (rank 0 only, else None), the selection
        history of this attempt, the final parameters and last gradient as lists,
        the dual thresholds, and the attempt number.
    """
    from raymeta.results import ResultStore

    raw = dict(loop_config["config"])
    raw["hidden"] = tuple(raw["hidden"])
    cfg = HeTRoMConfig(**raw)
    run_id = loop_config["run_id"]
    rank, comm = collectives.rank(), DistributedCollectives()
    c = build_hetrom_components(cfg)
    state = TrainingState(
        modules={"embedding": c.model}, optimizers={"meta": c.optimizer}
    )
    if restore_from_ray(state, rank=rank):  # Ray: resume after a failure or rerun
        c.objective.load_state_dict(state.extra.get("objective", {}))
    store = ResultStore(cfg.store) if rank == 0 and cfg.store else None
    task_rows: list[dict[str, Any]] = []
    metric_rows: list[dict[str, Any]] = []
    history = []
    for step in range(state.step, cfg.steps):
        _maybe_inject_failure(loop_config, step, rank)
        batch = c.train_stream.batch(step, rank=rank, world_size=comm.world_size)
        record = hetrom_meta_step(
            c.model, c.head, c.objective, c.optimizer, batch, collectives=comm
        )
        history.append(
            {
                "step": step,
                "selected": record.task_index[record.selection.selected].tolist(),
                "losses": record.losses.tolist(),
                "band_loss": record.band_loss,
            }
        )
        task_rows += record.task_rows()
        metric_rows += _step_metric_rows(record, state.attempt)
        state.step = step + 1
        if state.step % cfg.checkpoint_every == 0 or state.step == cfg.steps:
            _flush_rows(
                store, run_id, cfg.experiment, state.step, task_rows, metric_rows
            )
            state.extra = {"objective": c.objective.state_dict()}
            _check_replicas(c)
            metrics = {"step": state.step, "band_loss": record.band_loss}
            report_checkpoint(metrics, state, rank=rank)  # Ray: barrier + checkpoint
    params = [p.detach() for p in c.model.parameters()]
    grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
    test = evaluate_components(c, test_tasks=cfg.test_tasks) if rank == 0 else None
    return {
        "test_metric": None if test is None else test[0],
        "test_ci95": None if test is None else test[1],
        "history": history,
        "params": torch.cat([p.flatten() for p in params]).tolist(),
        "last_grad": torch.cat([g.flatten() for g in grads]).tolist(),
        "objective_state": c.objective.state_dict(),
        "attempt": state.attempt,
        "restored_from_step": state.restored_from_step,
    }


def fit_hetrom(
    cfg: HeTRoMConfig,
    *,
    run_name: str,
    hooks: dict[str, Any] | None = None,
    callbacks: Sequence[Any] = (),
) -> Any:
    """Run :func:`hetrom_train_loop` on a ``TorchTrainer`` built from ``cfg``.

    Rerunning with the same ``run_name`` and ``cfg.storage_path`` resumes from the
    latest checkpoint.

    Args:
        cfg: The validated job config (``num_workers=0`` runs in the driver).
        run_name: Ray run name (also the ``run_id`` in the results store).
        hooks: Test hooks passed to the loop (``fail_at_step``, ``fail_marker``).
        callbacks: ``ray.train.UserCallback`` objects (e.g. progress display).

    Returns:
        Ray's ``Result``; ``result.return_value`` is rank 0's loop return value.

    Raises:
        TrainingFailedError: Workers failed more often than ``cfg.max_failures``
            allows; the message names the newest checkpoint to resume from.
    """
    from raymeta.training.trainer import run_trainer

    check_config(cfg, source="HeTRoM config")
    validate_name(run_name, what="run")
    # workers run in other directories: pin local paths before shipping the config
    cfg = dataclasses.replace(
        cfg,
        storage_path=_absolute(cfg.storage_path),
        store=_absolute(cfg.store) if cfg.store else "",
    )
    loop_config = {"config": dataclasses.asdict(cfg), "run_id": run_name} | (
        hooks or {}
    )
    return run_trainer(
        hetrom_train_loop,
        loop_config,
        method="HeTRoM",
        run_name=run_name,
        storage_path=cfg.storage_path,
        num_workers=cfg.num_workers,
        max_failures=cfg.max_failures,
        timeout_minutes=cfg.timeout_minutes,
        callbacks=callbacks,
    )


def _absolute(path: str) -> str:
    return path if "://" in path else str(Path(path).resolve())


def hetrom_summary(
    out: dict[str, Any], store: Any = None, *, run_id: str = "", after_step: int = 0
) -> dict[str, float]:
    """Headline figures: clean-test metric, and how well the dropped-top set matched
    the contaminated tasks (from the store's ``task_stats``, after warm-up).

    Args:
        out: ``Result.return_value`` of :func:`fit_hetrom`.
        store: The run's results store (optional).
        run_id: The run's id in the store.
        after_step: Only steps from this one on count (skip the warm-up).
    """
    figures = {
        "test_metric": float(out["test_metric"]),
        "test_ci95": float(out["test_ci95"]),
        "attempt": float(out["attempt"]),
    }
    if store is None or "task_stats" not in store.tables():
        return figures
    stats = store.to_pandas(
        "task_stats", filters=[("run_id", "=", run_id), ("step", ">=", after_step)]
    )
    if stats.empty:
        return figures
    dropped_top = torch.tensor((stats["dropped"] == "top").to_numpy())
    kinds = torch.tensor([TASK_KINDS.index(k) for k in stats["task_kind"]])
    precision, recall = selection_quality(dropped_top, kinds)
    figures |= {"dropped_top_precision": precision, "dropped_top_recall": recall}
    return figures
