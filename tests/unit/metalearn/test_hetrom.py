from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from raymeta.errors import SelectionError
from raymeta.metalearn.heads import LinearHead
from raymeta.metalearn.hetrom import (
    DualThresholds,
    LogNormalThresholds,
    NormalizedMLP,
    OracleClean,
    PlainAverage,
    RankedRange,
    RobustTaskObjective,
    band_loss,
    build_selection_rule,
    dual_objective,
    evaluate_episodic,
    hetrom_meta_step,
    rank_order,
    ranked_range_sum,
    selection_quality,
    top_k,
    trimmed,
)
from raymeta.metalearn.learners import HeadLearner
from raymeta.tasks.fewshot import EpisodeStream, GaussianClusterFamily


def reference_selected(losses: np.ndarray, ids: np.ndarray, m: int, k: int) -> set:
    order = sorted(range(len(losses)), key=lambda i: (-losses[i], ids[i]))
    return {int(ids[i]) for i in order[m:k]}


def selected_ids(sel, ids: torch.Tensor) -> set:
    return set(ids[sel.selected].tolist())


# ---------------------------------------------------------- ranked range --------


def test_selection_equals_ranks_m_plus_1_to_k_on_random_losses() -> None:
    rng = np.random.default_rng(0)
    for _ in range(200):
        b = int(rng.integers(2, 25))
        k = int(rng.integers(1, b + 1))
        m = int(rng.integers(0, k))
        losses = rng.exponential(size=b).round(1)  # rounding makes ties common
        ids = rng.permutation(100)[:b]
        sel = RankedRange(m=m, k=k).select(torch.tensor(losses), torch.tensor(ids))
        assert selected_ids(sel, torch.tensor(ids)) == reference_selected(
            losses, ids, m, k
        )
        assert (
            int(sel.dropped_top.sum()) == m and int(sel.dropped_bottom.sum()) == b - k
        )
        assert not bool((sel.selected & (sel.dropped_top | sel.dropped_bottom)).any())


def test_special_cases_plain_topk_trimmed_single_rank() -> None:
    losses = torch.tensor([5.0, 1.0, 4.0, 2.0, 3.0])
    ids = torch.arange(5)
    assert RankedRange(m=0, k=5).select(losses, ids).selected.all()
    assert selected_ids(top_k(2).select(losses, ids), ids) == {0, 2}
    assert selected_ids(trimmed(2, 5).select(losses, ids), ids) == {1, 3, 4}
    single = RankedRange(m=2, k=3).select(losses, ids)
    assert selected_ids(single, ids) == {4}  # the 3rd largest loss
    assert single.threshold_upper == 4.0 and single.threshold_lower == 2.0
    assert float(ranked_range_sum(losses, m=1, k=3)) == 7.0


def test_ties_break_by_task_id_whatever_the_input_order() -> None:
    losses = torch.ones(6)
    ids = torch.tensor([50, 10, 40, 20, 60, 30])
    sel = RankedRange(m=2, k=4).select(losses, ids)
    assert selected_ids(sel, ids) == {30, 40}  # ranks 3..4 of ids 10,20,30,40,50,60
    perm = torch.randperm(6, generator=torch.Generator().manual_seed(1))
    again = RankedRange(m=2, k=4).select(losses[perm], ids[perm])
    assert selected_ids(again, ids[perm]) == {30, 40}
    assert rank_order(losses, ids).tolist() == [1, 3, 5, 2, 0, 4]


def test_bad_ranked_range_arguments_are_clear_errors() -> None:
    with pytest.raises(SelectionError, match="0 <= m < k; got m=3, k=3"):
        RankedRange(m=3, k=3)
    with pytest.raises(SelectionError, match="k=6 exceeds the 5 tasks"):
        RankedRange(m=1, k=6).select(torch.rand(5), torch.arange(5))
    with pytest.raises(SelectionError, match="k=30 exceeds the 20 tasks"):
        DualThresholds(m=4, k=30, n=20)
    with pytest.raises(SelectionError, match="unknown selection rule 'sorted'"):
        build_selection_rule("sorted")
    with pytest.raises(SelectionError, match="needs ground-truth task kinds"):
        OracleClean().select(torch.rand(3), torch.arange(3))
    with pytest.raises(SelectionError, match="c_hi and c_lo must be > 0"):
        LogNormalThresholds(c_hi=0.0)


