"""A Tune callback that records every finished trial in the results store.

Add :class:`StoreCallback` to ``RunConfig(callbacks=[...])`` and every trial that ends
(``TERMINATED`` or, after its last retry, ``ERROR``) becomes one row of the store's
``trials`` table: experiment, task id, trial id, attempt, status, metric, value, mode,
the flattened config as JSON, searcher, seed, ``time_total_s`` and ``finished_at``.
The next experiment on a related task reads these rows back as meta-data
(:class:`~raymeta.search.metadata.StoreMetaData`), so each run teaches the next.

Appends are idempotent by ``(experiment, trial_id, attempt, status)``: a trial that
completes again after ``Tuner.restore`` (or a callback called twice) writes nothing
new. ``attempt`` is the 0-based index of the attempt that ended (errors before the
completion are counted), so a retried trial that finally succeeds gets its own row.

Example:
    >>> from raymeta.results import ResultStore  # doctest: +SKIP
    >>> callback = StoreCallback(ResultStore("runs/store"), experiment="branin-3",
    ...                          task_id="branin-3", metric="loss", mode="min")
"""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime
from typing import Any

from ray.tune import Callback

from raymeta.results import ResultStore
from raymeta.search.space import flatten_config

__all__ = ["PeakRunningCallback", "ReconcileCallback", "StoreCallback", "trial_row"]


class StoreCallback(Callback):
    """Append each finished Tune trial to the results store's ``trials`` table.

    Args:
        store: A :class:`~raymeta.results.ResultStore` or its root (path or URI);
            pickled by its root, so the callback survives ``Tuner`` restore.
        experiment: Experiment name written with each row (default: the Tune
            experiment directory name).
        task_id: The task the trials evaluate (default: the experiment name).
        metric: Name of the metric to record (``value`` column).
        mode: ``"min"`` or ``"max"``, recorded for readers.
        searcher: Name of the search algorithm, recorded for readers.
        seed: Seed of the run, recorded for readers.
    """

    def __init__(
        self,
        store: Any,
        *,
        experiment: str | None = None,
        task_id: str | None = None,
        metric: str,
        mode: str = "min",
        searcher: str | None = None,
        seed: int | None = None,
    ) -> None:
        """Remember where and how to write; nothing is written until a trial ends."""
        self.store = store if isinstance(store, ResultStore) else ResultStore(store)
        self.experiment = experiment
        self.task_id = task_id
        self.metric = metric
        self.mode = mode
        self.searcher = searcher
        self.seed = seed

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info):
        """Record a trial that finished normally."""
        self._record(trial, "TERMINATED", attempt=trial.num_failures)

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info):
        """Record a trial that failed after its last retry."""
        self._record(trial, "ERROR", attempt=max(trial.num_failures - 1, 0))

    def _record(self, trial: Any, status: str, *, attempt: int) -> None:
        experiment = self.experiment or _experiment_of(trial)
        row = trial_row(
            trial,
            experiment=experiment,
            task_id=self.task_id or experiment,
            status=status,
            attempt=attempt,
            metric=self.metric,
            mode=self.mode,
            searcher=self.searcher,
            seed=self.seed,
        )
        key = (experiment, trial.trial_id, attempt, status)
        self.store.append("trials", [row], key=key)


def trial_row(
    trial: Any,
    *,
    experiment: str,
    task_id: str,
    status: str,
    attempt: int,
    metric: str,
    mode: str,
    searcher: str | None,
    seed: int | None,
) -> dict[str, Any]:
    """One ``trials``-table row for a Tune trial (missing/odd metric -> null)."""
    result = trial.last_result or {}
    value = result.get(metric)
    is_number = isinstance(value, int | float) and not isinstance(value, bool)
    time_total = result.get("time_total_s")
    return {
        "experiment": experiment,
        "task_id": task_id,
        "trial_id": trial.trial_id,
        "attempt": int(attempt),
        "status": status,
        "metric": metric,
        "value": float(value) if is_number else None,
        "mode": mode,
        "config": json.dumps(flatten_config(trial.config), default=str),
        "searcher": searcher,
        "seed": seed,
        "time_total_s": float(time_total) if _finite(time_total) else None,
        "finished_at": datetime.now(UTC),
    }


def _experiment_of(trial: Any) -> str:
    try:
        return trial.experiment_dir_name
    except AttributeError:  # a trial without storage (never run by a Tuner)
        return "default"


def _finite(value: Any) -> bool:
    return isinstance(value, int | float) and math.isfinite(value)


class ReconcileCallback(Callback):
    """Hand Tune's trial list to a searcher once per driver process, after a restore.

    Add ``ReconcileCallback(searcher)`` next to the searcher (the same object, e.g.
    ``ScaMLGPSearch``; Tune pickles both into one experiment file, so the reference
    survives ``Tuner.restore``). On the first step of each driver process it calls
    ``searcher.reconcile(trials)``; see :meth:`ScaMLGPSearch.reconcile`.

    Args:
        searcher: A searcher with a ``reconcile(trials)`` method.
    """

    def __init__(self, searcher: Any) -> None:
        """Remember the searcher; nothing is done before the first step."""
        self.searcher = searcher
        self._done = False

    def __getstate__(self) -> dict:
        return {"searcher": self.searcher, "_done": False}  # redo after a restore

    def on_step_begin(self, iteration: int, trials: list, **info: Any) -> None:
        """Reconcile on the first step of this process."""
        if not self._done:
            self.searcher.reconcile(trials)
            self._done = True


class PeakRunningCallback(Callback):
    """Count the trials Tune holds RUNNING at once (start to complete or error).

    Attributes:
        running: Trials running now.
        peak: Most trials running at once so far.
    """

    def __init__(self) -> None:
        """Start at zero."""
        self.running, self.peak = 0, 0

    def on_trial_start(self, iteration: int, trials: list, trial: Any, **info) -> None:
        """One more trial running."""
        self.running += 1
        self.peak = max(self.peak, self.running)

    def on_trial_complete(
        self, iteration: int, trials: list, trial: Any, **info
    ) -> None:
        """One trial fewer."""
        self.running -= 1

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info) -> None:
        """One trial fewer."""
        self.running -= 1
