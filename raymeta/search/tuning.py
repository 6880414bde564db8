"""Run (or resume) one Tune experiment on a benchmark task, with any searcher.

:func:`run_family_tuning` is what ``jobs/tune_scamlgp.py`` and
``jobs/bench_tune_searchers.py`` call: it builds the searcher (:func:`build_searcher`),
wraps it in a :class:`TimedSearcher` (per-suggestion overhead) and a
``ConcurrencyLimiter``, adds :class:`~raymeta.search.callback.StoreCallback` when a
store is given, and either starts the experiment or, when its directory already holds
a restorable run, resumes it with ``Tuner.restore`` (so a resubmitted job finishes the
same experiment instead of starting over; :func:`~raymeta.search.resume.restorable`
first sets aside state files a killed driver left truncated; on a local storage path
Tune writes through :func:`~raymeta.results.atomic_fs.atomic_local_filesystem`, so
its state files are never truncated in the first place). A run that ends with
fewer trials than asked raises :class:`~raymeta.errors.TuningIncompleteError` instead
of passing for a finished one.

Searcher names: ``"scamlgp"`` (ScaMLGPSearch with meta-data), ``"scamlgp_nometa"``
(the same searcher without meta-data: plain GP-BO), ``"optuna_tpe"`` (OptunaSearch
with TPE, optuna's default 10 random start-up trials) and ``"random"`` (OptunaSearch
with optuna's RandomSampler). Optuna is imported only for those two (``bench`` extra).
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Mapping, Sequence
from typing import Any

from ray import tune
from ray.tune.search import ConcurrencyLimiter, Searcher

from raymeta.errors import ConfigError, TuningIncompleteError
from raymeta.names import validate_name
from raymeta.results.atomic_fs import atomic_local_filesystem, remove_temporaries
from raymeta.search.callback import ReconcileCallback, StoreCallback
from raymeta.search.resume import restorable
from raymeta.search.searcher import ScaMLGPSearch
from raymeta.search.trainables import family_space, family_trainable
from raymeta.tasks.bo import Study
from raymeta.tasks.tabular import TabularStudy

__all__ = [
    "SEARCHERS",
    "TimedSearcher",
    "best_regret_curve",
    "build_searcher",
    "run_family_tuning",
    "trial_values",
]

SEARCHERS = ("scamlgp", "scamlgp_nometa", "optuna_tpe", "random", "optuna_cmaes_ws")


class TimedSearcher(Searcher):
    """Delegate to a searcher and record the wall time of each ``suggest`` call.

    Args:
        searcher: The wrapped searcher.

    Attributes:
        suggest_seconds: Seconds spent in each ``suggest`` call that returned a
            config, in call order.
    """

    def __init__(self, searcher: Searcher) -> None:
        """Wrap ``searcher``; metric and mode are the wrapped searcher's."""
        self.searcher = searcher
        self.suggest_seconds: list[float] = []
        super().__init__(metric=searcher.metric, mode=searcher.mode)

    def set_search_properties(self, metric, mode, config, **spec) -> bool:
        """Forward to the wrapped searcher."""
        accepted = self.searcher.set_search_properties(metric, mode, config, **spec)
        self._metric, self._mode = self.searcher.metric, self.searcher.mode
        return accepted

    def set_max_concurrency(self, max_concurrent: int) -> bool:
        """Forward to the wrapped searcher."""
        return self.searcher.set_max_concurrency(max_concurrent)

    def suggest(self, trial_id: str):
        """Time the wrapped ``suggest``."""
        start = time.perf_counter()
        config = self.searcher.suggest(trial_id)
        if isinstance(config, dict):
            self.suggest_seconds.append(time.perf_counter() - start)
        return config

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        """Forward to the wrapped searcher."""
        self.searcher.on_trial_result(trial_id, result)

    def on_trial_complete(
        self, trial_id: str, result: dict | None = None, error: bool = False
    ) -> None:
        """Forward to the wrapped searcher."""
        self.searcher.on_trial_complete(trial_id, result=result, error=error)

    def get_state(self) -> dict:
        """The wrapper's own state (Tune saves wrappers through this)."""
        return {"suggest_seconds": list(self.suggest_seconds)}

    def set_state(self, state: dict) -> None:
        """Inverse of :meth:`get_state`."""
        self.suggest_seconds = list(state["suggest_seconds"])

    def save(self, checkpoint_path: str) -> None:
        """Save the wrapped searcher."""
        self.searcher.save(checkpoint_path)

    def restore(self, checkpoint_path: str) -> None:
        """Restore the wrapped searcher."""
        self.searcher.restore(checkpoint_path)


def build_searcher(
    name: str,
    *,
    metric: str,
    mode: str,
    seed: int,
    meta_data: Any = None,
    options: Mapping[str, Any] | None = None,
    source_trials: Sequence[Any] | None = None,
) -> Searcher:
    """Build one of :data:`SEARCHERS`.

    Args:
        name: Searcher name.
        metric: Metric to optimise.
        mode: ``"min"`` or ``"max"``.
        seed: Seed of the searcher.
        meta_data: Meta-data source for ``"scamlgp"`` (ignored by the others).
        options: Extra ScaMLGPSearch keyword arguments (model options).
        source_trials: Optuna trials warm-starting ``"optuna_cmaes_ws"``
            (``CmaEsSampler(source_trials=...)``; see
            :func:`~raymeta.search.trainables.optuna_source_trials`).

    Raises:
        ConfigError: Unknown searcher name.
    """
    if name in ("scamlgp", "scamlgp_nometa"):
        return ScaMLGPSearch(
            metric=metric,
            mode=mode,
            seed=seed,
            meta_data=meta_data if name == "scamlgp" else None,
            **dict(options or {}),
        )
    if name in ("optuna_tpe", "random", "optuna_cmaes_ws"):
        import optuna
        from ray.tune.search.optuna import OptunaSearch

        if name == "optuna_cmaes_ws":
            sampler = optuna.samplers.CmaEsSampler(
                seed=seed, source_trials=list(source_trials or [])
            )
        elif name == "optuna_tpe":
            sampler = optuna.samplers.TPESampler(seed=seed)
        else:
            sampler = optuna.samplers.RandomSampler(seed=seed)
        return OptunaSearch(metric=metric, mode=mode, sampler=sampler)
    raise ConfigError(f"unknown searcher {name!r}; expected one of {SEARCHERS}")


