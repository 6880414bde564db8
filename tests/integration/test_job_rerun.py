"""Rerunning a finished training job says so, instead of reporting an empty attempt."""

from __future__ import annotations

from pathlib import Path

import pytest

from raymeta.config import load_config, override
from raymeta.results import ResultStore
from raymeta.runner import run_job, with_overrides

pytestmark = [pytest.mark.ray, pytest.mark.slow]
CONFIGS = Path(__file__).resolve().parents[2] / "jobs" / "configs"


def test_rerunning_a_finished_sama_run_shows_the_stored_summary(tmp_path, ray_local):
    cfg = with_overrides(
        load_config(CONFIGS / "sama_tiny.toml"),
        store=str(tmp_path / "store"),
        storage_path=str(tmp_path / "runs"),
    )
    first = run_job(cfg)
    rows = len(ResultStore(cfg.store).to_pandas("metrics"))
    again = run_job(cfg)
    assert again.details == {"already_complete": True}
    assert "already complete; stored summary: " in again.text
    assert "samples_per_s=0" not in again.text
    assert again.figures["test_acc"] == pytest.approx(first.figures["test_acc"])
    assert again.figures["attempt"] == first.figures["attempt"]
    assert len(ResultStore(cfg.store).to_pandas("metrics")) == rows


def test_rerun_without_a_store_says_no_step_ran(tmp_path, ray_local):
    # One real Train worker: local mode (num_workers=0) does not resume.
    cfg = with_overrides(
        override(load_config(CONFIGS / "sama_tiny.toml"), {"scaling.num_workers": 1}),
        storage_path=str(tmp_path / "runs"),
    )
    run_job(cfg)
    again = run_job(cfg)
    assert "already trained to step 20 (no step this attempt)" in again.text
    assert "samples_per_s" not in again.figures
