"""One worker skeleton for every training method on Ray Train's ``TorchTrainer``.

A method is a :class:`WorkerProgram`: it builds its modules, optimizers and data on
a worker, runs one step, checks its replicas, hands over the result rows it has
made since the last write and builds its summary. :func:`run_program` owns
everything else, the same for SAMA and HeTRoM:

* rank and world size (:class:`WorkerContext`), restore from
  ``ray.train.get_checkpoint()`` (a retry after a failure, or a rerun with the same
  run name), the 1-based step loop;
* report cadence (``report_every``, lock-step on all ranks), checkpoint cadence
  (``checkpoint_every`` and the last step), bit-identity checks across ranks
  (``check_every``, every checkpoint, the end);
* **keyed, incremental result writes by rank 0 at checkpoint time**: the rows of
  the steps since the previous checkpoint are appended *before* the checkpoint is
  reported, under the key ``<run_id>/to-<step>``; a restarted attempt re-runs those
  steps and appends the same key again, which the store skips, so the store ends
  with exactly one copy of every row (no loss, no duplicates) however often the
  workers or the driver die. The final rows (summary figures, per-example tables)
  are keyed ``<run_id>/final-<step>``;
* the test-only fault hooks (:mod:`raymeta.training.faults`).

``loop_config`` is ``{"config": <TrainingConfig>, "hooks": {...}, "data": {...}}``;
the config object itself travels (it is picklable), so user callables in it (a model
factory, a problem class) reach the workers.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from typing import Any, Protocol

import torch

from raymeta.training import collectives, faults
from raymeta.training.checkpointing import (
    TrainingState,
    report_checkpoint,
    report_metrics,
    restore_from_ray,
    state_dict_checksum,
)

__all__ = ["RowWriter", "WorkerContext", "WorkerProgram", "run_program"]


@dataclasses.dataclass
class WorkerContext:
    """What a program knows about its worker.

    Attributes:
        cfg: The run's :class:`~raymeta.config.TrainingConfig`.
        rank: World rank.
        world: World size.
        device: ``ray.train.torch.get_device()`` (CPU in local mode).
        hooks: Test-only fault hooks.
        data: User data shipped with the loop config (split name -> object).
        in_ray: Whether this runs inside a Ray Train worker (else a plain process).
    """

    cfg: Any
    rank: int
    world: int
    device: torch.device
    hooks: dict[str, Any]
    data: dict[str, Any]
    in_ray: bool = True

    def dataset_shard(self, name: str) -> Any:
        """This worker's ``ray.train.get_dataset_shard(name)`` (None if not given)."""
        if not self.in_ray:
            return None
        import ray.train

        try:
            return ray.train.get_dataset_shard(name)
        except (KeyError, ValueError, RuntimeError):
            return None

    def stop_hook(self, step: int) -> None:
        """Call right before a step's gradient collective (the hang test hook)."""
        faults.maybe_stop(self.hooks, step=step, rank=self.rank, world=self.world)


