"""Hyperparameter priors and bounds of ScaML-GP (spec ``scamlgp.md`` section (a)).

Meta-task GPs and the target residual kernel use different priors; both are written
down here once, with a seeded sampler for the prior-drawn restarts.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

__all__ = [
    "KERNEL_BOUNDS",
    "dlog_prob",
    "log_prob",
    "META_PRIORS",
    "NOISE_BOUNDS",
    "TARGET_PRIORS",
    "WEIGHT_LOWER",
    "HyperPriors",
    "draw_in_bounds",
]

KERNEL_BOUNDS = (1e-4, 1e2)  # lengthscale and outputscale
NOISE_BOUNDS = (1e-8, 1e-2)  # noise variance, standardised units
WEIGHT_LOWER = 1e-10  # meta-task weights: w >= 1e-10, no upper bound


@dataclass(frozen=True)
class HyperPriors:
    """Priors of one Scale(RBF-ARD) kernel plus Gaussian noise.

    Each prior is ``(family, a, b)`` with family ``"gamma"`` (concentration, rate)
    or ``"lognormal"`` (loc, scale of the log).

    Attributes:
        lengthscale: Prior of every ARD lengthscale.
        outputscale: Prior of the outputscale.
        noise: Prior of the noise variance.
        start: Default start values ``(lengthscale, outputscale, noise)``.
    """

    lengthscale: tuple[str, float, float]
    outputscale: tuple[str, float, float]
    noise: tuple[str, float, float]
    start: tuple[float, float, float]


META_PRIORS = HyperPriors(
    lengthscale=("gamma", 3.0, 6.0),
    outputscale=("gamma", 2.0, 0.15),
    noise=("lognormal", -8.0, 2.0),
    start=(0.5, 1.0, 1e-3),
)
TARGET_PRIORS = HyperPriors(
    lengthscale=("lognormal", 0.5, 1.5),
    outputscale=("lognormal", -2.0, 3.0),
    noise=("lognormal", -8.0, 2.0),
    start=(1.0, 0.1, 1e-3),
)


def log_prob(prior: tuple[str, float, float], x: torch.Tensor) -> torch.Tensor:
    """Elementwise log density of ``prior`` at positive values ``x``."""
    family, a, b = prior
    logx = torch.log(x)
    if family == "gamma":
        lp = a * math.log(b) - math.lgamma(a) + (a - 1) * logx - b * x
    else:
        lp = -logx - math.log(b) - 0.5 * math.log(2 * math.pi)
        lp = lp - 0.5 * ((logx - a) / b) ** 2
    return lp


def dlog_prob(prior: tuple[str, float, float], t: torch.Tensor) -> torch.Tensor:
    """Derivative of ``log_prob(prior, exp(t))`` with respect to ``t = log x``."""
    family, a, b = prior
    if family == "gamma":
        return (a - 1) - b * t.exp()
    return -1.0 - (t - a) / b**2


def draw_in_bounds(
    prior: tuple[str, float, float],
    size: int,
    bounds: tuple[float, float],
    rng: np.random.Generator,
    tries: int = 20,
) -> np.ndarray:
    """Draw ``size`` values from ``prior``, redrawing those outside ``bounds``.

    Values still outside after ``tries`` rounds are clipped into the bounds.
    """
    family, a, b = prior
    out = np.empty(size)
    todo = np.arange(size)
    for _ in range(tries):
        if family == "gamma":
            draw = rng.gamma(a, 1.0 / b, size=todo.size)
        else:
            draw = rng.lognormal(a, b, size=todo.size)
        out[todo] = draw
        todo = todo[(draw < bounds[0]) | (draw > bounds[1])]
        if todo.size == 0:
            break
    return np.clip(out, *bounds)
