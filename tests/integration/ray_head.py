"""A real Ray head started with `ray start --head` for job-submission tests.

The head gets its own temp dir, free ports and a fresh auth token, so it neither
attaches to nor disturbs any other Ray on the machine. It is stopped by signalling the
process group it was started in (never `ray stop`, which kills every Ray of the user).
"""

from __future__ import annotations

import os
import shlex
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


def _head_env(**extra: str) -> dict[str, str]:
    env = {
        **os.environ,
        "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
        "RAY_USAGE_STATS_ENABLED": "0",
        "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S": "0.1",
        **extra,
    }
    env.pop("RAY_ADDRESS", None)
    return env


def _port_args(temp_dir: str, dashboard: int) -> list[str]:
    """Free ports and an own temp dir, so the head disturbs no other Ray."""
    return [
        f"--temp-dir={temp_dir}",
        f"--port={free_port()}",
        f"--dashboard-port={dashboard}",
        f"--ray-client-server-port={free_port()}",
        f"--dashboard-agent-listen-port={free_port()}",
        f"--runtime-env-agent-port={free_port()}",
    ]


def start_head(num_cpus: int = 2, timeout_s: float = 120) -> RayHead:
    """A head with token auth on (a generated RAY_AUTH_TOKEN) and a dashboard."""
    temp_dir = tempfile.mkdtemp(prefix="rm-", dir="/tmp")
    dashboard = free_port()
    env = _head_env(
        RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=uuid.uuid4().hex + uuid.uuid4().hex
    )
    cmd = [
        str(BIN / "ray"),
        "start",
        "--head",
        "--block",
        f"--num-cpus={num_cpus}",
        *_port_args(temp_dir, dashboard),
        "--include-dashboard=true",
        "--dashboard-host=127.0.0.1",
        "--disable-usage-stats",
    ]
    return _launch(cmd, env, temp_dir, dashboard, timeout_s)


def start_head_as_in_cluster_yaml(
    start_line: str, home: Path, num_cpus: int = 1, timeout_s: float = 120
) -> RayHead:
    """Start a head with the environment and flags of ``cluster.yaml``'s command.

    ``start_line`` is the ``ray start --head ...`` command of
    ``head_start_ray_commands`` (environment assignments first). Its environment
    and flags are kept as they are, except the ports, the temp dir and the
    autoscaler config, which a test machine must choose itself. ``HOME`` is
    ``home``, so the token is read from ``home/.ray/auth_token`` as on a node.
    """
    words = shlex.split(start_line)
    assignments = [w for w in words if "=" in w and not w.startswith("-")]
    words = words[len(assignments) :]
    assert words[:3] == ["ray", "start", "--head"], words
    env = _head_env(**dict(a.split("=", 1) for a in assignments), HOME=str(home))
    for name in ("RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH"):
        env.pop(name, None)
    chosen = ("--port", "--object-manager-port", "--autoscaling-config")
    kept = [w for w in words[3:] if not w.startswith(chosen)]
    temp_dir = tempfile.mkdtemp(prefix="rm-", dir="/tmp")
    dashboard = free_port()
    cmd = [str(BIN / "ray"), "start", "--head", *kept, "--block"]
    cmd += [f"--num-cpus={num_cpus}", *_port_args(temp_dir, dashboard)]
    return _launch(cmd, env, temp_dir, dashboard, timeout_s)


def _launch(
    cmd: list[str], env: dict[str, str], temp_dir: str, dashboard: int, timeout_s: float
) -> RayHead:
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
