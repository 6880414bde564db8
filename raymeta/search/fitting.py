"""Fit meta-task GPs in parallel on Ray, with an in-memory and a results-store cache.

Each task is fitted by the pure :func:`raymeta.gp.fit.fit_task_gp` with a seed derived
from its content hash (not its position), so the result is independent of the task
order and of how the tasks are batched over workers.

**Cache.** Fitted states are cached by ``(content hash, seed, settings digest)`` in a
:class:`MetaFitCache` and in the store's ``meta_tasks`` table
(:class:`~raymeta.gp.fit.FitSettings` digests the restarts, iteration cap, optimizer,
kernel, priors and state format), so a task is never refitted across suggestions,
runs or a team's studies sharing one store, and a state fitted under other settings
is never reused. Each stored state is its own keyed append, so two studies that fit
the same new task at once leave one state. Each row carries the SHA-256 of its state
bytes: a state that does not match (a corrupted file) or does not load is never
used; it is refitted with a WARNING naming the task, and the repaired state is stored
under its own key.

**Spread.** Tasks to fit are cut into batches (at most ``max_batch`` tasks, so the
per-Ray-task overhead stays small next to the 0.02-0.06 CPU-s of a fit); at most
``num_workers`` batches are in flight at once (zero-CPU tasks would otherwise all run
at once), scheduled ``SPREAD`` over the cluster's nodes, and each finished batch is
written to the store at once, so an interrupted meta-fit of thousands of tasks keeps
what it fitted.

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

import collections
import dataclasses
import datetime as dt
import hashlib
import logging
import math
import time
from collections.abc import Callable, Iterator, Sequence
from typing import NamedTuple

import ray
import torch

from raymeta.gp.fit import FitSettings, TaskGPState, seed_from_hash
from raymeta.results.store import ResultStore
from raymeta.tasks.data import TaskData, validate_meta_tasks

__all__ = ["DEFAULT_MAX_RETRIES", "FitReport", "MetaFitCache", "fit_meta_tasks"]

log = logging.getLogger(__name__)

DEFAULT_MAX_RETRIES = 2
MAX_BATCH = 256  # tasks per Ray fitter task (a fit is 0.02-0.06 CPU-s)

_Key = tuple[str, int, str]  # content hash, seed, settings digest


class MetaFitCache:
    """In-memory cache of fitted states keyed by ``(content hash, seed, settings)``."""

    def __init__(self) -> None:
        """Start empty."""
        self._states: dict[_Key, TaskGPState] = {}

    def get(self, task_hash: str, seed: int, settings: str) -> TaskGPState | None:
        """The cached state, or None (``settings`` is a FitSettings digest)."""
        return self._states.get((task_hash, seed, settings))

    def put(self, state: TaskGPState, seed: int, settings: str) -> None:
        """Remember a fitted state."""
        self._states[(state.task_hash, seed, settings)] = state

    def __len__(self) -> int:
        return len(self._states)


@dataclasses.dataclass
class FitReport:
    """What one :func:`fit_meta_tasks` call did (pass one in to have it filled).

    Attributes:
        from_memory: States found in the in-memory cache.
        from_store: States read from the store.
        fitted: States fitted now.
        repaired: Task ids whose stored state was corrupted (refitted).
        excluded: Task ids left out after their fitter died for good.
        nodes: Tasks fitted per Ray node id (in-process fits under ``None``).
        store_read_s: Wall seconds spent reading the store's cached states.
    """

    from_memory: int = 0
    from_store: int = 0
    fitted: int = 0
    repaired: list[str] = dataclasses.field(default_factory=list)
    excluded: list[str] = dataclasses.field(default_factory=list)
    nodes: collections.Counter = dataclasses.field(default_factory=collections.Counter)
    store_read_s: float = 0.0


def _fit_batch(
    tasks: list[TaskData], seeds: list[int], threads: int, settings: FitSettings
) -> list[bytes]:
    """Fit a batch of tasks in one process; states travel back as bytes."""
    torch.set_num_threads(threads)
    return [settings.fit(t, s).to_bytes() for t, s in zip(tasks, seeds, strict=True)]


def _fit_batch_on_node(
    tasks: list[TaskData], seeds: list[int], threads: int, settings: FitSettings
) -> tuple[str, list[bytes]]:
    """:func:`_fit_batch` in a Ray task; also says which node ran it."""
    node = ray.get_runtime_context().get_node_id()
    return node, _fit_batch(tasks, seeds, threads, settings)


_remote_fit_batch = ray.remote(max_retries=DEFAULT_MAX_RETRIES)(_fit_batch_on_node)


def _state_digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _from_store(
    store: ResultStore,
    experiment: str,
    hashes: list[str],
    seed: int,
    settings: str,
    report: FitReport,
) -> tuple[dict[str, TaskGPState], set[str]]:
    """Valid stored states by hash, and the hashes whose only states are corrupted.

    A corrupted state is reported (WARNING, ``report.repaired``), never returned.
    """
    if not hashes or "meta_tasks" not in store.tables():
        return {}, set()
    table = store.read(
        "meta_tasks",
        filters=[("experiment", "=", experiment), ("task_hash", "in", hashes)],
    )
    found: dict[str, TaskGPState] = {}
    corrupted: dict[str, str] = {}
    for row in table.to_pylist():
        if row.get("fit_seed") != seed or row.get("fit_settings") != settings:
            continue
        state = _valid_state(row)
        if state is not None:
            found.setdefault(row["task_hash"], state)
        else:
            corrupted[row["task_hash"]] = str(row.get("task_id"))
    bad_hashes = {h for h in corrupted if h not in found}
    bad = [corrupted[h] for h in sorted(bad_hashes)]
    if bad:
        log.warning(
            "results store %r: the cached state of meta-task(s) %s is corrupted "
            "(its SHA-256 does not match or it does not load); refitting, never "
            "using it",
            store.root,
            ", ".join(repr(t) for t in bad),
        )
        report.repaired.extend(bad)
    return found, bad_hashes


def _valid_state(row: dict) -> TaskGPState | None:
    data = row.get("state")
    if data is None or _state_digest(data) != row.get("state_sha256"):
        return None
    try:
        state = TaskGPState.from_bytes(data)
    except (ValueError, KeyError, OSError, TypeError):
        return None
    if state.task_hash != row["task_hash"]:
        return None
    return dataclasses.replace(
        state,
        task_id=str(row.get("task_id") or ""),
        fit_seconds=float(row.get("fit_seconds") or 0.0),
    )


def _to_store(
    store: ResultStore,
    experiment: str,
    states: list[TaskGPState],
    seed: int,
    settings: str,
    repaired: set[str],
) -> None:
    """Append each state under its own key (``repaired`` hashes get a new one)."""
    now = dt.datetime.now(dt.UTC)
    for s in states:
        data = s.to_bytes(content_only=True)
        digest = _state_digest(data)
        row = {
            "experiment": experiment,
            "task_id": s.task_id,
            "task_hash": s.task_hash,
            "n_points": s.n,
            "dim": s.dim,
            "state": data,
            "state_sha256": digest,
            "fit_seconds": s.fit_seconds,
            "created_at": now,
            "fit_seed": int(seed),
            "fit_settings": settings,
        }
        key = f"{s.task_hash}-{seed}-{settings}"
        if s.task_hash in repaired:  # the corrupted row keeps the plain key
            key += f"-repair-{digest[:16]}"
        store.append("meta_tasks", [row], key=key)


class _Spread(NamedTuple):
    """How the fits are spread: parallel fitters and what each may use."""

    num_workers: int
    num_cpus: float
    max_retries: int
    min_size: int


def _batches(n: int, num_workers: int, min_size: int) -> list[slice]:
    size = min(MAX_BATCH, max(min_size, math.ceil(n / max(num_workers, 1))))
    return [slice(i, i + size) for i in range(0, n, size)]


def _fit_missing(
    tasks: list[TaskData],
    seed: int,
    settings: FitSettings,
    spread: _Spread,
    on_batch: Callable[[list[TaskGPState]], None],
    report: FitReport,
) -> list[TaskGPState]:
    """Fit ``tasks``; states of tasks whose fitter died for good are left out."""
    seeds = [seed_from_hash(t.content_hash(), seed) for t in tasks]
    batches = _batches(len(tasks), spread.num_workers, spread.min_size)
    states: list[TaskGPState] = []
    for node, batch, fitted in _run_batches(tasks, seeds, settings, batches, spread):
        if fitted is None:
            report.excluded.extend(t.task_id for t in tasks[batch])
            continue
        report.nodes[node] += len(fitted)
        states.extend(fitted)
        on_batch(fitted)
    return states


def _run_batches(
    tasks: list[TaskData],
    seeds: list[int],
    settings: FitSettings,
    batches: list[slice],
    spread: _Spread,
) -> Iterator[tuple[str | None, slice, list[TaskGPState] | None]]:
    """Yield ``(node, batch, states)`` as batches finish (states None: lost)."""
    num_workers, num_cpus, max_retries, _ = spread
    if num_workers == 0:
        for b in batches:
            fitted = _fit_batch(tasks[b], seeds[b], torch.get_num_threads(), settings)
            yield None, b, [TaskGPState.from_bytes(x) for x in fitted]
        return
    fitter = _remote_fit_batch.options(
        num_cpus=num_cpus, scheduling_strategy="SPREAD", max_retries=max_retries
    )
    threads = max(1, int(num_cpus))
    todo, in_flight = list(batches), {}
    while todo or in_flight:
        while todo and len(in_flight) < num_workers:  # bounded in-flight work
            b = todo.pop(0)
            in_flight[fitter.remote(tasks[b], seeds[b], threads, settings)] = b
        (ref,), _ = ray.wait(list(in_flight), num_returns=1)
        batch = in_flight.pop(ref)
        try:
            node, fitted = ray.get(ref)
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
            yield None, batch, None
            continue
        yield node, batch, [TaskGPState.from_bytes(x) for x in fitted]


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
    settings: FitSettings | None = None,
    max_retries: int = DEFAULT_MAX_RETRIES,
    min_tasks_per_worker: int = 1,
    report: FitReport | None = None,
) -> list[TaskGPState]:
    """Fit (or fetch from cache) one GP per meta-task; states in input order.

    Args:
        tasks: The meta-tasks (validated: unique ids, equal dimension).
        seed: Base seed; each task's fit seed is derived from it and the task's hash.
        num_workers: Parallel Ray fitters (batches in flight at once); 0 fits
            serially in this process (no Ray needed).
        num_cpus_per_worker: CPUs each fitter reserves (0: do not hold CPUs).
        cache: In-memory cache, consulted first and filled.
        store: Results store; table ``meta_tasks`` is consulted and filled batch
            by batch.
        experiment: The store partition of the cache rows.
        restarts: Prior-drawn restarts per fit (used when ``settings`` is None).
        settings: All fit settings (default: ``FitSettings(restarts=restarts)``).
        max_retries: Ray re-runs of a fitter whose worker died; when they are used
            up, its tasks are excluded with a WARNING naming them.
        min_tasks_per_worker: Each Ray fitter gets at least this many tasks to fit;
            fewer than that in all are fitted in this process (starting a Ray
            worker costs seconds, a fit about 0.05 CPU-s at 32 points).
        report: A :class:`FitReport` to fill (hits, fits, repairs, nodes).

    Returns:
        One fitted state per task, in the order of ``tasks``, each carrying the
        requesting task's id; tasks excluded after a lost fitter are left out.

    Raises:
        MetaDataError: Malformed tasks (see :func:`validate_meta_tasks`) or
            unsupported settings.
        FitError: A task could not be fitted at all.
    """
    validate_meta_tasks(tasks)
    settings = settings or FitSettings(restarts=restarts)
    digest = settings.digest()
    report = report if report is not None else FitReport()
    hashes = [t.content_hash() for t in tasks]
    found: dict[str, TaskGPState] = {}
    for h in hashes:
        state = cache.get(h, seed, digest) if cache is not None else None
        if state is not None:
            found[h] = state
    report.from_memory = len(found)
    if store is not None:
        start = time.perf_counter()
        missing = sorted({h for h in hashes if h not in found})
        stored, repaired = _from_store(store, experiment, missing, seed, digest, report)
        found.update(stored)
        report.from_store = len(stored)
        report.store_read_s = time.perf_counter() - start
    else:
        repaired = set()
    todo = {h: t for h, t in zip(hashes, tasks, strict=True) if h not in found}
    if todo:
        order = sorted(todo)

        def keep(batch: list[TaskGPState]) -> None:
            if store is not None:
                _to_store(store, experiment, batch, seed, digest, repaired)

        workers = min(num_workers, len(order) // max(1, min_tasks_per_worker))
        spread = _Spread(
            workers, num_cpus_per_worker, max_retries, min_tasks_per_worker
        )
        fitted = _fit_missing(
            [todo[h] for h in order], seed, settings, spread, keep, report
        )
        report.fitted = len(fitted)
        found.update((s.task_hash, s) for s in fitted)
    if cache is not None:
        for state in found.values():
            cache.put(state, seed, digest)
    return [
        dataclasses.replace(found[h], task_id=t.task_id)
        for h, t in zip(hashes, tasks, strict=True)
        if h in found
    ]
