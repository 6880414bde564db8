"""SAMA: scalable first-order meta-gradients with optimizer adaptation.

Implements the estimator of Choe et al., "Making Scalable Meta Learning Practical"
(NeurIPS 2023), as specified in ``shared/design/sama.md``::

    v = ∇_θ L_meta(θ)          # backward 1 (local)
    d = ∂L_meta/∂λ             # direct term, same pass (often zero)
    p = D ⊙ v                  # optimizer adaptation, D = ∂u/∂g is diagonal
    ε = R / ||p||₂             # the perturbation εp has L2 norm exactly R
    h = d + [∇_λ L_base(θ−εp, λ) − ∇_λ L_base(θ+εp, λ)] / (2ε)   # backwards 2, 3

h approximates dL_meta/dλ with the base Jacobian taken as the identity: three
first-order forward/backward passes, no Hessian-vector products, and extra memory of a
few θ-sized buffers whatever the unroll length.

Safeguards the design notes call for, all on by default:

* stop-gradient inputs (e.g. the detached losses a meta-weight-net reads) are
  evaluated once at θ and reused in both perturbed passes (``cache_stop_grad``);
* the perturbed passes run with the same RNG state, so dropout masks are identical;
* θ is restored by copying from a saved copy (bit-exact), and every buffer (BatchNorm
  running statistics) is restored too; the global RNG state is left unchanged.

Everything here is local to one process; a distributed loop averages the returned
meta-gradient once across ranks (see ``raymeta.training.sama_program``).

Example:
    >>> import torch
    >>> from raymeta.metalearn.reweighting import MetaWeightNet, ReweightingProblem
    >>> gen = torch.Generator().manual_seed(0)
    >>> model, mwn = torch.nn.Linear(4, 3), MetaWeightNet(hidden=8, generator=gen)
    >>> opt = torch.optim.SGD(model.parameters(), lr=0.1)
    >>> x = torch.randn(8, 4, generator=gen)
    >>> batch = (x, torch.randint(0, 3, (8,), generator=gen))
    >>> problem = ReweightingProblem()
    >>> problem.base_loss(model, mwn, batch).backward(); opt.step()
    >>> result = sama_hypergradient(problem, model, mwn, batch, batch, opt)
    >>> [g.shape for g in result.grads] == [p.shape for p in mwn.parameters()]
    True
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
from collections.abc import Iterator, Sequence
from typing import Any, Literal

import torch

from raymeta.errors import TrainingSetupError
from raymeta.metalearn.problem import BilevelProblem, trainable_parameters

__all__ = [
    "Adaptation",
    "SamaResult",
    "check_optimizer_supported",
    "finite_difference_mixed_product",
    "meta_loss_gradients",
    "optimizer_adaptation",
    "sama_hypergradient",
    "set_grads",
]

Adaptation = Literal["auto", "none"]


@dataclasses.dataclass(frozen=True)
class SamaResult:
    """One SAMA meta-gradient.

    Attributes:
        grads: One tensor per trainable meta parameter (zeros where unused).
        meta_loss: L_meta at θ (detached scalar).
        epsilon: The finite-difference step ε = R/||p|| (0 when p = 0).
        direction_norm: ||p||₂ = ||D ⊙ v||₂.
    """

    grads: list[torch.Tensor]
    meta_loss: torch.Tensor
    epsilon: float
    direction_norm: float


# --------------------------------------------------------------------------- adaptation


def check_optimizer_supported(optimizer: torch.optim.Optimizer) -> None:
    """Raise unless SAMA has an exact adaptation for ``optimizer``.

    Supported: ``torch.optim.SGD`` (plain, momentum, Nesterov, dampening, weight
    decay) and ``torch.optim.Adam`` / ``AdamW`` (without ``amsgrad``/``maximize``).

    Raises:
        TrainingSetupError: Names the optimizer or option and what is supported.
    """
    if isinstance(optimizer, torch.optim.SGD):
        if any(g.get("maximize", False) for g in optimizer.param_groups):
            raise TrainingSetupError("SAMA does not support SGD(maximize=True)")
        return
    if isinstance(optimizer, torch.optim.Adam):
        for group in optimizer.param_groups:
            for option in ("amsgrad", "maximize"):
                if group.get(option, False):
                    raise TrainingSetupError(
                        f"SAMA's Adam adaptation does not cover {option}=True; "
                        f"construct {type(optimizer).__name__} with {option}=False"
                    )
        return
    raise TrainingSetupError(
        f"SAMA has no optimizer adaptation for {type(optimizer).__name__}; use "
        "torch.optim.SGD, Adam or AdamW for the base optimizer, or pass "
        "adaptation='none' to skip the adaptation (SAMA-NA)"
    )


def optimizer_adaptation(
    optimizer: torch.optim.Optimizer,
    params: Sequence[torch.Tensor],
    last_grads: Sequence[torch.Tensor | None] | None = None,
    *,
    optimizer_steps: int | None = None,
) -> list[torch.Tensor]:
    """Diagonal D = ∂u/∂g of the optimizer's last update, one tensor per parameter.

    SGD with momentum μ and dampening τ: D = η(1−τ) (η(1 + μ(1−τ)) with Nesterov),
    except on the first step, where torch starts the momentum buffer at the gradient
    itself (undampened): D = η (η(1 + μ) with Nesterov). ``optimizer_steps`` (the
    number of ``step()`` calls so far) tells the first step apart; without it, a
    momentum buffer bit-equal to the gradient marks the first step when there is no
    weight decay (with weight decay and dampening, pass ``optimizer_steps``).
    Adam/AdamW at step t (bias-corrected, as ``torch.optim.Adam``), with post-step
    moments m, s, c1 = 1−β1ᵗ, c2 = 1−β2ᵗ and q = √(s/c2)::

        D = (η/c1)·[(1−β1)(q+ε) − m(1−β2)g_t/(c2·q)] / (q+ε)²

    where g_t is the gradient used in the last step (including Adam's L2 decay term,
    recovered exactly from θ_t and the moments; AdamW's decoupled decay leaves D
    unchanged).

    Args:
        optimizer: The base optimizer, after at least one ``step()``.
        params: The base parameters (each must belong to ``optimizer``).
        last_grads: Gradients of the last step; default ``p.grad`` of each parameter.
        optimizer_steps: ``step()`` calls so far (only SGD with momentum reads it).

    Returns:
        ``[D_i]`` with ``D_i.shape == params[i].shape`` (scalar-valued for SGD).

    Raises:
        TrainingSetupError: Unsupported optimizer, or Adam before its first step.
    """
    diagonals = _iter_diagonals(optimizer, params, last_grads, optimizer_steps)
    return [
        torch.full_like(p, d) if isinstance(d, float) else d
        for p, d in zip(params, diagonals)
    ]


def _iter_diagonals(
    optimizer: torch.optim.Optimizer,
    params: Sequence[torch.Tensor],
    last_grads: Sequence[torch.Tensor | None] | None,
    optimizer_steps: int | None = None,
) -> Iterator[torch.Tensor | float]:
    """Yield D per parameter (a float for SGD), one at a time to bound memory."""
    check_optimizer_supported(optimizer)
    group_of = {id(p): g for g in optimizer.param_groups for p in g["params"]}
    grads = list(last_grads) if last_grads is not None else [p.grad for p in params]
    for p, g in zip(params, grads):
        group = group_of.get(id(p))
        if group is None:
            raise TrainingSetupError(
                "a base parameter is not managed by the base optimizer; build the "
                "optimizer from the same model.parameters() that SAMA differentiates"
            )
        if isinstance(optimizer, torch.optim.Adam):
            yield _adam_diagonal(optimizer.state.get(p, {}), group, p, g)
        else:
            first = _sgd_first_step(
                optimizer.state.get(p, {}), group, g, optimizer_steps
            )
            yield _sgd_scale(group, first_step=first)


def _sgd_first_step(
    state: dict[str, Any],
    group: dict[str, Any],
    grad: torch.Tensor | None,
    optimizer_steps: int | None,
) -> bool:
    """Whether the SGD update just taken was the buffer's first (undampened) one."""
    if optimizer_steps is not None:
        return optimizer_steps <= 1
    buf = state.get("momentum_buffer")
    if buf is None or grad is None or group["weight_decay"]:
        return False
    return bool(torch.equal(buf, grad))


