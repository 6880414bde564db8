from __future__ import annotations

import pickle
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.dataset as ds
import pytest

from raymeta.errors import (
    InvalidNameError,
    SchemaMismatchError,
    StoreError,
    UnknownTableError,
)
from raymeta.results import TABLES, ResultStore, TableSpec
from tests.unit.results.sample import canonical, sample_rows


@pytest.fixture
def store(tmp_path: Path) -> ResultStore:
    return ResultStore(tmp_path / "store")


@pytest.mark.parametrize("table", sorted(TABLES))
def test_round_trip_every_builtin_table_through_three_readers(store, table):
    schema = TABLES[table].schema
    rows = sample_rows(schema, 5, "exp-a") + sample_rows(schema, 3, "exp-b")
    assert store.append(table, rows) == 8

    ours = store.read(table)
    assert ours.schema == schema
    assert canonical(ours.to_pylist()) == canonical(rows)

    path = Path(store.root) / table
    via_pandas = pd.read_parquet(path).astype({"experiment": str})
    assert canonical(via_pandas.to_dict("records")) == canonical(
        pd.DataFrame(rows).to_dict("records")
    )
    via_dataset = ds.dataset(path, partitioning="hive").to_table()
    assert via_dataset.num_rows == 8
    assert set(via_dataset.column_names) == set(schema.names)


def test_accepts_dataframe_arrow_table_and_dicts(store):
    rows = [{"experiment": "e", "name": "loss", "value": 1.0}]
    store.append("metrics", rows)
    store.append("metrics", pd.DataFrame(rows))
    store.append("metrics", pa.Table.from_pylist(rows))
    assert store.read("metrics").num_rows == 3


def test_partitions_by_experiment_and_filters(store):
    store.append("metrics", [{"experiment": "a", "name": "x", "value": 1.0}])
    store.append("metrics", [{"experiment": "b", "name": "x", "value": 2.0}])
    dirs = sorted(p.name for p in (Path(store.root) / "metrics").iterdir())
    assert dirs == ["experiment=a", "experiment=b"]
    got = store.read("metrics", filters=[("experiment", "=", "b")], columns=["value"])
    assert got.to_pylist() == [{"value": 2.0}]


def test_idempotent_append_with_key(store):
    rows = [{"experiment": "e", "name": "loss", "value": float(i)} for i in range(4)]
    assert store.append("metrics", rows, key=("e", "trial-1", 0)) == 4
    assert store.append("metrics", rows, key=("e", "trial-1", 0)) == 0
    assert store.append("metrics", rows, key=("e", "trial-1", 1)) == 4
    assert store.read("metrics").num_rows == 8


def test_keyed_append_spanning_partitions_completes_a_partial_earlier_attempt(store):
    rows = [
        {"experiment": "a", "name": "x", "value": 1.0},
        {"experiment": "b", "name": "x", "value": 2.0},
    ]
    assert (
        store.append("metrics", rows[:1], key="k") == 1
    )  # as if killed after one file
    assert store.append("metrics", rows, key="k") == 1
    assert sorted(store.read("metrics").column("value").to_pylist()) == [1.0, 2.0]


def test_additive_column_reads_as_null_for_old_rows(store):
    store.append("metrics", [{"experiment": "e", "name": "a", "value": 1.0}])
    store.append("metrics", [{"experiment": "e", "name": "b", "value": 2.0, "lr": 0.1}])
    got = store.to_pandas("metrics").set_index("name")
    assert got.loc["b", "lr"] == 0.1 and pd.isna(got.loc["a", "lr"])
    assert store.schema("metrics").field("lr").type == pa.float64()


def test_new_column_in_later_partition_is_not_dropped(store):
    # pyarrow alone takes the first file's schema and silently drops such a column.
    store.append("metrics", [{"experiment": "a", "name": "a", "value": 1.0}])
    store.append(
        "metrics", [{"experiment": "z", "name": "z", "value": 1.0, "extra": "y"}]
    )
    assert "extra" in store.read("metrics").column_names
    assert (
        ResultStore(store.root).read("metrics").column("extra").to_pylist().count("y")
        == 1
    )


def test_widening_integer_is_accepted(store):
    data = pa.table(
        {
            "experiment": ["e"],
            "name": ["n"],
            "value": [1.0],
            "step": pa.array([3], pa.int32()),
        }
    )
    store.append("metrics", data)
    assert store.read("metrics").column("step").type == pa.int64()


