from __future__ import annotations

import torch

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
