"""A user's own code, as a ``ray job submit --working-dir`` job would ship it.

Import paths in the tests point here (``tests.unit.training.byo_fixtures:...``).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from raymeta.metalearn.reweighting import ReweightingProblem


class UserCNN(nn.Module):
    """A user's CNN for 8x8 grey digits (no raymeta building blocks)."""

    def __init__(self, classes: int = 10, width: int = 8) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, width, 3, padding=1)
        self.head = nn.Linear(width * 16, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = torch.relu(self.conv(x.reshape(-1, 1, 8, 8)))
        return self.head(nn.functional.max_pool2d(z, 2).flatten(1))


def user_cnn(classes: int = 10, width: int = 8) -> nn.Module:
    return UserCNN(classes, width)


def not_a_module(**_: object) -> str:
    return "a string"


class UserProblem(ReweightingProblem):
    """A user's problem class (here: meta-weight-net reweighting, unchanged)."""


class NoLosses:
    """Not a bilevel problem."""


def digits_splits(meta: int = 50, test: int = 200, seed: int = 0) -> dict:
    """sklearn digits as user arrays: {"train", "meta", "test"} of (x, y, ids)."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    order = np.random.default_rng(seed).permutation(len(digits.target))
    x = (digits.data[order] / 16.0).astype(np.float32)
    y = digits.target[order].astype(np.int64)
    ids = order.astype(np.int64)
    cut = (meta, meta + test)
    return {
        "meta": (x[: cut[0]], y[: cut[0]], ids[: cut[0]]),
        "test": (x[cut[0] : cut[1]], y[cut[0] : cut[1]]),
        "train": (x[cut[1] :], y[cut[1] :], ids[cut[1] :]),
    }


class DigitsDataset(torch.utils.data.Dataset):
    """A map-style torch Dataset of (image, label) pairs."""

    def __init__(self, split: tuple) -> None:
        self.x, self.y = split[0], split[1]

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        return torch.as_tensor(self.x[i]), int(self.y[i])


def digits_labelled() -> tuple:
    """One labelled set (x, y) for HeTRoM episodes (classes split by raymeta)."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    return (digits.data / 16.0).astype(np.float32), digits.target.astype(np.int64)


def mlp16(**_: object) -> nn.Module:
    """A 32 -> 16 embedding (wider than the tiny HeTRoM config's embedding_dim=8)."""
    return nn.Linear(32, 16)
