"""Meta-weight-net data reweighting (Shu et al., 2019) as a bilevel problem.

A small MLP maps each example's (detached) training loss to a weight in (0, 1); the
base loss is the weighted mean of per-example cross-entropies; the meta loss is the
plain cross-entropy on a small clean meta set. Trained with SAMA, the net learns to
down-weight examples whose loss marks them as noisy.

With ``normalize=True`` the weights are divided by their batch mean before they
weight the losses, as the MW-Net authors' code does (there by the batch sum). Only
the *relative* weights then reach the base step: raising every weight together no
longer lengthens the step, so the meta-gradient cannot favour "train harder on
everything", the direction that saturates every weight at 1 when the meta set and the
noisy training set still agree (it did on glyphs with a Conv4). The common scale is
then free, so the normalised weights come from :meth:`MetaWeightNet.log_weights`,
whose logits are softly bounded (largest weight at most ~e^10 times the smallest).
Under data parallelism the mean is each rank's local batch mean. The raw net output,
not the normalised weight, is what :func:`example_weights` reports.

Batches are ``(x, y)`` or ``(x, y, example_id)`` tuples: ``x`` is ``(B, d)``
features, ``y`` is ``(B,)`` int64 labels; ids are ignored by the losses.

Example:
    >>> import torch
    >>> mwn = MetaWeightNet(hidden=4, generator=torch.Generator().manual_seed(0))
    >>> mwn(torch.tensor([[0.1], [3.0]])).shape
    torch.Size([2, 1])
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F

from raymeta.metalearn.problem import BilevelProblem, Forward

__all__ = [
    "MetaWeightNet",
    "ReweightingProblem",
    "UnweightedProblem",
    "example_weights",
    "weight_auc",
]


#: Soft bound on the logits of normalised weights: the largest weight is at most
#: sigmoid(10) / sigmoid(-10) = e^10 times the smallest.
LOGIT_BOUND = 10.0


class MetaWeightNet(torch.nn.Module):
    """Loss -> weight MLP: ``1 -> hidden -> 1`` with ReLU and a sigmoid output."""

    def __init__(
        self,
        hidden: int = 100,
        *,
        generator: torch.Generator | None = None,
        dtype: torch.dtype = torch.float32,
    ) -> None:
        """Build the net.

        Args:
            hidden: Width of the hidden layer.
            generator: Seeds the initial weights (no global RNG is touched).
            dtype: Parameter dtype.
        """
        super().__init__()
        self.hidden = torch.nn.Linear(1, hidden, dtype=dtype)
        self.out = torch.nn.Linear(hidden, 1, dtype=dtype)
        _init_linear(self.hidden, generator)
        _init_linear(self.out, generator)

    def forward(self, losses: torch.Tensor) -> torch.Tensor:
        """Map losses ``(B, 1)`` to weights ``(B, 1)`` in (0, 1)."""
        return torch.sigmoid(self.logits(losses))

    def log_weights(self, losses: torch.Tensor) -> torch.Tensor:
        """Log-weights ``(B, 1)`` for normalised weighting, contrast bounded.

        ``logsigmoid`` of the logits squashed softly into ``[-LOGIT_BOUND,
        LOGIT_BOUND]``: once weights are normalised their common scale is free and
        nothing else stops the logits from spreading until a batch trains on a
        handful of examples (on digits the spread reached 95 nats and λ went NaN).
        """
        z = self.logits(losses)
        return F.logsigmoid(LOGIT_BOUND * torch.tanh(z / LOGIT_BOUND))

    def logits(self, losses: torch.Tensor) -> torch.Tensor:
        """Pre-sigmoid outputs ``(B, 1)``."""
        return self.out(torch.relu(self.hidden(losses)))


def _init_linear(layer: torch.nn.Linear, generator: torch.Generator | None) -> None:
    bound = 1.0 / layer.in_features**0.5
    with torch.no_grad():
        layer.weight.uniform_(-bound, bound, generator=generator)
        layer.bias.uniform_(-bound, bound, generator=generator)


def _per_example_ce(forward: Forward, batch: Any) -> torch.Tensor:
    x, y = batch[0], batch[1]
    return F.cross_entropy(forward(x), y, reduction="none")


class ReweightingProblem(BilevelProblem):
    """Weighted cross-entropy base loss, plain cross-entropy meta loss."""

    def __init__(self, *, normalize: bool = False) -> None:
        """Build the problem.

        Args:
            normalize: Divide the weights by their batch mean (see the module
                docstring); False uses the raw weights.
        """
        self.normalize = normalize

    def base_loss(
        self,
        forward: Forward,
        meta: torch.nn.Module,
        batch: Any,
        cache: Any | None = None,
    ) -> torch.Tensor:
        """Mean of ``w_i * loss_i`` with ``w_i = meta(loss_i)`` (inputs read ``cache``).

        With ``normalize`` the weights are ``w_i / mean(w)`` with ``w_i`` from
        ``meta.log_weights`` where the module has it (bounded logits): the result is
        then ``sum(w_i * loss_i) / sum(w_i)``, with gradient through the normaliser.
        """
        losses = _per_example_ce(forward, batch)
        inputs = (losses.detach() if cache is None else cache).unsqueeze(-1)
        if not self.normalize:
            return (meta(inputs).squeeze(-1) * losses).mean()
        return (_normalized_weights(meta, inputs) * losses).mean()

    def meta_loss(
        self, forward: Forward, meta: torch.nn.Module, batch: Any
    ) -> torch.Tensor:
        """Mean cross-entropy on the (clean) meta batch."""
        return _per_example_ce(forward, batch).mean()

    def stop_grad_inputs(self, forward: Forward, batch: Any) -> torch.Tensor:
        """Detached per-example losses ``(B,)``, the meta-weight-net's input."""
        return _per_example_ce(forward, batch).detach()


