"""Meta-data sources: earlier tuning runs turned into ScaML-GP meta-tasks.

Every source yields a *meta frame*: a long pandas DataFrame with one row per earlier
evaluation and the columns ``task_id`` (one meta-task per earlier task/experiment),
``value`` (the metric, as measured) and one column per flattened search-space
parameter (``"a/b"``). :func:`build_meta_tasks` then validates the frame against the
target search space and encodes it into :class:`~raymeta.tasks.data.TaskData` in the
unit cube, oriented so lower is better.

Which source to use:

- :class:`FrameMetaData` (or a bare ``pandas.DataFrame``): data you already have; a
  task column, parameter columns and a metric column.
- :class:`StoreMetaData` (or a bare :class:`~raymeta.results.ResultStore`): trials that
  :class:`~raymeta.search.callback.StoreCallback` wrote to the store's ``trials`` table;
  one meta-task per ``(experiment, task_id)``; only ``TERMINATED`` trials whose
  ``metric`` column equals the searcher's metric are used.
- :class:`TuneMetaData` (or a bare ``ResultGrid`` / experiment directory path): the
  results of an earlier Tune run; one meta-task per experiment.

Checks, all raising :class:`~raymeta.errors.MetaDataError` naming task, column and
value before any trial starts: empty meta-data, a missing task/metric/parameter
column, a non-numeric objective, NaN parameters, values outside the space and unknown
categories. Extra columns are dropped with one warning; rows whose objective is NaN or
infinite (failed earlier trials) are dropped with one warning.

Example:
    >>> import pandas as pd
    >>> frame = pd.DataFrame({"task_id": ["a", "a"], "x": [0.1, 0.9], "loss": [1, 2]})
    >>> load_meta_frame(frame, metric="loss")["value"].tolist()
    [1.0, 2.0]
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from raymeta.errors import MetaDataError
from raymeta.search.space import SearchSpace, flatten_config
from raymeta.tasks.data import TaskData

__all__ = [
    "FrameMetaData",
    "MetaPipeline",
    "StoreMetaData",
    "TuneMetaData",
    "build_meta_tasks",
    "drop_small_tasks",
    "load_meta_frame",
]

TASK = "task_id"
VALUE = "value"


@dataclass(frozen=True)
class FrameMetaData:
    """Meta-data given as a DataFrame.

    Args:
        frame: One row per earlier evaluation.
        task_column: Column naming the earlier task of each row.
        metric_column: Column holding the objective; ``None`` = the searcher's metric.
    """

    frame: pd.DataFrame
    task_column: str = TASK
    metric_column: str | None = None

    def to_frame(self, metric: str) -> pd.DataFrame:
        """Return the normalised meta frame (``task_id``, ``value``, parameters)."""
        column = self.metric_column or metric
        frame = self.frame
        for needed, what in ((self.task_column, "task"), (column, "metric")):
            if needed not in frame.columns:
                raise MetaDataError(
                    f"meta-data: {what} column {needed!r} missing; columns are "
                    f"{list(map(str, frame.columns))}; pass task_column=/"
                    "metric_column= to FrameMetaData to name yours"
                )
        out = frame.drop(columns=[self.task_column, column])
        out.insert(0, TASK, _task_ids(frame[self.task_column], self.task_column))
        out[VALUE] = frame[column].to_numpy()
        return out.reset_index(drop=True)


@dataclass(frozen=True)
class StoreMetaData:
    """Meta-data read from the results store's ``trials`` table.

    Args:
        store: A :class:`~raymeta.results.ResultStore` or its root path.
        experiments: Experiments to use (``None`` = all).
        task_ids: Task ids to use (``None`` = all).
        statuses: Trial statuses to keep.
    """

    store: Any
    experiments: Sequence[str] | None = None
    task_ids: Sequence[str] | None = None
    statuses: Sequence[str] = ("TERMINATED",)

    def to_frame(self, metric: str) -> pd.DataFrame:
        """Return the normalised meta frame; task id = ``"<experiment>:<task_id>"``."""
        from raymeta.results import ResultStore

        store = self.store
        if not isinstance(store, ResultStore):
            store = ResultStore(store)
        if "trials" not in store.tables():
            return _empty_frame()
        filters = [("metric", "=", metric)]
        if self.experiments is not None:
            filters.append(("experiment", "in", list(self.experiments)))
        trials = store.to_pandas("trials", filters=filters)
        keep = trials["status"].isin(list(self.statuses))
        if self.task_ids is not None:
            keep &= trials["task_id"].isin(list(self.task_ids))
        trials = trials[keep]
        if trials.empty:
            return _empty_frame()
        configs = pd.DataFrame([json.loads(c) for c in trials["config"]])
        ids = _task_ids(trials["task_id"].fillna(trials["experiment"]), "task_id")
        task = trials["experiment"].astype(str).to_numpy() + ":" + ids
        configs.insert(0, TASK, task)
        configs[VALUE] = trials["value"].to_numpy()
        return configs


@dataclass(frozen=True)
class TuneMetaData:
    """Meta-data from earlier Tune runs (one meta-task per experiment).

    Args:
        results: A ``ResultGrid``, an experiment directory, or a list of them.
        task_ids: Task id per experiment (default: the experiment directory name).
    """

    results: Any
    task_ids: Sequence[str] | None = None

    def to_frame(self, metric: str) -> pd.DataFrame:
        """Return the normalised meta frame built from each run's last results."""
        runs = self.results
        if not isinstance(runs, list | tuple):
            runs = [runs]
        names = list(self.task_ids) if self.task_ids is not None else None
        if names is not None and len(names) != len(runs):
            raise MetaDataError(
                f"TuneMetaData: {len(runs)} result sets but {len(names)} task_ids; "
                "give one task id per experiment"
            )
        frames = [
            _tune_frame(run, metric, names[i] if names else None)
            for i, run in enumerate(runs)
        ]
        return pd.concat(frames, ignore_index=True) if frames else _empty_frame()


