"""SAMA's worker program without Ray: config, setup, steps, checks, rows."""

from __future__ import annotations

import pytest
import torch

from raymeta.config import parse_config
from raymeta.errors import ConfigError, TrainingSetupError
from raymeta.metalearn.models import AutocastForward, build_mlp
from raymeta.tasks.sources import builtin_sama_data, training_arrays
from raymeta.training.fit import preflight
from raymeta.training.sama_program import (
    SamaProgram,
    check_stop_hook,
    pruning_score_steps,
)
from raymeta.training.sama_setup import derive_seed
from raymeta.training.skeleton import WorkerContext, run_program

TINY = dict(
    job="sama",
    steps=5,
    data={"dataset": "blobs"},
    model={"hidden": [], "dtype": "float64"},
    scaling={"num_workers": 0},
)


def program(cfg, data=None) -> SamaProgram:
    ctx = WorkerContext(cfg, 0, 1, torch.device("cpu"), {}, data or {}, in_ray=False)
    return SamaProgram(ctx)


def test_config_collects_every_problem():
    with pytest.raises(ConfigError) as err:
        parse_config({**TINY, "steps": 0, "radius": -1.0, "keep_fraction": 0})
    text = str(err.value)
    assert "steps: must be >= 1" in text and "radius: must be > 0" in text
    assert "keep_fraction" in text


def test_normalize_weights_reaches_the_problem_and_is_refused_where_it_cannot_apply():
    prog = program(parse_config({**TINY, "normalize_weights": True}))
    assert prog.problem.normalize is True
    assert program(parse_config(TINY)).problem.normalize is False
    for bad in ({"application": "prune"}, {"problem": "collections:OrderedDict"}):
        with pytest.raises(ConfigError, match="normalize_weights: applies to"):
            parse_config({**TINY, "normalize_weights": True, **bad})


def test_seeds_differ_by_part_and_models_are_reproducible():
    assert derive_seed(0, 2, 0) != derive_seed(0, 2, 1) != derive_seed(1, 2, 0)
    a, b = (
        build_mlp(
            [4, 8, 3], generator=torch.Generator().manual_seed(5), dtype=torch.float64
        )
        for _ in range(2)
    )
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))


def test_training_pools_keep_the_example_ids_of_the_weights_table():
    cfg = parse_config({**TINY, "data": {"dataset": "digits"}})
    data = builtin_sama_data(cfg.data, seed=0, dtype=torch.float32)
    n, m = data.x_train.shape[0], data.x_meta.shape[0]
    x, y, ids = training_arrays(data, "noisy")
    assert torch.equal(ids, data.train_ids)  # what keep_ids_path files hold
    x, y, ids = training_arrays(data, "noisy+meta")
    assert x.shape[0] == n + m and len(set(ids.tolist())) == n + m
    x, y, ids = training_arrays(data, "clean")
    assert torch.equal(y, data.y_train_true[~data.is_noisy])
    x, y, ids = training_arrays(data, "meta")
    assert torch.equal(y, data.y_meta)


def test_preflight_passes_a_good_config_without_ray():
    assert preflight(parse_config(TINY)) == ({}, {})


def test_preflight_rejects_a_problem_whose_meta_module_cannot_reach_the_loss():
    from raymeta.metalearn.reweighting import UnweightedProblem

    cfg = parse_config(TINY)
    cfg = type(cfg)(**{**cfg.__dict__, "problem": UnweightedProblem()})
    with pytest.raises(TrainingSetupError, match="reaches the base loss"):
        preflight(cfg)


def test_an_unsupported_optimizer_is_a_config_error():
    with pytest.raises(ConfigError, match=r"optim.name: expected one of \['sgd'"):
        parse_config({**TINY, "optim": {"name": "rmsprop"}})


PRUNE = {**TINY, "application": "prune", "meta_hidden": 4}


def test_pruning_scores_are_averaged_over_the_last_evaluations():
    cfg = parse_config({**PRUNE, "steps": 1000, "eval_every": 50})
    assert pruning_score_steps(cfg) == [800, 850, 900, 950, 1000]
    cfg = parse_config({**PRUNE, "steps": 10, "eval_every": 4})
    assert pruning_score_steps(cfg) == [8, 10]  # the final step always counts
    cfg = parse_config({**PRUNE, "steps": 10, "eval_every": 20})
    assert pruning_score_steps(cfg) == [10]


def test_prune_run_checkpoints_the_teacher_and_updates_it_after_base_steps():
    run = program(parse_config(PRUNE))
    teacher = run.state.modules["teacher"]
    assert teacher is run.problem.teacher
    before = [p.clone() for p in teacher.parameters()]
    run.step(1)
    seed_1 = run.problem.noise_seed
    run.step(2)
    assert run.problem.noise_seed != seed_1  # fresh Gumbel noise every step
    assert all(not torch.equal(a, b) for a, b in zip(before, teacher.parameters()))


def test_stop_hook_must_name_a_meta_step():
    cfg = parse_config({**TINY, "unroll_steps": 2})
    check_stop_hook(cfg, {"stop_at_step": 26})
    with pytest.raises(TrainingSetupError, match="multiple of unroll_steps=2, .*25"):
        check_stop_hook(cfg, {"stop_at_step": 25})


def test_in_process_runs_are_deterministic_and_count_one_meta_step_per_unroll():
    cfg = parse_config({**TINY, "steps": 6, "unroll_steps": 2, "report_every": 2})
    a = run_program(SamaProgram, {"config": cfg, "in_ray": False})
    b = run_program(SamaProgram, {"config": cfg, "in_ray": False})
    assert a["meta_steps"] == 3 and [h["step"] for h in a["history"]] == [2, 4, 6]
    assert (a["base_params"] == b["base_params"]).all()
    assert (a["meta_params"] == b["meta_params"]).all()


def test_bf16_autocast_trains_float32_master_weights_close_to_fp32():
    base = {**TINY, "model": {"hidden": [16]}, "steps": 4, "meta_hidden": 4}
    fp32 = program(parse_config(base))
    bf16 = program(
        parse_config({**base, "model": {"hidden": [16], "precision": "bf16"}})
    )
    assert isinstance(bf16.model, AutocastForward)
    x = fp32.pool[0][:4]
    with torch.no_grad():
        assert bf16.model(x).dtype == torch.float32
        gap = (bf16.model(x) - fp32.model(x)).abs().max()
    assert 0 < float(gap) < 0.05  # bf16 matmuls: close, not identical
    for step in range(1, 5):
        fp, bf = fp32.step(step), bf16.step(step)
    assert all(p.dtype == torch.float32 for p in bf16.model.parameters())
    assert abs(bf["meta_loss"] - fp["meta_loss"]) < 0.05
    flat = [
        torch.cat([p.reshape(-1) for p in r.meta.parameters()]) for r in (fp32, bf16)
    ]
    assert float(torch.nn.functional.cosine_similarity(*flat, dim=0)) > 0.99
