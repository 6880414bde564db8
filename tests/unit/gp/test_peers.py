"""The meta-BO peers of the benchmark harness: RGPE weights, every peer runs."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from raymeta.gp.benchmark import METHODS, run_bo
from raymeta.gp.peers import loo_ranking_losses, ranking_losses, rgpe_weights
from raymeta.search.fitting import fit_meta_tasks
from raymeta.tasks.bo import FAMILIES, draw_study

Y = torch.tensor([3.0, 1.0, 2.0, 5.0, 4.0], dtype=torch.float64)


def test_ranking_loss_counts_misordered_pairs():
    perfect = (2 * Y)[None]  # same order, other scale
    reversed_ = (-Y)[None]
    one_swap = torch.tensor([[3.0, 2.0, 1.0, 5.0, 4.0]], dtype=torch.float64)
    assert ranking_losses(perfect, Y).item() == 0
    assert ranking_losses(reversed_, Y).item() == 5 * 4  # every ordered pair
    assert ranking_losses(one_swap, Y).item() == 2  # (1, 2) and (2, 1)


def test_loo_loss_compares_each_prediction_with_the_other_points_only():
    assert loo_ranking_losses(Y[None], Y).item() == 0  # exact LOO predictions
    shifted = Y.clone()
    shifted[0] = 1.5  # y_0 = 3 predicted between y_1 = 1 and y_2 = 2
    assert loo_ranking_losses(shifted[None], Y).item() == 1  # only (0, 2) flips


def test_rgpe_weight_goes_to_the_model_that_ranks_the_target_best():
    gen = torch.Generator().manual_seed(0)
    S = 400
    losses = torch.stack(
        [
            torch.zeros(S),  # ranks the target perfectly in every sample
            torch.full((S,), 20.0),  # reversed
            torch.full((S,), 4.0),  # target model's leave-one-out losses
        ]
    ).double()
    np.testing.assert_allclose(rgpe_weights(losses, gen).numpy(), [1.0, 0.0, 0.0])


def test_rgpe_ties_are_split_and_weights_are_sample_shares():
    gen = torch.Generator().manual_seed(1)
    S = 4000
    a = torch.where(torch.arange(S) < S // 4, 0.0, 6.0)  # best in 1/4 of samples
    losses = torch.stack([a, torch.full((S,), 6.0), torch.full((S,), 6.0)]).double()
    w = rgpe_weights(losses, gen)
    assert w.sum().item() == pytest.approx(1.0)
    # model 0 wins 1/4 outright; the other 3/4 are three-way ties split at random
    assert w[0].item() == pytest.approx(0.25 + 0.75 / 3, abs=0.03)
    assert w[1].item() == pytest.approx(0.25, abs=0.03)


def test_weight_dilution_drops_meta_tasks_as_the_budget_runs_out():
    gen = torch.Generator().manual_seed(2)
    losses = torch.stack([torch.zeros(100), torch.ones(100)]).double()
    kept = rgpe_weights(losses, gen, num_evals=0, max_evals=10)
    assert kept.tolist() == [1.0, 0.0]  # always better than the target: kept
    dropped = rgpe_weights(losses, gen, num_evals=10, max_evals=10)
    assert dropped.tolist() == [0.0, 1.0]  # p_keep = 1 - n/T = 0


@pytest.fixture(scope="module")
def tiny_study():
    study = draw_study(FAMILIES["branin"], seed=0, num_meta=2, n_meta=8)
    return study, fit_meta_tasks(study.meta_tasks, seed=0, num_workers=0)


@pytest.mark.parametrize("method", METHODS)
def test_every_method_runs_the_same_study(tiny_study, method):
    study, states = tiny_study
    res = run_bo(study, method, states, budget=4, f_star=0.0)
    assert res.X.shape == (4, 2) and ((res.X >= 0) & (res.X <= 1)).all()
    assert np.isfinite(res.values).all() and (np.diff(res.regret) <= 0).all()
    again = run_bo(study, method, states, budget=4, f_star=0.0)
    np.testing.assert_allclose(again.X, res.X)  # seeded: the same points
