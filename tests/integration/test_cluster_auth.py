"""cluster.yaml's head start command really turns token authentication on.

The head is started with the environment and flags of ``head_start_ray_commands``
(only ports, temp dir and the autoscaler config are the test's own), with ``HOME``
holding the token file that ``file_mounts`` copies to every node.
"""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest
import yaml

from tests.integration.ray_head import RayHead, start_head_as_in_cluster_yaml

pytestmark = [pytest.mark.ray, pytest.mark.slow]
ROOT = Path(__file__).resolve().parents[2]


def head_start_line() -> str:
    config = yaml.safe_load((ROOT / "cluster.yaml").read_text())
    return config["head_start_ray_commands"][-1].split(";")[-1].strip()


def home_with_token(path: Path, token: str | None) -> Path:
    (path / ".ray").mkdir(parents=True)
    if token is not None:
        (path / ".ray" / "auth_token").write_text(token)
    return path


def job_list(head: RayHead, env: dict[str, str]):
    import subprocess

    return subprocess.run(
        [str(Path(head.env["PATH"].split(":")[0]) / "ray"), "job", "list"]
        + ["--address", head.dashboard_url],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_head_started_as_in_cluster_yaml_rejects_clients_without_the_token(tmp_path):
    token = uuid.uuid4().hex + uuid.uuid4().hex
    head = start_head_as_in_cluster_yaml(
        head_start_line(), home_with_token(tmp_path / "node", token)
    )
    try:
        stranger = {k: v for k, v in head.env.items() if not k.startswith("RAY_AUTH")}
        stranger["HOME"] = str(home_with_token(tmp_path / "stranger", None))
        denied = job_list(head, stranger)
        out = denied.stdout + denied.stderr
        assert denied.returncode != 0, out[-2000:]
        assert "authentication" in out.lower() or "unauthorized" in out.lower(), out
        # The job client on the user's machine: the same token file, token mode.
        client = stranger | {
            "RAY_AUTH_MODE": "token",
            "HOME": str(home_with_token(tmp_path / "client", token)),
        }
        accepted = job_list(head, client)
        assert accepted.returncode == 0, (accepted.stdout + accepted.stderr)[-2000:]
        wrong = client | {"HOME": stranger["HOME"], "RAY_AUTH_TOKEN": "0" * 64}
        assert job_list(head, wrong).returncode != 0
    finally:
        head.stop()


def test_a_node_without_the_token_refuses_to_start(tmp_path):
    with pytest.raises(RuntimeError, match="(?i)token"):
        head = start_head_as_in_cluster_yaml(
            head_start_line(), home_with_token(tmp_path / "node", None)
        )
        head.stop()
