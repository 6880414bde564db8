"""Episodic meta-learners under one interface, each usable with any HeTRoM rule.

A learner is a ``torch.nn.Module`` holding *every* meta-learned parameter (the
backbone, and the head initialisation where there is one) with two methods:

- ``task_losses(batch) -> T``: query loss of each task after adapting on its
  support set, differentiable w.r.t. the meta-parameters (what the ranked-range
  objective ranks and backpropagates);
- ``predict(batch) -> T x Q x C``: query outputs for evaluation (no meta-graph).

Learners (:data:`LEARNERS`, built by :func:`build_learner`):

- ``"linear"``: the ridge/GD head of :class:`~raymeta.metalearn.heads.LinearHead`,
  zero-initialised every episode, on a shared embedding (HeTRoM's default reading);
- ``"protonet"``: prototypical networks (closed-form prototypes);
- ``"anil"``: ANIL, a linear head whose **initialisation is meta-learned**, adapted
  by unrolled steps on the embedding (second-order through the head, or first-order);
- ``"maml"``: MAML over the whole network by ``torch.func`` (``grad`` inside ``vmap``
  over tasks): second-order, or first-order (FOMAML: the adapted parameters are the
  initial ones plus a constant step).

BatchNorm: every learner runs the backbone in train mode, so statistics are those
of the forward batch. For the head learners one forward holds all support and query
examples of this rank's tasks (statistics per local meta-batch); MAML's ``vmap``
computes them **per episode** (support set in the inner steps, query set at the
end) and keeps no running statistics
(:func:`torch.func.replace_all_batch_norm_modules_`), as in the MAML reference code.

Example:
    >>> import torch
    >>> from raymeta.tasks.fewshot import EpisodeStream, build_task_family
    >>> family = build_task_family("gaussian_clusters", ways=3, shots=2, queries=4)
    >>> batch = EpisodeStream(family=family, tasks_per_batch=4).batch(0)
    >>> net = torch.nn.Linear(family.in_features, 3)
    >>> build_learner("maml", net, ways=3, steps=2, lr=0.1).task_losses(batch).shape
    torch.Size([4])
"""

from __future__ import annotations

import difflib
from collections.abc import Callable
from typing import Any

import torch
from torch import nn
from torch.func import functional_call, grad, replace_all_batch_norm_modules_, vmap

from raymeta.errors import TrainingSetupError
from raymeta.metalearn.heads import (
    EpisodicHead,
    LinearHead,
    Problem,
    ProtoNetHead,
    per_task_loss,
)
from raymeta.tasks.episodes import EpisodeBatch

__all__ = [
    "ANIL",
    "LEARNERS",
    "MAML",
    "EpisodicLearner",
    "HeadLearner",
    "build_learner",
]


def _embed(
    backbone: nn.Module, batch: EpisodeBatch
) -> tuple[torch.Tensor, torch.Tensor]:
    """Support ``T x S x D`` and query ``T x Q x D`` embeddings in one forward."""
    t, s = batch.support_x.shape[:2]
    x = torch.cat([batch.support_x, batch.query_x], 1)
    z = backbone(x.reshape(t * x.shape[1], *x.shape[2:])).reshape(t, x.shape[1], -1)
    return z[:, :s], z[:, s:]


class EpisodicLearner(nn.Module):
    """Base class: subclasses implement :meth:`query_outputs`."""

    problem: Problem = "classification"

    def query_outputs(self, batch: EpisodeBatch, *, meta_grad: bool) -> torch.Tensor:
        """Adapted query outputs ``T x Q x C`` (``T x Q`` for regression)."""
        raise NotImplementedError

    def task_losses(self, batch: EpisodeBatch) -> torch.Tensor:
        """Query loss per task ``T``, differentiable w.r.t. the meta-parameters."""
        out = self.query_outputs(batch, meta_grad=True)
        return per_task_loss(out, batch.query_y, self.problem)

    def predict(self, batch: EpisodeBatch) -> torch.Tensor:
        """Detached query outputs for evaluation."""
        with torch.no_grad():
            return self.query_outputs(batch, meta_grad=False).detach()


