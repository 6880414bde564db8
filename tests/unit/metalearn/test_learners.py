"""Meta-learners under one interface: MAML, ANIL, ProtoNet, the linear head."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from torch import nn
from torch.func import functional_call

from raymeta.errors import TrainingSetupError
from raymeta.metalearn.heads import LinearHead, per_task_loss
from raymeta.metalearn.hetrom import (
    LocalCollectives,
    RankedRange,
    RobustTaskObjective,
    hetrom_meta_step,
)
from raymeta.metalearn.learners import ANIL, LEARNERS, MAML, HeadLearner, build_learner
from raymeta.metalearn.models import SmallCNN
from raymeta.tasks.episodes import EpisodeBatch
from raymeta.tasks.fewshot import EpisodeStream, GaussianClusterFamily

FAMILY = GaussianClusterFamily(ways=3, shots=2, queries=3, nuisance_dims=4)


def batch64(tasks: int = 3, step: int = 0, contamination: float = 0.0) -> EpisodeBatch:
    stream = EpisodeStream(
        family=FAMILY, tasks_per_batch=tasks, noisy_fraction=contamination
    )
    b = stream.batch(step)
    return dataclasses.replace(
        b, support_x=b.support_x.double(), query_x=b.query_x.double()
    )


def mlp(out: int = 3, seed: int = 0) -> nn.Module:
    net = nn.Sequential(nn.Linear(12, 6), nn.Tanh(), nn.Linear(6, out)).double()
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in net.parameters():
            p.uniform_(-0.6, 0.6, generator=gen)
    return net


def total_loss(learner: nn.Module, batch: EpisodeBatch) -> torch.Tensor:
    return learner.task_losses(batch).sum()


def finite_difference(learner, batch, param, index, eps=1e-6) -> float:
    with torch.no_grad():
        flat = param.view(-1)
        old = float(flat[index])
        flat[index] = old + eps
        up = float(total_loss(learner, batch))
        flat[index] = old - eps
        down = float(total_loss(learner, batch))
        flat[index] = old
    return (up - down) / (2 * eps)


def test_maml_second_order_gradient_matches_finite_differences() -> None:
    learner = MAML(mlp(), steps=2, lr=0.3)
    batch = batch64()
    params = list(learner.parameters())
    grads = torch.autograd.grad(total_loss(learner, batch), params)
    gen = torch.Generator().manual_seed(1)
    for p, g in zip(params, grads):
        for i in torch.randint(p.numel(), (3,), generator=gen).tolist():
            fd = finite_difference(learner, batch, p, i)
            assert g.view(-1)[i].item() == pytest.approx(fd, rel=1e-5, abs=1e-8)


def test_first_order_maml_is_the_query_gradient_at_the_adapted_parameters() -> None:
    net = mlp()
    batch = batch64(tasks=2)
    fo = MAML(net, steps=1, lr=0.3, first_order=True)
    so = MAML(net, steps=1, lr=0.3)
    params = dict(net.named_parameters())
    g_fo = torch.autograd.grad(total_loss(fo, batch), list(params.values()))
    g_so = torch.autograd.grad(total_loss(so, batch), list(params.values()))
    expected = [torch.zeros_like(p) for p in params.values()]
    for t in range(2):  # by hand: theta' = theta - lr * grad L_support(theta)
        sx, sy = batch.support_x[t], batch.support_y[t]
        qx, qy = batch.query_x[t], batch.query_y[t]
        support = per_task_loss(net(sx)[None], sy[None], "classification")[0]
        step = torch.autograd.grad(support, list(params.values()))
        fast = {
            n: (p - 0.3 * g).detach().requires_grad_()
            for (n, p), g in zip(params.items(), step)
        }
        query = per_task_loss(
            functional_call(net, fast, (qx,))[None], qy[None], "classification"
        )[0]
        for e, g in zip(expected, torch.autograd.grad(query, list(fast.values()))):
            e += g
    for a, b in zip(g_fo, expected):
        assert torch.allclose(a, b, atol=1e-10)
    assert any(not torch.allclose(a, b, atol=1e-6) for a, b in zip(g_fo, g_so))


@pytest.mark.parametrize("first_order", [False, True])
def test_anil_head_initialisation_receives_gradient(first_order: bool) -> None:
    head = LinearHead(out_features=3, steps=3, lr=0.5, first_order=first_order)
    anil = ANIL(mlp(out=6), head, embedding_dim=6)
    loss = total_loss(anil, batch64())
    g_w, g_b, g_backbone = torch.autograd.grad(
        loss, [anil.weight, anil.bias, anil.backbone[0].weight]
    )
    assert float(g_w.abs().sum()) > 0 and float(g_b.abs().sum()) > 0
    assert float(g_backbone.abs().sum()) > 0
    # from its zero start ANIL is the zero-initialised linear head exactly
    plain = HeadLearner(anil.backbone, head)
    assert torch.allclose(anil.task_losses(batch64()), plain.task_losses(batch64()))


def test_anil_second_order_head_gradient_matches_finite_differences() -> None:
    anil = ANIL(mlp(out=6), LinearHead(out_features=3, steps=2, lr=0.5), 6)
    with torch.no_grad():
        anil.weight.normal_(generator=torch.Generator().manual_seed(0))
    batch = batch64()
    (g,) = torch.autograd.grad(total_loss(anil, batch), [anil.weight])
    for i in (0, 7, 17):
        fd = finite_difference(anil, batch, anil.weight, i)
        assert g.view(-1)[i].item() == pytest.approx(fd, rel=1e-5, abs=1e-8)


def test_maml_batchnorm_statistics_are_per_episode() -> None:
    net = SmallCNN(
        4, 3, channels=4, blocks=2, generator=torch.Generator().manual_seed(0)
    )
    learner = MAML(net, steps=1, lr=0.1)
    assert not any("running" in n for n, _ in learner.named_buffers())
    family = GaussianClusterFamily(ways=3, shots=2, queries=3, nuisance_dims=8)
    batch = EpisodeStream(family=family, tasks_per_batch=4).batch(0)
    alone = dataclasses.replace(
        batch,
        **{
            n: getattr(batch, n)[:1]
            for n in "support_x support_y query_x query_y".split()
        },
        task_index=batch.task_index[:1],
        kind_code=batch.kind_code[:1],
    )
    together = learner.task_losses(batch)[0]
    assert torch.allclose(together, learner.task_losses(alone)[0], atol=1e-6)


def test_predict_keeps_no_graph_and_every_learner_fits_the_interface() -> None:
    batch = batch64()
    for name in sorted(LEARNERS):
        learner = build_learner(
            name, mlp(out=3 if name == "maml" else 6), ways=3, embedding_dim=6
        )
        out = learner.predict(batch)
        assert out.shape == (3, 9, 3) and not out.requires_grad
        assert learner.task_losses(batch).shape == (3,)


def setup(name: str, seed: int = 0):
    net = mlp(out=3 if name == "maml" else 6, seed=seed)
    learner = build_learner(name, net, ways=3, steps=2, lr=0.3, embedding_dim=6)
    opt = torch.optim.SGD(learner.parameters(), lr=0.1)
    return learner, RobustTaskObjective(RankedRange(m=2, k=5)), opt


@pytest.mark.parametrize("name", sorted(LEARNERS))
def test_each_learner_steps_with_one_all_gather(name: str) -> None:
    class Counting(LocalCollectives):
        gathers = 0

        def all_gather(self, tensor: torch.Tensor) -> torch.Tensor:
            Counting.gathers += 1
            return super().all_gather(tensor)

    learner, obj, opt = setup(name)
    before = [p.detach().clone() for p in learner.parameters()]
    for step in range(3):
        batch = batch64(tasks=6, step=step, contamination=0.5)
        hetrom_meta_step(learner, obj, opt, batch, collectives=Counting())
    assert Counting.gathers == 3
    after = list(learner.parameters())
    assert any(not torch.equal(a, b) for a, b in zip(before, after))


@pytest.mark.parametrize("name", ["linear", "maml"])
def test_the_ranked_range_step_is_invariant_to_task_order(name: str) -> None:
    batch = batch64(tasks=6, contamination=0.5)
    perm = torch.tensor([4, 1, 5, 0, 3, 2])
    shuffled = dataclasses.replace(
        batch,
        **{
            n: getattr(batch, n)[perm]
            for n in "support_x support_y query_x query_y".split()
        },
        task_index=batch.task_index[perm],
        kind_code=batch.kind_code[perm],
    )
    results = []
    for b in (batch, shuffled):
        learner, obj, opt = setup(name)
        rec = hetrom_meta_step(learner, obj, opt, b)
        chosen = sorted(rec.task_index[rec.selection.selected].tolist())
        results.append(
            (chosen, rec.band_loss, [p.detach() for p in learner.parameters()])
        )
    (sel_a, band_a, params_a), (sel_b, band_b, params_b) = results
    assert sel_a == sel_b and band_a == pytest.approx(band_b, abs=1e-12)
    for a, b in zip(params_a, params_b):
        assert torch.allclose(a, b, atol=1e-12)


def test_bad_learners_are_clear_errors() -> None:
    with pytest.raises(
        TrainingSetupError, match="unknown meta-learner 'mamll'.*'maml'"
    ):
        build_learner("mamll", mlp(), ways=3)
    with pytest.raises(TrainingSetupError, match="inner_steps >= 1"):
        build_learner("maml", mlp(), ways=3, steps=0)
    with pytest.raises(TrainingSetupError, match="embedding_dim"):
        build_learner("anil", mlp(), ways=3)
