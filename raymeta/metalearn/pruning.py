"""Data pruning: SAMA-learned keep scores (the paper's recipe) and baselines.

SAMA's pruning λ is a small MLP (:class:`PruningNet`) reading two per-example,
stop-gradient inputs: the cross-entropy against the label and the cross-entropy
against the prediction of an EMA teacher (an exponential moving average of the base
model's weights, :func:`ema_update_`). Its two output logits ``[keep, drop]`` go
through a **hard Gumbel-softmax** (τ = 0.5, straight-through,
:func:`gumbel_keep_weights`), so during meta-training every example in a base batch
is either kept (weight 1) or dropped (weight 0) while λ still receives the gradient of
the soft relaxation. The **meta set is the training set itself** (no clean data).

:class:`PruningProblem` is the bilevel problem: base loss ``mean(w_i · CE_i)``, meta
loss the unweighted training cross-entropy. The Gumbel noise comes from an explicit
``torch.Generator`` seeded with :attr:`PruningProblem.noise_seed`: every call of
``base_loss`` draws *the same* noise until the training loop sets a new seed (once per
step, derived from (seed, rank, step)). SAMA's two finite-difference passes
therefore see identical keep/drop masks, as they see identical dropout masks, and a
resumed run replays the noise without saving generator state.

After meta-training, :func:`pruning_scores` gives deterministic scores (the keep
probability, no Gumbel noise); the training loop averages them over several
checkpoints late in training; :func:`keep_mask` keeps the top fraction, and the model
is retrained from scratch on it.

Baselines: random pruning (:func:`random_scores`), EL2N (Paul et al., 2021;
:func:`el2n_scores`, the L2 norm of softmax minus one-hot, keeping the *hardest*
examples) and plain loss (:func:`loss_scores`).

Batches are ``(x, y, example_id)`` (``(B, d)``, ``(B,)`` int64, ``(B,)`` int64).

Example:
    >>> import torch
    >>> gen = torch.Generator().manual_seed(0)
    >>> model = torch.nn.Linear(4, 3)
    >>> problem = PruningProblem(make_teacher(model), noise_seed=7)
    >>> net = PruningNet(hidden=8, generator=gen)
    >>> x, y = torch.randn(5, 4, generator=gen), torch.tensor([0, 1, 2, 0, 1])
    >>> batch = (x, y, torch.arange(5))
    >>> a = problem.base_loss(model, net, batch)
    >>> bool(a == problem.base_loss(model, net, batch))  # same seed, same mask
    True
    >>> pruning_scores(model, problem.teacher, net, x, y).shape
    torch.Size([5])
    >>> keep_mask(torch.tensor([0.1, 0.9, 0.5, 0.7]), keep_fraction=0.5).tolist()
    [False, True, False, True]
"""

from __future__ import annotations

import copy
from typing import Any

import torch
import torch.nn.functional as F

from raymeta.errors import ConfigError
from raymeta.metalearn.problem import BilevelProblem, Forward

__all__ = [
    "PruningNet",
    "PruningProblem",
    "el2n_scores",
    "ema_update_",
    "gumbel_keep_weights",
    "keep_mask",
    "loss_scores",
    "make_teacher",
    "pruning_features",
    "pruning_scores",
    "random_scores",
]

TAU = 0.5  # Gumbel-softmax temperature of the paper's pruning recipe
EMA_DECAY = 0.99


# --------------------------------------------------------------------------- λ


class PruningNet(torch.nn.Module):
    """``(CE, teacher CE) -> [keep, drop]`` logits: ``2 -> hidden -> 2`` with ReLU."""

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
        self.hidden = torch.nn.Linear(2, hidden, dtype=dtype)
        self.out = torch.nn.Linear(hidden, 2, dtype=dtype)
        for layer in (self.hidden, self.out):
            bound = 1.0 / layer.in_features**0.5
            with torch.no_grad():
                layer.weight.uniform_(-bound, bound, generator=generator)
                layer.bias.uniform_(-bound, bound, generator=generator)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """Map features ``(B, 2)`` to logits ``(B, 2)`` (column 0 = keep)."""
        return self.out(torch.relu(self.hidden(features)))


def gumbel_keep_weights(
    logits: torch.Tensor, *, tau: float = TAU, generator: torch.Generator
) -> torch.Tensor:
    """Hard straight-through Gumbel-softmax keep weights ``(B,)`` in {0, 1}.

    The forward value is the one-hot argmax of ``(logits + g) / tau`` (column 0 =
    keep); the gradient is that of the soft ``softmax((logits + g) / tau)``.
    ``g`` is standard Gumbel noise drawn from ``generator`` only.

    Args:
        logits: ``(B, 2)`` keep/drop logits.
        tau: Temperature (> 0).
        generator: Source of the Gumbel noise (on ``logits``' device).
    """
    uniform = torch.rand(
        logits.shape, generator=generator, dtype=logits.dtype, device=logits.device
    )
    tiny = torch.finfo(logits.dtype).tiny
    exponential = (-torch.log(uniform.clamp_min(tiny))).clamp_min(tiny)
    gumbel = -torch.log(exponential)
    soft = F.softmax((logits + gumbel) / tau, dim=-1)
    hard = F.one_hot(soft.argmax(-1), soft.shape[-1]).to(soft.dtype)
    return (hard - soft.detach() + soft)[:, 0]


