"""Complete, method-agnostic training state: save to a directory, resume from Ray.

A meta-learning run is only resumable when *everything* that shapes the next step is
saved: base and meta modules, every optimizer and LR scheduler, the per-rank random
generators (data sampling and the global torch RNG that dropout uses), the data cursor
and the step counter. :class:`TrainingState` collects these by name;
:func:`save_checkpoint` / :func:`load_checkpoint` write and read them as plain files;
:func:`report_checkpoint` and :func:`restore_from_ray` connect them to Ray Train V2
(``ray.train.report`` with a checkpoint, ``ray.train.get_checkpoint()`` on a retry or a
rerun with the same run name).

Layout of a checkpoint directory (files from all ranks are merged by Ray):

* ``shared.pt`` (rank 0): module/optimizer/scheduler state dicts, step, cursor, extra,
  attempt. Replicated state is identical on every rank, so one copy suffices.
* ``rank-{r}.pt`` (every rank): that rank's generator states and global torch RNG.

Example:
    >>> import tempfile, torch
    >>> net = torch.nn.Linear(2, 1)
    >>> state = TrainingState(modules={"net": net}, step=5)
    >>> with tempfile.TemporaryDirectory() as d:
    ...     _ = save_checkpoint(state, d, rank=0)
    ...     fresh = TrainingState(modules={"net": torch.nn.Linear(2, 1)})
    ...     load_checkpoint(fresh, d, rank=0)
    5
"""

from __future__ import annotations

import dataclasses
import json
import tempfile
from pathlib import Path
from typing import Any

import torch

from raymeta.errors import TrainingSetupError
from raymeta.names import validate_name

__all__ = [
    "TrainingState",
    "checkpoint_dir_name",
    "load_checkpoint",
    "newest_checkpoint",
    "report_checkpoint",
    "report_metrics",
    "restore_from_ray",
    "save_checkpoint",
    "state_dict_checksum",
]

SHARED_FILE = "shared.pt"
CHECKPOINT_PREFIX = "checkpoint_step"
RAY_CHECKPOINT_SNAPSHOT = "checkpoint_manager_snapshot.json"  # Ray Train V2's record


def _rank_file(rank: int) -> str:
    return f"rank-{rank}.pt"


@dataclasses.dataclass
class TrainingState:
    """Everything a training loop must save to resume bit-exactly.

    Attributes:
        modules: Named modules (e.g. ``{"base": model, "meta": mwn}``). Pass the bare
            module, not a DDP wrapper (``ddp.module``), so keys carry no prefix.
        optimizers: Named optimizers.
        schedulers: Named LR schedulers (anything with ``state_dict``).
        generators: Named per-rank ``torch.Generator`` objects (data sampling, noise).
        step: Number of completed training steps.
        cursor: Data-position counters (e.g. ``{"epoch": 2, "offset": 128}``).
        attempt: 1 for a fresh run; one more than the checkpoint's on each restore.
        restored_from_step: Step of the checkpoint this attempt resumed from.
        extra: Small picklable extras (running means, best metric so far).
    """

    modules: dict[str, torch.nn.Module]
    optimizers: dict[str, torch.optim.Optimizer] = dataclasses.field(
        default_factory=dict
    )
    schedulers: dict[str, Any] = dataclasses.field(default_factory=dict)
    generators: dict[str, torch.Generator] = dataclasses.field(default_factory=dict)
    step: int = 0
    cursor: dict[str, int] = dataclasses.field(default_factory=dict)
    attempt: int = 1
    restored_from_step: int | None = None
    extra: dict[str, Any] = dataclasses.field(default_factory=dict)


def _shared_payload(state: TrainingState) -> dict[str, Any]:
    return {
        "modules": {k: m.state_dict() for k, m in state.modules.items()},
        "optimizers": {k: o.state_dict() for k, o in state.optimizers.items()},
        "schedulers": {k: s.state_dict() for k, s in state.schedulers.items()},
        "step": state.step,
        "cursor": dict(state.cursor),
        "attempt": state.attempt,
        "extra": dict(state.extra),
    }


