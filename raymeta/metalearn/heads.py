"""Per-task adaptation heads on a shared embedding, vectorized over tasks.

- :class:`LinearHead` (ANIL-style, the default): a zero-initialised linear head fitted
  to each task's support set by ``steps`` unrolled gradient steps with L2 penalty
  ``l2``; the meta-gradient flows through the unrolled steps (ITD) or, with
  ``first_order=True``, only through the query embeddings. Works for classification
  (cross-entropy) and regression (MSE, ``out_features=1``).
- :class:`ProtoNetHead`: closed-form class prototypes, negative squared distances.

Heads are pluggable: anything with ``task_losses`` and ``predict`` works;
:func:`build_head` builds one by name.

Example:
    >>> import torch
    >>> head = LinearHead(out_features=2, steps=3)
    >>> z_s, y_s = torch.randn(4, 6, 8), torch.arange(2).repeat(4, 3)
    >>> head.task_losses(z_s, y_s, z_s, y_s).shape
    torch.Size([4])
"""

from __future__ import annotations

import dataclasses
import difflib
from collections.abc import Callable
from typing import Any, Literal, Protocol

import torch
import torch.nn.functional as F

from raymeta.errors import TrainingSetupError, UnknownTaskFamilyError

__all__ = [
    "HEADS",
    "EpisodicHead",
    "LinearHead",
    "ProtoNetHead",
    "build_head",
    "per_task_loss",
    "task_metric",
]

Problem = Literal["classification", "regression"]


class EpisodicHead(Protocol):
    """A per-task learner on embeddings ``T x N x D``."""

    problem: Problem

    def predict(
        self, support_z: torch.Tensor, support_y: torch.Tensor, query_z: torch.Tensor
    ) -> torch.Tensor:
        """Adapt on the support set; return query outputs ``T x Q x C`` or ``T x Q``."""
        ...

    def task_losses(
        self,
        support_z: torch.Tensor,
        support_y: torch.Tensor,
        query_z: torch.Tensor,
        query_y: torch.Tensor,
    ) -> torch.Tensor:
        """Query loss of every task after adaptation, shape ``T``."""
        ...


def per_task_loss(
    outputs: torch.Tensor, y: torch.Tensor, problem: Problem
) -> torch.Tensor:
    """Mean loss per task ``T``; outputs ``T x N x C`` (or ``T x N``), y ``T x N``."""
    if problem == "regression":
        return ((outputs - y) ** 2).mean(-1)
    ce = F.cross_entropy(outputs.transpose(1, 2), y, reduction="none")
    return ce.mean(-1)


