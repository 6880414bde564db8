"""StoreCallback writes one trials row per finished trial, idempotently."""

from __future__ import annotations

import json

import pytest
from ray.tune.experiment import Trial

from raymeta.results import ResultStore
from raymeta.search.callback import StoreCallback
from raymeta.search.metadata import StoreMetaData, load_meta_frame


def _trial(trial_id, config, result):
    trial = Trial("fn", config=config, trial_id=trial_id, stub=True)
    if result is not None:
        trial.update_last_result(result)
    return trial


@pytest.fixture
def store(tmp_path):
    return ResultStore(tmp_path / "store")


def _callback(store):
    return StoreCallback(
        store,
        experiment="exp1",
        task_id="branin-3",
        metric="loss",
        mode="min",
        searcher="ScaMLGPSearch",
        seed=7,
    )


def test_completed_trial_is_written_with_flattened_config(store):
    callback = _callback(store)
    trial = _trial(
        "t1", {"opt": {"lr": 0.1}, "c": "x"}, {"loss": 0.5, "time_total_s": 2.0}
    )
    callback.on_trial_complete(iteration=1, trials=[trial], trial=trial)
    rows = store.to_pandas("trials")
    assert len(rows) == 1
    row = rows.iloc[0]
    assert (row.experiment, row.task_id, row.trial_id, row.status) == (
        "exp1",
        "branin-3",
        "t1",
        "TERMINATED",
    )
    assert (row.metric, row.value, row["mode"], row.searcher, row.seed) == (
        "loss",
        0.5,
        "min",
        "ScaMLGPSearch",
        7,
    )
    assert row.attempt == 0 and row.time_total_s == 2.0
    assert json.loads(row.config) == {"opt/lr": 0.1, "c": "x"}
    assert row.finished_at is not None


def test_repeated_completion_is_idempotent(store):
    callback = _callback(store)
    trial = _trial("t1", {"x": 1.0}, {"loss": 1.0})
    for _ in range(3):
        callback.on_trial_complete(iteration=1, trials=[trial], trial=trial)
    assert len(store.to_pandas("trials")) == 1


def test_error_then_successful_retry_gives_two_rows(store):
    callback = _callback(store)
    trial = _trial("t1", {"x": 1.0}, None)
    trial.run_metadata.num_failures += 1
    callback.on_trial_error(iteration=1, trials=[trial], trial=trial)
    trial.update_last_result({"loss": 3.0})
    callback.on_trial_complete(iteration=2, trials=[trial], trial=trial)
    rows = store.to_pandas("trials").sort_values("attempt")
    assert rows[["status", "attempt"]].values.tolist() == [
        ["ERROR", 0],
        ["TERMINATED", 1],
    ]
    assert rows["value"].isna().tolist() == [True, False]


def test_missing_or_non_numeric_metric_is_stored_as_null(store):
    callback = _callback(store)
    for tid, result in (("a", {"other": 1}), ("b", {"loss": "bad"})):
        trial = _trial(tid, {"x": 1.0}, result)
        callback.on_trial_complete(iteration=1, trials=[trial], trial=trial)
    assert store.to_pandas("trials")["value"].isna().all()


def test_written_trials_read_back_as_meta_data(store):
    callback = _callback(store)
    for i in range(3):
        trial = _trial(f"t{i}", {"x": 0.1 * i}, {"loss": float(i)})
        callback.on_trial_complete(iteration=1, trials=[trial], trial=trial)
    frame = load_meta_frame(StoreMetaData(store, experiments=["exp1"]), metric="loss")
    assert sorted(frame["value"]) == [0.0, 1.0, 2.0]
    assert set(frame["task_id"]) == {"exp1:branin-3"}


def test_callback_accepts_a_store_root_path(tmp_path):
    from raymeta.results import ResultStore
    from raymeta.search.callback import StoreCallback

    callback = StoreCallback(str(tmp_path / "store"), experiment="e", metric="loss")
    assert isinstance(callback.store, ResultStore)
    assert callback.store.root == str(tmp_path / "store")