def _tune_frame(run: Any, metric: str, task_id: str | None) -> pd.DataFrame:
    if isinstance(run, str | Path):
        from ray.tune import ExperimentAnalysis

        analysis = ExperimentAnalysis(str(run))
        frame = analysis.dataframe(metric=None, mode=None)
        path = Path(run)
    else:
        frame = run.get_dataframe()
        path = Path(run.experiment_path)
    if metric not in frame.columns:
        raise MetaDataError(
            f"Tune results {str(path)!r}: metric column {metric!r} missing; result "
            f"columns are {sorted(c for c in frame.columns if '/' not in c)[:20]}"
        )
    params = [c for c in frame.columns if c.startswith("config/")]
    out = frame[params].rename(columns=lambda c: c[len("config/") :])
    out.insert(0, TASK, task_id or path.name)
    out[VALUE] = frame[metric].to_numpy()
    return out.reset_index(drop=True)


def _task_ids(column: pd.Series, name: str) -> np.ndarray:
    """Task ids as strings; a missing id is an error, never the task "None"."""
    missing = column.isna().to_numpy()
    if missing.any():
        row = int(np.flatnonzero(missing)[0])
        raise MetaDataError(
            f"meta-data: task column {name!r} is empty (None/NaN) in "
            f"{int(missing.sum())} row(s), first in row {row}; every row needs the id "
            "of its earlier task "
            "(fill the column or drop those rows)"
        )
    return column.astype(str).to_numpy()


def _empty_frame() -> pd.DataFrame:
    return pd.DataFrame({TASK: pd.Series(dtype=str), VALUE: pd.Series(dtype=float)})


def load_meta_frame(meta_data: Any, *, metric: str) -> pd.DataFrame:
    """Turn any supported meta-data source into a checked meta frame.

    Args:
        meta_data: A DataFrame, a :class:`~raymeta.results.ResultStore`, a
            ``ResultGrid``, an experiment directory, one of the ``*MetaData``
            sources, or a list of these (concatenated).
        metric: The searcher's metric (selects the objective column/rows).

    Returns:
        Frame with columns ``task_id`` (str), parameter columns, ``value`` (float64);
        rows with a non-finite objective removed (one warning).

    Raises:
        MetaDataError: Unsupported source, empty meta-data, missing columns, or a
            non-numeric objective.
    """
    frame = _raw_frame(meta_data, metric)
    if frame.empty:
        raise MetaDataError(
            f"meta-data is empty: expected at least one earlier task with finished "
            f"trials for metric {metric!r}, got 0 rows; check the source's "
            "experiment/task selection, or pass meta_data=None to search without it"
        )
    frame = frame.copy()
    frame[VALUE] = _numeric_objective(frame)
    finite = np.isfinite(frame[VALUE].to_numpy())
    if not finite.all():
        warnings.warn(
            f"meta-data: dropped {int((~finite).sum())} row(s) whose objective is "
            f"NaN or infinite (tasks {sorted(set(frame.loc[~finite, TASK]))})",
            stacklevel=2,
        )
        frame = frame[finite].reset_index(drop=True)
    if frame.empty:
        raise MetaDataError(
            "meta-data is empty after dropping rows with a NaN/infinite objective"
        )
    return frame