def _normalized_weights(meta: torch.nn.Module, inputs: torch.Tensor) -> torch.Tensor:
    """``w / mean(w)`` ``(B,)``, computed in log space.

    The common scale of the weights is free once they are normalised, so raw
    weights can all fall below float32's range; ``exp(log w - logmeanexp(log w))``
    stays exact there, where ``w / mean(w)`` would be 0 / 0. A meta module without
    ``log_weights`` has its weights logged after clamping to the smallest float.
    """
    log_weights = getattr(meta, "log_weights", None)
    if log_weights is None:
        w = meta(inputs)
        log_w = torch.log(w.clamp_min(torch.finfo(w.dtype).tiny))
    else:
        log_w = log_weights(inputs)
    log_w = log_w.squeeze(-1)
    return torch.exp(log_w - torch.logsumexp(log_w, 0) + math.log(log_w.numel()))


class UnweightedProblem(ReweightingProblem):
    """Plain training (every weight 1), for baselines that share the SAMA loop.

    The base loss ignores the meta module, so it cannot be meta-trained.
    """

    def base_loss(
        self,
        forward: Forward,
        meta: torch.nn.Module,
        batch: Any,
        cache: Any | None = None,
    ) -> torch.Tensor:
        """Mean cross-entropy on the batch."""
        return _per_example_ce(forward, batch).mean()


@torch.no_grad()
def example_weights(
    model: torch.nn.Module, meta: torch.nn.Module, x: torch.Tensor, y: torch.Tensor
) -> torch.Tensor:
    """Weights ``(N,)`` the meta-weight-net gives each example at the current model."""
    losses = F.cross_entropy(model(x), y, reduction="none")
    return meta(losses.unsqueeze(-1)).squeeze(-1)


def weight_auc(weights: torch.Tensor, is_noisy: torch.Tensor) -> float:
    """ROC AUC of weights separating clean (positive) from noisy examples.

    1.0: every clean example outweighs every noisy one; 0.5: no separation. Ties
    count one half.

    Args:
        weights: ``(N,)`` per-example weights.
        is_noisy: ``(N,)`` bool ground truth.

    Returns:
        The AUC, or NaN when one of the two groups is empty.
    """
    w = torch.as_tensor(weights, dtype=torch.float64).reshape(-1)
    noisy = torch.as_tensor(is_noisy, dtype=torch.bool).reshape(-1)
    clean_w, noisy_w = w[~noisy], w[noisy]
    if clean_w.numel() == 0 or noisy_w.numel() == 0:
        return float("nan")
    greater = (clean_w[:, None] > noisy_w[None, :]).double().mean()
    ties = (clean_w[:, None] == noisy_w[None, :]).double().mean()
    return float(greater + 0.5 * ties)
