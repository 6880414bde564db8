from __future__ import annotations

import dataclasses
import logging

import pytest
import torch

from raymeta.errors import MetaDataError
from raymeta.gp.fit import fit_task_gp
from raymeta.gp.meta import MetaStack
from raymeta.gp.model import ScaMLGP, TargetHypers, fit_target
from raymeta.gp.propose import propose
from raymeta.tasks.data import TaskData
from tests.unit.gp.conftest import smooth, uniform

FAST = {"restarts": 1, "maxiter": 50, "raw_samples": 64, "num_restarts": 2}


@pytest.fixture(scope="module")
def target() -> TaskData:
    X = uniform(6, 2, 21)
    return TaskData("target", X, 2 * smooth(X, 0.15) + 1)


def test_same_inputs_give_the_same_proposal(meta_states, target):
    a = propose(meta_states, target, dim=2, seed=3, **FAST)
    b = propose(meta_states, target, dim=2, seed=3, **FAST)
    assert torch.equal(a.x, b.x) and a.weights == b.weights
    assert a.x.shape == (2,) and ((a.x >= 0) & (a.x <= 1)).all()
    assert a.fallback is None


def test_shuffled_tasks_and_points_give_the_same_proposal(
    meta_tasks, meta_states, target
):
    a = propose(meta_states, target, dim=2, seed=3, **FAST)
    perm = torch.randperm(target.n, generator=torch.Generator().manual_seed(0))
    shuffled_target = TaskData("target", target.X[perm], target.y[perm])
    shuffled_meta = []
    for i, task in enumerate(reversed(meta_tasks)):
        p = torch.randperm(task.n, generator=torch.Generator().manual_seed(i))
        shuffled_meta.append(TaskData(task.task_id, task.X[p], task.y[p]))
    states = [
        fit_task_gp(t, seed=i, restarts=1, maxiter=30)
        for i, t in zip((2, 1, 0), shuffled_meta)
    ]
    b = propose(states, shuffled_target, dim=2, seed=3, **FAST)
    assert torch.allclose(a.x, b.x, atol=1e-9)


def test_different_meta_data_give_a_different_proposal(meta_states, target):
    a = propose(meta_states, target, dim=2, seed=3, **FAST)
    b = propose(meta_states[:2], target, dim=2, seed=3, **FAST)
    assert not torch.allclose(a.x, b.x)


def test_first_proposal_uses_equal_weights(meta_states):
    p = propose(meta_states, None, dim=2, seed=0, **FAST)
    assert p.weights == pytest.approx({s.task_id: 1 / 3 for s in meta_states})


def test_ucb_proposal_is_the_argmin_of_mu_minus_3_sigma(meta_states, target):
    p = propose(
        meta_states,
        target,
        dim=2,
        seed=1,
        restarts=1,
        maxiter=50,
        raw_samples=256,
        num_restarts=4,
    )
    meta = MetaStack(meta_states)
    w = torch.tensor([p.weights[t] for t in meta.task_ids], dtype=torch.float64)
    ts = p.target_state
    hyp = TargetHypers(
        torch.tensor(ts["lengthscale"], dtype=torch.float64),
        torch.tensor(ts["outputscale"], dtype=torch.float64),
        torch.tensor(ts["noise"], dtype=torch.float64),
        w,
    )
    model = ScaMLGP(meta, target.sorted().X, target.sorted().y, hyp)
    g = torch.linspace(0, 1, 61, dtype=torch.float64)
    grid = torch.cartesian_prod(g, g)
    mean, cov = model.mean_and_cov(grid[:, None, :])
    lcb = mean.reshape(-1) - 3 * cov.reshape(-1).clamp_min(0).sqrt()
    m_x, c_x = model.mean_and_cov(p.x[None, None, :])
    lcb_x = float(m_x - 3 * c_x.clamp_min(0).sqrt())
    assert lcb_x <= float(lcb.min()) + 1e-6
    assert p.acq_value == pytest.approx(-lcb_x, abs=1e-8)


@pytest.mark.parametrize("acq", ["ei", "logei"])
def test_ei_variants_propose_in_the_cube(meta_states, target, acq):
    p = propose(meta_states, target, dim=2, seed=0, acquisition=acq, **FAST)
    assert ((p.x >= 0) & (p.x <= 1)).all() and p.fallback is None


