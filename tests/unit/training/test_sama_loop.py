from __future__ import annotations

import dataclasses

import pytest
import torch

from raymeta.config import parse_config
from raymeta.errors import ConfigError, TrainingSetupError
from raymeta.training.sama_loop import (
    _base_step,
    _build_run,
    _check_stop_hook,
    build_mlp,
    derive_seed,
    load_dataset,
    preflight,
    pruning_score_steps,
    state_dict_checksum,
    training_arrays,
)

TINY = dict(job="sama", dataset="blobs", hidden=[], dtype="float64", steps=5)


def test_config_collects_every_problem():
    with pytest.raises(ConfigError) as err:
        parse_config({**TINY, "steps": 0, "radius": -1.0, "base_optimizer": "rmsprop"})
    text = str(err.value)
    assert "base_optimizer: expected one of" in text and "rmsprop" in text
    with pytest.raises(ConfigError) as err:
        parse_config({**TINY, "steps": 0, "radius": -1.0, "keep_fraction": 0})
    text = str(err.value)
    assert "steps: must be >= 1" in text and "radius: must be > 0" in text
    assert "keep_fraction" in text


def test_seeds_differ_by_part_and_models_are_reproducible():
    assert derive_seed(0, 2, 0) != derive_seed(0, 2, 1) != derive_seed(1, 2, 0)
    a = build_mlp(
        [4, 8, 3], generator=torch.Generator().manual_seed(5), dtype=torch.float64
    )
    b = build_mlp(
        [4, 8, 3], generator=torch.Generator().manual_seed(5), dtype=torch.float64
    )
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))


def test_training_pools_for_the_baselines():
    cfg = parse_config(TINY)
    data = load_dataset(cfg)
    n, m = data.x_train.shape[0], data.x_meta.shape[0]
    x, y, ids = training_arrays(data, "noisy+meta")
    assert x.shape[0] == n + m and ids[-1] == n + m - 1
    x, y, ids = training_arrays(data, "clean")
    assert torch.equal(y, data.y_train_true[ids])
    x, y, ids = training_arrays(data, "meta")
    assert torch.equal(y, data.y_meta)


def test_preflight_passes_a_good_config_without_ray():
    preflight(parse_config(TINY))


def test_preflight_rejects_a_meta_module_that_cannot_reach_the_loss(monkeypatch):
    import raymeta.training.sama_loop as loop
    from raymeta.metalearn.reweighting import MetaWeightNet, UnweightedProblem

    def broken(cfg, model, dtype):
        return UnweightedProblem(), MetaWeightNet(4, dtype=dtype)

    monkeypatch.setattr(loop, "_make_meta", broken)
    with pytest.raises(TrainingSetupError, match="reaches the base loss"):
        preflight(parse_config(TINY))


def test_preflight_rejects_an_optimizer_without_adaptation(monkeypatch):
    import raymeta.training.sama_loop as loop

    monkeypatch.setattr(
        loop, "_make_optimizer", lambda cfg, params: torch.optim.RMSprop(params)
    )
    with pytest.raises(TrainingSetupError, match="no optimizer adaptation for RMSprop"):
        preflight(dataclasses.replace(parse_config(TINY)))


PRUNE = {**TINY, "application": "prune", "meta_hidden": 4}


def test_pruning_scores_are_averaged_over_the_last_evaluations():
    cfg = parse_config({**PRUNE, "steps": 1000, "eval_every": 50})
    assert pruning_score_steps(cfg) == [800, 850, 900, 950, 1000]
    cfg = parse_config({**PRUNE, "steps": 10, "eval_every": 4})
    assert pruning_score_steps(cfg) == [8, 10]  # the final step always counts
    cfg = parse_config({**PRUNE, "steps": 10, "eval_every": 20})
    assert pruning_score_steps(cfg) == [10]


def test_prune_run_checkpoints_the_teacher_and_updates_it_after_base_steps():
    preflight(parse_config(PRUNE))
    run = _build_run(
        parse_config(PRUNE),
        {},
        rank=0,
        world=1,
        device=torch.device("cpu"),
        wrap=lambda m: m,
    )
    teacher = run.state.modules["teacher"]
    assert teacher is run.problem.teacher
    before = [p.clone() for p in teacher.parameters()]
    batch = tuple(a[:8] for a in run.pool)
    _base_step(run, batch, step=1)
    seed_1 = run.problem.noise_seed
    _base_step(run, batch, step=2)
    assert run.problem.noise_seed != seed_1  # fresh Gumbel noise every step
    moved = [not torch.equal(a, b) for a, b in zip(before, teacher.parameters())]
    assert all(moved)
    checksum = state_dict_checksum(run.state.modules)
    assert checksum == state_dict_checksum(dict(run.state.modules))
    with torch.no_grad():
        next(run.meta.parameters()).add_(1e-12)
    assert state_dict_checksum(run.state.modules) != checksum


def test_stop_hook_must_name_a_meta_step():
    cfg = parse_config({**TINY, "unroll_steps": 2})
    hooks = dict(fail_rank=1, fail_marker="m")
    _check_stop_hook(cfg, {**hooks, "stop_at_step": 26})
    with pytest.raises(TrainingSetupError, match="multiple of unroll_steps=2, .*25"):
        _check_stop_hook(cfg, {**hooks, "stop_at_step": 25})
    with pytest.raises(TrainingSetupError, match="needs fail_rank and fail_marker"):
        _check_stop_hook(cfg, {"stop_at_step": 26})
