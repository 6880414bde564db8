from __future__ import annotations

import pytest
import ray.train

from raymeta.errors import TrainingFailedError, TrainingSetupError
from raymeta.training.checkpointing import checkpoint_dir_name
from raymeta.training.trainer import (
    build_trainer,
    fit_trainer,
    training_failed_error,
)

RAY_MESSAGE = "Training failed due to worker errors:\n  [Rank 1]\n  " + "x" * 400


def _loop(config):  # never run: the trainers below are only built
    return None


def test_failure_names_the_newest_checkpoint_and_quotes_ray(tmp_path):
    for step in (10, 40, 20):
        (tmp_path / "run" / checkpoint_dir_name(step)).mkdir(parents=True)
    err = training_failed_error(
        ray.train.TrainingFailedError(RAY_MESSAGE),
        method="HeTRoM",
        run_name="run",
        storage_path=tmp_path,
        max_failures=2,
    )
    text = str(err)
    assert isinstance(err, TrainingFailedError) and isinstance(err, RuntimeError)
    assert text.startswith("HeTRoM run 'run' failed after using up max_failures=2 ")
    assert f"the newest checkpoint is {tmp_path / 'run' / 'checkpoint_step000000040'}"
    assert (
        "(TrainingFailedError: Training failed due to worker errors: [Rank 1]" in text
    )
    assert "x" * 300 not in text and "...)" in text  # Ray's long message is cut
    assert "\n" not in text
    assert "rerun with the same run_name and storage_path" in text


def test_failure_without_checkpoint_or_on_remote_storage_says_so(tmp_path):
    err = training_failed_error(
        RuntimeError("boom"),
        method="SAMA",
        run_name="run",
        storage_path=tmp_path,
        max_failures=0,
    )
    assert f"no checkpoint was written under {tmp_path}/run" in str(err)
    err = training_failed_error(
        RuntimeError("boom"),
        method="SAMA",
        run_name="run",
        storage_path="s3://bucket/runs/",
        max_failures=0,
    )
    assert "checkpoint_step* directory under s3://bucket/runs/run" in str(err)


class _FailingTrainer:
    """Stands in for a TorchTrainer whose ``fit`` raises (no Ray in unit tests)."""

    def __init__(self, error: Exception) -> None:
        self.error = error

    def fit(self):
        raise self.error


def test_fit_trainer_translates_only_rays_training_failure(tmp_path):
    kwargs = dict(method="SAMA", run_name="r", storage_path=tmp_path, max_failures=1)
    ray_error = ray.train.TrainingFailedError("worker died")
    with pytest.raises(TrainingFailedError, match="restore path: no checkpoint") as err:
        fit_trainer(_FailingTrainer(ray_error), **kwargs)
    assert err.value.__cause__ is ray_error
    with pytest.raises(KeyError):  # anything else is not a used-up failure budget
        fit_trainer(_FailingTrainer(KeyError("x")), **kwargs)


def test_build_trainer_rounds_the_collective_timeout_up_and_rejects_bad_values(
    tmp_path,
):
    trainer = build_trainer(
        _loop, {}, run_name="r", storage_path=tmp_path, timeout_minutes=0.001
    )
    assert trainer.backend_config.timeout_s == 1  # int() would have made it 0
    with pytest.raises(TrainingSetupError, match="timeout_minutes must be > 0"):
        build_trainer(_loop, {}, run_name="r", storage_path=tmp_path, timeout_minutes=0)


@pytest.mark.parametrize("name", ["../escaped", "/anywhere", "a/b"])
def test_a_run_name_that_escapes_the_storage_path_is_refused(tmp_path, name):
    from raymeta.errors import InvalidNameError
    from raymeta.training.checkpointing import newest_checkpoint

    with pytest.raises(InvalidNameError, match="run name"):
        build_trainer(_loop, {}, run_name=name, storage_path=tmp_path)
    with pytest.raises(InvalidNameError, match="run name"):
        newest_checkpoint(tmp_path, name)
