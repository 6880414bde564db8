"""Small bilevel problems shared by the metalearn tests."""

from __future__ import annotations

import torch

from raymeta.metalearn.problem import BilevelProblem


class QuadModel(torch.nn.Module):
    """θ as a module: ``forward`` ignores its input and returns θ."""

    def __init__(self, theta: torch.Tensor) -> None:
        super().__init__()
        self.theta = torch.nn.Parameter(theta.clone())

    def forward(self, _x=None):
        return self.theta


class QuadMeta(torch.nn.Module):
    def __init__(self, lam: torch.Tensor) -> None:
        super().__init__()
        self.lam = torch.nn.Parameter(lam.clone())


class QuadraticProblem(BilevelProblem):
    """L_base = ½θᵀAθ − θᵀBλ, L_meta = ½‖θ − t‖²; θ*(λ) = A⁻¹Bλ."""

    def __init__(self, A, B, target) -> None:
        self.A, self.B, self.target = A, B, target

    def base_loss(self, forward, meta, batch, cache=None):
        th = forward(batch)
        return 0.5 * th @ self.A @ th - th @ self.B @ meta.lam

    def meta_loss(self, forward, meta, batch):
        return 0.5 * (forward(batch) - self.target).pow(2).sum()

    def exact_hypergradient(self, lam):
        theta = torch.linalg.solve(self.A, self.B @ lam)
        return self.B.T @ torch.linalg.solve(self.A, theta - self.target), theta


def quadratic(dim: int, meta_dim: int, condition: float, seed: int):
    gen = torch.Generator().manual_seed(seed)
    q, _ = torch.linalg.qr(torch.randn(dim, dim, generator=gen, dtype=torch.float64))
    eig = torch.logspace(
        0, torch.log10(torch.tensor(condition)).item(), dim, dtype=torch.float64
    )
    A = q @ torch.diag(eig) @ q.T
    B = torch.randn(dim, meta_dim, generator=gen, dtype=torch.float64)
    target = torch.randn(dim, generator=gen, dtype=torch.float64)
    lam = torch.randn(meta_dim, generator=gen, dtype=torch.float64)
    return QuadraticProblem(A, B, target), lam


def cosine(a, b) -> float:
    a = torch.cat([t.reshape(-1) for t in a])
    b = torch.cat([t.reshape(-1) for t in b])
    return float(a @ b / (a.norm() * b.norm()))


def rel_err(a, b) -> float:
    a = torch.cat([t.reshape(-1) for t in a])
    b = torch.cat([t.reshape(-1) for t in b])
    return float((a - b).norm() / b.norm())
