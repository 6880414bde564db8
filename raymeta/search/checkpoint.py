"""On-disk format of :class:`~raymeta.search.searcher.ScaMLGPSearch` checkpoints.

A checkpoint is a pickle of plain data: the searcher's core state (metric, mode,
space, observations, pending trials, counters, fitted target hyperparameters). The
meta-tasks and their fitted GP states, which can be megabytes, go to
``scamlgp-meta-<digest>.pkl`` beside it, written once per content; the checkpoint
only names that file (``meta_ref``), so the file Tune rewrites at every step stays
small. Readers check the file's content against the digest in its name.

Versions: 1 embeds the meta-data; 2 references it (both readable).
"""

from __future__ import annotations

import hashlib
import os
import pickle
from collections.abc import Mapping
from typing import Any

import torch

from raymeta.errors import SearcherSetupError
from raymeta.tasks.data import TaskData

__all__ = [
    "STATE_VERSION",
    "check_version",
    "load_checkpoint_state",
    "tasks_from_arrays",
    "tasks_to_arrays",
    "write_checkpoint",
    "write_meta_file",
]

STATE_VERSION = 2  # 2: meta-data referenced by digest in save(); 1: embedded
READABLE_VERSIONS = (1, 2)
_META_FILE = "scamlgp-meta-{digest}.pkl"


def write_checkpoint(path: str, state: Mapping[str, Any]) -> None:
    """Pickle ``state`` (plain data) to ``path``."""
    with open(path, "wb") as f:
        pickle.dump(dict(state), f)


def write_meta_file(directory: str, meta_state: Mapping[str, Any]) -> str:
    """Write the meta payload to ``directory`` unless its content is there; its name."""
    payload = pickle.dumps(dict(meta_state))
    name = _meta_name(payload)
    path = os.path.join(directory, name)
    if not os.path.exists(path):
        tmp = f"{path}.{os.getpid()}.tmp"
        with open(tmp, "wb") as f:
            f.write(payload)
        os.replace(tmp, path)
    return name


def load_checkpoint_state(checkpoint_path: str) -> Any:
    """The state in a searcher checkpoint, with its referenced meta-data merged in.

    Reads any pickled searcher checkpoint; for a ScaMLGPSearch one that names a
    meta-data file, that file must be beside it and intact.

    Raises:
        SearcherSetupError: The referenced meta-data file is missing or corrupt.
    """
    with open(checkpoint_path, "rb") as f:
        state = pickle.load(f)
    if isinstance(state, Mapping) and "meta_ref" in state:
        state = {**state, **_read_meta(checkpoint_path, state["meta_ref"])}
    return state


def check_version(state: Any) -> None:
    """Raise unless ``state`` is a state dict of a readable version.

    Raises:
        SearcherSetupError: Not a mapping, or an unknown version.
    """
    if isinstance(state, Mapping) and state.get("version") in READABLE_VERSIONS:
        return
    got = state.get("version") if isinstance(state, Mapping) else type(state)
    raise SearcherSetupError(
        f"cannot restore ScaMLGPSearch state version {got!r}; this raymeta reads "
        f"versions {READABLE_VERSIONS}; re-run with the raymeta that wrote it"
    )


def tasks_to_arrays(tasks: list[TaskData] | None) -> list[tuple] | None:
    """Meta-tasks as ``(task_id, X, y)`` numpy triples (plain, picklable data)."""
    if tasks is None:
        return None
    return [(t.task_id, t.X.numpy().copy(), t.y.numpy().copy()) for t in tasks]


def tasks_from_arrays(arrays: list[tuple] | None) -> list[TaskData] | None:
    """Inverse of :func:`tasks_to_arrays`."""
    if arrays is None:
        return None
    return [
        TaskData(tid, torch.from_numpy(X), torch.from_numpy(y)) for tid, X, y in arrays
    ]


def _meta_name(payload: bytes) -> str:
    return _META_FILE.format(digest=hashlib.sha256(payload).hexdigest()[:32])


def _read_meta(checkpoint_path: str, name: str) -> dict[str, Any]:
    path = os.path.join(os.path.dirname(checkpoint_path), name)
    if not os.path.exists(path):
        raise SearcherSetupError(
            f"searcher checkpoint {checkpoint_path!r} references its meta-data file "
            f"{name!r}, which is not in {os.path.dirname(path) or '.'!r}; save() "
            "writes it beside the checkpoint: copy it along with the checkpoint"
        )
    with open(path, "rb") as f:
        payload = f.read()
    if _meta_name(payload) != name:
        raise SearcherSetupError(
            f"meta-data file {path!r} is truncated or corrupt (its content does not "
            "match the digest in its name); restore from an intact copy of the "
            "experiment directory"
        )
    return pickle.loads(payload)
