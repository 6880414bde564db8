"""cluster.yaml passes Ray's own launcher validation (offline, no cloud credentials)."""

from __future__ import annotations

import copy
import re
from pathlib import Path

import pytest
import yaml
from ray.autoscaler._private.util import prepare_config, validate_config

ROOT = Path(__file__).resolve().parents[1]
TEXT = (ROOT / "cluster.yaml").read_text()


def aws_config() -> dict:
    return yaml.safe_load(TEXT)


def gcp_config() -> dict:
    block = re.search(r"# BEGIN GCP\n(.*?)# END GCP", TEXT, re.S).group(1)
    gcp = yaml.safe_load(
        "\n".join(line.removeprefix("# ") for line in block.splitlines())
    )
    config = aws_config()
    config.update(gcp)
    return config


@pytest.mark.parametrize("make", [aws_config, gcp_config], ids=["aws", "gcp"])
def test_cluster_yaml_validates(make):
    validate_config(prepare_config(make()))


def test_setup_pins_ray_and_installs_this_checkout():
    config = aws_config()
    setup = " ".join(config["setup_commands"])
    assert '"ray[default,tune,train]==2.60.0"' in setup
    assert "wheel" not in setup and "latest" not in setup and "dev0" not in setup
    mount = next(iter(config["file_mounts"]))
    assert config["file_mounts"][mount] == "." and f"pip install -e {mount}" in setup
    assert "RAYMETA_STORAGE=s3://" in " ".join(config["docker"]["run_options"])
    assert set(config["available_node_types"]) == {"head", "cpu_worker"}


def test_validation_catches_a_broken_config():
    config = copy.deepcopy(aws_config())
    config["head_node_type"] = "no-such-type"
    with pytest.raises(ValueError, match="head_node_type"):
        validate_config(prepare_config(config))


def test_every_node_starts_with_token_auth_and_gets_the_token():
    config = aws_config()
    starts = config["head_start_ray_commands"] + config["worker_start_ray_commands"]
    ray_starts = [c for c in starts if "ray start" in c]
    assert len(ray_starts) == 2
    assert all("RAY_AUTH_MODE=token ray start" in c for c in ray_starts)
    mounts = config["file_mounts"]
    assert mounts["/home/ray/.ray/auth_token"] == "~/.ray/auth_token"
    assert "0.0.0.0" not in " ".join(ray_starts)  # job server only via the tunnel
