"""The test-only fault hooks fire once per step, on the chosen rank."""

from __future__ import annotations

import pytest

from raymeta.errors import TrainingSetupError
from raymeta.training.faults import check_hooks, maybe_fail


def test_a_fault_fires_once_per_step_and_steps_do_not_shadow_each_other(tmp_path):
    hooks = {
        "fail_at_steps": [20, 2],
        "fail_marker": str(tmp_path / "m"),
        "fail_mode": "raise",
    }
    check_hooks(hooks)
    maybe_fail(hooks, step=20, rank=0, world=2)  # not the target rank (default: last)
    with pytest.raises(RuntimeError, match="step 20"):
        maybe_fail(hooks, step=20, rank=1, world=2)
    maybe_fail(hooks, step=20, rank=1, world=2)  # once only
    with pytest.raises(RuntimeError, match="step 2"):  # step 20 done is not step 2
        maybe_fail(hooks, step=2, rank=1, world=2)


def test_hooks_are_checked():
    with pytest.raises(TrainingSetupError, match="unknown test hooks"):
        check_hooks({"fail_at_stpe": 3})
    with pytest.raises(TrainingSetupError, match="need fail_marker"):
        check_hooks({"fail_once_at_step": 3})
