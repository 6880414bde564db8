from __future__ import annotations

import math

import pytest
import torch

from raymeta.gp.fit import fit_task_gp
from raymeta.tasks.data import TaskData


def smooth(X: torch.Tensor, shift: float = 0.0) -> torch.Tensor:
    return torch.sin(5 * X[:, 0] + shift) + (X[:, 1] - 0.3) ** 2 * 2


def unrelated(X: torch.Tensor) -> torch.Tensor:
    return 50 * torch.sin(13 * X[:, 0]) * torch.cos(9 * X[:, 1])


def uniform(n: int, d: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, d, generator=g, dtype=torch.float64)


@pytest.fixture(scope="session")
def meta_tasks() -> list[TaskData]:
    return [
        TaskData(f"m{i}", X, smooth(X, 0.3 * i) * (1 + i) + i)
        for i, X in enumerate(uniform(10 + 2 * i, 2, i) for i in range(3))
    ]


@pytest.fixture(scope="session")
def meta_states(meta_tasks):
    return [
        fit_task_gp(t, seed=i, restarts=1, maxiter=30) for i, t in enumerate(meta_tasks)
    ]


__all__ = ["math", "smooth", "unrelated", "uniform"]
