"""The harness side of the line-based JSON protocol of raymeta's peer drivers.

A peer that cannot be imported here (another venv, another licence: the authors'
ScaML-GP, Syne Tune) runs as a child process, ``jobs/<peer>_driver.py``, that reads
one problem line, answers ``{"ready": ...}``, then alternates ``{"x": [...]}`` out and
``{"y": ...}`` in, and ends with ``{"done": true, "cpu_seconds": ...}`` (the full
protocol and the driver side: ``jobs/driver_protocol.py``). :class:`DriverSession`
owns one such process; :class:`DriverProposer` makes it a
:class:`raymeta.gp.peers.Proposer`, so ``run_bo`` runs it on the same studies, seeds
and noise draws as every in-process method.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import numpy as np

from raymeta.tasks.bo import Study
from raymeta.tasks.tabular import TabularStudy


def driver_problem(study: Study | TabularStudy) -> dict[str, Any]:
    """A driver's first message: dim, seed and the study's meta-data as lists."""
    return {
        "dim": study.family.dim,
        "seed": study.seed,
        "meta": [{"X": t.X.tolist(), "y": t.y.tolist()} for t in study.meta_tasks],
    }


class DriverSession:
    """One driver process for one study, single-threaded, stderr into ``log``.

    Args:
        python: The interpreter of the peer's venv.
        driver: The driver script.
        log: File that receives the driver's stderr.
        problem: The first message (see :func:`driver_problem`).
    """

    def __init__(
        self, python: str, driver: Path, log: Path, problem: dict[str, Any]
    ) -> None:
        """Start the driver, send ``problem`` and wait for ``ready``."""
        env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
        log.parent.mkdir(parents=True, exist_ok=True)
        self.log = log
        self._err = log.open("w")
        self._proc = subprocess.Popen(
            [python, str(driver)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            stderr=self._err, text=True, env=env,
        )  # fmt: skip
        self.send({**problem, "threads": 1})
        self.ready = self.receive()

    def send(self, message: dict[str, Any]) -> None:
        """Write one message line."""
        self._proc.stdin.write(json.dumps(message) + "\n")
        self._proc.stdin.flush()

    def receive(self) -> dict[str, Any]:
        """Read one message line; a driver error or exit raises with the log's path."""
        line = self._proc.stdout.readline()
        message = json.loads(line) if line else {"error": "driver exited"}
        if "error" in message:
            self.close()
            raise RuntimeError(f"peer driver: {message['error']} (see {self.log})")
        return message

    def close(self) -> None:
        """Close the pipes and wait for the process."""
        for pipe in (self._proc.stdin, self._proc.stdout):
            pipe.close()
        self._proc.wait(timeout=60)
        self._err.close()


class DriverProposer:
    """A :class:`~raymeta.gp.peers.Proposer` answered by a driver process.

    Each ``next`` tells the driver the newest observation (none on the first call)
    and returns the point it asks for; :meth:`finish` tells it the last one and
    returns its ``done`` message (its CPU seconds).
    """

    def __init__(self, session: DriverSession) -> None:
        """Wrap a started ``session``."""
        self.session = session

    def next(self, X: np.ndarray, y: np.ndarray) -> np.ndarray:
        """Tell ``y[-1]`` (if any), ask for the next unit-cube point."""
        if len(y):
            self.session.send({"y": float(y[-1])})
        return np.asarray(self.session.receive()["x"], dtype=np.float64)

    def finish(self, last_y: float) -> dict[str, Any]:
        """Tell the last observation, read ``done`` and stop the process."""
        self.session.send({"y": float(last_y)})
        done = self.session.receive()
        self.session.close()
        return done