def _sgd_scale(group: dict[str, Any], *, first_step: bool = False) -> float:
    lr, mu, damp = float(group["lr"]), group["momentum"], group["dampening"]
    if mu and first_step:  # torch: buf = g on the first step, never dampened
        damp = 0.0
    if group.get("nesterov", False):
        return lr * (1.0 + mu * (1.0 - damp))
    return lr * (1.0 - damp) if mu else lr


def _adam_diagonal(
    state: dict[str, Any],
    group: dict[str, Any],
    param: torch.Tensor,
    grad: torch.Tensor | None,
) -> torch.Tensor:
    if "exp_avg" not in state or grad is None:
        raise TrainingSetupError(
            "Adam adaptation needs the optimizer state and gradient of the last base "
            "step; run at least one base step (optimizer.step()) before a meta step "
            "and do not clear .grad between them"
        )
    beta1, beta2 = group["betas"]
    lr, eps, t = float(group["lr"]), group["eps"], float(state["step"])
    m, s = state["exp_avg"], state["exp_avg_sq"]
    c1, c2 = 1.0 - beta1**t, 1.0 - beta2**t
    q = s.div(c2).sqrt_()
    g = grad
    if group["weight_decay"] and not group.get("decoupled_weight_decay", False):
        previous = param.detach() + lr * (m / c1) / (q + eps)  # θ_{t-1}, exactly
        g = grad + group["weight_decay"] * previous
    # ratio = g / (c2 q), defined as 0 where q = 0: s >= (1 - beta2) g^2, so q = 0
    # only where g = 0, and those 0/0 NaNs are the only ones to replace. Two
    # parameter-sized temporaries (q, ratio) bound the extra memory.
    ratio = g.div(q).div_(c2).nan_to_num_(nan=0.0)
    denom = q.add_(eps)  # q is not needed any more
    out = ratio.mul_(m).mul_(-(1.0 - beta2)).add_(denom, alpha=1.0 - beta1)
    return out.div_(denom.square_()).mul_(lr / c1)


