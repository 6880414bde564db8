"""Screening meta-tasks at large M, and exactness of the batched model at M = 1,000."""

from __future__ import annotations

import pytest
import torch

from raymeta.gp.fit import fit_task_gp
from raymeta.gp.meta import MetaStack
from raymeta.gp.model import ScaMLGP, TargetHypers, normalisation
from raymeta.gp.propose import propose
from raymeta.gp.screen import likelihood_gains, screen_tasks
from raymeta.tasks.data import TaskData
from tests.unit.gp.conftest import smooth, uniform, unrelated

FAST = {"restarts": 1, "maxiter": 30, "raw_samples": 64, "num_restarts": 2}


def _screen(meta, X, y, k):
    start = TargetHypers.default(X.shape[1], 0)
    return screen_tasks(
        meta,
        X,
        y,
        k,
        lengthscale=start.lengthscale,
        outputscale=float(start.outputscale),
        noise=float(start.noise),
        scale=normalisation(meta, y)[1],
    )


def test_nothing_is_screened_at_or_below_the_limit(meta_states):
    meta = MetaStack(meta_states)
    X = uniform(6, 2, 9)
    assert _screen(meta, X, smooth(X), len(meta)) is meta
    assert _screen(meta, X, smooth(X), None) is meta
    target = TaskData("target", X, smooth(X))
    kw = dict(dim=2, seed=4, **FAST)
    capped = propose(meta_states, target, max_fit_tasks=len(meta), **kw)
    free = propose(meta_states, target, max_fit_tasks=None, **kw)
    assert torch.equal(capped.x, free.x) and capped.weights == free.weights
    assert capped.screened == []


def test_screening_keeps_the_tasks_that_explain_the_target():
    related = [
        TaskData(f"rel{i}", X, smooth(X) + 0.01 * i)
        for i, X in enumerate(uniform(12, 2, 100 + i) for i in range(3))
    ]
    noise = [
        TaskData(f"unrel{i}", X, unrelated(X + 0.1 * i))
        for i, X in enumerate(uniform(12, 2, 200 + i) for i in range(30))
    ]
    states = [fit_task_gp(t, seed=0, restarts=0, maxiter=30) for t in related + noise]
    meta = MetaStack(states)
    X = uniform(8, 2, 7)
    kept = _screen(meta, X, smooth(X), 3)
    assert sorted(kept.task_ids) == ["rel0", "rel1", "rel2"]
    gains = dict(
        zip(
            meta.task_ids,
            likelihood_gains(
                meta,
                X,
                smooth(X) / normalisation(meta, smooth(X))[1],
                torch.ones(2, dtype=torch.float64),
                0.1,
                1e-3,
                normalisation(meta, smooth(X))[1],
            ).tolist(),
            strict=True,
        )
    )
    assert min(gains[f"rel{i}"] for i in range(3)) > max(
        gains[f"unrel{i}"] for i in range(30)
    )
    prop = propose(
        states, TaskData("t", X, smooth(X)), dim=2, seed=0, max_fit_tasks=3, **FAST
    )
    assert len(prop.screened) == 30 and all(
        i.startswith("unrel") for i in prop.screened
    )
    assert all(prop.weights[i] == 0.0 for i in prop.screened)


@pytest.mark.slow
def test_a_thousand_tiny_tasks_give_the_exact_posterior():
    # Batched over groups of equal size, pruning enabled: the posterior must equal
    # the sum of the 1,000 individual meta posteriors conditioned by hand.
    tasks = [
        TaskData(f"tiny{i}", X, smooth(X, 0.01 * i) * (1 + 0.001 * i))
        for i, X in enumerate(uniform(3 + i % 2, 2, 1000 + i) for i in range(1000))
    ]
    states = [
        fit_task_gp(t, seed=i, restarts=0, maxiter=5) for i, t in enumerate(tasks)
    ]
    meta = MetaStack(states)
    X, Z = uniform(5, 2, 1), uniform(4, 2, 2)
    y = smooth(X)
    w = torch.linspace(0.5, 1.5, len(meta), dtype=torch.float64) / len(meta)
    hypers = TargetHypers(
        torch.full((2,), 0.4, dtype=torch.float64),
        torch.tensor(0.2, dtype=torch.float64),
        torch.tensor(1e-3, dtype=torch.float64),
        w,
    )
    pruned = ScaMLGP(meta, X, y, hypers)  # default threshold: nothing falls below
    assert bool(pruned.keep.all())
    mean, cov = pruned.mean_and_cov(Z[None])
    # by hand: prior over X and Z as the weighted sum of each task's posterior
    A = torch.cat([X, Z])
    prior_mean = torch.zeros(len(A), dtype=torch.float64)
    prior_cov = torch.zeros(len(A), len(A), dtype=torch.float64)
    for state, wm in zip(meta.states, w, strict=True):
        mu, sigma = MetaStack([state]).posterior(A)
        prior_mean += wm * mu[0]
        prior_cov += wm**2 * sigma[0]
    _, S = normalisation(meta, y)
    from raymeta.gp.kernel import scaled_rbf

    prior_cov += S**2 * scaled_rbf(A, A, hypers.lengthscale, hypers.outputscale)
    n = len(X)
    Kxx = prior_cov[:n, :n] + S**2 * hypers.noise * torch.eye(n, dtype=torch.float64)
    Kzx, Kzz = prior_cov[n:, :n], prior_cov[n:, n:]
    sol = torch.linalg.solve(Kxx, torch.cat([(y - prior_mean[:n])[:, None], Kzx.T], 1))
    want_mean = prior_mean[n:] + Kzx @ sol[:, 0]
    want_cov = Kzz - Kzx @ sol[:, 1:]
    assert torch.allclose(mean[0], want_mean, atol=1e-9, rtol=1e-9)
    assert torch.allclose(cov[0], want_cov, atol=1e-9, rtol=1e-9)