def _raw_frame(meta_data: Any, metric: str) -> pd.DataFrame:
    from raymeta.results import ResultStore

    if isinstance(meta_data, list | tuple) and not _is_task_list(meta_data):
        frames = [_raw_frame(m, metric) for m in meta_data]
        return pd.concat(frames, ignore_index=True) if frames else _empty_frame()
    if isinstance(meta_data, pd.DataFrame):
        meta_data = FrameMetaData(meta_data)
    elif isinstance(meta_data, ResultStore):
        meta_data = StoreMetaData(meta_data)
    elif isinstance(meta_data, str | Path) or hasattr(meta_data, "get_dataframe"):
        meta_data = TuneMetaData(meta_data)
    if not hasattr(meta_data, "to_frame"):
        raise MetaDataError(
            f"meta_data of type {type(meta_data).__name__} is not supported; pass a "
            "DataFrame, ResultStore, ResultGrid, experiment path, a FrameMetaData/"
            "StoreMetaData/TuneMetaData, or a list of TaskData in the unit cube"
        )
    return meta_data.to_frame(metric)


def _is_task_list(values: Sequence[Any]) -> bool:
    return bool(values) and all(isinstance(v, TaskData) for v in values)


def _numeric_objective(frame: pd.DataFrame) -> np.ndarray:
    if pd.api.types.is_bool_dtype(frame[VALUE]) or _holds_bool(frame[VALUE]):
        raise MetaDataError(
            "meta-data: the objective column holds booleans; expected numbers (a "
            "trial reporting a boolean metric is treated as failed by the searcher "
            "too); convert it, e.g. frame[metric].astype(float), if that is meant"
        )
    values = pd.to_numeric(frame[VALUE], errors="coerce")
    bad = values.isna() & frame[VALUE].notna()
    if bad.any():
        row = int(np.flatnonzero(bad.to_numpy())[0])
        raise MetaDataError(
            f"meta-data task {frame[TASK].iloc[row]!r}: objective column holds the "
            f"non-numeric value {frame[VALUE].iloc[row]!r} (row {row}); expected a "
            "number; clean or drop such rows"
        )
    return values.to_numpy(dtype=np.float64)


def _holds_bool(column: pd.Series) -> bool:
    return column.dtype == object and any(
        isinstance(v, bool | np.bool_) for v in column
    )


def drop_small_tasks(tasks: Sequence[TaskData], min_points: int) -> list[TaskData]:
    """Leave out meta-tasks with fewer than ``min_points`` observations.

    A GP fitted on one or two points has no information about its lengthscales;
    its posterior variance away from those points pulls the warm start towards the
    edges of the space (see :class:`~raymeta.search.options.SearcherOptions`).

    Args:
        tasks: The meta-tasks.
        min_points: Smallest number of observations a meta-task needs.

    Returns:
        The tasks with at least ``min_points`` observations, in their order; one
        warning names those left out.
    """
    small = [t.task_id for t in tasks if t.n < min_points]
    if small:
        shown = small[:10] + (["..."] if len(small) > 10 else [])
        warnings.warn(
            f"meta-data: left out {len(small)} meta-task(s) with fewer than "
            f"{min_points} observations (min_task_points): {shown}; such tasks "
            "cannot inform a GP's lengthscales and would mislead the warm start",
            stacklevel=3,
        )
    return [t for t in tasks if t.n >= min_points]


def build_meta_tasks(
    frame: pd.DataFrame, space: SearchSpace, *, mode: str
) -> list[TaskData]:
    """Validate a meta frame against the search space and encode it.

    Args:
        frame: Output of :func:`load_meta_frame`.
        space: The target search space.
        mode: ``"min"`` or ``"max"``; with ``"max"`` values are negated so every
            task's ``y`` is lower-is-better.

    Returns:
        One :class:`TaskData` per task id, ``X`` of shape ``n x space.dim``, sorted by
        task id.

    Raises:
        MetaDataError: A parameter column is missing, holds NaN, a value outside its
            domain or an unknown category (names task, column and value).
    """
    names = list(space.names)
    first_task = str(frame[TASK].iloc[0])
    missing = [n for n in names if n not in frame.columns]
    if missing:
        raise MetaDataError(
            f"meta-data task {first_task!r}: column {missing[0]!r} missing; expected "
            f"parameter columns {names}, got {_param_columns(frame)}"
        )
    extra = [c for c in _param_columns(frame) if c not in names]
    extra = [c for c in extra if c not in space.constants]
    if extra:
        warnings.warn(
            f"meta-data: dropped column(s) {extra} that are not parameters of the "
            f"search space {names}",
            stacklevel=2,
        )
    sign = -1.0 if mode == "max" else 1.0
    tasks = []
    for task_id, rows in frame.groupby(TASK, sort=True):
        X = np.stack([_encode_row(space, str(task_id), row) for row in _rows(rows)])
        y = sign * rows[VALUE].to_numpy(dtype=np.float64)
        tasks.append(TaskData(str(task_id), torch.from_numpy(X), torch.from_numpy(y)))
    return tasks


