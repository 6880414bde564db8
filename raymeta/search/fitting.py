"""Fit meta-task GPs in parallel on Ray, with an in-memory and a results-store cache.

Each task is fitted by the pure :func:`raymeta.gp.fit.fit_task_gp` with a seed derived
from its content hash (not its position), so the result is independent of the task
order and of how the tasks are batched over workers. Fitted states are cached by
``(content hash, seed)`` in a :class:`MetaFitCache` and in the store's ``meta_tasks``
table, so a task is never refitted across suggestions or runs.

Fitter tasks ask for ``num_cpus_per_worker`` CPUs (default 0): fitters that hold
whole CPUs can deadlock a Tune run on a small cluster (ray-notes.md section 3).

**Fitter failures.** A fitter whose worker process dies (killed, OOM, lost node) is
re-run up to ``max_retries`` times by Ray; the retry fits the same tasks with the
same hash-derived seeds, so its states equal those of an undisturbed run. When the
retries are used up, the tasks of that fitter are *excluded*: a WARNING names them
and the result holds the other tasks' states only (the suggestion is then the one a
run without those tasks gives). Errors raised by the fit itself (``FitError``) are
not retried and propagate.

Example:
    >>> states = fit_meta_tasks(tasks, seed=0, num_workers=2)  # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
import math
from collections.abc import Sequence

import ray
import torch

from raymeta.gp.fit import TaskGPState, fit_task_gp, seed_from_hash
from raymeta.results.store import ResultStore
from raymeta.tasks.data import TaskData, validate_meta_tasks

__all__ = ["DEFAULT_MAX_RETRIES", "MetaFitCache", "fit_meta_tasks"]

log = logging.getLogger(__name__)

DEFAULT_MAX_RETRIES = 2


class MetaFitCache:
    """In-memory cache of fitted states keyed by ``(content hash, seed)``."""

    def __init__(self) -> None:
        """Start empty."""
        self._states: dict[tuple[str, int], TaskGPState] = {}

    def get(self, task_hash: str, seed: int) -> TaskGPState | None:
        """The cached state, or None."""
        return self._states.get((task_hash, seed))

    def put(self, state: TaskGPState, seed: int) -> None:
        """Remember a fitted state."""
        self._states[(state.task_hash, seed)] = state

    def __len__(self) -> int:
        return len(self._states)


def _fit_batch(
    tasks: list[TaskData], seeds: list[int], threads: int, restarts: int
) -> list[bytes]:
    """Fit a batch of tasks in one process; states travel back as bytes."""
    torch.set_num_threads(threads)
    return [
        fit_task_gp(t, seed=s, restarts=restarts).to_bytes()
        for t, s in zip(tasks, seeds)
    ]


_remote_fit_batch = ray.remote(max_retries=DEFAULT_MAX_RETRIES)(_fit_batch)


def _from_store(
    store: ResultStore, experiment: str, hashes: list[str], seed: int
) -> dict[str, TaskGPState]:
    if not hashes or "meta_tasks" not in store.tables():
        return {}
    table = store.read(
        "meta_tasks",
        filters=[
            ("experiment", "=", experiment),
            ("task_hash", "in", hashes),
        ],
    )
    found = {}
    for row in table.to_pylist():
        if row.get("fit_seed") == seed and row["state"] is not None:
            found[row["task_hash"]] = TaskGPState.from_bytes(row["state"])
    return found


def _to_store(
    store: ResultStore, experiment: str, states: list[TaskGPState], seed: int
) -> None:
    now = dt.datetime.now(dt.UTC)
    for s in states:
        row = {
            "experiment": experiment,
            "task_id": s.task_id,
            "task_hash": s.task_hash,
            "n_points": s.n,
            "dim": s.dim,
            "state": s.to_bytes(),
            "fit_seconds": s.fit_seconds,
            "created_at": now,
            "fit_seed": int(seed),
        }
        store.append("meta_tasks", [row], key=f"{s.task_hash}-{seed}")


def _fit_missing(
    tasks: list[TaskData],
    seed: int,
    num_workers: int,
    num_cpus: float,
    restarts: int,
    max_retries: int,
) -> list[TaskGPState]:
    """Fit ``tasks``; states of tasks whose fitter died for good are left out."""
    seeds = [seed_from_hash(t.content_hash(), seed) for t in tasks]
    if num_workers == 0:
        return [fit_task_gp(t, seed=s, restarts=restarts) for t, s in zip(tasks, seeds)]
    size = math.ceil(len(tasks) / num_workers)
    threads = max(1, int(num_cpus))
    fitter = _remote_fit_batch.options(
        num_cpus=num_cpus, scheduling_strategy="SPREAD", max_retries=max_retries
    )
    batches = [slice(i, i + size) for i in range(0, len(tasks), size)]
    refs = [fitter.remote(tasks[b], seeds[b], threads, restarts) for b in batches]
    states = []
    for batch, ref in zip(batches, refs):
        try:
            states.extend(TaskGPState.from_bytes(b) for b in ray.get(ref))
        except ray.exceptions.RayTaskError:
            raise  # the fit itself failed (e.g. FitError): not a lost fitter
        except ray.exceptions.RayError as err:
            log.warning(
                "meta-task fitter died %d time(s) (max_retries=%d, %s); excluding "
                "meta-task(s) %s from this suggestion",
                max_retries + 1,
                max_retries,
                type(err).__name__,
                ", ".join(repr(t.task_id) for t in tasks[batch]),
            )
    return states


def fit_meta_tasks(
    tasks: Sequence[TaskData],
    *,
    seed: int,
    num_workers: int = 1,
    num_cpus_per_worker: float = 0.0,
    cache: MetaFitCache | None = None,
    store: ResultStore | None = None,
    experiment: str = "meta-cache",
    restarts: int = 5,
    max_retries: int = DEFAULT_MAX_RETRIES,
    min_tasks_per_worker: int = 1,
) -> list[TaskGPState]:
    """Fit (or fetch from cache) one GP per meta-task; states in input order.

    Args:
        tasks: The meta-tasks (validated: unique ids, equal dimension).
        seed: Base seed; each task's fit seed is derived from it and the task's hash.
        num_workers: Ray remote tasks to spread the fits over; 0 fits serially
            in this process (no Ray needed).
        num_cpus_per_worker: CPUs each fitter reserves (0: do not hold CPUs).
        cache: In-memory cache, consulted first and filled.
        store: Results store; table ``meta_tasks`` is consulted and filled.
        experiment: The store partition of the cache rows.
        restarts: Prior-drawn restarts per fit (after the default start).
        max_retries: Ray re-runs of a fitter whose worker died; when they are used
            up, its tasks are excluded with a WARNING naming them.
        min_tasks_per_worker: Each Ray fitter gets at least this many tasks to fit;
            fewer than that in all are fitted in this process (starting a Ray
            worker costs seconds, a fit about 0.05 CPU-s at 32 points).

    Returns:
        One fitted state per task, in the order of ``tasks``, each carrying the
        requesting task's id; tasks excluded after a lost fitter are left out.

    Raises:
        MetaDataError: Malformed tasks (see :func:`validate_meta_tasks`).
        FitError: A task could not be fitted at all.
    """
    validate_meta_tasks(tasks)
    hashes = [t.content_hash() for t in tasks]
    found: dict[str, TaskGPState] = {}
    for h in hashes:
        state = cache.get(h, seed) if cache is not None else None
        if state is not None:
            found[h] = state
    if store is not None:
        missing = sorted({h for h in hashes if h not in found})
        found.update(_from_store(store, experiment, missing, seed))
    todo = {h: t for h, t in zip(hashes, tasks) if h not in found}
    if todo:
        order = sorted(todo)
        fitted = _fit_missing(
            [todo[h] for h in order],
            seed,
            min(num_workers, len(order) // max(1, min_tasks_per_worker)),
            num_cpus_per_worker,
            restarts,
            max_retries,
        )
        found.update((s.task_hash, s) for s in fitted)
        if store is not None:
            _to_store(store, experiment, fitted, seed)
    if cache is not None:
        for state in found.values():
            cache.put(state, seed)
    return [
        dataclasses.replace(found[h], task_id=t.task_id)
        for h, t in zip(hashes, tasks)
        if h in found
    ]
