"""The bilevel problem interface shared by SAMA and its baselines.

A bilevel problem has base parameters θ (a ``torch.nn.Module``) trained on a base
loss that depends on meta-parameters λ (another module), and a meta loss that judges
the trained θ::

    λ* = argmin_λ L_meta(θ*(λ)),   θ*(λ) = argmin_θ L_base(θ, λ)

A :class:`BilevelProblem` supplies the two losses as functions of a *forward callable*
(the base model itself, or a functional view of it with substituted parameters, as
the unrolled/Neumann/CG baselines need), the meta module and a batch. Stop-gradient
inputs the base loss feeds to the meta module (e.g. the detached per-example losses a
meta-weight-net reads) come from :meth:`BilevelProblem.stop_grad_inputs`; SAMA
evaluates them once at θ and reuses them in its perturbed passes.

:func:`validate_problem` checks a problem on one pair of batches *before* training:
batch structures agree, the losses are finite scalars, and λ reaches the base loss.

Example:
    >>> import torch
    >>> class Ridge(BilevelProblem):
    ...     def base_loss(self, forward, meta, batch, cache=None):
    ...         x, y = batch
    ...         return ((forward(x) - y) ** 2).mean() + meta.weight.exp().sum() * 0
    ...     def meta_loss(self, forward, meta, batch):
    ...         x, y = batch
    ...         return ((forward(x) - y) ** 2).mean()
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch.utils._pytree import tree_flatten

from raymeta.errors import TrainingSetupError

__all__ = [
    "BilevelProblem",
    "Forward",
    "check_batches",
    "functional_forward",
    "trainable_parameters",
    "validate_problem",
]

Forward = Callable[..., Any]


class BilevelProblem(abc.ABC):
    """Two losses over (forward, meta module, batch); subclass and implement both.

    Batches are any pytrees of tensors (tuples, dicts); base and meta batches must
    share a structure (see :func:`check_batches`).
    """

    @abc.abstractmethod
    def base_loss(
        self,
        forward: Forward,
        meta: torch.nn.Module,
        batch: Any,
        cache: Any | None = None,
    ) -> torch.Tensor:
        """Scalar base (training) loss L_base(θ, λ).

        Args:
            forward: The base model, or a functional view with substituted θ.
            meta: The meta module holding λ.
            batch: A base batch.
            cache: Stop-gradient inputs from :meth:`stop_grad_inputs` evaluated at
                the unperturbed θ; None means "compute them from this forward".
        """

    @abc.abstractmethod
    def meta_loss(
        self, forward: Forward, meta: torch.nn.Module, batch: Any
    ) -> torch.Tensor:
        """Scalar meta (validation) loss L_meta(θ, λ); usually independent of λ."""

    def stop_grad_inputs(self, forward: Forward, batch: Any) -> Any | None:
        """Inputs the base loss feeds to λ under stop-gradient (default: none)."""
        return None


def trainable_parameters(module: torch.nn.Module) -> list[torch.nn.Parameter]:
    """Parameters of ``module`` with ``requires_grad`` (in registration order)."""
    return [p for p in module.parameters() if p.requires_grad]


def functional_forward(
    model: torch.nn.Module, params: dict[str, torch.Tensor]
) -> Forward:
    """A forward callable running ``model`` with ``params`` substituted (torch.func)."""

    def forward(*args: Any) -> Any:
        return torch.func.functional_call(model, params, args)

    return forward


def _leaf_signature(leaf: Any) -> tuple[Any, ...]:
    if isinstance(leaf, torch.Tensor):
        return ("tensor", leaf.dtype, tuple(leaf.shape[1:]))
    return ("value", type(leaf).__name__)


def check_batches(base_batch: Any, meta_batch: Any) -> None:
    """Check that base and meta batches share structure, dtypes and feature shapes.

    Leading (batch) dimensions may differ; everything else must agree.

    Raises:
        TrainingSetupError: Names the first mismatch.
    """
    base_leaves, base_spec = tree_flatten(base_batch)
    meta_leaves, meta_spec = tree_flatten(meta_batch)
    if base_spec != meta_spec:
        raise TrainingSetupError(
            f"base and meta batches have different structures: base {base_spec} vs "
            f"meta {meta_spec}; build both loaders to yield the same kind of batch"
        )
    for i, (b, m) in enumerate(zip(base_leaves, meta_leaves)):
        if _leaf_signature(b) != _leaf_signature(m):
            raise TrainingSetupError(
                f"batch element {i}: base has {_leaf_signature(b)} but meta has "
                f"{_leaf_signature(m)} (kind, dtype, shape without the batch dim); "
                "the meta set must be preprocessed like the training set"
            )


def _check_scalar(loss: Any, name: str) -> None:
    if not isinstance(loss, torch.Tensor) or loss.numel() != 1:
        raise TrainingSetupError(
            f"{name} must return a scalar tensor, got "
            f"{type(loss).__name__} {getattr(loss, 'shape', '')}"
        )
    if not torch.isfinite(loss).all():
        raise TrainingSetupError(f"{name} is not finite ({loss.item()}) at the start")


def validate_problem(
    problem: BilevelProblem,
    model: torch.nn.Module,
    meta: torch.nn.Module,
    base_batch: Any,
    meta_batch: Any,
) -> None:
    """Fail early when a problem cannot produce meta-gradients.

    Checks: matching batch structures; scalar finite losses; at least one meta
    parameter receives a gradient from the base loss; θ reaches the meta loss.
    Restores the model's buffers and the global RNG afterwards.

    Raises:
        TrainingSetupError: Says what is wrong and how to fix it.
    """
    check_batches(base_batch, meta_batch)
    meta_params = trainable_parameters(meta)
    if not meta_params:
        raise TrainingSetupError(
            f"meta module {type(meta).__name__} has no trainable parameters; give it "
            "parameters with requires_grad=True"
        )
    base_params = trainable_parameters(model)
    buffers = [b.detach().clone() for b in model.buffers()]
    with torch.random.fork_rng(devices=[]):
        base = problem.base_loss(model, meta, base_batch)
        _check_scalar(base, "base_loss")
        meta_grads = torch.autograd.grad(base, meta_params, allow_unused=True)
        outer = problem.meta_loss(model, meta, meta_batch)
        _check_scalar(outer, "meta_loss")
        theta_grads = torch.autograd.grad(outer, base_params, allow_unused=True)
    _restore(list(model.buffers()), buffers)
    if all(g is None for g in meta_grads):
        raise TrainingSetupError(
            f"no parameter of the meta module {type(meta).__name__} reaches the base "
            "loss, so every meta-gradient would be zero; make base_loss use the meta "
            "module (e.g. weight per-example losses with its output)"
        )
    if all(g is None for g in theta_grads):
        raise TrainingSetupError(
            "meta_loss does not depend on the base model's parameters; it must be "
            "computed from forward(...) on the meta batch"
        )


def _restore(live: Sequence[torch.Tensor], saved: Sequence[torch.Tensor]) -> None:
    with torch.no_grad():
        for t, s in zip(live, saved):
            t.copy_(s)