# --------------------------------------------------------------------------- teacher


def make_teacher(model: torch.nn.Module) -> torch.nn.Module:
    """A frozen copy of ``model`` to serve as its EMA teacher."""
    teacher = copy.deepcopy(model)
    teacher.requires_grad_(False)
    return teacher


@torch.no_grad()
def ema_update_(
    teacher: torch.nn.Module, model: torch.nn.Module, *, decay: float = EMA_DECAY
) -> None:
    """``teacher ← decay·teacher + (1 − decay)·model`` on parameters; copy buffers."""
    for t, p in zip(teacher.parameters(), model.parameters()):
        t.mul_(decay).add_(p.detach(), alpha=1.0 - decay)
    for t, b in zip(teacher.buffers(), model.buffers()):
        t.copy_(b)


def _features(
    logits: torch.Tensor, teacher: torch.nn.Module, x: torch.Tensor, y: torch.Tensor
) -> torch.Tensor:
    logits = logits.detach()
    ce = F.cross_entropy(logits, y, reduction="none")
    with torch.no_grad():
        target = F.softmax(teacher(x), dim=-1)
    teacher_ce = F.cross_entropy(logits, target, reduction="none")
    return torch.stack([ce, teacher_ce], dim=-1)


@torch.no_grad()
def pruning_features(
    forward: Forward, teacher: torch.nn.Module, x: torch.Tensor, y: torch.Tensor
) -> torch.Tensor:
    """λ's inputs ``(N, 2)``: ``[CE(f(x), y), CE(f(x), softmax(teacher(x)))]``."""
    return _features(forward(x), teacher, x, y)


@torch.no_grad()
def pruning_scores(
    model: torch.nn.Module,
    teacher: torch.nn.Module,
    meta: torch.nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
) -> torch.Tensor:
    """Deterministic keep scores ``(N,)``: ``softmax(λ(features))[:, keep]``."""
    logits = meta(pruning_features(model, teacher, x, y))
    return F.softmax(logits, dim=-1)[:, 0]


# --------------------------------------------------------------------------- problem


class PruningProblem(BilevelProblem):
    """Gumbel-masked training loss (base) and plain training loss (meta).

    Attributes:
        teacher: The EMA teacher (updated by the training loop, read here).
        tau: Gumbel-softmax temperature.
        noise_seed: Seeds the Gumbel noise of every ``base_loss`` call; the loop sets
            a new one each step (all calls within a step share the noise).
    """

    def __init__(
        self, teacher: torch.nn.Module, *, tau: float = TAU, noise_seed: int = 0
    ) -> None:
        """Create the problem.

        Raises:
            ConfigError: ``tau`` is not positive.
        """
        if tau <= 0:
            raise ConfigError(f"Gumbel-softmax tau must be > 0, got {tau}")
        self.teacher = teacher
        self.tau = tau
        self.noise_seed = noise_seed

    def _noise(self, device: torch.device) -> torch.Generator:
        return torch.Generator(device=device).manual_seed(self.noise_seed)

    def base_loss(
        self,
        forward: Forward,
        meta: torch.nn.Module,
        batch: Any,
        cache: Any | None = None,
    ) -> torch.Tensor:
        """Mean of ``w_i · CE_i``, ``w`` the hard Gumbel keep weights of λ(features).

        ``cache`` holds the features from :meth:`stop_grad_inputs` at θ.
        """
        x, y = batch[0], batch[1]
        logits = forward(x)
        losses = F.cross_entropy(logits, y, reduction="none")
        features = _features(logits, self.teacher, x, y) if cache is None else cache
        weights = gumbel_keep_weights(
            meta(features), tau=self.tau, generator=self._noise(logits.device)
        )
        return (weights * losses).mean()

    def meta_loss(
        self, forward: Forward, meta: torch.nn.Module, batch: Any
    ) -> torch.Tensor:
        """Unweighted mean cross-entropy on a batch of the training set."""
        x, y = batch[0], batch[1]
        return F.cross_entropy(forward(x), y)

    def stop_grad_inputs(self, forward: Forward, batch: Any) -> torch.Tensor:
        """λ's detached inputs ``(B, 2)`` (CE and teacher CE) at the current θ."""
        return pruning_features(forward, self.teacher, batch[0], batch[1])


# --------------------------------------------------------------------------- selection


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