class WorkerProgram(Protocol):
    """A method's per-worker program (SAMA and HeTRoM implement it)."""

    #: Method label of its result rows (``metrics.method``).
    method: str
    #: Everything a checkpoint holds; ``state.step`` is advanced by the runner.
    state: TrainingState

    def start(self, *, restored: bool) -> None:
        """Validate a fresh run, or read back ``state.extra`` after a restore."""

    def step(self, step: int) -> dict[str, float]:
        """Run training step ``step`` (1-based); return its metrics."""

    def check_replicas(self) -> None:
        """Raise ``RankDivergenceError`` unless every rank holds the same state."""

    def take_rows(self) -> dict[str, list[dict[str, Any]]]:
        """Result rows (table -> rows) made since the last call, then forget them."""

    def summary(self) -> dict[str, Any]:
        """The run's summary; called on every rank after the last step."""

    def final_rows(self, summary: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
        """Rows written once at the end (rank 0), from the summary."""


class RowWriter:
    """Rank 0's keyed appends to the results store (a no-op without a store)."""

    def __init__(self, store_root: str | None, *, experiment: str, run_id: str) -> None:
        """Open the store (lazily imported: the skeleton runs without one too)."""
        from raymeta.results import ResultStore

        self.store = ResultStore(store_root) if store_root else None
        self.common = {"experiment": experiment, "run_id": run_id}
        self.run_id = run_id

    def write(self, tables: dict[str, list[dict[str, Any]]], *, key: str) -> None:
        """Append every table's rows under ``<run_id>/<key>`` (idempotent)."""
        if self.store is None:
            return
        for table, rows in tables.items():
            if rows:
                full = [self.common | r for r in rows]
                self.store.append(table, full, key=f"{self.run_id}/{key}")


@dataclasses.dataclass
class _Loop:
    ctx: WorkerContext
    program: WorkerProgram
    writer: RowWriter | None
    start: float
    history: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    metric_rows: list[dict[str, Any]] = dataclasses.field(default_factory=list)

    @property
    def cfg(self) -> Any:
        return self.ctx.cfg

    def record(self, step: int, metrics: dict[str, Any]) -> None:
        """Report the step (cadence), write rows and checkpoint when due."""
        cfg, state = self.cfg, self.program.state
        every = cfg.checkpoint_every
        checkpoint_now = (every and step % every == 0) or step == cfg.steps
        if cfg.check_every and step % cfg.check_every == 0 and not checkpoint_now:
            self.program.check_replicas()  # a checkpoint step checks below anyway
        if not (checkpoint_now or step % cfg.report_every == 0):
            return
        row = {
            "step": step,
            **metrics,
            "attempt": state.attempt,
            "restored_from_step": state.restored_from_step,
            "wall_time_s": time.perf_counter() - self.start,
        }
        self.history.append(row)
        self.metric_rows += _metric_rows(row, self.program.method)
        state.extra["history"] = self.history
        if not checkpoint_now:
            if self.ctx.in_ray:
                report_metrics(row)
            return
        self.program.check_replicas()
        state.extra["state_checksum"] = {
            "step": step,
            "value": state_dict_checksum(state.modules),
        }
        self.flush(key=f"to-{step}")
        if self.ctx.in_ray:
            report_checkpoint(row, state, rank=self.ctx.rank)

    def flush(self, *, key: str) -> None:
        tables = self.program.take_rows()
        tables["metrics"] = tables.get("metrics", []) + self.metric_rows
        self.metric_rows = []
        if self.writer is not None:
            self.writer.write(tables, key=key)


def _metric_rows(row: dict[str, Any], method: str) -> list[dict[str, Any]]:
    skip = ("step", "attempt", "wall_time_s", "restored_from_step")
    return [
        {
            "method": method,
            "step": int(row["step"]),
            "name": name,
            "value": float(value),
            "rank": 0,
            "attempt": int(row["attempt"]),
            "wall_time_s": float(row["wall_time_s"]),
        }
        for name, value in row.items()
        if name not in skip and isinstance(value, int | float)
    ]


def run_program(
    build: Callable[[WorkerContext], WorkerProgram], loop_config: dict[str, Any]
) -> dict[str, Any] | None:
    """Run a program's step loop on this worker (the ``TorchTrainer`` loop body).

    Returns:
        On rank 0 the summary (the program's, plus ``history``, ``attempt``,
        ``restored_from_step``, ``rank_checksums``, ``node_ids``, ``world_size``,
        ``loop_seconds`` and ``attempt_started_at``); None on other ranks.
    """
    started_at = time.time()
    ctx = _context(loop_config)
    program = build(ctx)
    state = program.state
    restored = restore_from_ray(state, rank=ctx.rank) if ctx.in_ray else False
    program.start(restored=restored)
    collectives.COUNTER.reset()
    cfg = ctx.cfg
    writer = (
        RowWriter(cfg.store, experiment=cfg.experiment, run_id=cfg.run_name)
        if ctx.rank == 0
        else None
    )
    loop = _Loop(ctx, program, writer, time.perf_counter())
    loop.history = list(state.extra.get("history", []))
    while state.step < cfg.steps:
        step = state.step + 1
        metrics = program.step(step)
        state.step = step
        loop.record(step, metrics)
        faults.maybe_fail(ctx.hooks, step=step, rank=ctx.rank, world=ctx.world)
    program.check_replicas()
    loop_seconds = time.perf_counter() - loop.start
    summary = program.summary()
    checksums = _rank_checksums(state)
    node_ids = _node_ids() if ctx.in_ray else []
    if ctx.rank != 0:
        return None
    summary |= {
        "history": loop.history,
        "attempt": state.attempt,
        "restored_from_step": state.restored_from_step,
        "rank_checksums": checksums,
        "node_ids": node_ids,
        "world_size": ctx.world,
        "loop_seconds": loop_seconds,
        "steps": state.step,
        "attempt_started_at": started_at,
    }
    loop.flush(key=f"to-{state.step}")  # rows of a rerun with nothing left: none
    final = program.final_rows(summary)
    if writer is not None:
        writer.write(final, key=f"final-{state.step}")
    return summary


def _context(loop_config: dict[str, Any]) -> WorkerContext:
    hooks = dict(loop_config.get("hooks", {}))
    faults.check_hooks(hooks)
    cfg, data = loop_config["config"], dict(loop_config.get("data", {}))
    if not loop_config.get("in_ray", True):
        return WorkerContext(cfg, 0, 1, torch.device("cpu"), hooks, data, in_ray=False)
    import ray.train
    import ray.train.torch

    ray_ctx = ray.train.get_context()
    return WorkerContext(
        cfg,
        ray_ctx.get_world_rank(),
        ray_ctx.get_world_size(),
        ray.train.torch.get_device(),
        hooks,
        data,
    )


def _rank_checksums(state: TrainingState) -> list[int]:
    params = [
        p for name in sorted(state.modules) for p in state.modules[name].parameters()
    ]
    local = collectives.tensor_checksum(params)
    gathered = collectives.all_gather_flat(torch.tensor([local], dtype=torch.int64))
    return [int(v) for v in gathered.reshape(-1).tolist()]


def _node_ids() -> list[str]:
    """Every worker's Ray node id (first 15 hex digits), gathered in rank order."""
    import ray

    local = int(ray.get_runtime_context().get_node_id()[:15], 16)
    gathered = collectives.all_gather_flat(torch.tensor([local], dtype=torch.int64))
    return [f"{int(v):015x}" for v in gathered.reshape(-1).tolist()]