def run_family_tuning(
    study: Study | TabularStudy,
    *,
    searcher: Searcher,
    experiment: str,
    storage_path: str,
    num_samples: int,
    max_concurrent: int = 1,
    store: Any = None,
    task_id: str | None = None,
    callbacks: Sequence[tune.Callback] = (),
    relaxed: bool = False,
) -> tuple[tune.ResultGrid, TimedSearcher | None]:
    """Tune the study's target task (start, or resume if the experiment exists).

    Args:
        study: The benchmark study; its target task is evaluated by the trials.
        searcher: The search algorithm (wrapped in a :class:`TimedSearcher` and a
            ``ConcurrencyLimiter``); ignored when the run is resumed (its saved
            state is restored instead).
        experiment: Experiment name (directory under ``storage_path``).
        storage_path: Tune storage path (absolute or relative to the cwd).
        num_samples: Number of trials.
        max_concurrent: Trials in flight at once.
        store: Optional ResultStore; every finished trial is appended to ``trials``.
        task_id: Task id written with the trials (default: the experiment).
        callbacks: Further Tune callbacks (e.g. a progress display).
        relaxed: Tune the continuous relaxation of a tabular space (see
            :func:`~raymeta.search.trainables.family_space`).

    Returns:
        The result grid and the timing wrapper (``None`` for a resumed run).

    Raises:
        InvalidNameError: ``experiment`` could escape ``storage_path`` (checked
            before any file under it is renamed or removed).
    """
    validate_name(experiment, what="experiment")
    if "://" not in storage_path:
        storage_path = os.path.abspath(storage_path)
    path = os.path.join(storage_path, experiment)
    # Tune saves its experiment state at most every 10 s by default ("auto"); trials
    # finished after the last save are run again on restore. Save after every step,
    # so a stopped job loses at most the trials in flight (unless the user chose).
    os.environ.setdefault("TUNE_GLOBAL_CHECKPOINT_S", "0")
    noisy = not isinstance(study, TabularStudy) or study.noisy
    trainable = family_trainable(study.target, noise_seed=study.seed, noisy=noisy)
    storage_fs = None
    if "://" not in storage_path:
        storage_fs = atomic_local_filesystem()
        remove_temporaries(path)  # of writers killed with an earlier driver
    if restorable(path):
        tuner = tune.Tuner.restore(
            path,
            trainable=trainable,
            resume_errored=True,
            storage_filesystem=storage_fs,
        )
        return _complete(tuner.fit(), num_samples, path), None
    timed = TimedSearcher(searcher)
    callbacks = list(callbacks)
    if hasattr(searcher, "reconcile"):
        callbacks.append(ReconcileCallback(searcher))
    if store is not None:
        callbacks.append(
            StoreCallback(
                store,
                experiment=experiment,
                task_id=task_id or experiment,
                metric="loss",
                mode="min",
                searcher=type(searcher).__name__,
                seed=study.seed,
            )
        )
    tuner = tune.Tuner(
        trainable,
        param_space=family_space(study.family, relaxed=relaxed),
        tune_config=tune.TuneConfig(
            search_alg=ConcurrencyLimiter(timed, max_concurrent=max_concurrent),
            num_samples=num_samples,
            metric="loss",
            mode="min",
            reuse_actors=True,
        ),
        run_config=tune.RunConfig(
            name=experiment,
            storage_path=storage_path,
            storage_filesystem=storage_fs,
            callbacks=callbacks,
            verbose=0,
        ),
    )
    return _complete(tuner.fit(), num_samples, path), timed


def _complete(grid: tune.ResultGrid, num_samples: int, path: str) -> tune.ResultGrid:
    """The grid, if it holds every trial (a failed restore can finish empty)."""
    if len(grid) != num_samples:
        raise TuningIncompleteError(
            f"experiment {path!r} finished with {len(grid)} trials, expected "
            f"{num_samples}; Tune could not resume its saved state (see the log "
            "above). Resubmit to resume from the newest intact state, or remove the "
            "directory to start over"
        )
    return grid


def trial_values(grid: tune.ResultGrid, key: str) -> list[float]:
    """``key`` of each trial's last result, in trial creation order.

    The order comes from the trial's ``experiment_tag`` (``"<index>_..."``), which
    Tune numbers from 1 as it creates trials.
    """
    indexed = []
    for result in grid:
        tag = str(result.metrics.get("experiment_tag", "0"))
        value = result.metrics.get(key, float("nan"))
        indexed.append((int(tag.split("_", 1)[0]), float(value)))
    return [v for _, v in sorted(indexed)]


def best_regret_curve(grid: tune.ResultGrid, optimum: float) -> list[float]:
    """Best noise-free regret after each trial, in trial creation order.

    Trials without a finite ``true_loss`` (failed ones) keep the previous best.
    """
    best, curve = math.inf, []
    for value in trial_values(grid, "true_loss"):
        if math.isfinite(value):
            best = min(best, value - optimum)
        curve.append(best)
    return curve
