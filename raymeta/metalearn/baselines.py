"""Reference hypergradients SAMA is compared against: unrolled, Neumann and CG.

All three share :class:`~raymeta.metalearn.problem.BilevelProblem` with SAMA and
return one gradient per trainable meta parameter:

* :func:`unrolled_hypergradient` (ITD): K differentiable SGD steps on θ through
  ``torch.func.functional_call``, then backpropagation of L_meta(θ_K) to λ. Memory
  grows with K.
* :func:`neumann_hypergradient`: implicit differentiation with H⁻¹v approximated by
  ``α Σ_{j=0..K} (I − αH)ʲ v`` (K Hessian-vector products).
* :func:`cg_hypergradient`: implicit differentiation with H x = v solved by K
  conjugate-gradient iterations.

The implicit ones return ``d − (∂g/∂λ)ᵀ x`` with x ≈ H⁻¹ v, v = ∇_θ L_meta(θ) and
g = ∇_θ L_base (double backward). None of them touches the model's parameters.

Example:
    >>> import torch
    >>> from raymeta.metalearn.reweighting import MetaWeightNet, ReweightingProblem
    >>> gen = torch.Generator().manual_seed(0)
    >>> model, mwn = torch.nn.Linear(4, 3), MetaWeightNet(hidden=8, generator=gen)
    >>> x = torch.randn(8, 4, generator=gen)
    >>> batch = (x, torch.randint(0, 3, (8,), generator=gen))
    >>> problem = ReweightingProblem()
    >>> grads = cg_hypergradient(problem, model, mwn, batch, batch, steps=3)
    >>> len(grads) == len(list(mwn.parameters()))
    True
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from raymeta.errors import TrainingSetupError
from raymeta.metalearn.problem import (
    BilevelProblem,
    functional_forward,
    trainable_parameters,
)

__all__ = ["cg_hypergradient", "neumann_hypergradient", "unrolled_hypergradient"]


def _zeros_for_none(
    grads: Sequence[torch.Tensor | None], like: Sequence[torch.Tensor]
) -> list[torch.Tensor]:
    return [torch.zeros_like(p) if g is None else g for g, p in zip(grads, like)]


def _check_steps(steps: int) -> None:
    if steps < 1:
        raise TrainingSetupError(f"steps must be >= 1, got {steps}")


def unrolled_hypergradient(
    problem: BilevelProblem,
    model: torch.nn.Module,
    meta: torch.nn.Module,
    base_batches: Sequence[Any],
    meta_batch: Any,
    *,
    lr: float,
) -> list[torch.Tensor]:
    """Hypergradient by backpropagating through ``len(base_batches)`` SGD steps.

    Args:
        problem: The bilevel problem.
        model: Base model; its current parameters are θ_0 (left unchanged).
        meta: Meta module holding λ.
        base_batches: One batch per unrolled step (K = their number).
        meta_batch: Batch for L_meta(θ_K).
        lr: SGD learning rate of the unrolled steps.

    Returns:
        dL_meta(θ_K)/dλ, one tensor per trainable meta parameter.
    """
    _check_steps(len(base_batches))
    names = [n for n, p in model.named_parameters() if p.requires_grad]
    params = {n: p for n, p in model.named_parameters() if p.requires_grad}
    meta_params = trainable_parameters(meta)
    for batch in base_batches:
        forward = functional_forward(model, params)
        loss = problem.base_loss(forward, meta, batch)
        grads = torch.autograd.grad(loss, list(params.values()), create_graph=True)
        params = {n: params[n] - lr * g for n, g in zip(names, grads)}
    outer = problem.meta_loss(functional_forward(model, params), meta, meta_batch)
    hyper = torch.autograd.grad(outer, meta_params, allow_unused=True)
    return [g.detach() for g in _zeros_for_none(hyper, meta_params)]


def _implicit_parts(
    problem: BilevelProblem,
    model: torch.nn.Module,
    meta: torch.nn.Module,
    base_batch: Any,
    meta_batch: Any,
) -> tuple[list[torch.Tensor], list[torch.Tensor], tuple[torch.Tensor, ...]]:
    params, meta_params = trainable_parameters(model), trainable_parameters(meta)
    outer = problem.meta_loss(model, meta, meta_batch)
    grads = torch.autograd.grad(outer, params + meta_params, allow_unused=True)
    v = [g.detach() for g in _zeros_for_none(grads[: len(params)], params)]
    direct = [g.detach() for g in _zeros_for_none(grads[len(params) :], meta_params)]
    base = problem.base_loss(model, meta, base_batch)
    inner = torch.autograd.grad(base, params, create_graph=True)
    return v, direct, inner


def _hvp(
    inner: Sequence[torch.Tensor], params: list[torch.Tensor], vec: list[torch.Tensor]
) -> list[torch.Tensor]:
    out = torch.autograd.grad(inner, params, vec, retain_graph=True, allow_unused=True)
    return [o.detach() for o in _zeros_for_none(out, params)]


def _finish(
    inner: Sequence[torch.Tensor],
    meta: torch.nn.Module,
    direct: list[torch.Tensor],
    solution: list[torch.Tensor],
) -> list[torch.Tensor]:
    meta_params = trainable_parameters(meta)
    mixed = torch.autograd.grad(inner, meta_params, solution, allow_unused=True)
    mixed = _zeros_for_none(mixed, meta_params)
    return [d - m.detach() for d, m in zip(direct, mixed)]


def _dot(a: Sequence[torch.Tensor], b: Sequence[torch.Tensor]) -> torch.Tensor:
    return sum((x * y).sum() for x, y in zip(a, b))


def neumann_hypergradient(
    problem: BilevelProblem,
    model: torch.nn.Module,
    meta: torch.nn.Module,
    base_batch: Any,
    meta_batch: Any,
    *,
    steps: int,
    alpha: float = 1.0,
) -> list[torch.Tensor]:
    """Implicit hypergradient with a K-term Neumann series for H⁻¹v.

    Args:
        problem: The bilevel problem.
        model: Base model at (approximately) its optimum θ*.
        meta: Meta module holding λ.
        base_batch: Batch for the Hessian and mixed derivative.
        meta_batch: Batch for v = ∇_θ L_meta.
        steps: K, the number of Hessian-vector products.
        alpha: Series step; converges when α·λ_max(H) < 2 (use ≈ 1/λ_max).

    Returns:
        One tensor per trainable meta parameter.
    """
    _check_steps(steps)
    params = trainable_parameters(model)
    v, direct, inner = _implicit_parts(problem, model, meta, base_batch, meta_batch)
    term, total = list(v), list(v)
    for _ in range(steps):
        hv = _hvp(inner, params, term)
        term = [t - alpha * h for t, h in zip(term, hv)]
        total = [s + t for s, t in zip(total, term)]
    return _finish(inner, meta, direct, [alpha * s for s in total])


def cg_hypergradient(
    problem: BilevelProblem,
    model: torch.nn.Module,
    meta: torch.nn.Module,
    base_batch: Any,
    meta_batch: Any,
    *,
    steps: int,
    damping: float = 0.0,
) -> list[torch.Tensor]:
    """Implicit hypergradient with K conjugate-gradient iterations on (H + δI)x = v.

    Args:
        problem: The bilevel problem.
        model: Base model at (approximately) its optimum θ*.
        meta: Meta module holding λ.
        base_batch: Batch for the Hessian and mixed derivative.
        meta_batch: Batch for v = ∇_θ L_meta.
        steps: K, the number of CG iterations (Hessian-vector products).
        damping: δ added to the Hessian's diagonal (0 = plain CG).

    Returns:
        One tensor per trainable meta parameter.
    """
    _check_steps(steps)
    params = trainable_parameters(model)
    v, direct, inner = _implicit_parts(problem, model, meta, base_batch, meta_batch)
    x = [torch.zeros_like(t) for t in v]
    r, p = list(v), list(v)
    rr = _dot(r, r)
    for _ in range(steps):
        if float(rr) == 0.0:
            break
        hp = [h + damping * q for h, q in zip(_hvp(inner, params, p), p)]
        step = rr / _dot(p, hp)
        x = [a + step * b for a, b in zip(x, p)]
        r = [a - step * b for a, b in zip(r, hp)]
        rr_new = _dot(r, r)
        p = [a + (rr_new / rr) * b for a, b in zip(r, p)]
        rr = rr_new
    return _finish(inner, meta, direct, x)
