"""Concurrent writers and killed writers, with real processes (no Ray)."""

from __future__ import annotations

import multiprocessing as mp
import os
import signal
import time
from pathlib import Path

import pytest

from raymeta.results import ResultStore
from tests.unit.results import writers

pytestmark = pytest.mark.slow
CTX = mp.get_context("spawn")


def test_concurrent_writers_while_a_reader_scans(tmp_path):
    root = str(tmp_path / "store")
    store = ResultStore(root)
    n_writers, appends, rows = 8, 50, 20
    procs = [
        CTX.Process(target=writers.write_many, args=(root, w, appends, rows))
        for w in range(n_writers)
    ]
    for p in procs:
        p.start()
    seen = []
    while any(p.is_alive() for p in procs):
        seen.append(store.read("metrics", columns=["run_id", "step"]).num_rows)
    for p in procs:
        p.join()
        assert p.exitcode == 0
    final = store.to_pandas("metrics")
    assert len(final) == n_writers * appends * rows
    per_batch = final.groupby(["run_id", "step"]).size()
    assert len(per_batch) == n_writers * appends and (per_batch == rows).all()
    assert len(seen) > 1, "the reader never overlapped the writers"
    assert all(n % rows == 0 for n in seen), "a reader saw a partial append"
    assert seen == sorted(seen), "row counts seen by the reader decreased"


def _wait_for(path: Path, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while not path.exists():
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.01)


def test_writer_killed_before_rename_leaves_nothing_visible_and_retry_lands_once(
    tmp_path,
):
    root = tmp_path / "store"
    store = ResultStore(root)
    child = CTX.Process(
        target=writers.append_then_hang_before_rename, args=(str(root), 1000)
    )
    child.start()
    _wait_for(root / "hung")
    os.kill(child.pid, signal.SIGKILL)
    child.join()
    assert list((root / "_tmp").glob("*.parquet")), "the temporary file should remain"
    assert store.read("metrics").num_rows == 0
    writers.big_append(str(root), 1000)
    writers.big_append(str(root), 1000)
    assert store.read("metrics").num_rows == 1000
    schema_dir = root / "_schema" / "metrics"
    schema_dir.mkdir(parents=True, exist_ok=True)
    (schema_dir / "0123.arrow.abcd.tmp").write_bytes(b"cut")  # killed schema writer
    assert store.gc(older_than_s=0) == 2
    assert store.read("metrics").num_rows == 1000
    assert not list(root.rglob("*.tmp")) and not list((root / "_tmp").iterdir())


def test_writer_killed_mid_write_of_a_large_table(tmp_path):
    root = tmp_path / "store"
    store = ResultStore(root)
    child = CTX.Process(target=writers.big_append, args=(str(root), 3_000_000))
    child.start()
    tmp = root / "_tmp"
    deadline = time.monotonic() + 60
    while child.is_alive() and not (tmp.exists() and any(tmp.iterdir())):
        assert time.monotonic() < deadline
        time.sleep(0.001)
    os.kill(child.pid, signal.SIGKILL)
    child.join()
    n = store.read("metrics").num_rows
    assert n in (0, 3_000_000), f"a partial append is visible: {n} rows"
    writers.big_append(str(root), 3_000_000)
    assert store.read("metrics").num_rows == 3_000_000
