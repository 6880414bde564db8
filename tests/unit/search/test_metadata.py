"""Meta-data sources -> validated meta-tasks; bad inputs name task, column, value."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pandas as pd
import pytest
from ray import tune

from raymeta.errors import MetaDataError
from raymeta.results import ResultStore
from raymeta.search.metadata import (
    FrameMetaData,
    StoreMetaData,
    build_meta_tasks,
    load_meta_frame,
)
from raymeta.search.space import convert_search_space

SPACE = convert_search_space(
    {"lr": tune.loguniform(1e-3, 1.0), "opt": {"kind": tune.choice(["sgd", "adam"])}}
)


def _frame(**overrides):
    data = {
        "task_id": ["a", "a", "b", "b"],
        "lr": [0.01, 0.1, 0.5, 0.002],
        "opt/kind": ["sgd", "adam", "adam", "sgd"],
        "loss": [1.0, 2.0, 3.0, 4.0],
    }
    data.update(overrides)
    return pd.DataFrame(data)


def test_dataframe_becomes_one_task_per_task_id():
    frame = load_meta_frame(_frame(), metric="loss")
    tasks = build_meta_tasks(frame, SPACE, mode="min")
    assert [t.task_id for t in tasks] == ["a", "b"]
    assert tasks[0].X.shape == (2, SPACE.dim)
    np.testing.assert_allclose(tasks[0].y.numpy(), [1.0, 2.0])
    np.testing.assert_allclose(
        tasks[0].X[0].numpy(), SPACE.encode({"lr": 0.01, "opt/kind": "sgd"})
    )


def test_mode_max_negates_values():
    frame = load_meta_frame(_frame(), metric="loss")
    tasks = build_meta_tasks(frame, SPACE, mode="max")
    np.testing.assert_allclose(tasks[1].y.numpy(), [-3.0, -4.0])


def test_custom_task_and_metric_columns():
    raw = _frame().rename(columns={"task_id": "dataset", "loss": "err"})
    source = FrameMetaData(raw, task_column="dataset", metric_column="err")
    frame = load_meta_frame(source, metric="ignored")
    assert sorted(set(frame["task_id"])) == ["a", "b"]


def test_empty_meta_data_is_rejected():
    with pytest.raises(MetaDataError, match=r"meta-data is empty.*got 0 rows"):
        load_meta_frame(_frame().iloc[:0], metric="loss")


def test_missing_metric_column_is_rejected():
    with pytest.raises(MetaDataError, match=r"metric column 'acc' missing"):
        load_meta_frame(_frame(), metric="acc")


def test_missing_parameter_column_names_task_and_column():
    frame = load_meta_frame(_frame().drop(columns=["lr"]), metric="loss")
    with pytest.raises(MetaDataError, match=r"task 'a': column 'lr' missing"):
        build_meta_tasks(frame, SPACE, mode="min")


def test_extra_columns_give_one_warning_and_are_dropped():
    frame = load_meta_frame(_frame(momentum=[0.9] * 4, wd=[0.0] * 4), metric="loss")
    with pytest.warns(
        UserWarning, match=r"dropped column\(s\) \['momentum', 'wd'\]"
    ) as rec:
        tasks = build_meta_tasks(frame, SPACE, mode="min")
    assert len(rec) == 1
    assert tasks[0].X.shape[1] == SPACE.dim


def test_out_of_bounds_value_names_task_column_and_value():
    frame = load_meta_frame(_frame(lr=[0.01, 0.1, 5.0, 0.002]), metric="loss")
    with pytest.raises(MetaDataError, match=r"task 'b': column 'lr' has value 5.0"):
        build_meta_tasks(frame, SPACE, mode="min")


def test_unknown_category_names_task_column_and_value():
    kinds = ["sgd", "adam", "rmsprop", "sgd"]
    frame = load_meta_frame(_frame(**{"opt/kind": kinds}), metric="loss")
    with pytest.raises(
        MetaDataError,
        match=r"task 'b': column 'opt/kind' has unknown category 'rmsprop'",
    ):
        build_meta_tasks(frame, SPACE, mode="min")


def test_non_numeric_objective_names_task_and_value():
    with pytest.raises(MetaDataError, match=r"task 'a'.*non-numeric value 'oops'"):
        load_meta_frame(_frame(loss=[1.0, "oops", 3.0, 4.0]), metric="loss")


def test_nan_parameter_names_task_column_and_row():
    frame = load_meta_frame(_frame(lr=[0.01, 0.1, 0.5, np.nan]), metric="loss")
    with pytest.raises(MetaDataError, match=r"task 'b': column 'lr' is NaN in row 3"):
        build_meta_tasks(frame, SPACE, mode="min")


def test_non_finite_objectives_are_dropped_with_a_warning():
    with pytest.warns(UserWarning, match=r"dropped 2 row\(s\).*NaN or infinite"):
        frame = load_meta_frame(_frame(loss=[1.0, np.nan, np.inf, 4.0]), metric="loss")
    assert len(frame) == 2


def test_unsupported_source_type_is_rejected():
    with pytest.raises(MetaDataError, match=r"type int is not supported"):
        load_meta_frame(3, metric="loss")


def _trial_row(experiment, task, trial, config, value, status="TERMINATED"):
    return {
        "experiment": experiment,
        "task_id": task,
        "trial_id": trial,
        "attempt": 0,
        "status": status,
        "metric": "loss",
        "value": value,
        "mode": "min",
        "config": json.dumps(config),
    }


def test_store_trials_become_one_task_per_experiment_and_task(tmp_path):
    store = ResultStore(tmp_path / "store")
    rows = [
        _trial_row("e1", "t", "1", {"lr": 0.1, "opt/kind": "sgd"}, 1.0),
        _trial_row("e1", "t", "2", {"lr": 0.2, "opt/kind": "adam"}, 2.0),
        _trial_row("e1", "t", "3", {"lr": 0.3, "opt/kind": "adam"}, None, "ERROR"),
        _trial_row("e2", "t", "1", {"lr": 0.5, "opt/kind": "sgd", "seed": 3}, 5.0),
    ]
    store.append("trials", rows)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        frame = load_meta_frame(StoreMetaData(store), metric="loss")
        tasks = build_meta_tasks(frame, SPACE, mode="min")
    assert [(t.task_id, t.n) for t in tasks] == [("e1:t", 2), ("e2:t", 1)]
    only_e2 = load_meta_frame(StoreMetaData(store, experiments=["e2"]), metric="loss")
    assert set(only_e2["task_id"]) == {"e2:t"}
    # a bare store is accepted as a source too
    assert len(load_meta_frame(store, metric="loss")) == 3


def test_store_without_matching_trials_is_empty(tmp_path):
    store = ResultStore(tmp_path / "store")
    with pytest.raises(MetaDataError, match=r"meta-data is empty"):
        load_meta_frame(StoreMetaData(store), metric="loss")


def test_a_missing_task_id_is_rejected_not_named_none():
    frame = pd.DataFrame({"task_id": ["a", None], "x": [0.1, 0.2], "loss": [1.0, 2.0]})
    with pytest.raises(MetaDataError, match="task column 'task_id' is empty"):
        load_meta_frame(frame, metric="loss")


def test_a_boolean_objective_is_rejected_as_the_target_metric_is():
    frame = pd.DataFrame({"task_id": ["a", "a"], "x": [0.1, 0.2], "ok": [True, False]})
    with pytest.raises(MetaDataError, match="objective column holds booleans"):
        load_meta_frame(frame, metric="ok")
    mixed = frame.astype({"ok": object})
    mixed.loc[1, "ok"] = 0.5
    with pytest.raises(MetaDataError, match="booleans"):
        load_meta_frame(mixed, metric="ok")


def test_meta_pipeline_resolves_each_step_once_and_checks_the_space_before_fitting():
    import pandas as pd
    from ray import tune

    from raymeta.errors import MetaDataError
    from raymeta.search.metadata import MetaPipeline
    from raymeta.search.space import convert_search_space

    reads = []

    class CountingFrame:
        def to_frame(self, metric):
            reads.append(metric)
            return pd.DataFrame(
                {"task_id": ["a"] * 3, "x": [0.1, 0.5, 0.9], "value": [3.0, 1.0, 2.0]}
            )

    fits = []
    pipe = MetaPipeline(CountingFrame(), min_task_points=3)
    pipe.load(None)  # metric unknown: nothing read yet
    assert reads == []
    space = convert_search_space({"x": tune.uniform(0, 1)})
    for _ in range(2):
        pipe.build(space, metric="loss", mode="min")
    assert reads == ["loss"] and [t.n for t in pipe.tasks] == [3]
    for _ in range(2):
        states = pipe.states(lambda tasks: fits.append(len(tasks)) or ["state"])
    assert fits == [1] and states == ["state"]
    wide = convert_search_space({"x": tune.uniform(0, 1), "y": tune.uniform(0, 1)})
    other = MetaPipeline(pipe.tasks, min_task_points=1)
    with pytest.raises(MetaDataError, match="meta-task 'a' has dimension 1"):
        other.build(wide, metric="loss", mode="min")
