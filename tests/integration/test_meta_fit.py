from __future__ import annotations

import logging
import os
import time
from pathlib import Path

import pytest
import torch

from raymeta.errors import MetaDataError
from raymeta.gp.propose import propose
from raymeta.results import ResultStore
from raymeta.search.fitting import FitReport, MetaFitCache, fit_meta_tasks
from raymeta.tasks.data import TaskData

pytestmark = pytest.mark.ray


def make_tasks(count: int = 4, n: int = 10) -> list[TaskData]:
    tasks = []
    for i in range(count):
        g = torch.Generator().manual_seed(i)
        X = torch.rand(n, 2, generator=g, dtype=torch.float64)
        tasks.append(TaskData(f"task-{i}", X, torch.sin(4 * X[:, 0] + i) + X[:, 1]))
    return tasks


def test_parallel_fit_equals_serial_fit_and_ignores_order(ray_local, tmp_path):
    tasks = make_tasks()
    serial = fit_meta_tasks(tasks, seed=0, num_workers=0, restarts=1)
    for workers in (1, 2, 4):
        states = fit_meta_tasks(tasks, seed=0, num_workers=workers, restarts=1)
        assert [s.task_id for s in states] == [t.task_id for t in tasks]
        for a, b in zip(serial, states):
            assert torch.allclose(a.lengthscale, b.lengthscale, atol=1e-6, rtol=0)
            assert abs(float(a.outputscale) - float(b.outputscale)) <= 1e-6
            assert abs(float(a.noise) - float(b.noise)) <= 1e-6
    reversed_states = fit_meta_tasks(tasks[::-1], seed=0, num_workers=2, restarts=1)
    for a, b in zip(serial, reversed_states[::-1]):
        assert torch.allclose(a.lengthscale, b.lengthscale, atol=1e-6, rtol=0)
    fast = {"restarts": 1, "maxiter": 30, "raw_samples": 32, "num_restarts": 2}
    p1 = propose(serial, None, dim=2, seed=1, **fast)
    p4 = propose(states, None, dim=2, seed=1, **fast)
    assert torch.allclose(p1.x, p4.x, atol=1e-6)


def test_fitted_states_are_cached_in_memory_and_in_the_store(ray_local, tmp_path):
    tasks = make_tasks(count=2)
    store, cache = ResultStore(tmp_path / "store"), MetaFitCache()
    first = fit_meta_tasks(
        tasks,
        seed=1,
        num_workers=2,
        cache=cache,
        store=store,
        experiment="cache-test",
        restarts=1,
    )
    assert len(cache) == 2
    rows = store.to_pandas("meta_tasks", filters=[("experiment", "=", "cache-test")])
    assert sorted(rows.task_hash) == sorted(t.content_hash() for t in tasks)
    # a fresh process would only have the store: states come back bit-identical
    again = fit_meta_tasks(
        tasks, seed=1, num_workers=2, store=store, experiment="cache-test", restarts=1
    )
    assert [s.fit_seconds for s in again] == [s.fit_seconds for s in first]
    assert len(store.to_pandas("meta_tasks")) == 2  # nothing was refitted or re-added
    # a renamed copy of a task hits the cache under its new id
    renamed = TaskData("renamed", tasks[0].X, tasks[0].y)
    (hit,) = fit_meta_tasks([renamed], seed=1, num_workers=1, cache=cache, restarts=1)
    assert hit.task_id == "renamed" and hit.fit_seconds == first[0].fit_seconds
    # ... but not under other fit settings (there it is refitted)
    report = FitReport()
    fit_meta_tasks(
        [renamed], seed=1, num_workers=0, cache=cache, restarts=0, report=report
    )
    assert (report.from_memory, report.fitted) == (0, 1)


def test_mismatched_task_dimensions_are_rejected_before_fitting(ray_local):
    a = make_tasks(count=1)[0]
    b = TaskData("three-d", torch.rand(4, 3, dtype=torch.float64), torch.zeros(4))
    with pytest.raises(MetaDataError, match="task 'three-d' has dimension 3"):
        fit_meta_tasks([a, b], seed=0, num_workers=2)


def _crash_once_then_build(marker: str, task_id: str, X, y) -> TaskData:
    """Unpickled in the fitter: the first time, kill the worker process mid-fit."""
    if not os.path.exists(marker):
        Path(marker).touch()
        time.sleep(0.5)  # the other fitters are running now
        os._exit(1)
    return TaskData(task_id, X, y)


class _CrashOnceTask(TaskData):
    """A meta-task whose fitter worker dies the first time it receives it."""

    marker: str = ""

    def __reduce__(self):
        return (_crash_once_then_build, (self.marker, self.task_id, self.X, self.y))


def _crashing_copy(task: TaskData, marker: Path) -> TaskData:
    crashing = _CrashOnceTask(task.task_id, task.X, task.y)
    object.__setattr__(crashing, "marker", str(marker))
    return crashing


FAST_FIT = {"restarts": 1, "maxiter": 30, "raw_samples": 32, "num_restarts": 2}


@pytest.mark.slow
def test_killed_fitter_is_retried_to_the_same_states(ray_local, tmp_path, caplog):
    tasks = make_tasks()
    clean = fit_meta_tasks(tasks, seed=0, num_workers=4, restarts=1)
    marker = tmp_path / "crashed"
    tasks[2] = _crashing_copy(tasks[2], marker)
    caplog.set_level(logging.WARNING)
    retried = fit_meta_tasks(tasks, seed=0, num_workers=4, restarts=1, max_retries=1)
    assert marker.exists(), "the fitter of task-2 was never killed"
    assert not [r for r in caplog.records if "excluding" in r.getMessage()]
    assert [s.task_id for s in retried] == [t.task_id for t in tasks]
    for a, b in zip(clean, retried):
        for name in ("lengthscale", "outputscale", "noise"):
            diff = (getattr(a, name) - getattr(b, name)).abs().max()
            assert float(diff) <= 1e-8, (a.task_id, name, float(diff))


@pytest.mark.slow
def test_killed_fitter_without_retries_excludes_its_task(ray_local, tmp_path, caplog):
    tasks = make_tasks()
    marker = tmp_path / "crashed"
    crashing = [*tasks[:2], _crashing_copy(tasks[2], marker), tasks[3]]
    caplog.set_level(logging.WARNING, logger="raymeta.search.fitting")
    states = fit_meta_tasks(crashing, seed=0, num_workers=4, restarts=1, max_retries=0)
    assert marker.exists(), "the fitter of task-2 was never killed"
    assert [s.task_id for s in states] == ["task-0", "task-1", "task-3"]
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("excluding meta-task(s) 'task-2'" in m for m in warnings), warnings
    without = fit_meta_tasks(
        [tasks[0], tasks[1], tasks[3]], seed=0, num_workers=4, restarts=1
    )
    with_exclusion = propose(states, None, dim=2, seed=3, **FAST_FIT)
    started_without = propose(without, None, dim=2, seed=3, **FAST_FIT)
    assert torch.equal(with_exclusion.x, started_without.x)
