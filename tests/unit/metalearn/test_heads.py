from __future__ import annotations

import math

import pytest
import torch

from raymeta.errors import TrainingSetupError, UnknownTaskFamilyError
from raymeta.metalearn.heads import LinearHead, ProtoNetHead, build_head, task_metric


def separable_tasks(t: int = 3, ways: int = 3, shots: int = 4, d: int = 5):
    g = torch.Generator().manual_seed(0)
    centres = 3 * torch.randn(t, ways, 1, d, generator=g, dtype=torch.float64)
    x = centres + 0.3 * torch.randn(
        t, ways, 2 * shots, d, generator=g, dtype=torch.float64
    )
    y = torch.arange(ways).view(1, ways, 1).expand(t, ways, 2 * shots)
    sx, qx = x[:, :, :shots].reshape(t, -1, d), x[:, :, shots:].reshape(t, -1, d)
    sy, qy = y[:, :, :shots].reshape(t, -1), y[:, :, shots:].reshape(t, -1)
    return sx, sy, qx, qy


def test_linear_head_adaptation_lowers_the_query_loss() -> None:
    sx, sy, qx, qy = separable_tasks()
    untrained = LinearHead(out_features=3, steps=0).task_losses(sx, sy, qx, qy)
    assert torch.allclose(untrained, torch.full((3,), math.log(3), dtype=torch.float64))
    adapted = LinearHead(out_features=3, steps=10, lr=0.1).task_losses(sx, sy, qx, qy)
    assert adapted.shape == (3,) and bool((adapted < 0.5 * untrained).all())
    acc = task_metric(
        LinearHead(out_features=3, lr=0.1).predict(sx, sy, qx), qy, "classification"
    )
    assert bool((acc > 0.9).all())


def test_itd_meta_gradient_matches_finite_differences() -> None:
    sx, sy, qx, qy = separable_tasks(t=2, ways=2, shots=2, d=3)
    head = LinearHead(out_features=2, steps=3, lr=0.3, l2=0.1)
    w = torch.eye(3, dtype=torch.float64).requires_grad_(True)

    def meta_loss(weight: torch.Tensor) -> torch.Tensor:
        return head.task_losses(sx @ weight, sy, qx @ weight, qy).sum()

    assert torch.autograd.gradcheck(meta_loss, (w,), eps=1e-6, atol=1e-5)


def test_first_order_drops_the_path_through_adaptation() -> None:
    sx, sy, qx, qy = separable_tasks(t=2, ways=2, shots=2, d=3)
    w = torch.eye(3, dtype=torch.float64).requires_grad_(True)
    fo = LinearHead(out_features=2, steps=3, lr=0.3, first_order=True)
    (g_fo,) = torch.autograd.grad(fo.task_losses(sx @ w, sy, qx @ w, qy).sum(), w)
    # first-order = gradient through the query embeddings with the head held fixed
    weight, bias = fo.adapt((sx @ w).detach(), sy)
    fixed = torch.baddbmm(bias.unsqueeze(1), qx @ w, weight)
    ce = torch.nn.functional.cross_entropy(fixed.transpose(1, 2), qy, reduction="none")
    (g_ref,) = torch.autograd.grad(ce.mean(-1).sum(), w)
    assert torch.allclose(g_fo, g_ref, atol=1e-10)
    itd = LinearHead(out_features=2, steps=3, lr=0.3)
    (g_itd,) = torch.autograd.grad(itd.task_losses(sx @ w, sy, qx @ w, qy).sum(), w)
    assert not torch.allclose(g_fo, g_itd, atol=1e-4)


def test_regression_head_fits_linear_targets() -> None:
    g = torch.Generator().manual_seed(1)
    z = torch.randn(4, 10, 3, generator=g)
    y = (z @ torch.tensor([1.0, -0.5, 0.2])) + 0.3
    head = LinearHead(out_features=1, steps=100, lr=0.2, l2=0.0, problem="regression")
    mse = head.task_losses(z[:, :8], y[:, :8], z[:, 8:], y[:, 8:])
    assert mse.shape == (4,) and float(mse.max()) < 0.05 * float(y.var())


def test_protonet_logits_are_negative_squared_prototype_distances() -> None:
    sx, sy, qx, qy = separable_tasks(t=2, ways=3, shots=2, d=4)
    logits = ProtoNetHead(out_features=3).predict(sx, sy, qx)
    protos = torch.stack([sx[:, sy[0] == c].mean(1) for c in range(3)], 1)
    expected = -((qx.unsqueeze(2) - protos.unsqueeze(1)) ** 2).sum(-1)
    assert torch.allclose(logits, expected, atol=1e-8)
    losses = ProtoNetHead(out_features=3).task_losses(sx, sy, qx, qy)
    assert losses.shape == (2,) and float(losses.max()) < 0.1


def test_build_head_by_name_and_errors() -> None:
    assert isinstance(build_head("protonet", out_features=5), ProtoNetHead)
    with pytest.raises(UnknownTaskFamilyError, match="did you mean 'linear'"):
        build_head("linaer", out_features=5)
    with pytest.raises(TrainingSetupError, match="out_features=1"):
        LinearHead(out_features=3, problem="regression")
    with pytest.raises(TrainingSetupError, match="lr > 0"):
        LinearHead(out_features=3, lr=0.0)
    with pytest.raises(TrainingSetupError, match="classification"):
        ProtoNetHead(out_features=1, problem="regression")
