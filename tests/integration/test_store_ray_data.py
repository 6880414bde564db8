"""Ray Data reads the store's tables directly, with the same rows as our reader."""

from __future__ import annotations

from pathlib import Path

import pytest

from raymeta.results import TABLES, ResultStore
from tests.unit.results.sample import canonical, sample_rows

pytestmark = pytest.mark.ray


@pytest.mark.parametrize("table", ["metrics", "trials", "data_weights"])
def test_ray_data_reads_store_tables(ray_local, tmp_path, table):
    store = ResultStore(tmp_path / "store")
    rows = sample_rows(TABLES[table].schema, 6, "exp-a") + sample_rows(
        TABLES[table].schema, 2, "exp-b"
    )
    store.append(table, rows[:6])
    store.append(table, rows[6:])
    import ray.data

    got = ray.data.read_parquet(str(Path(store.root) / table)).take_all()
    assert canonical(got) == canonical(store.read(table).to_pylist())
    assert len(got) == 8