@dataclasses.dataclass(frozen=True, kw_only=True)
class LinearHead:
    """ANIL-style linear head adapted by unrolled gradient descent.

    Args:
        out_features: Number of classes (classification) or 1 (regression).
        steps: Inner gradient steps ``T``.
        lr: Inner step size.
        l2: L2 penalty ``mu/2 * ||W||^2`` of the strongly convex inner problem.
        first_order: Drop second-order terms (the adapted head is treated as a
            constant in the meta-gradient).
        problem: ``"classification"`` or ``"regression"``.
    """

    out_features: int
    steps: int = 10
    lr: float = 0.5
    l2: float = 1e-3
    first_order: bool = False
    problem: Problem = "classification"

    def __post_init__(self) -> None:
        """Validate hyperparameters."""
        if self.out_features < 1 or self.steps < 0 or self.lr <= 0 or self.l2 < 0:
            raise TrainingSetupError(
                f"LinearHead needs out_features >= 1, steps >= 0, lr > 0, l2 >= 0; got "
                f"{self.out_features}, {self.steps}, {self.lr}, {self.l2}"
            )
        if self.problem == "regression" and self.out_features != 1:
            raise TrainingSetupError(
                f"regression heads have out_features=1, got {self.out_features}"
            )

    def _outputs(
        self, weight: torch.Tensor, bias: torch.Tensor, z: torch.Tensor
    ) -> torch.Tensor:
        out = torch.baddbmm(bias.unsqueeze(1), z, weight)  # T x N x C
        return out.squeeze(-1) if self.problem == "regression" else out

    def adapt(
        self,
        support_z: torch.Tensor,
        support_y: torch.Tensor,
        init: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Fit the head to each task's support set.

        Args:
            support_z: ``T x S x D`` support embeddings.
            support_y: ``T x S`` labels or targets.
            init: Shared start ``(W0 D x C, b0 C)`` (ANIL's meta-learned head);
                zeros if ``None``.

        Returns:
            ``(weight T x D x C, bias T x C)``, differentiable w.r.t. the embeddings
            and ``init`` unless ``first_order``; first-order keeps an identity
            path to ``init`` (FOMAML: the adapted head is ``init`` plus a constant).
        """
        t, _, d = support_z.shape
        c = self.out_features
        w0, b0 = (
            init
            if init is not None
            else (
                support_z.new_zeros(d, c),
                support_z.new_zeros(c),
            )
        )
        track = torch.is_grad_enabled() and (
            support_z.requires_grad or w0.requires_grad
        )
        keep_graph = track and not self.first_order
        with torch.enable_grad():
            weight, bias = w0.expand(t, d, c), b0.expand(t, c)
            if not keep_graph:
                weight, bias = weight.detach(), bias.detach()
            if not weight.requires_grad:  # zero start, or no graph kept: fresh leaves
                weight = weight.clone().requires_grad_()
                bias = bias.clone().requires_grad_()
            for _ in range(self.steps):
                out = self._outputs(weight, bias, support_z)
                inner = per_task_loss(out, support_y, self.problem).sum()
                inner = inner + 0.5 * self.l2 * (weight**2).sum()
                gw, gb = torch.autograd.grad(
                    inner, (weight, bias), create_graph=keep_graph
                )
                weight, bias = weight - self.lr * gw, bias - self.lr * gb
        if not keep_graph:
            weight, bias = weight.detach(), bias.detach()
        if track and not keep_graph:  # first order: identity path to the start
            weight = w0 + (weight - w0).detach()
            bias = b0 + (bias - b0).detach()
        return weight, bias

    def predict(
        self,
        support_z: torch.Tensor,
        support_y: torch.Tensor,
        query_z: torch.Tensor,
        init: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> torch.Tensor:
        """Query outputs ``T x Q x C`` (``T x Q`` for regression)."""
        weight, bias = self.adapt(support_z, support_y, init)
        return self._outputs(weight, bias, query_z)

    def task_losses(
        self,
        support_z: torch.Tensor,
        support_y: torch.Tensor,
        query_z: torch.Tensor,
        query_y: torch.Tensor,
    ) -> torch.Tensor:
        """Query loss per task ``T`` (cross-entropy or MSE)."""
        out = self.predict(support_z, support_y, query_z)
        return per_task_loss(out, query_y, self.problem)


@dataclasses.dataclass(frozen=True, kw_only=True)
class ProtoNetHead:
    """Prototypical-network head: logits are negative squared prototype distances.

    Args:
        out_features: Number of classes (ways).
    """

    out_features: int
    problem: Problem = "classification"

    def __post_init__(self) -> None:
        """ProtoNet is a classifier."""
        if self.problem != "classification" or self.out_features < 1:
            raise TrainingSetupError(
                f"ProtoNetHead is for classification with out_features >= 1; got "
                f"problem={self.problem!r}, out_features={self.out_features}"
            )

    def predict(
        self, support_z: torch.Tensor, support_y: torch.Tensor, query_z: torch.Tensor
    ) -> torch.Tensor:
        """Logits ``T x Q x C`` from prototypes (class means of the support set)."""
        onehot = F.one_hot(support_y, self.out_features).to(
            support_z.dtype
        )  # T x S x C
        counts = onehot.sum(1).clamp_min(1.0).unsqueeze(-1)  # T x C x 1
        protos = onehot.transpose(1, 2) @ support_z / counts  # T x C x D
        return -(torch.cdist(query_z, protos) ** 2)

    def task_losses(
        self,
        support_z: torch.Tensor,
        support_y: torch.Tensor,
        query_z: torch.Tensor,
        query_y: torch.Tensor,
    ) -> torch.Tensor:
        """Query cross-entropy per task ``T``."""
        logits = self.predict(support_z, support_y, query_z)
        return per_task_loss(logits, query_y, "classification")


def task_metric(
    outputs: torch.Tensor, query_y: torch.Tensor, problem: Problem
) -> torch.Tensor:
    """Per-task evaluation metric ``T``: accuracy (classification) or MSE (regression).

    Args:
        outputs: ``T x Q x C`` logits, or ``T x Q`` predictions.
        query_y: ``T x Q`` labels or targets.
        problem: ``"classification"`` or ``"regression"``.
    """
    if problem == "regression":
        return ((outputs - query_y) ** 2).mean(-1)
    return (outputs.argmax(-1) == query_y).to(torch.float64).mean(-1)


HEADS: dict[str, Callable[..., Any]] = {"linear": LinearHead, "protonet": ProtoNetHead}


def build_head(name: str, **kwargs: Any) -> EpisodicHead:
    """Build a registered head (``"linear"`` or ``"protonet"``) by name.

    Raises:
        UnknownTaskFamilyError: Unknown name; the message lists the valid ones.
    """
    if name not in HEADS:
        close = difflib.get_close_matches(name, list(HEADS), n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise UnknownTaskFamilyError(
            f"unknown head {name!r}{hint} (registered: {sorted(HEADS)})"
        )
    return HEADS[name](**kwargs)
