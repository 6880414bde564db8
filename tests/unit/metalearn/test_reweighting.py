from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from raymeta.metalearn.reweighting import (
    MetaWeightNet,
    ReweightingProblem,
    example_weights,
)


def test_mwn_is_seeded_by_its_generator_and_outputs_weights_in_unit_interval():
    a = MetaWeightNet(hidden=8, generator=torch.Generator().manual_seed(1))
    b = MetaWeightNet(hidden=8, generator=torch.Generator().manual_seed(1))
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))
    w = a(torch.linspace(0, 10, 50).unsqueeze(-1))
    assert w.shape == (50, 1) and bool(((w > 0) & (w < 1)).all())


def test_base_loss_uses_cache_as_meta_input_and_weights_losses():
    gen = torch.Generator().manual_seed(0)
    model = torch.nn.Linear(4, 3)
    mwn = MetaWeightNet(hidden=4, generator=gen)
    x, y = torch.randn(6, 4, generator=gen), torch.randint(0, 3, (6,), generator=gen)
    problem = ReweightingProblem()
    cache = problem.stop_grad_inputs(model, (x, y))
    assert not cache.requires_grad
    losses = torch.nn.functional.cross_entropy(model(x), y, reduction="none")
    expected = (mwn(cache.unsqueeze(-1)).squeeze(-1) * losses).mean()
    assert torch.allclose(problem.base_loss(model, mwn, (x, y), cache), expected)
    fake = torch.full_like(cache, 7.0)
    other = problem.base_loss(model, mwn, (x, y), fake)
    assert not torch.allclose(other, expected)
    w = example_weights(model, mwn, x, y)
    assert torch.allclose(w, mwn(cache.unsqueeze(-1)).squeeze(-1))


def test_weight_auc_extremes_and_ties():
    from raymeta.metalearn.reweighting import weight_auc

    noisy = torch.tensor([False, False, True, True])
    assert weight_auc(torch.tensor([0.9, 0.8, 0.1, 0.2]), noisy) == 1.0
    assert weight_auc(torch.tensor([0.1, 0.2, 0.9, 0.8]), noisy) == 0.0
    assert weight_auc(torch.ones(4), noisy) == 0.5
    assert weight_auc(torch.ones(2), torch.tensor([False, False])) != 0.5  # nan


class ScaledNet(torch.nn.Module):
    """The wrapped net's weights times ``scale`` (a common factor)."""

    def __init__(self, net: torch.nn.Module, scale: float) -> None:
        super().__init__()
        self.net, self.scale = net, scale

    def forward(self, losses: torch.Tensor) -> torch.Tensor:
        return self.scale * self.net(losses)


class ConstantWeight(torch.nn.Module):
    """Every example gets the same weight ``sigmoid(b)``: λ is one common scale."""

    def __init__(self) -> None:
        super().__init__()
        self.b = torch.nn.Parameter(torch.zeros((), dtype=torch.float64))

    def forward(self, losses: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.b).expand_as(losses)


def _tiny(seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    model = torch.nn.Linear(4, 3, dtype=torch.float64)
    with torch.no_grad():  # seeded here, not by the global RNG
        model.weight.normal_(generator=gen)
        model.bias.normal_(generator=gen)
    mwn = MetaWeightNet(hidden=4, generator=gen, dtype=torch.float64)
    x = torch.randn(12, 4, generator=gen, dtype=torch.float64)
    y = torch.randint(0, 3, (12,), generator=gen)
    return model, mwn, (x, y)


def test_normalized_weights_give_a_weighted_mean_that_ignores_a_common_scale():
    model, mwn, batch = _tiny()
    plain = ScaledNet(mwn, 1.0)  # no log_weights: the raw weights are normalised
    problem = ReweightingProblem(normalize=True)
    losses = F.cross_entropy(model(batch[0]), batch[1], reduction="none")
    w = mwn(losses.detach().unsqueeze(-1)).squeeze(-1)
    got = problem.base_loss(model, plain, batch)
    assert torch.allclose(got, (w * losses).sum() / w.sum())
    for scale in (1e-3, 0.5):
        scaled = problem.base_loss(model, ScaledNet(mwn, scale), batch)
        assert torch.allclose(scaled, got)
        raw = ReweightingProblem().base_loss(model, ScaledNet(mwn, scale), batch)
        assert not torch.allclose(raw, got)


@pytest.mark.parametrize("name", ["sgd", "adam"])
def test_normalized_weights_give_no_meta_gradient_to_a_common_scale(name):
    from raymeta.metalearn.sama import sama_hypergradient

    grads = {}
    for normalize in (False, True):
        model, _, batch = _tiny(1)
        _, _, meta_batch = _tiny(2)
        meta, problem = ConstantWeight(), ReweightingProblem(normalize=normalize)
        opt = (
            torch.optim.SGD(model.parameters(), lr=0.1)
            if name == "sgd"
            else torch.optim.Adam(model.parameters(), lr=1e-2)
        )
        for step in range(3):  # Adam's first step is scale-free (g / |g|)
            opt.zero_grad()
            problem.base_loss(model, meta, _tiny(10 + step)[2]).backward()
            opt.step()
        opt.zero_grad()
        problem.base_loss(model, meta, batch).backward()
        opt.step()
        result = sama_hypergradient(
            problem, model, meta, batch, meta_batch, opt, radius=1e-4
        )
        grads[normalize] = float(result.grads[0])
    # Raw weights: "scale every weight" is a direction (small under Adam, which is
    # nearly scale-free); normalised, it is gone to rounding.
    assert abs(grads[False]) > 1e-7
    assert abs(grads[True]) < 1e-6 * abs(grads[False])


def test_normalized_mwn_weights_stay_finite_and_bounded_where_raw_weights_underflow():
    from raymeta.metalearn.reweighting import LOGIT_BOUND

    model, mwn, batch = _tiny(3)
    mwn, model, batch = mwn.float(), model.float(), (batch[0].float(), batch[1])
    with torch.no_grad():
        mwn.out.weight.mul_(1e3)
        mwn.out.bias.fill_(-300.0)  # sigmoid(logit) == 0 in float32 for every example
    losses = F.cross_entropy(model(batch[0]), batch[1], reduction="none")
    inputs = losses.detach().unsqueeze(-1)
    assert bool((mwn(inputs) == 0).all())
    problem = ReweightingProblem(normalize=True)
    loss = problem.base_loss(model, mwn, batch)
    loss.backward()
    w = torch.exp(mwn.log_weights(inputs)).squeeze(-1)
    assert torch.allclose(loss, (w * losses).sum() / w.sum())
    bound = math.exp(LOGIT_BOUND) * 1.01  # (1 + e^10) / (1 + e^-10), in float32
    assert float(w.max() / w.min()) <= bound
    assert all(torch.isfinite(p.grad).all() for p in mwn.parameters())
