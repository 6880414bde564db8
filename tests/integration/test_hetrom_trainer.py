"""HeTRoM on TorchTrainer: 1 vs 2 workers, and resume after a killed worker.

One uninterrupted 2-worker run of ``jobs/configs/hetrom_tiny.toml`` (6 steps, 8 tasks
per global meta-batch, dual thresholds, checkpoints every 2 steps) is shared by both
tests. Every checkpoint also asserts that parameters and lambda/lambda-hat are
bit-identical on all ranks (the run would fail otherwise).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from raymeta.config import load_config, override
from raymeta.results import ResultStore
from raymeta.training import fit
from raymeta.training.hetrom_program import build_hetrom_components

pytestmark = [pytest.mark.ray, pytest.mark.slow]

TINY = Path(__file__).resolve().parents[2] / "jobs" / "configs" / "hetrom_tiny.toml"


def tiny_config(tmp: Path, num_workers: int, max_failures: int = 0):
    changes = {
        "storage.storage_path": str(tmp / "runs"),
        "storage.store": str(tmp / "store"),
        "scaling.timeout_minutes": 2.0,
        "scaling.num_workers": num_workers,
        "scaling.max_failures": max_failures,
    }
    return override(load_config(TINY), changes)


@pytest.fixture(scope="module")
def reference(ray_local, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("hetrom-ref")
    result = fit(tiny_config(tmp, num_workers=2), run_name="ref2")
    assert result.error is None
    return result.return_value


def test_one_and_two_workers_select_and_step_identically(reference, tmp_path):
    result = fit(tiny_config(tmp_path, num_workers=1), run_name="one")
    one, two = result.return_value, reference
    assert len(one["episodes"]) == len(two["episodes"]) == 6
    for a, b in zip(one["episodes"], two["episodes"]):
        assert a["selected"] == b["selected"], a["step"]
        np.testing.assert_allclose(a["losses"], b["losses"], atol=1e-5)
    # selection is not trivial after the 2 warm-up steps
    assert any(len(h["selected"]) < 8 for h in two["episodes"][2:])
    np.testing.assert_allclose(one["last_grad"], two["last_grad"], atol=1e-5)
    np.testing.assert_allclose(one["params"], two["params"], atol=1e-5)
    for name in ("lam", "lam_hat"):
        assert one["objective_state"][name] == pytest.approx(
            two["objective_state"][name], abs=1e-5
        )


def test_killed_worker_resumes_from_checkpoint_with_the_same_result(
    reference, tmp_path
):
    marker = tmp_path / "failed-once"
    cfg = tiny_config(tmp_path, num_workers=2, max_failures=1)
    hooks = {"fail_once_at_step": 3, "fail_mode": "raise", "fail_marker": str(marker)}
    result = fit(cfg, run_name="faulty", hooks=hooks)
    assert result.error is None and marker.exists()
    out = result.return_value
    assert out["attempt"] == 2 and out["restored_from_step"] == 2
    assert [h["step"] for h in out["episodes"]] == [3, 4, 5, 6]
    for a, b in zip(out["episodes"], reference["episodes"][2:]):
        assert a["selected"] == b["selected"] and a["losses"] == b["losses"]
    assert out["params"] == reference["params"]  # bit-identical after resuming
    assert out["objective_state"] == reference["objective_state"]
    assert out["test_metric"] == reference["test_metric"]
    stats = ResultStore(cfg.store).to_pandas("task_stats")
    assert len(stats) == 6 * 8  # re-run steps were not appended twice
    assert not stats.duplicated(["step", "task_id"]).any()
    assert set(stats["dropped"]) <= {"none", "top", "bottom"}


def test_maml_trains_identically_on_one_and_two_workers(tmp_path):
    """MAML's vmapped second-order inner loop inside Ray workers, on gloo."""
    learner, runs = "maml", []
    for workers in (1, 2):
        cfg = override(
            tiny_config(tmp_path / str(workers), num_workers=workers),
            {"learner": learner, "steps": 4, "inner_steps": 1, "inner_lr": 0.3},
        )
        result = fit(cfg, run_name=f"{learner}-{workers}")
        assert result.error is None
        runs.append(result.return_value)
    one, two = runs
    for a, b in zip(one["episodes"], two["episodes"]):
        assert a["selected"] == b["selected"], a["step"]
    np.testing.assert_allclose(one["params"], two["params"], atol=1e-5)
    start = build_hetrom_components(cfg).learner.parameters()
    start_flat = np.concatenate([p.detach().numpy().ravel() for p in start])
    assert np.abs(start_flat - np.asarray(two["params"])).max() > 1e-4  # it trained
    assert 0.0 <= two["test_metric"] <= 1.0
