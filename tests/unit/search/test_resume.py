from __future__ import annotations

import json
import pickle

import pytest

from raymeta.errors import TuningIncompleteError
from raymeta.search.resume import newest_complete_session, restorable
from raymeta.search.tuning import _complete

OLD, NEW = "2026-01-01_00-00-00", "2026-01-01_00-00-09"


def _session(path, stamp, *, truncated: str | None = None):
    files = {
        f"experiment_state-{stamp}.json": json.dumps({"trial_data": []}).encode(),
        # Tune pickles the search generator's state into a file named ".json"
        f"search_gen_state-{stamp}.json": pickle.dumps({"counter": 1}),
        f"searcher-state-{stamp}.pkl": pickle.dumps({"_metric": "loss"}),
    }
    for name, data in files.items():
        (path / name).write_bytes(b"" if name.startswith(truncated or "-") else data)


def test_a_directory_without_experiment_state_is_not_restorable(tmp_path):
    (tmp_path / "tuner.pkl").write_bytes(b"x")  # what Tune writes first
    assert not restorable(str(tmp_path))
    assert not restorable(str(tmp_path / "missing"))


def test_truncated_newest_session_is_set_aside(tmp_path):
    (tmp_path / "tuner.pkl").write_bytes(b"x")
    _session(tmp_path, OLD)
    _session(tmp_path, NEW, truncated="search_gen_state")
    assert newest_complete_session(str(tmp_path), repair=False) == OLD
    assert (tmp_path / f"search_gen_state-{NEW}.json").exists()  # nothing renamed
    assert restorable(str(tmp_path))
    left = sorted(p.name for p in tmp_path.iterdir() if NEW in p.name)
    assert left and all(name.endswith(".corrupt") for name in left)
    assert newest_complete_session(str(tmp_path)) == OLD


def test_intact_newest_session_is_kept(tmp_path):
    (tmp_path / "tuner.pkl").write_bytes(b"x")
    _session(tmp_path, OLD)
    _session(tmp_path, NEW)
    assert restorable(str(tmp_path))
    assert not list(tmp_path.glob("*.corrupt"))


def test_a_run_with_missing_trials_is_an_error_not_a_success():
    assert _complete([1, 2, 3], 3, "/x/exp") == [1, 2, 3]
    with pytest.raises(
        TuningIncompleteError, match="finished with 0 trials, expected 3"
    ):
        _complete([], 3, "/x/exp")
