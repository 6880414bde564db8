"""Decide whether a Tune experiment directory can be resumed, repairing it first.

Two ways a killed Tune driver (Ray 2.60) leaves a directory that looks resumable but
is not, both found by the driver-crash stress test (C4):

1. ``Tuner.can_restore`` only looks for ``tuner.pkl``, which Tune writes before its
   first experiment state: a driver killed in between leaves a directory that
   ``can_restore`` accepts and ``Tuner.restore`` rejects (no snapshot).
2. After every step Tune copies its state files to the storage path again, file by
   file. A driver killed mid-copy leaves truncated files (seen as 0-byte
   ``search_gen_state-*.json``); Tune then logs "Restarting experiment", runs no
   trial and exits 0: an empty, "successful" run.

3. Tune writes its experiment state into a local staging directory (not
   atomically) while a background thread may be copying the previous version, so
   even a completed copy can be torn; and the files of one session can come from
   different steps.
4. Tune reads the search state from the newest name in its staging directory, which
   a restarted driver shares with the killed ones, so it can pair the experiment
   state of one session with the search state of another (seen: 2 of 16 trials
   lost).

:func:`restorable` handles these: it finds the newest *session* (the state files
that share one timestamp) whose files all load and agree (trial count = the search
generator's counter), renames the files of every newer session to ``*.corrupt`` and
copies the intact one to a new, newest stamp, so Tune restores one consistent state.
Local storage written through :func:`~raymeta.results.atomic_fs.atomic_local_filesystem`
also keeps a kill from truncating files that were complete.
"""

from __future__ import annotations

import glob
import json
import logging
import os
import shutil
import time
from pickle import load as load_state

from ray import tune

from raymeta.search.checkpoint import load_checkpoint_state

__all__ = ["newest_complete_session", "restorable"]

log = logging.getLogger(__name__)

_SESSION_FILES = (
    "experiment_state-{}.json",
    "search_gen_state-{}.json",
    "searcher-state-{}.pkl",
)


def restorable(path: str) -> bool:
    """Whether ``Tuner.restore(path)`` can resume the experiment at ``path``.

    Sets aside truncated newer sessions (see the module docstring) on the way;
    remote (``scheme://``) paths are only checked with ``Tuner.can_restore``.
    """
    if not tune.Tuner.can_restore(path):
        return False
    if "://" in path:  # remote storage: no local repair, trust Tune
        return True
    return newest_complete_session(path) is not None


def newest_complete_session(path: str, *, repair: bool = True) -> str | None:
    """Timestamp of the newest session whose state files all load completely.

    Args:
        path: The experiment directory.
        repair: Rename the files of newer, incomplete sessions to ``*.corrupt``
            and copy the intact one to a new, newest stamp (see :func:`_promote`).

    Returns:
        The session Tune will restore from, or None if there is none.
    """
    names = glob.glob(os.path.join(path, "experiment_state-*.json"))
    prefix, suffix = len("experiment_state-"), -len(".json")
    for session in sorted(os.path.basename(n)[prefix:suffix] for n in names)[::-1]:
        files = [os.path.join(path, t.format(session)) for t in _SESSION_FILES]
        if all(_loads(f) for f in files if _expected(f)) and _consistent(files):
            return _promote(path, files) if repair else session
        if repair:
            _set_aside(path, session)
    return None


def _consistent(files: list[str]) -> bool:
    """Tune's trial list and its search generator's trial counter agree."""
    experiment, generator = files[0], files[1]
    if not os.path.exists(generator):
        return True
    with open(experiment) as f:
        trials = len(json.load(f)["trial_data"])
    with open(generator, "rb") as f:
        return load_state(f).get("counter", trials) == trials


def _promote(path: str, files: list[str]) -> str:
    """Copy the intact session to a new, newest session stamp; the stamp.

    Tune restores its search state from the newest file name in its driver
    staging directory, which a restarted driver shares with the killed ones: it may
    hold a set-aside session, or a newer one a killed driver never uploaded. A copy
    newer than all of them makes Tune read one consistent session.
    """
    stamp = time.strftime("%Y-%m-%d_%H-%M-%S")
    old = os.path.basename(files[0])[len("experiment_state-") : -len(".json")]
    for file in files:
        if os.path.exists(file):
            target = file.replace(old, stamp)
            with open(file, "rb") as src, open(target + ".tmp", "wb") as dst:
                shutil.copyfileobj(src, dst)
            os.replace(target + ".tmp", target)
    log.info("resuming Tune from state session %s (copied as %s)", old, stamp)
    return stamp


def _expected(file: str) -> bool:
    # A searcher-state file exists only for searchers that save state.
    return not os.path.basename(file).startswith("searcher-state-") or os.path.exists(
        file
    )


def _loads(file: str) -> bool:
    try:
        if os.path.basename(file).startswith("experiment_state-"):
            with open(file) as f:
                return "trial_data" in json.load(f)
        # search_gen_state-*.json is a (cloud)pickle despite its name; the searcher
        # state may reference ScaMLGPSearch's meta-data file, which is checked too
        load_checkpoint_state(file)
        return True
    except Exception:  # truncated, empty or missing: not a usable session
        return False


def _set_aside(path: str, session: str) -> None:
    for file in glob.glob(os.path.join(path, f"*-{session}.*")):
        if not file.endswith(".corrupt"):
            log.warning("setting aside truncated Tune state file %s", file)
            os.replace(file, file + ".corrupt")