def test_pending_points_are_fantasised_deterministically(meta_states, target):
    pending = uniform(2, 2, 30)
    a = propose(meta_states, target, dim=2, seed=3, pending=pending, **FAST)
    b = propose(meta_states, target, dim=2, seed=3, pending=pending, **FAST)
    c = propose(meta_states, target, dim=2, seed=3, **FAST)
    assert torch.equal(a.x, b.x)
    assert not torch.allclose(a.x, c.x)


def test_avoid_keeps_the_proposal_away_from_failed_points(meta_states, target):
    first = propose(meta_states, target, dim=2, seed=3, **FAST)
    again = propose(meta_states, target, dim=2, seed=3, avoid=first.x[None], **FAST)
    assert torch.dist(again.x, first.x) > 1e-6


def test_no_meta_tasks_is_plain_gp_bo(target):
    p = propose([], target, dim=2, seed=3, **FAST)
    hyp = fit_target(
        MetaStack([]),
        target.sorted().X,
        target.sorted().y,
        seed=3,
        restarts=1,
        maxiter=50,
    )
    assert p.weights == {} and p.target_state["lengthscale"] == pytest.approx(
        hyp.lengthscale.tolist()
    )


def test_broken_meta_state_is_dropped_with_a_warning(meta_states, target, caplog):
    broken = dataclasses.replace(
        meta_states[0], alpha=torch.full_like(meta_states[0].alpha, torch.nan)
    )
    with caplog.at_level(logging.WARNING, logger="raymeta.gp.propose"):
        p = propose([broken, *meta_states[1:]], target, dim=2, seed=3, **FAST)
    assert p.fallback == f"drop_task:{broken.task_id}"
    assert p.weights[broken.task_id] == 0.0
    assert "fallback" in caplog.text
    assert ((p.x >= 0) & (p.x <= 1)).all()


def test_non_pd_target_covariance_falls_back_to_target_only(meta_states, caplog):
    X = torch.tensor([[0.5, 0.5]] * 3, dtype=torch.float64)  # repeated points
    broken = dataclasses.replace(
        meta_states[1], chol=torch.full_like(meta_states[1].chol, torch.inf)
    )
    with caplog.at_level(logging.WARNING, logger="raymeta.gp.propose"):
        p = propose(
            [broken],
            TaskData("t", X, torch.tensor([1.0, 2.0, 3.0])),
            dim=2,
            seed=0,
            **FAST,
        )
    assert p.fallback in {"drop_task:m1", "target_only"}
    assert torch.isfinite(p.x).all()


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"dim": 3}, "meta-task 'm0' has dimension 2, expected dim=3"),
        ({"acquisition": "pi"}, "acquisition must be one of"),
        ({"pending": torch.zeros(2, 3)}, r"pending must be a k x 2 tensor"),
        ({"avoid": torch.zeros(2)}, r"avoid must be a k x 2 tensor"),
    ],
)
def test_bad_inputs_raise_meta_data_error(meta_states, kwargs, match):
    args = {"dim": 2, "seed": 0, **kwargs}
    with pytest.raises(MetaDataError, match=match):
        propose(meta_states, None, **args)


def test_target_of_wrong_dimension_is_rejected(meta_states):
    t = TaskData("tgt", uniform(3, 3, 0), torch.zeros(3))
    with pytest.raises(MetaDataError, match="target task 'tgt' has dimension 3"):
        propose(meta_states, t, dim=2, seed=0)


def test_matern_proposal_optimises_without_falling_back(meta_tasks, target):
    """Matern-5/2 meta and target GPs: finite acquisition gradients (the kernel's
    sqrt at zero distance), so the optimiser runs and nothing falls back."""
    states = [
        fit_task_gp(t, seed=i, restarts=1, maxiter=30, kernel="matern52")
        for i, t in enumerate(meta_tasks)
    ]
    for data in (None, target):
        p = propose(states, data, dim=2, seed=3, kernel="matern52", **FAST)
        assert p.fallback is None and torch.isfinite(torch.tensor(p.acq_value))
    with pytest.raises(MetaDataError, match="kernel must be one of"):
        propose(states, target, dim=2, seed=3, kernel="cubic", **FAST)
