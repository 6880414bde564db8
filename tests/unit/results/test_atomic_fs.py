from __future__ import annotations

import pickle

from pyarrow import fs

from raymeta.results.atomic_fs import atomic_local_filesystem, remove_temporaries


def test_copy_files_through_it_like_tune_does(tmp_path):
    src, dst = tmp_path / "staging", tmp_path / "storage"
    (src / "sub").mkdir(parents=True)
    (src / "experiment_state.json").write_text("{}")
    (src / "sub" / "searcher.pkl").write_bytes(b"x" * 3_000_000)
    fs.copy_files(str(src), str(dst), destination_filesystem=atomic_local_filesystem())
    assert (dst / "experiment_state.json").read_text() == "{}"
    assert (dst / "sub" / "searcher.pkl").read_bytes() == b"x" * 3_000_000
    assert sorted(p.name for p in dst.rglob("*")) == [
        "experiment_state.json",
        "searcher.pkl",
        "sub",
    ]


def test_an_interrupted_write_leaves_the_old_file_whole(tmp_path):
    target = tmp_path / "state.json"
    target.write_text("old, complete")
    atomic = atomic_local_filesystem()
    stream = atomic.open_output_stream(str(target))
    stream.write(b"new but cut sh")  # the writer dies before close()
    assert target.read_text() == "old, complete"
    listed = atomic.get_file_info(fs.FileSelector(str(tmp_path)))
    assert [i.base_name for i in listed] == ["state.json"]  # the temp file is hidden
    stream.close()
    assert target.read_text() == "new but cut sh"


def test_it_pickles_as_tune_pickles_run_configs():
    again = pickle.loads(pickle.dumps(atomic_local_filesystem()))
    assert again.type_name == "py::raymeta-atomic-local"


def test_remove_temporaries_deletes_only_old_leftovers(tmp_path):
    atomic = atomic_local_filesystem()
    (tmp_path / "sub").mkdir()
    for name in ("a.pkl", "sub/b.json"):
        stream = atomic.open_output_stream(str(tmp_path / name))
        stream.write(b"cut")  # killed writers: never closed
    (tmp_path / "keep.json").write_text("{}")
    assert remove_temporaries(tmp_path, older_than_s=3600) == 0  # could be live
    assert remove_temporaries(tmp_path, older_than_s=0) == 2
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["keep.json", "sub"]
    assert remove_temporaries(tmp_path / "missing", older_than_s=0) == 0
