"""Batched scaled RBF-ARD kernel and a Cholesky with escalating jitter.

The driver evaluates many small meta-task GPs at once, so these helpers work on stacks
of tasks (a leading batch dimension) in float64. They compute exactly what gpytorch's
``ScaleKernel(RBFKernel(ard_num_dims=d))`` computes for the same hyperparameters.
"""

from __future__ import annotations

import torch

__all__ = ["cholesky_jitter", "scaled_rbf"]

_JITTERS = (0.0, 1e-10, 1e-8, 1e-6, 1e-4)


def scaled_rbf(
    A: torch.Tensor,
    B: torch.Tensor,
    lengthscale: torch.Tensor,
    outputscale: torch.Tensor,
) -> torch.Tensor:
    """``outputscale * exp(-0.5 * ||(a - b) / lengthscale||^2)``.

    Args:
        A: ``... x p x d`` points.
        B: ``... x r x d`` points.
        lengthscale: ``... x d`` (broadcast against the batch of A and B).
        outputscale: ``...`` (broadcast likewise).

    Returns:
        ``... x p x r`` kernel matrix.
    """
    ls = lengthscale.unsqueeze(-2)
    a, b = A / ls, B / ls
    sq = (
        (a * a).sum(-1).unsqueeze(-1)
        + (b * b).sum(-1).unsqueeze(-2)
        - 2.0 * a @ b.transpose(-1, -2)
    )
    return outputscale[..., None, None] * torch.exp(-0.5 * sq.clamp_min(0.0))


def cholesky_jitter(K: torch.Tensor) -> tuple[torch.Tensor, float]:
    """Cholesky factor of ``K`` (``... x n x n``), adding diagonal jitter if needed.

    Tries jitter 0, 1e-10, 1e-8, 1e-6, 1e-4 times the mean diagonal.

    Returns:
        ``(L, jitter)``, the lower factor and the relative jitter that was used.

    Raises:
        torch.linalg.LinAlgError: K is not positive definite even with jitter 1e-4.
    """
    if not torch.isfinite(K).all():
        raise torch.linalg.LinAlgError("matrix has non-finite entries")
    scale = K.diagonal(dim1=-2, dim2=-1).mean().abs().clamp_min(1e-300)
    eye = torch.eye(K.shape[-1], dtype=K.dtype)
    for jitter in _JITTERS:
        L, info = torch.linalg.cholesky_ex(K + (jitter * scale) * eye)
        if not bool((info > 0).any()):
            return L, jitter
    raise torch.linalg.LinAlgError(
        f"matrix not positive definite even with relative jitter {_JITTERS[-1]}"
    )