class HeadLearner(EpisodicLearner):
    """A shared embedding plus a non-parametric per-task head (linear GD, ProtoNet).

    Args:
        backbone: Embedding ``N x F -> N x D``.
        head: An :class:`~raymeta.metalearn.heads.EpisodicHead`.
    """

    def __init__(self, backbone: nn.Module, head: EpisodicHead) -> None:
        """Hold the backbone (meta-learned) and the head (no parameters)."""
        super().__init__()
        self.backbone, self.head = backbone, head
        self.problem = head.problem

    def query_outputs(self, batch: EpisodeBatch, *, meta_grad: bool) -> torch.Tensor:
        """Embed support and query, adapt the head, score the queries."""
        zs, zq = _embed(self.backbone, batch)
        return self.head.predict(zs, batch.support_y, zq)


class ANIL(EpisodicLearner):
    """ANIL: a meta-learned linear head initialisation adapted on the embedding.

    Args:
        backbone: Embedding ``N x F -> N x D``.
        head: The inner loop (steps, step size, L2 penalty, first/second order).
        embedding_dim: ``D``.
    """

    def __init__(self, backbone: nn.Module, head: LinearHead, embedding_dim: int):
        """Zero-initialise the head initialisation ``W0 (D x C), b0 (C)``."""
        super().__init__()
        self.backbone, self.head = backbone, head
        self.problem = head.problem
        dtype = next(backbone.parameters()).dtype
        self.weight = nn.Parameter(
            torch.zeros(embedding_dim, head.out_features, dtype=dtype)
        )
        self.bias = nn.Parameter(torch.zeros(head.out_features, dtype=dtype))

    def query_outputs(self, batch: EpisodeBatch, *, meta_grad: bool) -> torch.Tensor:
        """Adapt ``(W0, b0)`` on each task's support embeddings; score the queries."""
        zs, zq = _embed(self.backbone, batch)
        init = (self.weight, self.bias)
        return self.head.predict(zs, batch.support_y, zq, init=init)


class MAML(EpisodicLearner):
    """MAML over every parameter of ``network`` (its outputs are the task's logits).

    Args:
        network: ``N x F -> N x C`` (classification) or ``N x 1`` (regression).
        steps: Inner gradient steps.
        lr: Inner step size.
        first_order: FOMAML (no second-order terms).
        problem: ``"classification"`` or ``"regression"``.
    """

    def __init__(
        self,
        network: nn.Module,
        *,
        steps: int = 1,
        lr: float = 0.4,
        first_order: bool = False,
        problem: Problem = "classification",
    ) -> None:
        """Strip BatchNorm running statistics (per-episode statistics under vmap)."""
        super().__init__()
        if steps < 1 or lr <= 0:
            raise TrainingSetupError(
                f"MAML needs inner_steps >= 1 and inner_lr > 0; got {steps}, {lr}"
            )
        replace_all_batch_norm_modules_(network)
        self.network, self.steps, self.lr = network, steps, lr
        self.first_order, self.problem = first_order, problem

    def _adapted_outputs(
        self,
        params: dict[str, torch.Tensor],
        sx: torch.Tensor,
        sy: torch.Tensor,
        qx: torch.Tensor,
        second_order: bool,
    ) -> torch.Tensor:
        """One task: ``steps`` SGD steps on the support loss, then query outputs."""

        def support_loss(p: dict[str, torch.Tensor]) -> torch.Tensor:
            out = self._forward(p, sx)
            return per_task_loss(out.unsqueeze(0), sy.unsqueeze(0), self.problem)[0]

        fast = params
        for _ in range(self.steps):
            g = grad(support_loss)(fast)
            fast = {
                n: fast[n] - self.lr * (g[n] if second_order else g[n].detach())
                for n in fast
            }
        return self._forward(fast, qx)

    def _forward(
        self, params: dict[str, torch.Tensor], x: torch.Tensor
    ) -> torch.Tensor:
        out = functional_call(self.network, params, (x,))
        return out.squeeze(-1) if self.problem == "regression" else out

    def query_outputs(self, batch: EpisodeBatch, *, meta_grad: bool) -> torch.Tensor:
        """Adapt a copy of all parameters per task (vectorised over tasks)."""
        params = dict(self.network.named_parameters())
        if not meta_grad:
            params = {n: p.detach() for n, p in params.items()}
        second_order = meta_grad and not self.first_order

        def one_task(sx: torch.Tensor, sy: torch.Tensor, qx: torch.Tensor):
            return self._adapted_outputs(params, sx, sy, qx, second_order)

        return vmap(one_task, randomness="different")(
            batch.support_x, batch.support_y, batch.query_x
        )


