"""Live progress of a job, shown in the driver while Ray does the work.

Tune calls its callbacks in the driver, Ray Train calls its ``UserCallback`` in the
controller actor; both write a small JSON *progress file* (``{"done", "total",
"unit", "note"}``, replaced atomically), and :func:`show_progress` reads it from a
thread in the driver and prints one line whenever it changes (and a heartbeat when it
does not): step counts, elapsed time and an ETA. The same file works whichever
process the callback runs in, as long as it can reach the path (a local run).

Example:
    >>> import io, tempfile, pathlib
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "p.json"
    >>> write_progress(path, done=3, total=10, unit="trial")
    >>> read_progress(path)["done"]
    3
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TextIO

from ray import tune
from ray.train import UserCallback

__all__ = [
    "TrainProgress",
    "TuneProgress",
    "read_progress",
    "show_progress",
    "write_progress",
]


def write_progress(
    path: str | Path, *, done: int, total: int, unit: str, note: str = ""
) -> None:
    """Replace the progress file at ``path`` (atomically: temp file + rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    record = {"done": done, "total": total, "unit": unit, "note": note}
    tmp.write_text(json.dumps(record))
    os.replace(tmp, path)


def read_progress(path: str | Path) -> dict[str, Any] | None:
    """The last progress record, or None when there is none (yet)."""
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None


class TuneProgress(tune.Callback):
    """A Tune callback that records finished trials and the best value so far.

    Args:
        path: The progress file.
        total: Trials the run will have.
        metric: Metric shown as the best so far (lower is better).
    """

    def __init__(self, path: str | Path, *, total: int, metric: str) -> None:
        """Remember where to write; nothing is written before a trial ends."""
        self.path, self.total, self.metric = Path(path), total, metric
        self.done = 0
        self.best = float("inf")

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info):
        """Count the trial and keep the best metric value."""
        self.done += 1
        value = (trial.last_result or {}).get(self.metric)
        if isinstance(value, int | float) and value < self.best:
            self.best = float(value)
        best = f"best observed {self.metric} {self.best:.4g}"
        note = best if self.best < float("inf") else ""
        write_progress(
            self.path, done=self.done, total=self.total, unit="trial", note=note
        )


class TrainProgress(UserCallback):
    """A Ray Train callback that records the ``step`` of every report.

    Args:
        path: The progress file (reachable from the controller's node).
        total: Steps of the whole run.
    """

    def __init__(self, path: str | Path, *, total: int) -> None:
        """Remember where to write."""
        self.path, self.total = str(path), total

    def after_report(self, run_context: Any, metrics: list, checkpoint: Any) -> None:
        """Write rank 0's reported step."""
        step = (metrics[0] if metrics else {}).get("step")
        if isinstance(step, int):
            write_progress(self.path, done=step, total=self.total, unit="step")


@contextmanager
def show_progress(
    label: str, path: str | Path | None, out: TextIO, *, every_s: float = 1.0
) -> Iterator[None]:
    """Print ``label``, then progress lines from ``path`` until the block ends.

    A line is printed whenever the record changes, and a heartbeat (elapsed time)
    every 15 s when it does not. The block's duration is printed at the end.

    Args:
        label: What runs (printed first).
        path: The progress file the job's callback writes; None = heartbeat only.
        out: Where to print (the terminal, even while Ray's output goes elsewhere).
        every_s: How often the file is read.
    """
    start = time.monotonic()
    done = threading.Event()

    def say(text: str) -> None:
        print(text, file=out, flush=True)

    last: list[dict[str, Any] | None] = [None]

    def report_change() -> bool:
        record = read_progress(path) if path else None
        if not record or record == last[0]:
            return False
        say(f"      {_progress_line(record, time.monotonic() - start)}")
        last[0] = record
        return True

    def watch() -> None:
        quiet_since = time.monotonic()
        while not done.wait(every_s):
            now = time.monotonic()
            if report_change():
                quiet_since = now
            elif now - quiet_since >= 15:
                say(f"      ... {now - start:.0f} s")
                quiet_since = now

    say(f"==> {label}")
    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    try:
        yield
    finally:
        done.set()
        thread.join()
        report_change()  # the final count, if the last poll came before it
        say(f"    done in {time.monotonic() - start:.0f} s")


def _progress_line(record: dict[str, Any], elapsed: float) -> str:
    done, total = int(record["done"]), max(int(record["total"]), 1)
    line = (
        f"{record['unit']} {done}/{total} ({100 * done / total:.0f}%), {elapsed:.0f} s"
    )
    if 0 < done < total:
        line += f", ETA {elapsed * (total - done) / done:.0f} s"
    return line + (f", {record['note']}" if record.get("note") else "")
