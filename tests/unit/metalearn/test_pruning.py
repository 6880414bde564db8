from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from raymeta.errors import ConfigError
from raymeta.metalearn.pruning import (
    ExampleScores,
    PruningProblem,
    el2n_scores,
    keep_mask,
    loss_scores,
    random_scores,
)
from raymeta.metalearn.sama import sama_hypergradient


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


def test_el2n_and_loss_scores():
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


def test_sama_moves_only_the_scores_of_examples_in_the_base_batch():
    gen = torch.Generator().manual_seed(0)
    model = torch.nn.Linear(3, 2, dtype=torch.float64)
    scores = ExampleScores(10, dtype=torch.float64)
    x = torch.randn(4, 3, generator=gen, dtype=torch.float64)
    batch = (x, torch.tensor([0, 1, 1, 0]), torch.tensor([2, 5, 7, 9]))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    problem = PruningProblem()
    (grad,) = sama_hypergradient(problem, model, scores, batch, batch, opt).grads
    touched = grad != 0
    assert touched.tolist() == [i in (2, 5, 7, 9) for i in range(10)]