def test_type_change_of_declared_column_is_rejected_naming_both_types(store):
    with pytest.raises(
        SchemaMismatchError, match=r"'value' has type double .* type string"
    ):
        store.append("metrics", [{"experiment": "e", "name": "n", "value": "high"}])
    assert store.read("metrics").num_rows == 0


def test_type_change_of_evolved_column_is_rejected(store):
    store.append("metrics", [{"experiment": "e", "name": "n", "value": 1.0, "b": 5}])
    with pytest.raises(
        SchemaMismatchError, match=r"column 'b' has type int64 .* type string"
    ):
        store.append(
            "metrics", [{"experiment": "e", "name": "n", "value": 1.0, "b": "x"}]
        )
    assert store.read("metrics").num_rows == 1


def test_unknown_table_is_rejected_and_custom_tables_can_be_declared(store):
    with pytest.raises(UnknownTableError, match="unknown table 'metrix'.*'metrics'"):
        store.append("metrix", [{"experiment": "e"}])
    spec = TableSpec(
        name="losses",
        schema=pa.schema([("experiment", pa.string()), ("loss", pa.float64())]),
        required=("experiment", "loss"),
    )
    store.declare(spec)
    store.append("losses", [{"experiment": "e", "loss": 0.1}])
    assert store.tables() == ["losses"]


def test_missing_required_column_names_the_column(store):
    with pytest.raises(SchemaMismatchError, match="required column 'value' is missing"):
        store.append("metrics", [{"experiment": "e", "name": "n"}])
    with pytest.raises(SchemaMismatchError, match="required column 'value' has 1 null"):
        store.append("metrics", [{"experiment": "e", "name": "n", "value": None}])
    assert store.tables() == []


@pytest.mark.parametrize(
    "name", ["../../x", "a/b", "..", "a\\b", "bad\x00name", "", "x\n", ".hidden"]
)
def test_unsafe_experiment_names_are_rejected_and_nothing_is_written(store, name):
    with pytest.raises(InvalidNameError, match="experiment name .* is not allowed"):
        store.append("metrics", [{"experiment": name, "name": "n", "value": 1.0}])
    assert list(Path(store.root).rglob("*.parquet")) == []


def test_unsafe_table_name_is_rejected(store):
    spec = TableSpec(
        name="../t", schema=pa.schema([("experiment", pa.string())]), required=()
    )
    with pytest.raises(InvalidNameError, match="table name '../t'"):
        store.declare(spec)


def test_unwritable_root_gives_a_clear_error(tmp_path):
    blocker = tmp_path / "file.txt"
    blocker.write_text("not a directory")
    with pytest.raises(StoreError, match="cannot create results store root"):
        ResultStore(blocker / "store")


def test_read_of_empty_table_returns_schema(store):
    assert store.read("trials").schema == TABLES["trials"].schema
    with pytest.raises(SchemaMismatchError, match="no column"):
        store.read("trials", columns=["nope"])


def test_bad_data_type_is_rejected(store):
    with pytest.raises(SchemaMismatchError, match="list of dicts; got int"):
        store.append("metrics", 5)


def test_store_pickles_by_root(store):
    store.append("metrics", [{"experiment": "e", "name": "n", "value": 1.0}])
    clone = pickle.loads(pickle.dumps(store))
    assert clone.read("metrics").num_rows == 1


def test_uri_root(tmp_path):
    store = ResultStore(f"file://{tmp_path}/s")
    store.append("metrics", [{"experiment": "e", "name": "n", "value": 1.0}])
    assert store.read("metrics").num_rows == 1


def test_keyed_retry_with_other_rows_warns_and_keeps_the_first(tmp_path):
    import warnings

    store = ResultStore(tmp_path)
    row = {"experiment": "e", "name": "loss", "value": 0.5, "wall_time_s": 1.0}
    assert store.append("metrics", [row], key="k") == 1
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a retry that differs only in timings is quiet
        assert store.append("metrics", [row | {"wall_time_s": 9.0}], key="k") == 0
    with pytest.warns(UserWarning, match=r"key 'k'.*differ in column\(s\) \['value'\]"):
        assert store.append("metrics", [row | {"value": 0.7}], key="k") == 0
    with pytest.warns(UserWarning, match="1 row.*2 new row"):
        assert store.append("metrics", [row, row], key="k") == 0
    assert store.to_pandas("metrics")["value"].tolist() == [0.5]
