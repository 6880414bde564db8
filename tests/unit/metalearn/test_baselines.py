from __future__ import annotations

import pytest
import torch

from raymeta.errors import TrainingSetupError
from raymeta.metalearn.baselines import (
    cg_hypergradient,
    neumann_hypergradient,
    unrolled_hypergradient,
)
from raymeta.metalearn.reweighting import MetaWeightNet, ReweightingProblem
from tests.unit.metalearn.sama_fixtures import QuadMeta, QuadModel, quadratic, rel_err


def test_unrolled_one_step_equals_lookahead_closed_form():
    lr = 0.05
    problem, lam = quadratic(dim=6, meta_dim=2, condition=10.0, seed=0)
    theta0 = torch.zeros(6, dtype=torch.float64)
    model, meta = QuadModel(theta0), QuadMeta(lam)
    got = unrolled_hypergradient(problem, model, meta, [None], None, lr=lr)
    theta1 = theta0 - lr * (problem.A @ theta0 - problem.B @ lam)
    want = lr * problem.B.T @ (theta1 - problem.target)
    assert rel_err(got, [want]) < 1e-12
    assert torch.equal(model.theta.detach(), theta0)  # model untouched


def test_unrolled_converges_to_exact_ift_from_the_optimum():
    problem, lam = quadratic(dim=6, meta_dim=2, condition=10.0, seed=1)
    exact, theta_star = problem.exact_hypergradient(lam)
    model, meta = QuadModel(theta_star), QuadMeta(lam)
    lr = 1.0 / torch.linalg.eigvalsh(problem.A).max().item()
    errors = [
        rel_err(
            unrolled_hypergradient(problem, model, meta, [None] * k, None, lr=lr),
            [exact],
        )
        for k in (1, 10, 100)
    ]
    assert errors == sorted(errors, reverse=True) and errors[-1] < 1e-3


class RegularisedReweighting(ReweightingProblem):
    def base_loss(self, forward, meta, batch, cache=None):
        params = forward.parameters() if hasattr(forward, "parameters") else []
        base = super().base_loss(forward, meta, batch, cache)
        return base + 0.05 * sum(p.pow(2).sum() for p in params)


@pytest.mark.slow
def test_cg_and_neumann_agree_on_a_network_at_its_optimum():
    gen = torch.Generator().manual_seed(0)
    model = torch.nn.Linear(4, 3, dtype=torch.float64)
    mwn = MetaWeightNet(hidden=6, generator=gen, dtype=torch.float64)
    x = torch.randn(32, 4, generator=gen, dtype=torch.float64)
    batch = (x, torch.randint(0, 3, (32,), generator=gen))
    problem = RegularisedReweighting()
    opt = torch.optim.LBFGS(model.parameters(), max_iter=500, tolerance_grad=1e-12)

    def closure():
        opt.zero_grad()
        loss = problem.base_loss(model, mwn, batch)
        loss.backward()
        return loss

    opt.step(closure)
    grads = torch.autograd.grad(
        problem.base_loss(model, mwn, batch),
        list(model.parameters()),
        create_graph=True,
    )
    flat = torch.cat([g.reshape(-1) for g in grads])
    hessian = torch.stack(
        [
            torch.cat(
                [
                    h.reshape(-1)
                    for h in torch.autograd.grad(
                        flat[i], list(model.parameters()), retain_graph=True
                    )
                ]
            )
            for i in range(flat.numel())
        ]
    )
    lam_max = torch.linalg.eigvalsh(hessian).max().item()
    cg = cg_hypergradient(problem, model, mwn, batch, batch, steps=60)
    neu = neumann_hypergradient(
        problem, model, mwn, batch, batch, steps=300, alpha=1.0 / lam_max
    )
    neu_short = neumann_hypergradient(
        problem, model, mwn, batch, batch, steps=2, alpha=1.0 / lam_max
    )
    assert rel_err(neu, cg) < 1e-4
    assert rel_err(neu_short, cg) > rel_err(neu, cg)


def test_zero_steps_is_rejected():
    problem, lam = quadratic(dim=3, meta_dim=1, condition=1.0, seed=0)
    model, meta = QuadModel(torch.zeros(3, dtype=torch.float64)), QuadMeta(lam)
    with pytest.raises(TrainingSetupError, match="steps must be >= 1"):
        cg_hypergradient(problem, model, meta, None, None, steps=0)
    with pytest.raises(TrainingSetupError, match="steps must be >= 1"):
        unrolled_hypergradient(problem, model, meta, [], None, lr=0.1)
