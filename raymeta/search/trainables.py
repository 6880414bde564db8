"""Benchmark task families as Tune trainables, and their meta-data in the store.

A family member (:class:`~raymeta.tasks.bo.BenchmarkTask`) becomes a Tune problem with

- :func:`family_space`: one ``tune.uniform`` per input over the family's domain box,
  named ``x0, x1, ...``. Its unit-cube encoding equals the family's own unit cube, so
  a study's :class:`~raymeta.tasks.data.TaskData` can be used as meta-data directly;
- :func:`family_trainable`: a function trainable reporting ``loss`` (noisy, as the
  searcher sees it) and ``true_loss`` (noise-free, for regret);
- :func:`record_meta_tasks`: writes a study's meta-task observations to the store's
  ``trials`` table (one experiment per meta-task), exactly as if earlier Tune runs
  with :class:`~raymeta.search.callback.StoreCallback` had produced them, so
  :class:`~raymeta.search.metadata.StoreMetaData` reads them back as meta-tasks.

Example:
    >>> from raymeta.tasks.bo import FAMILIES
    >>> sorted(family_space(FAMILIES["branin"]))
    ['x0', 'x1']
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import numpy as np
from ray import tune

from raymeta.tasks.bo import (
    BenchmarkTask,
    DigitsSVM,
    Study,
    TaskFamily,
    install_digits_tables,
)

__all__ = ["family_space", "family_trainable", "record_meta_tasks", "unit_point"]


def family_space(family: TaskFamily) -> dict[str, Any]:
    """Tune search space over the family's domain: ``{"x0": uniform(lo, hi), ...}``."""
    return {
        f"x{i}": tune.uniform(lo, hi)
        for i, (lo, hi) in enumerate(zip(family.lower, family.upper, strict=True))
    }


def unit_point(family: TaskFamily, config: dict[str, Any]) -> np.ndarray:
    """The unit-cube point (shape ``(d,)``) of a config over :func:`family_space`."""
    lo, hi = np.asarray(family.lower), np.asarray(family.upper)
    x = np.array([config[f"x{i}"] for i in range(family.dim)], dtype=np.float64)
    return (x - lo) / (hi - lo)


def family_trainable(
    task: BenchmarkTask, *, noise_seed: int
) -> Callable[[dict[str, Any]], None]:
    """A Tune function trainable evaluating ``task`` once per trial.

    Args:
        task: The family member to evaluate.
        noise_seed: Seed of the observation noise; the noise of a trial depends only
            on it and the config, so a retried or restored trial sees the same value.

    Returns:
        ``trainable(config)`` that reports ``{"loss": noisy, "true_loss": clean}``.
    """

    tables = _tabulated(task)

    def trainable(config: dict[str, Any]) -> None:
        install_digits_tables(tables)
        x = unit_point(task.family, config)[None]
        digest = hashlib.sha256(x.tobytes()).digest()
        rng = np.random.default_rng([noise_seed, int.from_bytes(digest[:8], "big")])
        tune.report({"loss": float(task(x, rng)[0]), "true_loss": float(task(x)[0])})

    return trainable


def _tabulated(task: BenchmarkTask) -> dict:
    # Tabulated families (digits-SVM) compute their grid on first use, ~3-40 s of
    # SVM fits; ship the driver's copy with the trainable instead of refitting it in
    # every trial actor.
    if not isinstance(task.family.fn, DigitsSVM):
        return {}
    return task.family.fn.tables(task.params["choice"])


def record_meta_tasks(
    store: Any, study: Study, *, metric: str = "loss", searcher: str = "random"
) -> list[str]:
    """Write a study's meta-task observations to the store's ``trials`` table.

    Each meta-task becomes its own experiment (named after the task id) with one
    ``TERMINATED`` trial per observation; appends are keyed, so calling this twice
    writes nothing new.

    Args:
        store: The :class:`~raymeta.results.ResultStore`.
        study: A study from :func:`raymeta.tasks.bo.draw_study`.
        metric: Metric name to record.
        searcher: Searcher name to record.

    Returns:
        The experiment names written (one per meta-task).
    """
    family = study.family
    lo, hi = np.asarray(family.lower), np.asarray(family.upper)
    experiments = []
    now = datetime.now(UTC)
    for task in study.meta_tasks:
        X = lo + task.X.numpy() * (hi - lo)
        rows = [
            {
                "experiment": task.task_id,
                "task_id": task.task_id,
                "trial_id": f"{i:05d}",
                "attempt": 0,
                "status": "TERMINATED",
                "metric": metric,
                "value": float(y),
                "mode": "min",
                "config": json.dumps({f"x{j}": float(v) for j, v in enumerate(x)}),
                "searcher": searcher,
                "seed": study.seed,
                "finished_at": now,
            }
            for i, (x, y) in enumerate(zip(X, task.y.tolist(), strict=True))
        ]
        store.append("trials", rows, key=("meta-data", task.task_id))
        experiments.append(task.task_id)
    return experiments
