"""The driver side of raymeta's peer protocol: line-based JSON over stdin/stdout.

Standard library only, so every peer driver imports it from its own venv (the
driver's directory is on ``sys.path`` when it runs as a script). A driver builds
one :class:`Peer` from the problem and hands it to :func:`serve`, which speaks the
protocol, one JSON object per line:

- in: ``{"dim": d, "seed": s, "budget": T, "threads": 1, "meta": [{"X": [[...],
  ...], "y": [...]}, ...], ...}`` (meta X in the unit cube; a driver may read more
  keys, e.g. ``"searcher"``);
- out: ``{"ready": true, "meta_fit_cpu_seconds": ...}`` once the peer is built;
- then T times: out ``{"x": [x_0, ..., x_{d-1}]}`` (unit cube, parameters
  ``x0..x{d-1}`` in that order), in ``{"y": observed}``;
- out: ``{"done": true, "cpu_seconds": ..., "import_cpu_seconds": ..., **report}``.

On a malformed message or a failure the driver writes ``{"error": "..."}`` and exits
with status 1. Library output goes to stderr, so stdout carries the protocol only.
The harness side is ``jobs/driver_client.py``.
"""

from __future__ import annotations

import contextlib
import json
import sys
import time
import traceback
from collections.abc import Callable
from typing import IO, Any, Protocol


class Peer(Protocol):
    """One study's optimiser, asked and told one point at a time."""

    def ask(self) -> list[float]:
        """The next unit-cube point, ``d`` floats in ``x0..x{d-1}`` order."""
        ...

    def tell(self, y: float) -> None:
        """The observation at the point last asked."""
        ...

    def report(self) -> dict[str, Any]:
        """Extra fields of the ``done`` message (fitted hyperparameters, ...)."""
        ...


def names(dim: int) -> list[str]:
    """The fixed parameter order ``x0..x{dim-1}``."""
    return [f"x{j}" for j in range(dim)]


def send(out: IO[str], message: dict[str, Any]) -> None:
    """Write one message line."""
    out.write(json.dumps(message) + "\n")
    out.flush()


def receive(inp: IO[str]) -> dict[str, Any]:
    """Read one message line."""
    line = inp.readline()
    if not line:
        raise EOFError("harness closed stdin")
    return json.loads(line)


def run(
    build: Callable[[dict[str, Any]], Peer],
    inp: IO[str],
    out: IO[str],
    import_cpu_seconds: float,
) -> None:
    """One study: read the problem, build the peer, ask/tell ``budget`` times."""
    problem = receive(inp)
    cpu0 = time.process_time()
    peer = build(problem)
    send(out, {"ready": True, "meta_fit_cpu_seconds": time.process_time() - cpu0})
    for _ in range(int(problem["budget"])):
        send(out, {"x": [float(v) for v in peer.ask()]})
        peer.tell(float(receive(inp)["y"]))
    done = {
        "done": True,
        "cpu_seconds": time.process_time(),
        "import_cpu_seconds": import_cpu_seconds,
    }
    send(out, {**done, **peer.report()})


def serve(build: Callable[[dict[str, Any]], Peer], import_cpu_seconds: float) -> None:
    """Run one study on stdin/stdout; any failure is reported, then exit 1."""
    protocol = sys.stdout
    try:
        with contextlib.redirect_stdout(sys.stderr):
            run(build, sys.stdin, protocol, import_cpu_seconds)
    except Exception as exc:  # report any failure to the harness, then exit 1
        traceback.print_exc()
        send(protocol, {"error": f"{type(exc).__name__}: {exc}"})
        sys.exit(1)
