"""Bring your own model, data and problem: resolution and the up-front checks."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from raymeta.config import ModelSection, parse_config
from raymeta.errors import TrainingSetupError
from raymeta.metalearn.models import SmallCNN, build_model
from raymeta.results import ResultStore
from raymeta.training.fit import preflight
from raymeta.training.hetrom_program import HeTRoMProgram
from raymeta.training.sama_program import SamaProgram
from raymeta.training.skeleton import run_program
from tests.unit.training import byo_fixtures as user

FIX = "tests.unit.training.byo_fixtures"
SAMA = dict(
    job="sama",
    steps=6,
    batch_size=32,
    meta_batch_size=16,
    eval_every=3,
    report_every=3,
    checkpoint_every=3,
    meta_hidden=8,
    scaling={"num_workers": 0},
)


def sama(**sections):
    return parse_config({**SAMA, **sections})


def test_builtin_cnn_takes_flat_or_square_images_and_is_seeded():
    a = build_model(
        ModelSection(factory="cnn"), in_shape=(28, 28), out_features=5, seed=1
    )
    b = build_model(
        ModelSection(factory="cnn"), in_shape=(784,), out_features=5, seed=1
    )
    assert isinstance(a, SmallCNN) and len(a.features) == 16  # 28 -> 14 -> 7 -> 3 -> 1
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))
    assert a(torch.rand(3, 1, 28, 28)).shape == (3, 5) == b(torch.rand(3, 784)).shape
    with pytest.raises(TrainingSetupError, match="square grey images"):
        build_model(ModelSection(factory="cnn"), in_shape=(10,), out_features=2, seed=0)


def test_a_user_factory_builds_the_same_weights_for_the_same_seed_only():
    section = ModelSection(factory=f"{FIX}:user_cnn", kwargs={"width": 4})
    state = torch.get_rng_state()
    a, b, c = (
        build_model(section, in_shape=(64,), out_features=10, seed=s) for s in (3, 3, 4)
    )
    assert torch.equal(torch.get_rng_state(), state)  # global RNG untouched
    assert isinstance(a, user.UserCNN) and a.conv.out_channels == 4
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))
    assert not torch.equal(a.conv.weight, c.conv.weight)
    callable_section = ModelSection(factory=user.user_cnn)
    assert isinstance(
        build_model(callable_section, in_shape=(), out_features=0, seed=0), user.UserCNN
    )


@pytest.mark.parametrize(
    ("factory", "kwargs", "message"),
    [
        ("no_such_pkg.models:make", {}, "module 'no_such_pkg.models' does not import"),
        (f"{FIX}:missing", {}, "has no attribute 'missing'"),
        (f"{FIX}:not_a_module", {}, "returned str, not a torch.nn.Module"),
        (f"{FIX}:user_cnn", {"widht": 3}, "rejected kwargs ['widht']"),
    ],
)
def test_a_bad_model_factory_is_refused_before_any_worker(factory, kwargs, message):
    cfg = sama(data={"dataset": "blobs"}, model={"factory": factory, "kwargs": kwargs})
    with pytest.raises(
        TrainingSetupError, match=message.replace("[", r"\[").replace("]", r"\]")
    ):
        preflight(cfg)


def test_user_arrays_and_torch_datasets_train_a_user_cnn_in_process(tmp_path):
    splits = user.digits_splits()
    as_torch = {k: user.DigitsDataset(v) for k, v in splits.items()}
    cfg = sama(
        model={"factory": f"{FIX}:user_cnn"},
        problem=f"{FIX}:UserProblem",
        storage={"store": str(tmp_path / "store"), "run_name": "byo"},
    )
    for data in (splits, as_torch):
        loop_data, ray_sets = preflight(cfg, data)
        assert ray_sets == {} and loop_data["num_classes"] == 10
        out = run_program(
            SamaProgram, {"config": cfg, "data": loop_data, "in_ray": False}
        )
        assert out["steps"] == 6 and out["meta_steps"] == 6
    weights = ResultStore(tmp_path / "store").to_pandas("data_weights")
    # the second (identical) run appended nothing: keyed writes
    assert len(weights) == len(splits["train"][1])
    assert sorted(weights["example_id"]) == sorted(splits["train"][2].tolist())


def test_user_data_from_an_import_path_in_the_data_section():
    cfg = sama(data={"dataset": f"{FIX}:digits_splits", "kwargs": {"meta": 30}})
    loop_data, _ = preflight(cfg)
    assert len(loop_data["meta"]) == 30 and len(loop_data["test"]) == 200


def _splits_with(**changes):
    splits = user.digits_splits()
    splits.update(changes)
    return splits


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"train": _splits_with()["train"]}, "must be a dict with 'train' and 'meta'"),
        (
            _splits_with(
                train={"x": np.zeros((300, 64), np.float32), "y": np.zeros(300)}
            ),
            "no column 'label'",
        ),
        (
            _splits_with(meta=(np.zeros((5, 64), np.float32), np.full(5, 12))),
            "labels go up to 12",
        ),
        (
            _splits_with(meta=(np.zeros((5, 64), np.float32), np.zeros(5, np.float32))),
            "labels must be a 1-D integer column",
        ),
        (
            _splits_with(train=tuple(a[:40] for a in user.digits_splits()["train"])),
            "the meta set has 50 examples, more than the training set \\(40\\)",
        ),
    ],
)
def test_bad_user_data_is_refused_before_any_worker(data, message):
    cfg = sama(model={"factory": f"{FIX}:user_cnn"})  # 10 outputs
    with pytest.raises(TrainingSetupError, match=message):
        preflight(cfg, data)


def test_a_user_problem_without_the_losses_is_refused():
    cfg = sama(data={"dataset": "blobs"}, problem=f"{FIX}:NoLosses")
    with pytest.raises(TrainingSetupError, match="lacks \\['base_loss', 'meta_loss'"):
        preflight(cfg)


HETROM = dict(
    job="hetrom",
    steps=3,
    tasks_per_batch=4,
    m=1,
    k=3,
    warmup_steps=1,
    inner_steps=2,
    embedding_dim=8,
    test_tasks=8,
    test_batch=4,
    report_every=1,
    checkpoint_every=3,
    scaling={"num_workers": 0},
)


def test_hetrom_draws_episodes_from_a_users_labelled_data_with_a_cnn():
    cfg = parse_config(
        {
            **HETROM,
            "data": {"dataset": f"{FIX}:digits_labelled", "ways": 3, "shots": 2},
            "model": {"factory": "cnn", "hidden": []},
        }
    )
    loop_data, _ = preflight(cfg)
    out = run_program(
        HeTRoMProgram, {"config": cfg, "data": loop_data, "in_ray": False}
    )
    assert 0 <= out["test_metric"] <= 1 and len(out["episodes"]) == 3
    train, test = (s.family.data.classes for s in _streams(cfg, loop_data))
    assert not set(train.tolist()) & set(test.tolist())  # classes split, disjoint


def _streams(cfg, loop_data):
    from raymeta.training.hetrom_program import build_hetrom_components

    c = build_hetrom_components(cfg, loop_data["labelled"])
    return c.train_stream, c.test_stream


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"ways": 9}, "the train split has 7 classes, fewer than ways=9"),
        ({"ways": 4}, "the test split has 3 classes, fewer than ways=4"),
        (
            {"ways": 2, "shots": 100, "queries": 100},
            "fewer than shots \\+ queries = 200",
        ),
        ({"dataset": "gausian_clusters"}, "neither a task family"),
    ],
)
def test_impossible_hetrom_episodes_are_refused_before_any_worker(data, message):
    section = {"dataset": f"{FIX}:digits_labelled", **data}
    cfg = parse_config({**HETROM, "data": section})
    with pytest.raises(TrainingSetupError, match=message):
        preflight(cfg)
