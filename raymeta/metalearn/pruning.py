"""Data pruning: meta-learned per-example keep scores and heuristic baselines.

SAMA pruning learns one keep logit per training example with the *training set itself*
as the meta set (no clean data needed): the base loss weights each example's loss by
``sigmoid(logit_i)``, the meta loss is the unweighted training loss. Examples whose
gradients help the average training objective gain score; the top fraction is kept
and the model retrained from scratch.

Baselines: random pruning (:func:`random_scores`) and EL2N (Paul et al., 2021;
:func:`el2n_scores`, the L2 norm of softmax minus one-hot, keeping the *hardest*
examples) and plain loss (:func:`loss_scores`).

Batches are ``(x, y, example_id)``: ids index the score table (``(B,)`` int64).

Example:
    >>> import torch
    >>> scores = ExampleScores(5)
    >>> scores(torch.tensor([0, 3]))
    tensor([0.5000, 0.5000], grad_fn=<SigmoidBackward0>)
    >>> keep_mask(torch.tensor([0.1, 0.9, 0.5, 0.7]), keep_fraction=0.5).tolist()
    [False, True, False, True]
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from raymeta.errors import ConfigError
from raymeta.metalearn.problem import BilevelProblem, Forward

__all__ = [
    "ExampleScores",
    "PruningProblem",
    "el2n_scores",
    "keep_mask",
    "loss_scores",
    "random_scores",
]


class ExampleScores(torch.nn.Module):
    """One keep logit per training example; ``forward(ids)`` gives ``sigmoid``."""

    def __init__(
        self, num_examples: int, *, dtype: torch.dtype = torch.float32
    ) -> None:
        """Create ``num_examples`` logits, all zero (weight 0.5).

        Args:
            num_examples: Size of the id space (ids must be < this).
            dtype: Parameter dtype.
        """
        super().__init__()
        self.logits = torch.nn.Parameter(torch.zeros(num_examples, dtype=dtype))

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        """Weights ``(B,)`` in (0, 1) for example ids ``(B,)``."""
        return torch.sigmoid(self.logits[ids])


class PruningProblem(BilevelProblem):
    """Score-weighted training loss (base) and plain training loss (meta)."""

    def base_loss(
        self,
        forward: Forward,
        meta: torch.nn.Module,
        batch: Any,
        cache: Any | None = None,
    ) -> torch.Tensor:
        """Mean of ``sigmoid(logit_id) * CE_i`` over the batch."""
        x, y, ids = batch
        losses = F.cross_entropy(forward(x), y, reduction="none")
        return (meta(ids) * losses).mean()

    def meta_loss(
        self, forward: Forward, meta: torch.nn.Module, batch: Any
    ) -> torch.Tensor:
        """Unweighted mean cross-entropy on a batch of the training set."""
        x, y = batch[0], batch[1]
        return F.cross_entropy(forward(x), y)


def keep_mask(scores: torch.Tensor, *, keep_fraction: float) -> torch.Tensor:
    """Boolean mask ``(N,)`` keeping the ``round(keep_fraction * N)`` top scores.

    Ties are broken by the lower index first (stable sort), so the mask is
    deterministic.

    Raises:
        ConfigError: ``keep_fraction`` not in (0, 1].
    """
    if not 0.0 < keep_fraction <= 1.0:
        raise ConfigError(f"keep_fraction must be in (0, 1], got {keep_fraction}")
    n_keep = int(round(keep_fraction * scores.numel()))
    order = torch.sort(-scores, stable=True).indices
    mask = torch.zeros(scores.numel(), dtype=torch.bool)
    mask[order[:n_keep]] = True
    return mask


def random_scores(num_examples: int, generator: torch.Generator) -> torch.Tensor:
    """Uniform random scores ``(N,)`` (random pruning)."""
    return torch.rand(num_examples, generator=generator)


@torch.no_grad()
def el2n_scores(
    model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor
) -> torch.Tensor:
    """EL2N ``||softmax(f(x)) - onehot(y)||₂`` per example ``(N,)``; high = hard."""
    probs = F.softmax(model(x), dim=-1)
    return (probs - F.one_hot(y, probs.shape[-1]).to(probs.dtype)).norm(dim=-1)


@torch.no_grad()
def loss_scores(
    model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor
) -> torch.Tensor:
    """Per-example cross-entropy ``(N,)``; high = hard."""
    return F.cross_entropy(model(x), y, reduction="none")