# ---------------------------------------------------------- dual form -----------


def saddle_value(losses: torch.Tensor, m: int, k: int) -> float:
    """min over lam of max over lam_hat of G, by enumerating breakpoints."""
    best = math.inf
    for lam in losses.tolist():
        hats = torch.relu(losses - lam).tolist() + [0.0]
        inner = max(float(dual_objective(losses, lam, h, m=m, k=k)) for h in hats)
        best = min(best, inner)
    return best


def test_dual_min_max_equals_the_ranked_range_sum() -> None:
    rng = np.random.default_rng(1)
    for _ in range(30):
        n = int(rng.integers(3, 12))
        k = int(rng.integers(2, n + 1))
        m = int(rng.integers(1, k))
        losses = torch.tensor(rng.lognormal(size=n), dtype=torch.float64)
        target = float(ranked_range_sum(losses, m=m, k=k))
        assert saddle_value(losses, m, k) == pytest.approx(target, rel=1e-10)
        ranked = torch.sort(losses, descending=True).values
        at_opt = dual_objective(
            losses, ranked[k - 1], ranked[m - 1] - ranked[k - 1], m=m, k=k
        )
        assert float(at_opt) == pytest.approx(target, rel=1e-10)


def test_streaming_thresholds_track_the_quantiles_of_a_stationary_stream() -> None:
    rng = np.random.default_rng(2)
    n, m, k = 20, 8, 18

    def draw(size: int) -> np.ndarray:
        clean = rng.lognormal(0.0, 0.5, size)
        outlier = rng.lognormal(2.0, 0.3, size)
        return np.where(rng.random(size) < 0.3, outlier, clean)

    big = draw(400_000)
    q_lower = np.quantile(big, 1 - k / n)  # upper-k/n quantile
    q_upper = np.quantile(big, 1 - m / n)  # upper-m/n quantile
    rule = DualThresholds(m=m, k=k, n=n, lr=0.01)
    ids = torch.arange(n)
    lams, uppers = [], []
    for step in range(3000):
        rule.select(torch.from_numpy(draw(n)), ids)
        if step >= 2000:
            lams.append(rule.lam)
            uppers.append(rule.lam + rule.lam_hat)
    assert np.mean(lams) == pytest.approx(q_lower, rel=0.05)
    assert np.mean(uppers) == pytest.approx(q_upper, rel=0.05)


def test_dual_selects_inside_the_band_and_round_trips_its_state() -> None:
    rule = DualThresholds(m=1, k=3, n=4, lr=0.1)
    sel = rule.select(torch.tensor([4.0, 1.0, 3.0, 2.0]), torch.arange(4))
    # initialised from this batch between ranked losses: lam halfway between
    # l_[3] = 2 and l_[4] = 1, lam + lam_hat halfway between l_[1] = 4 and l_[2] = 3,
    # so the first band keeps k - m = 2 tasks (ranks 2..3)
    assert sel.threshold_lower == 1.5 and sel.threshold_upper == 3.5
    assert sel.selected.tolist() == [False, False, True, True]
    assert sel.dropped_top.tolist() == [True, False, False, False]
    assert sel.dropped_bottom.tolist() == [False, True, False, False]
    state = rule.state_dict()
    clone = DualThresholds(m=1, k=3, n=4, lr=0.1)
    clone.load_state_dict(state)
    x = torch.tensor([0.5, 2.5, 3.5, 9.0])
    assert torch.equal(
        rule.select(x, torch.arange(4)).selected,
        clone.select(x, torch.arange(4)).selected,
    )
    assert rule.state_dict() == clone.state_dict()


