"""Benchmark task families as Tune trainables, and their meta-data in the store.

A family member (:class:`~raymeta.tasks.bo.BenchmarkTask`, or a dataset of a tabular
family, :class:`~raymeta.tasks.tabular.TabularTask`) becomes a Tune problem with

- :func:`family_space`: one ``tune.uniform`` per input over the family's domain box,
  named ``x0, x1, ...``; for a tabular family its own parameters, each an
  :func:`~raymeta.search.space.ordinal` over the package's grid (log-spaced where the
  grid is), ``tune.choice`` for a free categorical one and constants for the fixed
  ones. Either way its unit-cube encoding equals the family's own unit cube, so
  a study's :class:`~raymeta.tasks.data.TaskData` can be used as meta-data directly;
- :func:`draw_family_study`: the study of a job config (parametric or tabular);
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
from ray.tune.search.sample import LogUniform

from raymeta.errors import MetaDataError, UnknownTaskFamilyError
from raymeta.search.space import ordinal
from raymeta.tasks.bo import (
    FAMILIES,
    BenchmarkTask,
    DigitsSVM,
    Study,
    TaskFamily,
    draw_study,
    install_digits_tables,
)
from raymeta.tasks.tabular import (
    TABULAR_FAMILIES,
    TabularFamily,
    TabularStudy,
    TabularTask,
    draw_tabular_study,
)

__all__ = [
    "draw_family_study",
    "family_names",
    "family_space",
    "family_trainable",
    "optuna_source_trials",
    "record_meta_tasks",
    "unit_point",
]


def family_names() -> list[str]:
    """Every family a job can name: parametric and tabular."""
    return sorted([*FAMILIES, *TABULAR_FAMILIES])


def draw_family_study(
    name: str,
    *,
    seed: int,
    num_meta: int,
    n_meta: int | None,
    target: str = "",
    noisy: bool = False,
) -> Study | TabularStudy:
    """The study of family ``name``: parametric (``num_meta`` x ``n_meta`` points)
    or tabular (leave-one-out with ``target`` as the target dataset; ``num_meta``
    is ignored, every other dataset is a meta-task; ``n_meta=None``: the family's
    protocol size).

    Raises:
        UnknownTaskFamilyError: No family ``name``.
        MetaDataError: A tabular family without a valid ``target`` dataset.
    """
    if name in TABULAR_FAMILIES:
        family = TABULAR_FAMILIES[name]
        return draw_tabular_study(
            family, target=target, seed=seed, n_meta=n_meta, noisy=noisy
        )
    if name not in FAMILIES:
        raise UnknownTaskFamilyError(
            f"unknown task family {name!r}; expected one of {family_names()}"
        )
    if n_meta is None:
        raise MetaDataError(f"{name}: n_meta is required for a parametric family")
    return draw_study(FAMILIES[name], seed=seed, num_meta=num_meta, n_meta=n_meta)


def family_space(
    family: TaskFamily | TabularFamily, *, relaxed: bool = False
) -> dict[str, Any]:
    """Tune search space of a family (see the module docstring).

    Args:
        family: The family.
        relaxed: Tabular families only: each ordinal parameter as a continuous
            ``tune.uniform`` / ``tune.loguniform`` over its grid's range (for
            searchers such as CMA-ES that cannot sample categorical domains); the
            trainable evaluates the nearest grid value, and the unit-cube encoding
            is the same as the ordinal space's.
    """
    if isinstance(family, TabularFamily):
        return _relaxed_space(family) if relaxed else _tabular_space(family)
    return {
        f"x{i}": tune.uniform(lo, hi)
        for i, (lo, hi) in enumerate(zip(family.lower, family.upper, strict=True))
    }


def _tabular_space(family: TabularFamily) -> dict[str, Any]:
    space: dict[str, Any] = {}
    for p in family.grid:
        if p.name in family.fixed:
            space[p.name] = family.fixed[p.name]
        elif p.numeric:
            space[p.name] = ordinal(list(p.values), log=p.scale == "log")
        else:
            space[p.name] = tune.choice(list(p.values))
    return space


def _relaxed_space(family: TabularFamily) -> dict[str, Any]:
    space = _tabular_space(family)
    for p in family.parameters:
        if p.numeric:
            lo, hi = p.bounds
            space[p.name] = (
                tune.loguniform(lo, hi) if p.scale == "log" else tune.uniform(lo, hi)
            )
    return space


def optuna_source_trials(study: Study | TabularStudy) -> list[Any]:
    """The study's meta-data as Optuna trials over the continuous family space.

    For warm-starting ``optuna.samplers.CmaEsSampler(source_trials=...)`` inside
    ``OptunaSearch`` on :func:`family_space` (``relaxed=True`` for tabular
    families); each meta-task's values are standardised, so tasks on different
    scales rank comparably.

    Raises:
        ImportError: optuna is not installed.
    """
    import optuna

    family = study.family
    spec = family_space(family, relaxed=True)
    dists = {
        name: optuna.distributions.FloatDistribution(
            float(d.lower),
            float(d.upper),
            log=isinstance(d.get_sampler(), LogUniform),
        )
        for name, d in spec.items()
        if hasattr(d, "get_sampler")
    }
    trials = []
    for task in study.meta_tasks:
        y = task.y.numpy()
        z = (y - y.mean()) / (y.std() if y.std() > 0 else 1.0)
        for x, v in zip(task.X.numpy(), z, strict=True):
            config = _config_of(family, x)
            params = {k: float(config[k]) for k in dists}
            trials.append(
                optuna.trial.create_trial(
                    params=params, distributions=dists, value=float(v)
                )
            )
    return trials


def unit_point(
    family: TaskFamily | TabularFamily, config: dict[str, Any]
) -> np.ndarray:
    """The unit-cube point (shape ``(d,)``) of a config over :func:`family_space`."""
    if isinstance(family, TabularFamily):
        return family.encode(config)
    lo, hi = np.asarray(family.lower), np.asarray(family.upper)
    x = np.array([config[f"x{i}"] for i in range(family.dim)], dtype=np.float64)
    return (x - lo) / (hi - lo)


def _config_of(family: TaskFamily | TabularFamily, x: np.ndarray) -> dict[str, Any]:
    """The config over :func:`family_space` of a unit-cube point."""
    if isinstance(family, TabularFamily):
        return family.decode(x)
    lo, hi = np.asarray(family.lower), np.asarray(family.upper)
    return {f"x{j}": float(v) for j, v in enumerate(lo + x * (hi - lo))}


def family_trainable(
    task: BenchmarkTask | TabularTask, *, noise_seed: int, noisy: bool = True
) -> Callable[[dict[str, Any]], None]:
    """A Tune function trainable evaluating ``task`` once per trial.

    Args:
        task: The family member to evaluate.
        noise_seed: Seed of the observation noise; the noise of a trial depends only
            on it and the config, so a retried or restored trial sees the same value.
        noisy: Observe with noise (a tabular task: one random seed); False reports
            the noise-free value as ``loss`` too.

    Returns:
        ``trainable(config)`` that reports ``{"loss": noisy, "true_loss": clean}``.
    """

    tables = _tabulated(task)

    def trainable(config: dict[str, Any]) -> None:
        install_digits_tables(tables)
        x = unit_point(task.family, config)[None]
        digest = hashlib.sha256(x.tobytes()).digest()
        rng = np.random.default_rng([noise_seed, int.from_bytes(digest[:8], "big")])
        clean = float(task(x)[0])
        loss = float(task(x, rng)[0]) if noisy else clean
        tune.report({"loss": loss, "true_loss": clean})

    return trainable


def _tabulated(task: BenchmarkTask | TabularTask) -> dict:
    # Tabulated families (digits-SVM) compute their grid on first use, ~3-40 s of
    # SVM fits; ship the driver's copy with the trainable instead of refitting it in
    # every trial actor. (A tabular task reads the package's table, < 0.5 s.)
    if isinstance(task, TabularTask) or not isinstance(task.family.fn, DigitsSVM):
        return {}
    return task.family.fn.tables(task.params["choice"])


def record_meta_tasks(
    store: Any,
    study: Study | TabularStudy,
    *,
    metric: str = "loss",
    searcher: str = "random",
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
    experiments = []
    now = datetime.now(UTC)
    for task in study.meta_tasks:
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
                "config": json.dumps(_config_of(study.family, x)),
                "searcher": searcher,
                "seed": study.seed,
                "finished_at": now,
            }
            for i, (x, y) in enumerate(
                zip(task.X.numpy(), task.y.tolist(), strict=True)
            )
        ]
        store.append("trials", rows, key=("meta-data", task.task_id))
        experiments.append(task.task_id)
    return experiments
