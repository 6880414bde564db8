"""The ``[optim]`` section as a torch optimizer (SGD, Adam, AdamW only).

These three are the optimizers SAMA has exact adaptations for
(:func:`raymeta.metalearn.sama.optimizer_adaptation`); the config refuses others.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch

from raymeta.errors import TrainingSetupError

__all__ = ["OPTIMIZERS", "build_optimizer"]

OPTIMIZERS = ("sgd", "adam", "adamw")


def build_optimizer(
    section: Any, params: Iterable[torch.nn.Parameter]
) -> torch.optim.Optimizer:
    """Build ``section.name`` over ``params`` with the section's settings.

    Raises:
        TrainingSetupError: An optimizer other than sgd, adam or adamw.
    """
    if section.name == "sgd":
        return torch.optim.SGD(
            params,
            lr=section.lr,
            momentum=section.momentum,
            dampening=section.dampening,
            nesterov=section.nesterov,
            weight_decay=section.weight_decay,
        )
    if section.name in ("adam", "adamw"):
        cls = torch.optim.AdamW if section.name == "adamw" else torch.optim.Adam
        return cls(
            params,
            lr=section.lr,
            betas=tuple(section.betas),
            weight_decay=section.weight_decay,
        )
    raise TrainingSetupError(
        f"optim.name {section.name!r} is not supported; use one of {list(OPTIMIZERS)}"
    )
