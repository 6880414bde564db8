"""Shipped job configs validate; jobs fail early, in one line, on bad input (no Ray)."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from raymeta.cli import main
from raymeta.config import load_config
from raymeta.runner import job_main

ROOT = Path(__file__).resolve().parents[2]
CONFIGS = sorted((ROOT / "jobs" / "configs").glob("*.toml"))


def test_there_are_configs_for_every_job():
    assert {load_config(p).job for p in CONFIGS} == {"tune_scamlgp", "sama", "hetrom"}


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_every_shipped_config_validates(path):
    assert load_config(path).job


def test_validate_command_accepts_all_shipped_configs(capsys):
    assert main(["validate", *map(str, CONFIGS)]) == 0
    assert capsys.readouterr().out.count(": ok") == len(CONFIGS)


def one_line_error(capsys) -> str:
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err
    return err


def test_typo_in_a_config_key_is_one_clear_line(tmp_path, capsys):
    bad = tmp_path / "bad.toml"
    text = (ROOT / "jobs/configs/sama_tiny.toml").read_text()
    bad.write_text(text.replace("meta_lr =", "meta_lrr ="))
    assert main(["validate", str(bad)]) == 2
    assert "meta_lrr: unknown key; did you mean 'meta_lr'?" in one_line_error(capsys)
    assert job_main("sama", "", [str(bad)]) == 2
    assert "did you mean 'meta_lr'" in one_line_error(capsys)


def test_unwritable_store_fails_before_anything_runs(tmp_path, capsys):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    code = main(
        [
            "run",
            str(ROOT / "jobs/configs/sama_tiny.toml"),
            "--store",
            str(blocker / "store"),
        ]
    )
    assert code == 2
    assert "cannot create results store root" in one_line_error(capsys)


def test_unreachable_cluster_address_is_one_clear_line(monkeypatch, capsys):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed once the block ends: nothing listens there
    monkeypatch.setenv("RAY_ADDRESS", f"127.0.0.1:{port}")
    assert main(["run", str(ROOT / "jobs/configs/sama_tiny.toml")]) == 2
    assert "cannot reach the Ray cluster at RAY_ADDRESS" in one_line_error(capsys)
    assert job_main("sama", "", [str(ROOT / "jobs/configs/sama_tiny.toml")]) == 2
    assert "cannot reach the Ray cluster" in one_line_error(capsys)


def test_wrong_job_for_script(capsys):
    assert job_main("hetrom", "", [str(ROOT / "jobs/configs/sama_tiny.toml")]) == 2
    assert "expected job = 'hetrom', got 'sama'" in one_line_error(capsys)
