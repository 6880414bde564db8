"""The fitted-state cache: hits, misses, invalidation, corruption, concurrency."""

from __future__ import annotations

import dataclasses
import multiprocessing
import warnings

import pyarrow.parquet as pq
import pytest
import torch

from raymeta.errors import MetaDataError
from raymeta.gp.fit import FitSettings
from raymeta.results import ResultStore
from raymeta.search.fitting import FitReport, MetaFitCache, fit_meta_tasks
from raymeta.tasks.data import TaskData

FAST = FitSettings(restarts=0, maxiter=20)


def tasks(n: int, start: int = 0) -> list[TaskData]:
    out = []
    for i in range(start, start + n):
        gen = torch.Generator().manual_seed(i)
        X = torch.rand(6, 2, generator=gen, dtype=torch.float64)
        out.append(TaskData(f"t{i}", X, (X - 0.05 * i).pow(2).sum(1)))
    return out


def fit(store, items, settings=FAST, cache=None) -> FitReport:
    report = FitReport()
    fit_meta_tasks(
        items,
        seed=0,
        num_workers=0,
        store=store,
        settings=settings,
        cache=cache,
        report=report,
    )
    return report


def test_a_second_study_fits_nothing_and_new_tasks_only_fit_themselves(tmp_path):
    store = ResultStore(tmp_path)
    assert fit(store, tasks(8)).fitted == 8
    again = fit(store, tasks(8))
    assert (again.fitted, again.from_store) == (0, 8)
    grown = fit(store, tasks(10))
    assert (grown.fitted, grown.from_store) == (2, 8)
    assert store.read("meta_tasks").num_rows == 10


def test_states_fitted_under_other_settings_are_never_reused(tmp_path):
    store, cache = ResultStore(tmp_path), MetaFitCache()
    fit(store, tasks(4), cache=cache)
    other = FitSettings(restarts=1, maxiter=20)
    assert other.digest() != FAST.digest()
    report = fit(store, tasks(4), settings=other, cache=cache)
    assert (report.from_memory, report.from_store, report.fitted) == (0, 0, 4)
    hit = fit(store, tasks(4), settings=other, cache=cache)
    assert (hit.from_memory, hit.fitted) == (4, 0)
    assert store.read("meta_tasks").num_rows == 8


def test_unsupported_settings_are_refused():
    with pytest.raises(MetaDataError, match="kernel must be one of"):
        FitSettings(kernel="matern")


def test_a_state_fitted_with_another_kernel_is_not_reused(tmp_path):
    store = ResultStore(tmp_path)
    rbf = fit_meta_tasks(tasks(2), seed=0, num_workers=0, settings=FAST, store=store)
    matern = dataclasses.replace(FAST, kernel="matern52")
    other = fit_meta_tasks(
        tasks(2), seed=0, num_workers=0, settings=matern, store=store
    )
    assert {s.kernel for s in rbf} == {"rbf"} and {s.kernel for s in other} == {
        "matern52"
    }
    again = fit_meta_tasks(
        tasks(2), seed=0, num_workers=0, settings=matern, store=store
    )
    assert [s.kernel for s in again] == ["matern52"] * 2
    assert all(torch.equal(a.alpha, b.alpha) for a, b in zip(again, other))


def test_a_corrupted_cached_state_is_refitted_with_a_warning_never_used(
    tmp_path, caplog
):
    store = ResultStore(tmp_path)
    fresh = fit_meta_tasks(tasks(3), seed=0, num_workers=0, settings=FAST)
    fit(store, tasks(3))
    (path,) = [p for p in store.files("meta_tasks") if "t1" in _ids(p)]
    table = pq.read_table(path)
    state = bytearray(table.column("state")[0].as_py())
    state[len(state) // 2] ^= 0xFF  # one flipped byte
    idx = table.schema.get_field_index("state")
    table = table.set_column(idx, "state", [[bytes(state)]])
    pq.write_table(table, path)
    with caplog.at_level("WARNING", logger="raymeta.search.fitting"):
        report = FitReport()
        states = fit_meta_tasks(
            tasks(3), seed=0, num_workers=0, store=store, settings=FAST, report=report
        )
    assert report.repaired == ["t1"] and report.fitted == 1
    assert "'t1'" in caplog.text and "corrupted" in caplog.text
    for a, b in zip(states, fresh, strict=True):
        assert torch.equal(a.chol, b.chol) and a.mll == b.mll
    caplog.clear()
    with caplog.at_level("WARNING", logger="raymeta.search.fitting"):
        healed = fit(store, tasks(3))
    assert (healed.fitted, healed.from_store, healed.repaired) == (0, 3, [])
    assert "corrupted" not in caplog.text


def _ids(path: str) -> list[str]:
    return pq.read_table(path, columns=["task_id"]).column("task_id").to_pylist()


def _fit_in_child(root: str, barrier) -> None:
    barrier.wait()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a duplicate or conflicting write would warn
        fit_meta_tasks(
            tasks(1, start=5),
            seed=0,
            num_workers=0,
            store=ResultStore(root),
            settings=FAST,
        )


def test_two_concurrent_studies_fitting_the_same_task_leave_one_state(tmp_path):
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(2)
    procs = [
        ctx.Process(target=_fit_in_child, args=(str(tmp_path), barrier))
        for _ in range(2)
    ]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=120)
    assert [p.exitcode for p in procs] == [0, 0]
    rows = ResultStore(tmp_path).read("meta_tasks").to_pylist()
    assert [r["task_id"] for r in rows] == ["t5"]