# --------------------------------------------------------------------------- passes


def _zeros_for_none(
    grads: Sequence[torch.Tensor | None], like: Sequence[torch.Tensor]
) -> list[torch.Tensor]:
    return [torch.zeros_like(p) if g is None else g for g, p in zip(grads, like)]


def _rng_devices(params: Sequence[torch.Tensor]) -> list[int]:
    return sorted({p.device.index or 0 for p in params if p.device.type == "cuda"})


@contextlib.contextmanager
def _replayed_rng(snapshot: dict[str, Any], devices: list[int]) -> Iterator[None]:
    """Run a block from the RNG state in ``snapshot``; restore the outer state after."""
    with torch.random.fork_rng(devices=devices):
        torch.set_rng_state(snapshot["cpu"])
        for device, cuda_state in zip(devices, snapshot.get("cuda", [])):
            torch.cuda.set_rng_state(cuda_state, device)
        yield


def _rng_snapshot(devices: list[int]) -> dict[str, Any]:
    snap: dict[str, Any] = {"cpu": torch.get_rng_state()}
    if devices:
        snap["cuda"] = [torch.cuda.get_rng_state(d) for d in devices]
    return snap


def meta_loss_gradients(
    problem: BilevelProblem,
    model: torch.nn.Module,
    meta: torch.nn.Module,
    meta_batch: Any,
) -> tuple[list[torch.Tensor], list[torch.Tensor], torch.Tensor]:
    """Backward 1: v = ∇_θ L_meta and the direct term ∂L_meta/∂λ in one pass.

    Returns:
        ``(v, direct, meta_loss)``; ``v`` matches the model's trainable
        parameters, ``direct`` the meta module's (zeros where unused).
    """
    params, meta_params = trainable_parameters(model), trainable_parameters(meta)
    loss = problem.meta_loss(model, meta, meta_batch)
    grads = torch.autograd.grad(loss, params + meta_params, allow_unused=True)
    v = _zeros_for_none(grads[: len(params)], params)
    direct = _zeros_for_none(grads[len(params) :], meta_params)
    return v, direct, loss.detach()


def finite_difference_mixed_product(
    problem: BilevelProblem,
    model: torch.nn.Module,
    meta: torch.nn.Module,
    base_batch: Any,
    direction: Sequence[torch.Tensor],
    *,
    radius: float,
    cache_stop_grad: bool = True,
) -> tuple[list[torch.Tensor], float]:
    """Central difference for (∂²L_base/∂θ∂λ)ᵀ p with ε = radius/||p||.

    Computes ``[∇_λ L_base(θ+εp) − ∇_λ L_base(θ−εp)] / (2ε)``. Both passes replay the
    same RNG state (identical dropout masks); θ and every buffer are restored by copy
    afterwards, so the model is bit-identical to before the call.

    Args:
        problem: The bilevel problem.
        model: Base model (unwrapped: pass ``ddp.module`` under DDP).
        meta: Meta module.
        base_batch: The base batch the mixed derivative is taken on.
        direction: p, one tensor per trainable model parameter.
        radius: R, the L2 norm of the perturbation εp.
        cache_stop_grad: Evaluate ``problem.stop_grad_inputs`` once at θ and reuse
            it (True, correct); False recomputes them at θ±εp (negative control).

    Returns:
        ``(product, epsilon)``; product matches the meta parameters (zeros where
        unused); epsilon is 0 and the product zero when ``||p|| == 0``.
    """
    params, meta_params = trainable_parameters(model), trainable_parameters(meta)
    norm = math.sqrt(sum(float(d.pow(2).sum()) for d in direction))
    if norm == 0.0:
        return [torch.zeros_like(q) for q in meta_params], 0.0
    eps = radius / norm
    devices = _rng_devices(params)
    snapshot = _rng_snapshot(devices)
    theta0 = [p.detach().clone() for p in params]
    buffers = list(model.buffers())
    buffers0 = [b.detach().clone() for b in buffers]
    cache = None
    if cache_stop_grad:
        with _replayed_rng(snapshot, devices), torch.no_grad():
            cache = problem.stop_grad_inputs(model, base_batch)
    grads = []
    try:
        for sign in (1.0, -1.0):
            _copy_(buffers, buffers0)
            with torch.no_grad():
                for p, p0, d in zip(params, theta0, direction):
                    p.copy_(p0).add_(d, alpha=sign * eps)  # no temporary
            with _replayed_rng(snapshot, devices):
                loss = problem.base_loss(model, meta, base_batch, cache)
                grads.append(torch.autograd.grad(loss, meta_params, allow_unused=True))
    finally:
        _copy_(params, theta0)
        _copy_(buffers, buffers0)
    plus = _zeros_for_none(grads[0], meta_params)
    minus = _zeros_for_none(grads[1], meta_params)
    return [(gp - gm) / (2 * eps) for gp, gm in zip(plus, minus)], eps