def test_lognormal_thresholds_drop_robust_outliers() -> None:
    rng = np.random.default_rng(3)
    clean = rng.lognormal(0.0, 0.3, 400)
    losses = np.concatenate([clean, np.full(60, 50.0), np.full(20, 1e-4)])
    sel = LogNormalThresholds(c_hi=1.5, c_lo=2.5).select(
        torch.from_numpy(losses), torch.arange(480)
    )
    assert sel.dropped_top[400:460].all() and sel.dropped_bottom[460:].all()
    # a clean log-normal population keeps Phi(1.5) - Phi(-2.5) = 0.927 of its tasks
    kept = float(sel.selected[:400].double().mean())
    assert 0.87 < kept < 0.98
    assert sel.threshold_lower < 1.0 < sel.threshold_upper < 50.0


def test_warmup_uses_the_plain_average() -> None:
    obj = RobustTaskObjective(RankedRange(m=1, k=2), warmup_steps=3)
    losses, ids = torch.tensor([3.0, 2.0, 1.0]), torch.arange(3)
    assert obj.select(losses, ids, step=2).selected.all()
    assert obj.select(losses, ids, step=3).selected.tolist() == [False, True, False]


# ---------------------------------------------------------- meta step -----------


def tiny_setup(rule, seed: int = 0, contamination: float = 0.0, warmup: int = 0):
    family = GaussianClusterFamily(ways=3, shots=1, queries=4, nuisance_dims=8)
    stream = EpisodeStream(
        family=family,
        tasks_per_batch=8,
        seed=seed,
        noisy_fraction=contamination / 2,
        outlier_fraction=contamination / 2,
    )
    model = NormalizedMLP(
        16, hidden=(16,), out_features=8, generator=torch.Generator().manual_seed(seed)
    )
    learner = HeadLearner(model, LinearHead(out_features=3, steps=3, lr=0.5))
    opt = torch.optim.SGD(learner.parameters(), lr=0.1)
    return stream, learner, RobustTaskObjective(rule, warmup_steps=warmup), opt


def flat_params(model) -> torch.Tensor:
    return torch.cat([p.detach().flatten() for p in model.parameters()])


def test_k_equals_batch_and_m_zero_reduces_to_erm_with_identical_trajectory() -> None:
    runs = []
    for rule in (PlainAverage(), RankedRange(m=0, k=8)):
        stream, model, obj, opt = tiny_setup(rule)
        losses = []
        for step in range(5):
            rec = hetrom_meta_step(model, obj, opt, stream.batch(step))
            losses.append(rec.band_loss)
            assert rec.band_loss == pytest.approx(float(rec.losses.mean()), abs=1e-12)
        runs.append((losses, flat_params(model)))
    assert runs[0][0] == runs[1][0]
    assert torch.equal(runs[0][1], runs[1][1])


def test_band_loss_gradient_is_the_band_mean_and_splits_across_ranks() -> None:
    stream, model, _, _ = tiny_setup(PlainAverage())
    batch = stream.batch(0)
    losses = model.task_losses(batch)
    sel = RankedRange(m=2, k=7).select(losses.detach(), batch.task_index).selected
    params = list(model.parameters())
    ref = torch.autograd.grad(losses[sel].mean(), params, retain_graph=True)
    # plain average: band_loss with everything selected is the batch mean
    full = torch.autograd.grad(
        band_loss(losses, torch.ones(8, dtype=torch.bool), num_selected=8),
        params,
        retain_graph=True,
    )
    mean = torch.autograd.grad(losses.mean(), params, retain_graph=True)
    for a, b in zip(full, mean):
        assert torch.allclose(a, b, atol=1e-6)
    # two simulated ranks with 4 tasks each, gradients averaged as DDP would
    halves = [slice(0, 4), slice(4, 8)]
    per_rank = [
        torch.autograd.grad(
            band_loss(losses[h], sel[h], num_selected=int(sel.sum()), world_size=2),
            params,
            retain_graph=True,
        )
        for h in halves
    ]
    for r, a, b in zip(ref, *per_rank):
        assert torch.allclose(r, (a + b) / 2, atol=1e-6)


