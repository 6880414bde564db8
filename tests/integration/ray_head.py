"""A real Ray head started with `ray start --head` for job-submission tests.

The head gets its own temp dir, free ports and a fresh auth token, so it neither
attaches to nor disturbs any other Ray on the machine. It is stopped by signalling the
process group it was started in (never `ray stop`, which kills every Ray of the user).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass
from pathlib import Path

BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class RayHead:
    process: subprocess.Popen
    dashboard_url: str
    env: dict[str, str]
    temp_dir: str

    def ray(
        self, *args: str, timeout_s: float = 600, check: bool = True
    ) -> subprocess.CompletedProcess:
        """Run the `ray` CLI against this head (token auth on)."""
        return subprocess.run(
            [str(BIN / "ray"), *args],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout_s,
            check=check,
        )

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=10)
            except (
                subprocess.TimeoutExpired
            ):  # Ray drains for up to 30 s; not needed here
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=30)


def start_head(num_cpus: int = 2, timeout_s: float = 120) -> RayHead:
    temp_dir = tempfile.mkdtemp(prefix="rm-", dir="/tmp")
    dashboard = free_port()
    env = {
        **os.environ,
        "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
        "RAY_AUTH_MODE": "token",
        "RAY_AUTH_TOKEN": uuid.uuid4().hex + uuid.uuid4().hex,
        "RAY_USAGE_STATS_ENABLED": "0",
        "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S": "0.1",
    }
    env.pop("RAY_ADDRESS", None)
    cmd = [
        str(BIN / "ray"),
        "start",
        "--head",
        "--block",
        f"--num-cpus={num_cpus}",
        f"--temp-dir={temp_dir}",
        f"--port={free_port()}",
        "--include-dashboard=true",
        "--dashboard-host=127.0.0.1",
        f"--dashboard-port={dashboard}",
        f"--ray-client-server-port={free_port()}",
        f"--dashboard-agent-listen-port={free_port()}",
        f"--runtime-env-agent-port={free_port()}",
        "--disable-usage-stats",
    ]
    log = open(Path(temp_dir) / "head.log", "w")  # closed when the head process ends
    process = subprocess.Popen(
        cmd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
    )
    head = RayHead(process, f"http://127.0.0.1:{dashboard}", env, temp_dir)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(
                f"ray start failed: {(Path(temp_dir) / 'head.log').read_text()[-3000:]}"
            )
        try:
            with urllib.request.urlopen(f"{head.dashboard_url}/api/version", timeout=2):
                return head
        except urllib.error.HTTPError:  # e.g. 401 without a token: the server is up
            return head
        except OSError:
            time.sleep(1)
    head.stop()
    raise RuntimeError("the Ray head's job server did not come up in time")