def _rank_payload(state: TrainingState) -> dict[str, Any]:
    payload: dict[str, Any] = {
        "generators": {k: g.get_state() for k, g in state.generators.items()},
        "torch_rng": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        payload["cuda_rng"] = torch.cuda.get_rng_state_all()
    return payload


def save_checkpoint(state: TrainingState, directory: str | Path, *, rank: int) -> Path:
    """Write this rank's part of ``state`` into ``directory``.

    Rank 0 writes the replicated part (``shared.pt``); every rank writes its RNG
    states (``rank-{rank}.pt``). Call it on all ranks with the same logical step.

    Args:
        state: The state to save.
        directory: Target directory (created if missing).
        rank: This process's world rank.

    Returns:
        The directory as a ``Path``.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    if rank == 0:
        torch.save(_shared_payload(state), directory / SHARED_FILE)
    torch.save(_rank_payload(state), directory / _rank_file(rank))
    return directory


def load_checkpoint(state: TrainingState, directory: str | Path, *, rank: int) -> int:
    """Load a checkpoint written by :func:`save_checkpoint` into ``state`` in place.

    Sets ``state.restored_from_step`` to the saved step and ``state.attempt`` to the
    saved attempt plus one.

    Args:
        state: Live objects to load into (same names as when saved).
        directory: A checkpoint directory.
        rank: This process's world rank (selects ``rank-{rank}.pt``).

    Returns:
        The restored step.

    Raises:
        TrainingSetupError: A file is missing or a saved name has no live object.
    """
    directory = Path(directory)
    shared_path, rank_path = directory / SHARED_FILE, directory / _rank_file(rank)
    for path in (shared_path, rank_path):
        if not path.exists():
            raise TrainingSetupError(
                f"checkpoint {str(directory)!r} lacks {path.name!r}; expected files "
                f"written by save_checkpoint on every rank (found "
                f"{sorted(p.name for p in directory.iterdir())}); resume with the same "
                "number of workers that wrote it"
            )
    shared = torch.load(shared_path, weights_only=False)
    per_rank = torch.load(rank_path, weights_only=False)
    _load_named(state.modules, shared["modules"], "module")
    _load_named(state.optimizers, shared["optimizers"], "optimizer")
    _load_named(state.schedulers, shared["schedulers"], "scheduler")
    for name, gen_state in per_rank["generators"].items():
        _require(state.generators, name, "generator").set_state(gen_state)
    torch.set_rng_state(per_rank["torch_rng"])
    if "cuda_rng" in per_rank and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(per_rank["cuda_rng"])
    state.step = int(shared["step"])
    state.cursor = dict(shared["cursor"])
    state.extra = dict(shared["extra"])
    state.attempt = int(shared["attempt"]) + 1
    state.restored_from_step = state.step
    return state.step


def _require(live: dict[str, Any], name: str, kind: str) -> Any:
    if name not in live:
        raise TrainingSetupError(
            f"checkpoint has a {kind} named {name!r} but the live state has only "
            f"{sorted(live)}; build the TrainingState with the same names as the run "
            "that wrote the checkpoint"
        )
    return live[name]


def _load_named(live: dict[str, Any], saved: dict[str, Any], kind: str) -> None:
    for name, sd in saved.items():
        _require(live, name, kind).load_state_dict(sd)


def report_metrics(metrics: dict[str, Any]) -> None:
    """``ray.train.report`` without a checkpoint (all ranks must call it together)."""
    import ray.train

    ray.train.report(_plain(metrics))


def report_checkpoint(
    metrics: dict[str, Any], state: TrainingState, *, rank: int
) -> None:
    """Save ``state`` on every rank and report it to Ray Train as one checkpoint.

    All ranks must call this at the same step (``ray.train.report`` is a barrier).
    Each rank's files land in the same checkpoint directory, named after the step.

    Args:
        metrics: Plain Python numbers/strings (tensors are converted with ``item``).
        state: The complete training state.
        rank: This process's world rank.
    """
    import ray.train

    with tempfile.TemporaryDirectory(prefix="raymeta-ckpt-") as tmp:
        save_checkpoint(state, tmp, rank=rank)
        ray.train.report(
            _plain(metrics),
            checkpoint=ray.train.Checkpoint.from_directory(tmp),
            checkpoint_dir_name=checkpoint_dir_name(state.step),
        )


def checkpoint_dir_name(step: int) -> str:
    """Name of the checkpoint directory of ``step`` (sorts by step as a string)."""
    return f"{CHECKPOINT_PREFIX}{step:09d}"


def newest_checkpoint(storage_path: str | Path, run_name: str) -> Path | None:
    """The checkpoint directory a rerun of a run on local storage resumes from.

    Ray Train resumes from the latest checkpoint its controller *registered*, as
    recorded in ``checkpoint_manager_snapshot.json``. A newer ``checkpoint_step*``
    directory can exist on storage without being registered (a rank hung or died
    right after reporting it, before the controller collected every rank's report),
    so the snapshot is read first; without a readable snapshot, the highest step's
    directory is returned.

    Args:
        storage_path: The run's ``storage_path`` (a local directory).
        run_name: The run's name.

    Returns:
        ``storage_path/run_name/checkpoint_step<step>``, or None when the run has
        no (registered) checkpoint.
    """
    run_dir = Path(storage_path) / validate_name(run_name, what="run")
    try:
        snapshot = json.loads((run_dir / RAY_CHECKPOINT_SNAPSHOT).read_text())
        latest = snapshot["latest_checkpoint_result"]
    except (OSError, ValueError, KeyError, TypeError):
        found = sorted(run_dir.glob(f"{CHECKPOINT_PREFIX}*"))
        return found[-1] if found else None
    if latest is None:
        return None
    return run_dir / latest["checkpoint_dir_name"]


def restore_from_ray(state: TrainingState, *, rank: int) -> bool:
    """Load the latest Ray Train checkpoint into ``state`` if there is one.

    ``ray.train.get_checkpoint()`` returns it when the run is retried after a failure
    (``FailureConfig``) or rerun with the same ``RunConfig(name, storage_path)``.

    Returns:
        True when a checkpoint was loaded (``state.restored_from_step`` is set).
    """
    import ray.train

    checkpoint = ray.train.get_checkpoint()
    if checkpoint is None:
        return False
    with checkpoint.as_directory() as directory:
        load_checkpoint(state, directory, rank=rank)
    return True


def _plain(metrics: dict[str, Any]) -> dict[str, Any]:
    return {
        k: (v.item() if isinstance(v, torch.Tensor) else v) for k, v in metrics.items()
    }


def state_dict_checksum(modules: dict[str, torch.nn.Module]) -> int:
    """63-bit checksum of the state dicts of ``modules`` (by name, then key)."""
    from raymeta.training.collectives import tensor_checksum

    tensors = [
        t
        for name in sorted(modules)
        for _, t in sorted(modules[name].state_dict().items())
    ]
    return tensor_checksum(tensors)
