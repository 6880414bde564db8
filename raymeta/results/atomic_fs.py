"""A local pyarrow filesystem whose file writes are atomic, for Ray Tune/Train storage.

Ray Tune 2.60 copies its whole driver staging directory (experiment state, search
state, searcher checkpoints, of every session so far) to the storage path after each
step, file by file, through the storage filesystem's ``open_output_stream``. A driver
killed mid-copy leaves truncated files, and since *every* session's files are
rewritten, it can truncate all of them at once: nothing intact is left to resume
from (found by the driver-crash stress test, C4).

:func:`atomic_local_filesystem` wraps pyarrow's ``LocalFileSystem`` so that every
output stream writes to a temporary file beside the target and renames it into
place on close: each file is always either its old or its new complete version.
Pass it as ``RunConfig(storage_filesystem=...)`` and to ``Tuner.restore``. A writer
killed before the rename leaves its hidden temporary behind (never a torn target);
:func:`remove_temporaries` deletes such leftovers, and ``run_family_tuning`` calls it
on the experiment directory before it resumes.

Example:
    >>> import tempfile, os
    >>> fs = atomic_local_filesystem()
    >>> root = tempfile.mkdtemp()
    >>> with fs.open_output_stream(os.path.join(root, "a.txt")) as f:
    ...     _ = f.write(b"data")
    >>> sorted(os.listdir(root))
    ['a.txt']
"""

from __future__ import annotations

import os
import time
import uuid
from pathlib import Path

import pyarrow as pa
from pyarrow import fs

__all__ = ["atomic_local_filesystem", "remove_temporaries"]

_TMP_MARK = ".raymeta-tmp-"


def atomic_local_filesystem() -> fs.PyFileSystem:
    """A local filesystem whose ``open_output_stream`` writes are atomic."""
    return fs.PyFileSystem(_AtomicLocalHandler())


def remove_temporaries(root: str | os.PathLike, *, older_than_s: float = 60.0) -> int:
    """Delete the temporaries of killed atomic writers under ``root``.

    Args:
        root: Directory searched recursively (a missing one holds nothing).
        older_than_s: Only temporaries not modified for this long go, so a live
            writer's file is left alone.

    Returns:
        How many files were deleted.
    """
    cutoff = time.time() - older_than_s
    removed = 0
    for tmp in Path(root).rglob(f"*{_TMP_MARK}*"):
        try:
            if tmp.is_file() and tmp.stat().st_mtime < cutoff:
                tmp.unlink()
                removed += 1
        except FileNotFoundError:  # its writer finished or another cleaner won
            continue
    return removed


class _AtomicFile:
    """Writable file: data go to a hidden temporary, renamed over ``path`` on close."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.tmp = f"{path}{_TMP_MARK}{uuid.uuid4().hex}"
        self._file = open(self.tmp, "wb")
        self.closed = False

    def write(self, data) -> int:
        return self._file.write(data)

    def flush(self) -> None:
        self._file.flush()

    def tell(self) -> int:
        return self._file.tell()

    def writable(self) -> bool:
        return True

    def close(self) -> None:
        if self.closed:
            return
        self._file.flush()
        os.fsync(self._file.fileno())
        self._file.close()
        os.replace(self.tmp, self.path)
        self.closed = True


class _AtomicLocalHandler(fs.FileSystemHandler):
    """Delegates to ``LocalFileSystem``; output streams are :class:`_AtomicFile`."""

    def __init__(self) -> None:
        self._local = fs.LocalFileSystem()

    def __eq__(self, other) -> bool:
        return isinstance(other, _AtomicLocalHandler)

    def __ne__(self, other) -> bool:
        return not self == other

    def __reduce__(self):
        return (_AtomicLocalHandler, ())

    def get_type_name(self) -> str:
        return "raymeta-atomic-local"

    def normalize_path(self, path: str) -> str:
        return self._local.normalize_path(path)

    def get_file_info(self, paths):
        return self._local.get_file_info(paths)

    def get_file_info_selector(self, selector):
        infos = self._local.get_file_info(selector)
        return [i for i in infos if _TMP_MARK not in i.base_name]

    def create_dir(self, path: str, recursive: bool) -> None:
        self._local.create_dir(path, recursive=recursive)

    def delete_dir(self, path: str) -> None:
        self._local.delete_dir(path)

    def delete_dir_contents(self, path: str, missing_dir_ok: bool = False) -> None:
        self._local.delete_dir_contents(path, missing_dir_ok=missing_dir_ok)

    def delete_root_dir_contents(self, path: str) -> None:
        self._local.delete_dir_contents(path, accept_root_dir=True)

    def delete_file(self, path: str) -> None:
        self._local.delete_file(path)

    def move(self, src: str, dest: str) -> None:
        self._local.move(src, dest)

    def copy_file(self, src: str, dest: str) -> None:
        with self._local.open_input_stream(src) as source:
            stream = self.open_output_stream(dest, None)
            try:
                while chunk := source.read(1 << 20):
                    stream.write(chunk)
            finally:
                stream.close()

    def open_input_stream(self, path: str):
        return self._local.open_input_stream(path)

    def open_input_file(self, path: str):
        return self._local.open_input_file(path)

    def open_output_stream(self, path: str, metadata):
        return pa.PythonFile(_AtomicFile(path), mode="w")

    def open_append_stream(self, path: str, metadata):
        return self._local.open_append_stream(path, metadata=metadata)