def _copy_(live: Sequence[torch.Tensor], saved: Sequence[torch.Tensor]) -> None:
    with torch.no_grad():
        for t, s in zip(live, saved):
            t.copy_(s)


def sama_hypergradient(
    problem: BilevelProblem,
    model: torch.nn.Module,
    meta: torch.nn.Module,
    base_batch: Any,
    meta_batch: Any,
    optimizer: torch.optim.Optimizer,
    *,
    radius: float = 1e-2,
    adaptation: Adaptation = "auto",
    cache_stop_grad: bool = True,
    last_grads: Sequence[torch.Tensor | None] | None = None,
    optimizer_steps: int | None = None,
) -> SamaResult:
    """The SAMA meta-gradient h ≈ dL_meta/dλ at the current θ (one process).

    Args:
        problem: The bilevel problem.
        model: Base model (unwrapped); its parameters are θ.
        meta: Meta module; its trainable parameters are λ.
        base_batch: Last base batch (the mixed derivative is taken on it).
        meta_batch: Meta batch for v = ∇_θ L_meta.
        optimizer: The base optimizer after its last step (for D).
        radius: R in ε = R/||D v||; 1e-2 suits float32, 1e-3 float64.
        adaptation: "auto" picks D from the optimizer; "none" uses D = I (SAMA-NA).
        cache_stop_grad: Reuse stop-gradient inputs evaluated at θ (recommended).
        last_grads: Gradients of the last base step; default the parameters' .grad.
        optimizer_steps: Base ``step()`` calls so far (SGD's first momentum step
            is undampened; see :func:`optimizer_adaptation`).

    Returns:
        A :class:`SamaResult`; ``grads`` align with ``trainable_parameters(meta)``.

    Raises:
        TrainingSetupError: Unsupported optimizer or no base step taken yet.
    """
    if radius <= 0:
        raise TrainingSetupError(f"radius must be > 0, got {radius}")
    if adaptation not in ("auto", "none"):
        raise TrainingSetupError(
            f"adaptation must be 'auto' or 'none', got {adaptation!r}"
        )
    params = trainable_parameters(model)
    devices = _rng_devices(params)
    buffers = list(model.buffers())
    buffers0 = [b.detach().clone() for b in buffers]
    with torch.random.fork_rng(devices=devices):
        v, direct, meta_loss = meta_loss_gradients(problem, model, meta, meta_batch)
    _copy_(buffers, buffers0)
    direction = v  # p = D ⊙ v, formed in place one parameter at a time
    if adaptation == "auto":
        diagonals = _iter_diagonals(optimizer, params, last_grads, optimizer_steps)
        for vi, d in zip(v, diagonals):
            vi.mul_(d)
    product, eps = finite_difference_mixed_product(
        problem,
        model,
        meta,
        base_batch,
        direction,
        radius=radius,
        cache_stop_grad=cache_stop_grad,
    )
    norm = radius / eps if eps else 0.0
    grads = [d - m for d, m in zip(direct, product)]
    return SamaResult(
        grads=grads, meta_loss=meta_loss, epsilon=eps, direction_norm=norm
    )


def set_grads(params: Sequence[torch.Tensor], grads: Sequence[torch.Tensor]) -> None:
    """Write ``grads`` into ``params[i].grad`` (replacing any previous value)."""
    for p, g in zip(params, grads):
        p.grad = g.detach().clone()
