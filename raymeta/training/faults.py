"""Test-only fault hooks of the training skeleton (worker death, hang).

Hooks travel in the loop config under ``"hooks"`` (never in a job config), and a
marker file makes each fault happen once across restarts:

* ``fail_at_steps`` (list) / ``fail_once_at_step``: after the report of that step,
  rank ``fail_rank`` (default: the last rank) dies, by ``os._exit(1)``
  (``fail_mode="exit"``, a killed process) or by raising (``fail_mode="raise"``).
* ``stop_at_step``: right before that step's gradient collective, ``fail_rank``
  sends itself ``SIGSTOP``, so the other ranks hang in the collective until its
  timeout fails them (the marker records the PID).
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path
from typing import Any

from raymeta.errors import TrainingSetupError

__all__ = ["HOOK_KEYS", "check_hooks", "maybe_fail", "maybe_stop"]

HOOK_KEYS = (
    "fail_once_at_step",
    "fail_at_steps",
    "fail_rank",
    "fail_marker",
    "fail_mode",
    "stop_at_step",
    "debug_dir",
)


def check_hooks(hooks: dict[str, Any]) -> None:
    """Reject unknown hook keys and hooks without their marker file."""
    unknown = sorted(set(hooks) - set(HOOK_KEYS))
    if unknown:
        raise TrainingSetupError(
            f"unknown test hooks {unknown}; known: {list(HOOK_KEYS)}"
        )
    faults = ("fail_once_at_step", "fail_at_steps", "stop_at_step")
    if any(k in hooks for k in faults) and "fail_marker" not in hooks:
        raise TrainingSetupError("fault hooks need fail_marker (a file path)")


def _target(hooks: dict[str, Any], world: int) -> int:
    return int(hooks.get("fail_rank", world - 1))


def _claim(hooks: dict[str, Any], line: str, record: str) -> bool:
    """True the first time ``line`` is claimed in the marker file (then recorded)."""
    marker = Path(hooks["fail_marker"])
    if marker.exists() and any(
        done.split(" pid ")[0] == line for done in marker.read_text().splitlines()
    ):
        return False
    with marker.open("a") as f:
        f.write(record + "\n")
    return True


def maybe_fail(hooks: dict[str, Any], *, step: int, rank: int, world: int) -> None:
    """Die once on ``fail_rank`` at each fail step (after that step's report)."""
    steps = list(hooks.get("fail_at_steps", ()))
    if "fail_once_at_step" in hooks:
        steps.append(hooks["fail_once_at_step"])
    if step not in steps or _target(hooks, world) != rank:
        return
    line = f"rank {rank} exited at step {step}"
    if not _claim(hooks, line, line):
        return
    if hooks.get("fail_mode", "exit") == "raise":
        raise RuntimeError(f"injected worker failure at step {step}")
    time.sleep(1.0)  # let the controller register the checkpoint just reported
    os._exit(1)


def maybe_stop(hooks: dict[str, Any], *, step: int, rank: int, world: int) -> None:
    """``SIGSTOP`` ``fail_rank`` once at ``stop_at_step``, before a collective."""
    if hooks.get("stop_at_step") != step or _target(hooks, world) != rank:
        return
    line = f"rank {rank} stopped at step {step}"
    if not _claim(hooks, line, f"{line} pid {os.getpid()}"):
        return
    # Ray Train V2 registers a checkpoint only once every rank's report arrived:
    # without this pause a checkpoint reported a few steps earlier can be lost with
    # the stopped rank (the run then resumes from the one before).
    time.sleep(1.0)
    os.kill(os.getpid(), signal.SIGSTOP)
