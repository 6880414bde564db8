"""Batched scaled ARD kernels (RBF, Matern-5/2) and a Cholesky with escalating jitter.

The driver evaluates many small meta-task GPs at once, so these helpers work on stacks
of tasks (a leading batch dimension) in float64. They compute exactly what gpytorch's
``ScaleKernel(RBFKernel(ard_num_dims=d))`` and
``ScaleKernel(MaternKernel(nu=2.5, ard_num_dims=d))`` compute for the same
hyperparameters. With ``q = ||(a - b) / lengthscale||^2`` and ``r = sqrt(q)``:

- ``"rbf"``: ``k = exp(-q / 2)``;
- ``"matern52"``: ``k = (1 + sqrt(5) r + 5 q / 3) exp(-sqrt(5) r)``.
"""

from __future__ import annotations

import math

import torch

from raymeta.errors import MetaDataError

__all__ = [
    "KERNELS",
    "check_kernel",
    "cholesky_jitter",
    "scaled_kernel",
    "scaled_rbf",
    "unit_kernel",
]

KERNELS = ("rbf", "matern52")
_SQRT5 = math.sqrt(5.0)


def check_kernel(kind: str) -> str:
    """``kind`` if it is a known kernel, else a :class:`MetaDataError` naming them."""
    if kind not in KERNELS:
        raise MetaDataError(f"kernel must be one of {list(KERNELS)}; got {kind!r}")
    return kind


def unit_kernel(q: torch.Tensor, kind: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Unit-outputscale kernel ``k(q)`` and ``g = -2 dk/dq`` at squared distances ``q``.

    ``g`` turns into the lengthscale gradient: ``dk / d log(l_j) = g (a_j - b_j)^2 /
    l_j^2`` (for the RBF, ``g = k``).
    """
    if kind == "rbf":
        k = torch.exp(-0.5 * q)
        return k, k
    r = q.clamp_min(1e-30).sqrt()  # finite gradient at q = 0 (as gpytorch does)
    e = torch.exp(-_SQRT5 * r)
    k = (1.0 + _SQRT5 * r + (5.0 / 3.0) * q) * e
    return k, (5.0 / 3.0) * (1.0 + _SQRT5 * r) * e


def scaled_kernel(
    A: torch.Tensor,
    B: torch.Tensor,
    lengthscale: torch.Tensor,
    outputscale: torch.Tensor,
    kind: str = "rbf",
) -> torch.Tensor:
    """``outputscale * k(||(a - b) / lengthscale||^2)`` for the kernel ``kind``.

    Args:
        A: ``... x p x d`` points.
        B: ``... x r x d`` points.
        lengthscale: ``... x d`` (broadcast against the batch of A and B).
        outputscale: ``...`` (broadcast likewise).
        kind: One of :data:`KERNELS`.

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
    return outputscale[..., None, None] * unit_kernel(sq.clamp_min(0.0), kind)[0]


_JITTERS = (0.0, 1e-10, 1e-8, 1e-6, 1e-4)


def scaled_rbf(
    A: torch.Tensor,
    B: torch.Tensor,
    lengthscale: torch.Tensor,
    outputscale: torch.Tensor,
) -> torch.Tensor:
    """``outputscale * exp(-0.5 * ||(a - b) / lengthscale||^2)`` (see
    :func:`scaled_kernel`)."""
    return scaled_kernel(A, B, lengthscale, outputscale, "rbf")


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