def _head(name: str, *, ways: int, problem: Problem, **inner: Any) -> EpisodicHead:
    if name == "protonet":
        return ProtoNetHead(out_features=ways, problem=problem)
    return LinearHead(out_features=ways, problem=problem, **inner)


def build_learner(
    name: str,
    backbone: nn.Module,
    *,
    ways: int,
    steps: int = 10,
    lr: float = 0.5,
    l2: float = 1e-3,
    first_order: bool = False,
    problem: Problem = "classification",
    embedding_dim: int | None = None,
) -> EpisodicLearner:
    """Build a registered learner around ``backbone``.

    Args:
        name: One of :data:`LEARNERS`.
        backbone: The embedding (linear, protonet, anil) or, for ``"maml"``, the
            whole network whose outputs are the ``ways`` logits.
        ways: Classes per task (1 for regression).
        steps: Inner steps (not used by protonet).
        lr: Inner step size.
        l2: L2 penalty of the linear / ANIL head's inner problem.
        first_order: Drop second-order terms (FOMAML, first-order ANIL).
        problem: ``"classification"`` or ``"regression"``.
        embedding_dim: The embedding width (ANIL's head size).

    Raises:
        TrainingSetupError: Unknown name (the closest is suggested), bad inner loop.
    """
    if name not in LEARNERS:
        close = difflib.get_close_matches(name, list(LEARNERS), n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise TrainingSetupError(
            f"unknown meta-learner {name!r}{hint} (registered: {sorted(LEARNERS)})"
        )
    inner = {"steps": steps, "lr": lr, "l2": l2, "first_order": first_order}
    return LEARNERS[name](
        backbone, ways=ways, problem=problem, embedding_dim=embedding_dim, **inner
    )


def _linear(backbone: nn.Module, *, ways: int, problem: Problem, **kw: Any):
    kw.pop("embedding_dim")
    return HeadLearner(backbone, _head("linear", ways=ways, problem=problem, **kw))


def _protonet(backbone: nn.Module, *, ways: int, problem: Problem, **_: Any):
    return HeadLearner(backbone, _head("protonet", ways=ways, problem=problem))


def _anil(backbone: nn.Module, *, ways: int, problem: Problem, **kw: Any):
    dim = kw.pop("embedding_dim")
    if dim is None:
        raise TrainingSetupError("ANIL needs embedding_dim (the head's input width)")
    return ANIL(backbone, _head("linear", ways=ways, problem=problem, **kw), dim)


def _maml(backbone: nn.Module, *, ways: int, problem: Problem, **kw: Any):
    return MAML(
        backbone,
        steps=kw["steps"],
        lr=kw["lr"],
        first_order=kw["first_order"],
        problem=problem,
    )


#: Registered meta-learners: name -> builder ``(backbone, ways, problem, ...)``.
LEARNERS: dict[str, Callable[..., EpisodicLearner]] = {
    "linear": _linear,
    "protonet": _protonet,
    "anil": _anil,
    "maml": _maml,
}