def _param_columns(frame: pd.DataFrame) -> list[str]:
    return [str(c) for c in frame.columns if c not in (TASK, VALUE)]


def _rows(rows: pd.DataFrame) -> list[tuple[int, Mapping[str, Any]]]:
    return list(zip(rows.index.tolist(), rows.to_dict("records"), strict=True))


def _encode_row(
    space: SearchSpace, task_id: str, indexed: tuple[int, Mapping[str, Any]]
) -> np.ndarray:
    index, row = indexed
    flat = flatten_config(row)
    for p in space.parameters:
        value = flat[p.name]
        if p.kind != "categorical" and _is_nan(value):
            raise MetaDataError(
                f"meta-data task {task_id!r}: column {p.name!r} is NaN in row "
                f"{index}; every parameter needs a value (drop or fill the row)"
            )
        if isinstance(value, np.generic):
            value = value.item()
        if not p.contains(value):
            what = "unknown category" if p.kind == "categorical" else "value"
            raise MetaDataError(
                f"meta-data task {task_id!r}: column {p.name!r} has {what} "
                f"{value!r} in row {index}, outside the search space "
                f"{p.describe()}; widen the space or drop the row"
            )
        flat[p.name] = value
    return space.encode(flat)


def _is_nan(value: Any) -> bool:
    try:
        return value is None or bool(np.isnan(value))
    except TypeError:
        return False


class MetaPipeline:
    """One searcher's meta-data, resolved once: source -> frame -> tasks -> GP states.

    Each step runs as soon as what it needs is known and never again: the source is
    read into a meta frame when the metric is known (:meth:`load`), the frame is
    encoded into meta-tasks when the search space and mode are (:meth:`build`), and
    the meta-task GPs are fitted on the first proposal (:meth:`states`). Meta-tasks
    given directly as :class:`~raymeta.tasks.data.TaskData` skip the frame.

    Args:
        source: Any meta-data source :func:`load_meta_frame` accepts, a list of
            TaskData, or None.
        min_task_points: Meta-tasks with fewer observations are left out (one
            warning names them).
    """

    def __init__(self, source: Any, *, min_task_points: int) -> None:
        """Hold the source; nothing is read yet."""
        self._source, self._min_points = source, min_task_points
        self._frame: pd.DataFrame | None = None
        self.tasks: list[TaskData] | None = None
        self.fitted: list[Any] | None = None

    @classmethod
    def restored(
        cls, tasks: list[TaskData] | None, fitted: list[Any] | None
    ) -> MetaPipeline:
        """A pipeline already resolved (from a checkpoint)."""
        pipe = cls(None, min_task_points=1)
        pipe.tasks, pipe.fitted = tasks, fitted
        return pipe

    def load(self, metric: str | None) -> None:
        """Read the source (validating it) once the metric is known."""
        source = self._source
        if source is None or metric is None:
            return
        self._source = None
        if isinstance(source, list | tuple) and source and _holds_tasks(source):
            from raymeta.tasks.data import validate_meta_tasks

            validate_meta_tasks(source)
            self.tasks = drop_small_tasks(source, self._min_points)
            return
        self._frame = load_meta_frame(source, metric=metric)

    def build(self, space: SearchSpace, *, metric: str, mode: str) -> None:
        """Encode the frame into meta-tasks and check them against ``space``.

        Raises:
            MetaDataError: The meta-data do not fit the space (names the task).
        """
        self.load(metric)
        if self._frame is not None:
            tasks = build_meta_tasks(self._frame, space, mode=mode)
            self._frame = None
            self.tasks = drop_small_tasks(tasks, self._min_points)
        first = (self.tasks or [None])[0]
        if first is not None and first.dim != space.dim:
            raise MetaDataError(
                f"meta-task {first.task_id!r} has dimension {first.dim} but the "
                f"search space encodes to {space.dim} columns {list(space.names)}"
            )

    def states(self, fit: Any) -> list[Any]:
        """The fitted meta-task GPs: ``fit(tasks)`` on the first call, then cached."""
        if self.fitted is None:
            self.fitted = fit(self.tasks) if self.tasks else []
        return self.fitted

    @property
    def empty(self) -> bool:
        """No meta-tasks and no fitted states."""
        return not self.tasks and not self.fitted


def _holds_tasks(values: Sequence[Any]) -> bool:
    return all(isinstance(v, TaskData) for v in values)
