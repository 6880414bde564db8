"""ScaMLGPSearch: a Ray Tune searcher warm-started from earlier tuning runs.

Use it like any Tune search algorithm::

    searcher = ScaMLGPSearch(metric="loss", mode="min", meta_data=store_or_frame)
    Tuner(trainable, param_space=space,
          tune_config=TuneConfig(search_alg=ConcurrencyLimiter(searcher, 4),
                                 num_samples=20)).fit()

The class is a thin translator (like Ray's ``OptunaSearch``): it converts the Tune
space to the unit cube (:func:`~raymeta.search.space.convert_search_space`), turns
meta-data into meta-tasks (:mod:`raymeta.search.metadata`), keeps the bookkeeping of
observations, failures and pending trials, and asks :func:`raymeta.gp.propose.propose`
for the next point. All modelling lives in :mod:`raymeta.gp`.

Behaviour under Tune:

- **Warm start vs restore.** *Warm start* = a new experiment that learns from old ones
  (``meta_data=``, ``points_to_evaluate`` + ``evaluated_rewards``,
  ``add_evaluated_point``). *Restore* = finishing the same experiment after a crash
  (``Tuner.restore``): :meth:`save` writes an explicit, versioned state dict (metric,
  mode, space, observations, failed points, pending trials, remaining
  points_to_evaluate, fitted target hyperparameters, seed and suggestion counter),
  so a blank ``ScaMLGPSearch()`` restores without ``set_search_properties`` and
  continues bit-identically. The RNG "state" is the suggestion counter: every
  suggestion uses a seed derived from ``(seed, counter)``, never a global RNG.
  The meta-tasks and their fitted GP states (megabytes for large meta-data) are not
  in the checkpoint: it references them by content digest, and they are written once
  per content to ``scamlgp-meta-<digest>.pkl`` beside it (Tune syncs and restores
  ``*.pkl`` files of the experiment directory), so the checkpoint Tune rewrites
  at every step stays small whatever the meta-data size. Tune copies its state files
  one by one, so a restored checkpoint can be a step older or newer than Tune's trial
  list: each trial id is recorded once (a completed trial the checkpoint never
  suggested is recorded from its result's ``config``), and restored pending trials
  do not hold concurrency slots (one Tune never recorded would never complete).
- **Failures.** ``on_trial_complete`` with ``error=True``, a missing/non-numeric
  metric or a NaN/inf value never raises and never enters the GP: the point is kept as
  *failed* and passed to the model as ``avoid`` (never re-proposed). A trial removed
  before it ran (``result=None, error=False``) is forgotten.
- **Concurrency.** Pending trials are passed to the model as fantasies, so concurrent
  suggestions differ; a canonical point equal to a pending, observed or failed one is
  replaced by a fresh random point. :meth:`set_max_concurrency` is honoured (suggest
  returns ``None`` while ``max_concurrent`` trials are pending), so wrap the searcher in
  ``ConcurrencyLimiter(searcher, max_concurrent=N)``: Tune then also allows N pending
  trials (without a limiter it allows one; ``TUNE_MAX_PENDING_TRIALS_PG`` overrides).
- **No deadlocks.** Meta-task GPs are fitted once, on the first suggestion, by
  :func:`raymeta.search.fitting.fit_meta_tasks` as Ray tasks that request **zero CPUs**
  (``fit_num_cpus=0.0``): they never hold a CPU that a trial is waiting for, so the
  fit cannot starve Tune of resources whatever ``max_concurrent`` is (they oversubscribe
  the node briefly instead; each fit uses one torch thread). Without a running Ray
  (unit tests, notebooks) or with ``num_fit_workers=0`` the fits run in-process. No
  actor handle is ever stored, so the searcher pickles at construction and after.
- **Failing fits.** ``propose`` falls back on its own (drop a meta-task, target-only
  GP, random); if it still raises, the searcher logs a warning and suggests a random
  point, so the Tune loop never sees an exception from :meth:`suggest`.

Example:
    >>> from ray import tune
    >>> s = ScaMLGPSearch({"x": tune.uniform(0, 1)}, metric="loss", mode="min", seed=0)
    >>> config = s.suggest("1")
    >>> 0.0 <= config["x"] <= 1.0
    True
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from ray.tune.search import Searcher

from raymeta.errors import SearcherSetupError, SearchSpaceError
from raymeta.gp.propose import MAX_FIT_TASKS
from raymeta.search.checkpoint import (
    STATE_VERSION,
    check_version,
    load_checkpoint_state,
    tasks_from_arrays,
    tasks_to_arrays,
    write_checkpoint,
    write_meta_file,
)
from raymeta.search.metadata import MetaPipeline
from raymeta.search.options import SearcherOptions
from raymeta.search.space import (
    SearchSpace,
    convert_search_space,
    flatten_config,
    unflatten_config,
)
from raymeta.tasks.data import TaskData

__all__ = ["STATE_VERSION", "ScaMLGPSearch"]

log = logging.getLogger(__name__)

_SAME_POINT = 1e-9


class ScaMLGPSearch(Searcher):
    """Ray Tune searcher running ScaML-GP Bayesian optimisation with meta-data.

    Args:
        space: Tune search space; ``None`` = take Tune's ``param_space`` in
            :meth:`set_search_properties`.
        metric: Metric to optimise (also accepted from ``TuneConfig``).
        mode: ``"min"`` or ``"max"``.
        meta_data: Earlier runs: a DataFrame, ResultStore, ResultGrid, experiment
            path, a ``*MetaData`` source from :mod:`raymeta.search.metadata`, a
            list of those, or a list of :class:`~raymeta.tasks.data.TaskData`
            already in this space's unit cube (lower is better). ``None`` = plain
            GP-BO.
        points_to_evaluate: Configs (nested or ``"a/b"`` keys, may be partial) to
            try first, in order; missing keys are filled at random.
        evaluated_rewards: Metric values of ``points_to_evaluate``: the points are
            then added as observations instead of being run.
        seed: Base seed of every random choice the searcher and model make.
        acquisition: ``"ucb"``, ``"ei"`` or ``"logei"`` (see ``propose``).
        beta: UCB exploration parameter (9 = minimise mu - 3 sigma).
        restarts: Prior-drawn restarts of each target-model fit.
        num_restarts: Restarts of the acquisition optimiser.
        raw_samples: Sobol candidates screened for the acquisition starts.
        meta_restarts: Prior-drawn restarts of each meta-task GP fit.
        max_fit_tasks: With more meta-tasks than this, each target fit uses the
            ones with the highest marginal-likelihood gain (exact below it).
        min_task_points: Meta-tasks with fewer observations are left out with one
            warning naming them (see :class:`~raymeta.search.options.SearcherOptions`
            for why and for the measured effect).
        num_fit_workers: Ray workers for the meta-task GP fits (0 = in-process).
        fit_min_tasks_per_worker: Fewer meta-tasks than this to fit are fitted in
            the driver: a Ray worker's start-up (seconds) costs more than the fits
            (about 0.05 CPU-s each at 32 points); each Ray fitter gets at least
            this many tasks.
        fit_max_retries: Ray re-runs of a fitter whose worker died; then its tasks
            are left out of the model with a WARNING naming them.
        fit_num_cpus: CPUs each fit worker requests (default 0: never starves trials).
        meta_store: Optional ResultStore caching fitted meta-task GPs by content hash.
        num_threads: Torch threads for the model code run in the driver (scoped to
            each call; 1 by default: the matrices are tiny, and multi-threaded BLAS
            on a busy node is thousands of times slower for them).
        max_concurrent: Maximum pending trials (also set by ConcurrencyLimiter).
        kernel: ``"rbf"`` (default) or ``"matern52"``: the kernel of the meta-task
            GPs and of the target's residual GP.

    Raises:
        SearcherSetupError: ``mode`` is not ``"min"``/``"max"``, the warm-start
            lists have different lengths, or an option is out of its range (the
            message names it and the allowed values).
        SearchSpaceError: ``space`` or ``points_to_evaluate`` is invalid.
        MetaDataError: ``meta_data`` is empty or malformed (names task/column/value).
    """

    def __init__(
        self,
        space: Mapping[str, Any] | None = None,
        metric: str | None = None,
        mode: str | None = None,
        *,
        meta_data: Any = None,
        points_to_evaluate: Sequence[Mapping[str, Any]] | None = None,
        evaluated_rewards: Sequence[float] | None = None,
        seed: int = 0,
        acquisition: str = "ucb",
        beta: float = 9.0,
        restarts: int = 5,
        num_restarts: int = 4,
        raw_samples: int = 1024,
        meta_restarts: int = 5,
        max_fit_tasks: int = MAX_FIT_TASKS,
        min_task_points: int = 3,
        num_fit_workers: int = 1,
        fit_num_cpus: float = 0.0,
        fit_min_tasks_per_worker: int = 32,
        fit_max_retries: int = 2,
        meta_store: Any = None,
        max_concurrent: int | None = None,
        num_threads: int = 1,
        kernel: str = "rbf",
    ) -> None:
        """Validate the arguments and, where the space is known, the meta-data."""
        _check_mode(mode)
        super().__init__(metric=metric, mode=mode)
        if evaluated_rewards is not None and len(evaluated_rewards) != len(
            points_to_evaluate or []
        ):
            raise SearcherSetupError(
                f"evaluated_rewards has {len(evaluated_rewards)} values but "
                f"points_to_evaluate has {len(points_to_evaluate or [])}; give one "
                "reward per point"
            )
        self._seed = int(seed)
        self._options = SearcherOptions(
            acquisition=acquisition,
            beta=beta,
            restarts=restarts,
            num_restarts=num_restarts,
            raw_samples=raw_samples,
            meta_restarts=meta_restarts,
            max_fit_tasks=max_fit_tasks,
            min_task_points=min_task_points,
            num_fit_workers=num_fit_workers,
            fit_num_cpus=fit_num_cpus,
            fit_min_tasks_per_worker=fit_min_tasks_per_worker,
            fit_max_retries=fit_max_retries,
            num_threads=num_threads,
            kernel=kernel,
        )
        self._meta_store = meta_store
        self._max_concurrent = max_concurrent
        self._space: SearchSpace | None = None
        self._points = [dict(p) for p in points_to_evaluate or []]
        self._rewards = list(evaluated_rewards) if evaluated_rewards else None
        self._meta = MetaPipeline(
            meta_data, min_task_points=self._options.min_task_points
        )
        self._X: list[np.ndarray] = []
        self._y: list[float] = []
        self._failed: list[np.ndarray] = []
        self._pending: dict[str, np.ndarray] = {}
        self._completed: set[str] = set()  # trial ids already recorded
        self._unconfirmed: set[str] = set()  # restored pending ids, maybe ghosts
        self._num_suggested = 0
        self._target_state: Any = None
        if space:
            self._set_space(convert_search_space(space))
        else:
            self._meta.load(self._metric)

    @classmethod
    def from_experiments(
        cls,
        experiments: Sequence[Any],
        space: Mapping[str, Any] | None = None,
        *,
        metric: str,
        mode: str,
        task_ids: Sequence[str] | None = None,
        **kwargs: Any,
    ) -> ScaMLGPSearch:
        """Warm-start from earlier Tune experiments (paths or ResultGrids).

        Each experiment becomes one meta-task (see
        :class:`~raymeta.search.metadata.TuneMetaData`); other keyword arguments go
        to the constructor.
        """
        from raymeta.search.metadata import TuneMetaData

        meta = TuneMetaData(list(experiments), task_ids=task_ids)
        return cls(space, metric, mode, meta_data=meta, **kwargs)

    # ------------------------------------------------------------- Tune hooks
    def set_search_properties(
        self, metric: str | None, mode: str | None, config: dict, **spec: Any
    ) -> bool:
        """Accept Tune's metric, mode and ``param_space`` (only if none was given).

        Raises:
            SearchSpaceError: The space holds an unsupported domain.
            MetaDataError: The meta-data do not fit the space.
        """
        if self._space is not None:
            return False
        _check_mode(mode)
        if metric:
            self._metric = metric
        if mode:
            self._mode = mode
        self._set_space(convert_search_space(config))
        return True

    def set_max_concurrency(self, max_concurrent: int) -> bool:
        """Limit pending trials ourselves (``suggest`` returns None at the limit)."""
        self._max_concurrent = max_concurrent
        return True

    def suggest(self, trial_id: str) -> dict[str, Any] | None:
        """Return the next config (nested dict), or ``None`` at the pending limit.

        Raises:
            SearcherSetupError: Metric, mode or search space are still unknown.
        """
        self._require_ready()
        if trial_id in self._pending:
            return self._config_of(self._pending[trial_id])
        live = len(self._pending.keys() - self._unconfirmed)
        if self._max_concurrent and live >= self._max_concurrent:
            return None
        x = self._next_point()
        self._pending[trial_id] = x
        self._num_suggested += 1
        return self._config_of(x)

    def on_trial_complete(
        self, trial_id: str, result: dict | None = None, error: bool = False
    ) -> None:
        """Record a finished trial; bad or missing results become failed points.

        Each trial id is recorded once as an observation (a failure does not count:
        Tune may re-run an errored trial). A trial this searcher has no pending entry
        for (its state was restored from a checkpoint older than Tune's experiment
        state) is recorded from the ``config`` in its result.
        """
        if trial_id in self._completed:
            return
        self._unconfirmed.discard(trial_id)
        x = self._pending.pop(trial_id, None)
        if x is None:
            x = self._config_point(result)
        if x is None or (result is None and not error):
            return
        value = None if error else self._value_of(result)
        if value is None:  # not marked completed: Tune may re-run an errored trial
            log.info("trial %s failed or gave no finite %r", trial_id, self._metric)
            self._failed.append(x)
            return
        self._completed.add(trial_id)
        self._X.append(x)
        self._y.append(value)

    def reconcile(self, trials: Sequence[Any]) -> None:
        """Align the bookkeeping with Tune's trial list (call once after a restore).

        Tune restores its trial list and this searcher's checkpoint from files it
        wrote one by one, so they can be a step apart. Trials Tune has finished are
        recorded (once); unfinished ones are tracked as pending; pending entries
        Tune does not know are dropped. Errored trials are left to complete again if
        Tune re-runs them.

        Args:
            trials: Tune ``Trial`` objects (``trial_id``, ``status``, ``config``,
                ``last_result``), e.g. from a callback's ``on_step_begin``.
        """
        known = set()
        for trial in trials:
            known.add(trial.trial_id)
            if trial.status == "TERMINATED":
                result = {"config": trial.config, **(trial.last_result or {})}
                self.on_trial_complete(trial.trial_id, result=result)
            elif trial.status != "ERROR" and trial.trial_id not in self._pending:
                x = self._config_point({"config": trial.config})
                if x is not None and trial.trial_id not in self._completed:
                    self._pending[trial.trial_id] = x
        for trial_id in [t for t in self._pending if t not in known]:
            del self._pending[trial_id]
        self._unconfirmed.clear()

    def _config_point(self, result: Mapping[str, Any] | None) -> np.ndarray | None:
        """The unit-cube point of ``result["config"]`` (None if absent/outside)."""
        config = (result or {}).get("config")
        if self._space is None or not isinstance(config, Mapping):
            return None
        try:
            return self._space.encode(config)
        except SearchSpaceError:
            log.warning("ignoring a finished trial whose config is not in the space")
            return None

    def add_evaluated_point(
        self,
        parameters: Mapping[str, Any],
        value: float,
        error: bool = False,
        pruned: bool = False,
        intermediate_values: list[float] | None = None,
    ) -> None:
        """Add an already evaluated config (nested or ``"a/b"`` keys) as data.

        Raises:
            SearcherSetupError: The search space is not known yet.
            SearchSpaceError: ``parameters`` lie outside the space.
        """
        if self._space is None:
            raise SearcherSetupError(
                "add_evaluated_point needs the search space; pass space= to "
                "ScaMLGPSearch or call it after set_search_properties"
            )
        x = self._space.encode(parameters)
        y = None if error or pruned else self._value_of({self._metric: value})
        if y is None:
            self._failed.append(x)
        else:
            self._X.append(x)
            self._y.append(y)

    # ------------------------------------------------------------ persistence
    def get_state(self) -> dict[str, Any]:
        """Explicit, versioned state dict, meta-data included (module docstring)."""
        return {**self._core_state(), **self._meta_state()}

    def _core_state(self) -> dict[str, Any]:
        return {
            "version": STATE_VERSION,
            "metric": self._metric,
            "mode": self._mode,
            "space": self._space,
            "seed": self._seed,
            "options": self._options.as_dict(),
            "max_concurrent": self._max_concurrent,
            "num_suggested": self._num_suggested,
            "X": [x.copy() for x in self._X],
            "y": list(self._y),
            "failed": [x.copy() for x in self._failed],
            "pending": {k: v.copy() for k, v in self._pending.items()},
            "completed": sorted(self._completed),
            "points_to_evaluate": [dict(p) for p in self._points],
            "target_state": self._target_state,
        }

    def _meta_state(self) -> dict[str, Any]:
        states = self._meta.fitted
        return {
            "meta_tasks": tasks_to_arrays(self._meta.tasks),
            "meta_states": None if states is None else [s.to_bytes() for s in states],
        }

    def set_state(self, state: Mapping[str, Any]) -> None:
        """Inverse of :meth:`get_state`.

        Raises:
            SearcherSetupError: The state has an unknown version.
        """
        check_version(state)
        from raymeta.gp.fit import TaskGPState

        self._metric, self._mode = state["metric"], state["mode"]
        self._space, self._seed = state["space"], state["seed"]
        self._options = SearcherOptions.from_mapping(state["options"])
        self._max_concurrent = state["max_concurrent"]
        self._num_suggested = state["num_suggested"]
        self._X, self._y = list(state["X"]), list(state["y"])
        self._failed = list(state["failed"])
        self._pending = dict(state["pending"])
        self._completed = set(state.get("completed", ()))
        # Tune's experiment state may be older than this checkpoint: pending trials
        # it never recorded will not complete, so they must not hold a slot.
        self._unconfirmed = set(self._pending)
        self._points, self._rewards = list(state["points_to_evaluate"]), None
        states = state["meta_states"]
        self._meta = MetaPipeline.restored(
            tasks_from_arrays(state["meta_tasks"]),
            None if states is None else [TaskGPState.from_bytes(b) for b in states],
        )
        self._target_state = state["target_state"]

    def save(self, checkpoint_path: str) -> None:
        """Write the state to ``checkpoint_path`` (pickle of plain data).

        Meta-tasks and their fitted states go to ``scamlgp-meta-<digest>.pkl`` in
        the same directory, written once per content; the checkpoint holds the
        file name only, so its size does not grow with the meta-data.
        """
        state = self._core_state()
        if self._meta.empty:
            state.update(self._meta_state())
        else:
            state["meta_ref"] = self._write_meta(os.path.dirname(checkpoint_path))
        write_checkpoint(checkpoint_path, state)

    def restore(self, checkpoint_path: str) -> None:
        """Load a state written by :meth:`save` (no set_search_properties needed).

        Raises:
            SearcherSetupError: Unknown state version, or the meta-data file the
                checkpoint references is missing from its directory or corrupt.
        """
        self.set_state(load_checkpoint_state(checkpoint_path))

    def _write_meta(self, directory: str) -> str:
        """Write the meta payload once per content and directory; its file name."""
        cached = getattr(self, "_meta_file_cache", None)
        if (
            cached is not None
            and cached[0] is self._meta.tasks
            and cached[1] is self._meta.fitted
            and cached[2] == directory
            and os.path.exists(os.path.join(directory, cached[3]))
        ):
            return cached[3]
        name = write_meta_file(directory, self._meta_state())
        self._meta_file_cache = (self._meta.tasks, self._meta.fitted, directory, name)
        return name

    # --------------------------------------------------------------- queries
    @property
    def num_observations(self) -> int:
        """Number of finite observations the GP is fitted on."""
        return len(self._y)

    @property
    def num_failed(self) -> int:
        """Number of failed points (kept out of the GP, never re-proposed)."""
        return len(self._failed)

    @property
    def pending_trials(self) -> list[str]:
        """Ids of suggested trials that have not completed yet."""
        return list(self._pending)

    @property
    def search_space(self) -> SearchSpace | None:
        """The converted search space (``None`` before it is known)."""
        return self._space

    # -------------------------------------------------------------- internals
    def _set_space(self, space: SearchSpace) -> None:
        if space.dim == 0:
            raise SearchSpaceError(
                "the search space has no searchable parameter (only constants); add "
                "at least one domain, e.g. tune.uniform(0, 1)"
            )
        self._space = space
        self._points = [self._check_point(p) for p in self._points]
        self._finish_setup()

    def _finish_setup(self) -> None:
        """Build meta-tasks and add evaluated rewards once metric+mode+space exist."""
        self._meta.load(self._metric)
        if self._mode is None or self._metric is None:
            return
        self._meta.build(self._space, metric=self._metric, mode=self._mode)
        if self._rewards is not None:
            for i, (point, reward) in enumerate(
                zip(self._points, self._rewards, strict=True)
            ):
                x = self._complete_point(point, -1 - i)
                self.add_evaluated_point(self._space.decode(x), reward)
            self._points, self._rewards = [], None

    def _check_point(self, point: Mapping[str, Any]) -> dict[str, Any]:
        flat = flatten_config(point)
        for name, value in flat.items():
            if name in self._space.constants:
                continue
            if name not in self._space.names:
                raise SearchSpaceError(
                    f"points_to_evaluate: key {name!r} is not a parameter of the "
                    f"search space {list(self._space.names)}"
                )
            param = self._space.parameter(name)
            if not param.contains(value):
                raise SearchSpaceError(
                    f"points_to_evaluate: {name!r}={value!r} lies outside "
                    f"{param.describe()}"
                )
        return flat

    def _require_ready(self) -> None:
        if self._space is None:
            raise SearcherSetupError(
                "ScaMLGPSearch has no search space: pass space= or a param_space "
                "to tune.Tuner()"
            )
        if self._metric is None or self._mode is None:
            raise SearcherSetupError(
                f"ScaMLGPSearch needs metric and mode (got metric={self._metric!r}, "
                f"mode={self._mode!r}); pass them to ScaMLGPSearch or TuneConfig"
            )
        self._finish_setup()

    def _next_point(self) -> np.ndarray:
        if self._points:
            return self._complete_point(self._points.pop(0), self._num_suggested)
        rng = self._rng()
        try:
            with _torch_threads(self._options.num_threads):
                x = self._space.canonical(self._propose())
        except Exception as err:  # the model's own fallbacks failed: stay alive
            log.warning("ScaML-GP proposal failed (%s); suggesting at random", err)
            x = self._space.sample(rng)
        return self._distinct(x, rng)

    def _propose(self) -> np.ndarray:
        from raymeta.gp.propose import propose

        options = self._options
        proposal = propose(
            self._meta.states(self._fit_meta),
            self._target_task(),
            dim=self._space.dim,
            seed=self._step_seed(),
            pending=_stack(list(self._pending.values())),
            avoid=_stack(self._failed),
            acquisition=options.acquisition,
            beta=options.beta,
            init_state=self._target_state,
            restarts=options.restarts,
            num_restarts=options.num_restarts,
            raw_samples=options.raw_samples,
            max_fit_tasks=options.max_fit_tasks,
            kernel=options.kernel,
        )
        if proposal.fallback:
            log.warning("ScaML-GP used fallback %r", proposal.fallback)
        if proposal.target_state is not None:
            self._target_state = proposal.target_state
        return proposal.x.detach().numpy().astype(np.float64)

    def _fit_meta(self, tasks: list[TaskData]) -> list[Any]:
        import ray

        from raymeta.gp.fit import FitSettings
        from raymeta.search.fitting import fit_meta_tasks

        options = self._options
        return fit_meta_tasks(
            tasks,
            seed=self._seed,
            num_workers=options.num_fit_workers if ray.is_initialized() else 0,
            num_cpus_per_worker=options.fit_num_cpus,
            store=self._meta_store,
            settings=FitSettings(restarts=options.meta_restarts, kernel=options.kernel),
            min_tasks_per_worker=options.fit_min_tasks_per_worker,
            max_retries=options.fit_max_retries,
        )

    def _target_task(self) -> TaskData | None:
        if not self._y:
            return None
        X = torch.from_numpy(np.stack(self._X))
        return TaskData("target", X, torch.tensor(self._y, dtype=torch.float64))

    def _distinct(self, x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        taken = [*self._pending.values(), *self._X, *self._failed]
        for _ in range(100):
            if not any(np.max(np.abs(x - t)) < _SAME_POINT for t in taken):
                return x
            x = self._space.sample(rng)
        return x

    def _complete_point(self, point: Mapping[str, Any], step: int) -> np.ndarray:
        rng = np.random.default_rng([self._seed, step + 1_000_000, 1])
        config = self._space.decode(self._space.sample(rng))
        config.update(flatten_config(point))
        return self._space.encode(config)

    def _config_of(self, x: np.ndarray) -> dict[str, Any]:
        return unflatten_config(self._space.decode(x))

    def _value_of(self, result: Mapping[str, Any] | None) -> float | None:
        value = (result or {}).get(self._metric)
        if isinstance(value, bool) or not isinstance(value, int | float | np.number):
            return None
        value = float(value)
        if not math.isfinite(value):
            return None
        return -value if self._mode == "max" else value

    def _step_seed(self) -> int:
        sequence = np.random.SeedSequence([self._seed, self._num_suggested])
        return int(sequence.generate_state(1)[0])

    def _rng(self) -> np.random.Generator:
        return np.random.default_rng([self._seed, self._num_suggested, 2])


@contextlib.contextmanager
def _torch_threads(num_threads: int):
    """Run a block with ``num_threads`` torch threads, then restore the old value."""
    before = torch.get_num_threads()
    torch.set_num_threads(max(1, num_threads))
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _check_mode(mode: str | None) -> None:
    if mode is not None and mode not in ("min", "max"):
        raise SearcherSetupError(f"mode must be 'min' or 'max'; got {mode!r}")


def _stack(points: list[np.ndarray]) -> torch.Tensor | None:
    return torch.from_numpy(np.stack(points)) if points else None
