from __future__ import annotations

import json
import pickle

import pytest

from raymeta.errors import TuningIncompleteError
from raymeta.search.resume import newest_complete_session, restorable
from raymeta.search.tuning import _complete

OLD, NEW = "2026-01-01_00-00-00", "2026-01-01_00-00-09"


def _session(path, stamp, *, truncated: str | None = None, counter: int = 2):
    trials = [["{}", "{}"], ["{}", "{}"]]  # two trials
    files = {
        f"experiment_state-{stamp}.json": json.dumps({"trial_data": trials}).encode(),
        # Tune pickles the search generator's state into a file named ".json"
        f"search_gen_state-{stamp}.json": pickle.dumps({"counter": counter}),
        f"searcher-state-{stamp}.pkl": pickle.dumps({"_metric": "loss"}),
    }
    for name, data in files.items():
        (path / name).write_bytes(b"" if name.startswith(truncated or "-") else data)


def test_a_directory_without_experiment_state_is_not_restorable(tmp_path):
    (tmp_path / "tuner.pkl").write_bytes(b"x")  # what Tune writes first
    assert not restorable(str(tmp_path))
    assert not restorable(str(tmp_path / "missing"))


def test_truncated_newest_session_is_set_aside_and_the_intact_one_promoted(tmp_path):
    (tmp_path / "tuner.pkl").write_bytes(b"x")
    _session(tmp_path, OLD)
    _session(tmp_path, NEW, truncated="search_gen_state")
    assert newest_complete_session(str(tmp_path), repair=False) == OLD
    assert (tmp_path / f"search_gen_state-{NEW}.json").exists()  # nothing renamed
    assert restorable(str(tmp_path))
    left = sorted(p.name for p in tmp_path.iterdir() if NEW in p.name)
    assert left and all(name.endswith(".corrupt") for name in left)
    # the intact session is copied under a newer stamp than any set-aside one, so
    # Tune (which takes the newest name, also from its staging copy) reads it
    newest = newest_complete_session(str(tmp_path), repair=False)
    assert newest > NEW
    for name in ("experiment_state-{}.json", "searcher-state-{}.pkl"):
        promoted = (tmp_path / name.format(newest)).read_bytes()
        assert promoted == (tmp_path / name.format(OLD)).read_bytes()


def test_a_session_whose_files_disagree_is_not_resumed_from(tmp_path):
    (tmp_path / "tuner.pkl").write_bytes(b"x")
    _session(tmp_path, OLD)
    _session(tmp_path, NEW, counter=3)  # generator saw a trial the state lacks
    assert newest_complete_session(str(tmp_path), repair=False) == OLD


def test_intact_newest_session_is_kept(tmp_path):
    (tmp_path / "tuner.pkl").write_bytes(b"x")
    _session(tmp_path, OLD)
    _session(tmp_path, NEW)
    assert restorable(str(tmp_path))
    assert not list(tmp_path.glob("*.corrupt"))
    assert newest_complete_session(str(tmp_path), repair=False) > NEW  # promoted


def test_a_run_with_missing_trials_is_an_error_not_a_success():
    assert _complete([1, 2, 3], 3, "/x/exp") == [1, 2, 3]
    with pytest.raises(
        TuningIncompleteError, match="finished with 0 trials, expected 3"
    ):
        _complete([], 3, "/x/exp")