@pytest.mark.slow
def test_dropped_top_precision_and_recall_on_injected_contamination() -> None:
    """Spec (f) 4: 40% contamination, B=20, sort m=8 k=20, 100 warm-up steps."""
    family = GaussianClusterFamily(ways=5, shots=1, queries=15)
    stream = EpisodeStream(
        family=family,
        tasks_per_batch=20,
        seed=0,
        noisy_fraction=0.2,
        outlier_fraction=0.2,
    )
    embedding = NormalizedMLP(32, generator=torch.Generator().manual_seed(0))
    model = HeadLearner(embedding, LinearHead(out_features=5, steps=10, lr=0.5))
    obj = RobustTaskObjective(RankedRange(m=8, k=20), warmup_steps=100)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    dropped, kinds = [], []
    for step in range(250):
        rec = hetrom_meta_step(model, obj, opt, stream.batch(step))
        if step >= 100:
            dropped.append(rec.selection.dropped_top)
            kinds.append(rec.kind_code)
    precision, recall = selection_quality(torch.cat(dropped), torch.cat(kinds))
    assert precision >= 0.8 and recall >= 0.8, (precision, recall)


def test_selection_quality_counts() -> None:
    dropped = torch.tensor([True, True, False, False])
    kinds = torch.tensor([1, 0, 2, 0])  # noisy, clean, outlier, clean
    assert selection_quality(dropped, kinds) == (0.5, 0.5)


def test_task_rows_and_evaluation() -> None:
    stream, model, obj, opt = tiny_setup(RankedRange(m=2, k=6), contamination=0.5)
    rec = hetrom_meta_step(model, obj, opt, stream.batch(0))
    rows = rec.task_rows()
    assert len(rows) == 8 and sorted(r["rank_in_batch"] for r in rows) == list(range(8))
    assert [r["dropped"] for r in rows].count("top") == 2
    assert [r["dropped"] for r in rows].count("bottom") == 2
    assert {r["task_kind"] for r in rows} <= {"clean", "noisy", "outlier"}
    top_row = min(rows, key=lambda r: r["rank_in_batch"])
    assert top_row["dropped"] == "top" and top_row["loss"] == max(
        r["loss"] for r in rows
    )
    test = EpisodeStream(family=stream.family, tasks_per_batch=10, seed=0, stream=1)
    mean, ci = evaluate_episodic(model, [test.batch(0), test.batch(1)])
    assert 0.0 <= mean <= 1.0 and ci > 0.0


@pytest.mark.parametrize(
    ("m", "k", "n"), [(8, 18, 20), (2, 7, 8), (0, 5, 20), (3, 20, 20)]
)
def test_dual_thresholds_keep_k_minus_m_tasks_on_the_first_batch(m, k, n) -> None:
    # a batch of the reference size n: the first band is exactly ranks m+1..k
    losses = torch.from_numpy(np.random.default_rng(k).permutation(n) + 0.5)
    sel = DualThresholds(m=m, k=k, n=n).select(losses, torch.arange(n))
    assert int(sel.selected.sum()) == k - m
    assert int(sel.dropped_top.sum()) == m
    assert int(sel.dropped_bottom.sum()) == n - k


def test_a_meta_step_gathers_losses_indices_and_kinds_in_one_collective() -> None:
    from raymeta.metalearn.hetrom import LocalCollectives

    class Counting(LocalCollectives):
        gathers = 0

        def all_gather(self, tensor: torch.Tensor) -> torch.Tensor:
            Counting.gathers += 1
            return super().all_gather(tensor)

    stream, model, obj, opt = tiny_setup(RankedRange(m=2, k=6))
    batch = stream.batch(0)
    rec = hetrom_meta_step(model, obj, opt, batch, collectives=Counting())
    assert Counting.gathers == 1
    assert torch.equal(rec.task_index, batch.task_index)
    assert torch.equal(rec.kind_code, batch.kind_code)
    assert rec.losses.dtype == torch.float64 and len(rec.losses) == len(batch)
