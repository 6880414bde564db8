"""SAMA and HeTRoM on a CUDA worker (nccl), fp32 and bf16 autocast.

Marked ``gpu``: CI (CPU only) deselects these with ``-m "not gpu"``; they run where
an accelerator is lent.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from raymeta.config import load_config, override
from raymeta.training import fit

pytestmark = [pytest.mark.ray, pytest.mark.gpu, pytest.mark.slow]
CONFIGS = Path(__file__).resolve().parents[2] / "jobs" / "configs"


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
@pytest.mark.parametrize("name", ["sama_tiny.toml", "hetrom_tiny.toml"])
def test_one_gpu_worker_trains_and_resumes(ray_local, tmp_path, name, precision):
    changes = {
        "scaling.num_workers": 1,
        "scaling.use_gpu": True,
        "model.dtype": "float32",
        "model.precision": precision,
        "storage.storage_path": str(tmp_path / "runs"),
        "storage.store": str(tmp_path / "store"),
    }
    cfg = override(load_config(CONFIGS / name), changes)
    out = fit(cfg, run_name="gpu").return_value
    assert out["steps"] == cfg.steps and out["world_size"] == 1
    again = fit(override(cfg, {"steps": cfg.steps + 2}), run_name="gpu").return_value
    assert again["restored_from_step"] == cfg.steps


@pytest.mark.parametrize("learner", ["anil", "maml"])
def test_meta_learners_train_on_a_gpu_worker(ray_local, tmp_path, learner):
    changes = {
        "learner": learner,
        "inner_steps": 1,
        "scaling.num_workers": 1,
        "scaling.use_gpu": True,
        "storage.storage_path": str(tmp_path / "runs"),
        "storage.store": str(tmp_path / "store"),
    }
    cfg = override(load_config(CONFIGS / "hetrom_tiny.toml"), changes)
    out = fit(cfg, run_name=f"gpu-{learner}").return_value
    assert out["steps"] == cfg.steps and 0.0 <= out["test_metric"] <= 1.0
