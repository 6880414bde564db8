from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from raymeta.errors import ConfigError
from raymeta.metalearn.problem import trainable_parameters, validate_problem
from raymeta.metalearn.pruning import (
    PruningNet,
    PruningProblem,
    el2n_scores,
    ema_update_,
    gumbel_keep_weights,
    keep_mask,
    loss_scores,
    make_teacher,
    pruning_features,
    pruning_scores,
    random_scores,
)
from raymeta.metalearn.sama import finite_difference_mixed_product

D64 = torch.float64


def test_keep_mask_keeps_top_fraction_with_stable_ties():
    scores = torch.tensor([0.5, 0.9, 0.5, 0.1, 0.5])
    assert keep_mask(scores, keep_fraction=0.4).tolist() == [
        True,
        True,
        False,
        False,
        False,
    ]
    assert keep_mask(scores, keep_fraction=1.0).all()
    with pytest.raises(ConfigError, match="keep_fraction must be in"):
        keep_mask(scores, keep_fraction=0.0)


def test_el2n_loss_random_and_table_scores():
    model = torch.nn.Linear(2, 3)
    x, y = torch.randn(5, 2), torch.tensor([0, 1, 2, 0, 1])
    probs = F.softmax(model(x), -1)
    want = (probs - F.one_hot(y, 3)).norm(dim=-1)
    assert torch.allclose(el2n_scores(model, x, y), want)
    assert torch.allclose(
        loss_scores(model, x, y), F.cross_entropy(model(x), y, reduction="none")
    )
    r = random_scores(4, torch.Generator().manual_seed(0))
    assert torch.equal(r, random_scores(4, torch.Generator().manual_seed(0)))


def test_hard_gumbel_weights_are_binary_straight_through_and_seeded():
    logits = torch.tensor([[2.0, 0.0], [0.0, 0.0], [-1.0, 1.0]], requires_grad=True)
    w = gumbel_keep_weights(logits, tau=0.5, generator=torch.Generator().manual_seed(3))
    assert set(w.tolist()) <= {0.0, 1.0}
    again = gumbel_keep_weights(
        logits, tau=0.5, generator=torch.Generator().manual_seed(3)
    )
    assert torch.equal(w, again)
    # straight-through: the gradient is that of the soft relaxation (same noise)
    (grad,) = torch.autograd.grad(w.sum(), logits)
    gen = torch.Generator().manual_seed(3)
    u = torch.rand(logits.shape, generator=gen)
    soft = F.softmax((logits + (-torch.log(-torch.log(u)))) / 0.5, -1)[:, 0]
    (want,) = torch.autograd.grad(soft.sum(), logits)
    assert torch.allclose(grad, want, atol=1e-6)
    assert grad.abs().sum() > 0


def test_hard_gumbel_keeps_with_the_softmax_probability():
    # Gumbel-max: P(keep) = softmax(logits)[keep], whatever tau is.
    logits = torch.tensor([[1.0, 0.0]]).expand(20000, 2)
    w = gumbel_keep_weights(logits, tau=0.5, generator=torch.Generator().manual_seed(0))
    want = float(torch.sigmoid(torch.tensor(1.0)))
    assert abs(float(w.mean()) - want) < 0.015


def test_ema_teacher_update():
    gen = torch.Generator().manual_seed(0)
    model = torch.nn.Linear(3, 2)
    teacher = make_teacher(model)
    assert not any(p.requires_grad for p in teacher.parameters())
    before = [p.clone() for p in teacher.parameters()]
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=gen))
    ema_update_(teacher, model, decay=0.9)
    for t, t0, m in zip(teacher.parameters(), before, model.parameters()):
        assert torch.allclose(t, 0.9 * t0 + 0.1 * m)


def _setup(seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    model = torch.nn.Sequential(
        torch.nn.Linear(4, 6, dtype=D64),
        torch.nn.Tanh(),
        torch.nn.Linear(6, 3, dtype=D64),
    )
    teacher = make_teacher(model)
    with torch.no_grad():
        for p in teacher.parameters():
            p.add_(0.3 * torch.randn(p.shape, generator=gen, dtype=D64))
    net = PruningNet(8, generator=gen, dtype=D64)
    x = torch.randn(12, 4, generator=gen, dtype=D64)
    batch = (x, torch.randint(0, 3, (12,), generator=gen), torch.arange(12))
    return model, teacher, net, batch


def test_features_and_deterministic_scores():
    model, teacher, net, (x, y, _) = _setup()
    feats = pruning_features(model, teacher, x, y)
    logp = F.log_softmax(model(x), -1)
    assert torch.allclose(feats[:, 0], -logp[torch.arange(12), y])
    target = F.softmax(teacher(x), -1)
    assert torch.allclose(feats[:, 1], -(target * logp).sum(-1))
    scores = pruning_scores(model, teacher, net, x, y)
    assert torch.allclose(scores, F.softmax(net(feats), -1)[:, 0])
    assert torch.equal(scores, pruning_scores(model, teacher, net, x, y))


def test_problem_noise_is_fixed_by_the_seed_and_lambda_reaches_the_loss():
    model, teacher, net, batch = _setup()
    problem = PruningProblem(teacher, noise_seed=11)
    a = problem.base_loss(model, net, batch)
    assert torch.equal(a, problem.base_loss(model, net, batch))
    losses = {problem.base_loss(model, net, batch).item()}
    for seed in range(12, 20):
        problem.noise_seed = seed
        losses.add(problem.base_loss(model, net, batch).item())
    assert len(losses) > 1  # other seeds give other keep/drop masks
    validate_problem(problem, model, net, batch, batch)
    with pytest.raises(ConfigError, match="tau must be > 0"):
        PruningProblem(teacher, tau=0.0)


class _FreshNoiseEveryCall(PruningProblem):
    """Negative control: a new Gumbel draw on every base_loss call."""

    def base_loss(self, forward, meta, batch, cache=None):
        self.noise_seed += 1
        return super().base_loss(forward, meta, batch, cache)


def _mixed_product(problem, model, net, batch, p):
    """Autograd −∂_λ[(∇_θ L_base)·p] with the noise and features of the FD passes."""
    cache = problem.stop_grad_inputs(model, batch)
    params = trainable_parameters(model)
    loss = problem.base_loss(model, net, batch, cache)
    grads = torch.autograd.grad(loss, params, create_graph=True)
    dot = sum((g * d).sum() for g, d in zip(grads, p))
    return torch.autograd.grad(-dot, trainable_parameters(net))


@pytest.mark.parametrize("problem_cls", [PruningProblem, _FreshNoiseEveryCall])
def test_finite_difference_passes_share_the_gumbel_noise(problem_cls):
    model, teacher, net, batch = _setup(1)
    gen = torch.Generator().manual_seed(5)
    p = [torch.randn(q.shape, generator=gen, dtype=D64) for q in model.parameters()]
    problem = problem_cls(teacher, noise_seed=3)
    fd, _ = finite_difference_mixed_product(problem, model, net, batch, p, radius=1e-3)
    problem.noise_seed = 3
    exact = _mixed_product(PruningProblem(teacher, noise_seed=3), model, net, batch, p)
    # the FD is (g+ − g−)/(2ε) = +∂_λ[(∇_θ L)·p] = −(exact)
    fd_flat = torch.cat([g.reshape(-1) for g in fd])
    want = -torch.cat([g.reshape(-1) for g in exact])
    rel = float((fd_flat - want).norm() / want.norm())
    if problem_cls is PruningProblem:
        assert rel < 1e-5
    else:
        assert rel > 1e-2  # different masks in the two passes break the estimate
