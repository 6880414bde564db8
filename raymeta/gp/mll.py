"""MAP objective of a GP (optionally with weighted meta-task terms) and its optimiser.

One objective serves both fits of ScaML-GP: a meta-task GP (no weights, meta priors)
and the target model (M weights, meta posteriors cached at the target inputs, target
priors). Parameters are optimised by L-BFGS-B in log space for the kernel and noise
(box bounds from :mod:`raymeta.gp.priors`) and directly for the weights (w >= 1e-10),
with analytic gradients, which is several times faster than autograd on these small
problems.

All starts of a fit run at once through botorch's batched port of scipy's L-BFGS-B
(``fmin_l_bfgs_b_batched``): each start is its own independent L-BFGS-B problem, but
every objective evaluation is one batched torch call for all unfinished starts
instead of R small ones, which is where the time of these small fits goes.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property

import numpy as np
import torch
from botorch.optim.batched_lbfgs_b import fmin_l_bfgs_b_batched
from threadpoolctl import threadpool_limits

from raymeta.gp.kernel import unit_kernel
from raymeta.gp.priors import (
    KERNEL_BOUNDS,
    NOISE_BOUNDS,
    WEIGHT_LOWER,
    HyperPriors,
    dlog_prob,
    log_prob,
)

__all__ = ["MapObjective", "box_bounds", "minimise_starts"]

NOT_PD_PENALTY = 1e3  # added per point where K is not positive definite


@dataclass(frozen=True)
class MapObjective:
    """Negative MAP objective per point of a GP with optional meta-task terms.

    ``theta`` is ``R x (d + 2 + M)``: log lengthscales, log outputscale, log noise
    variance, then M meta-task weights (none for a meta-task GP). The model of the
    standardised data z is N(sum_m w_m means_m, sum_m w_m^2 covs_m + k + noise I);
    the objective is -(log-likelihood + log-priors) / n, as gpytorch's
    ``ExactMarginalLogLikelihood`` with registered priors computes it.

    Attributes:
        X: ``n x d`` inputs.
        z: ``n`` standardised outputs.
        means: ``M x n`` meta posterior means (standardised units).
        covs: ``M x n x n`` meta posterior covariances (standardised units).
        priors: Priors of lengthscale, outputscale and noise.
        kernel: ``"rbf"`` or ``"matern52"`` (:mod:`raymeta.gp.kernel`).
    """

    X: torch.Tensor
    z: torch.Tensor  # y / S (M > 0) or (y - Ybar) / S (M = 0)
    means: torch.Tensor  # M x n meta posterior means / S
    covs: torch.Tensor  # M x n x n, divided by S^2
    priors: HyperPriors
    kernel: str = "rbf"

    @cached_property
    def _diff2(self) -> torch.Tensor:
        """Squared coordinate differences of the inputs, ``n^2 x d``."""
        n, d = self.X.shape
        return ((self.X[:, None, :] - self.X[None, :, :]) ** 2).reshape(n * n, d)

    @cached_property
    def _eye(self) -> torch.Tensor:
        return torch.eye(self.X.shape[0], dtype=self.X.dtype)

    def __call__(self, theta: torch.Tensor) -> torch.Tensor:
        """``R`` objective values (minimise) at ``theta`` (``R x P``)."""
        return self.values_and_grads(theta)[0]

    def value_and_grad(self, theta: torch.Tensor) -> tuple[float, torch.Tensor]:
        """Objective and gradient ``P`` at one ``P`` vector."""
        values, grads = self.values_and_grads(theta[None])
        return float(values[0]), grads[0]

    def values_and_grads(
        self, theta: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Objectives ``R`` and analytic gradients ``R x P`` (no autograd).

        Uses d ll / dK = (a a^T - K^{-1}) / 2 with a = K^{-1} r. Where K is not
        positive definite, the value and gradient are those of K + 1e-3 I plus a
        constant penalty of ``NOT_PD_PENALTY``, which pushes the optimiser back.
        """
        n, d = self.X.shape
        R, m = theta.shape[0], self.means.shape[0]
        ls, os_, noise = theta[:, :d].exp(), theta[:, d].exp(), theta[:, d + 1].exp()
        w = theta[:, d + 2 :]
        diff2, eye = self._diff2, self._eye
        q = (diff2 / ls[:, None, :] ** 2).sum(-1).reshape(R, n, n)
        unit, slope = unit_kernel(q, self.kernel)
        K = os_[:, None, None] * unit + noise[:, None, None] * eye
        covs = self.covs.reshape(m, n * n)
        resid = self.z.expand(R, n)
        if m:
            K = K + (w**2 @ covs).reshape(R, n, n)
            resid = resid - w @ self.means
        L, info = torch.linalg.cholesky_ex(K)
        failed = info > 0
        if failed.any():
            L = torch.linalg.cholesky_ex(K + failed[:, None, None] * 1e-3 * eye)[0]
        a = torch.cholesky_solve(resid[..., None], L)[..., 0]
        G = 0.5 * (a[:, :, None] * a[:, None, :] - torch.cholesky_inverse(L))
        ll = (
            -0.5 * (resid * a).sum(-1)
            - L.diagonal(dim1=-2, dim2=-1).log().sum(-1)
            - 0.5 * n * math.log(2 * math.pi)
        )
        G_os = G * os_[:, None, None]
        grad = torch.empty_like(theta)
        grad[:, :d] = ((G_os * slope).reshape(R, n * n) @ diff2) / ls**2
        grad[:, d] = (G_os * unit).reshape(R, n * n).sum(-1)
        grad[:, d + 1] = noise * G.diagonal(dim1=-2, dim2=-1).sum(-1)
        if m:
            grad[:, d + 2 :] = 2 * w * (G.reshape(R, n * n) @ covs.T) + a @ self.means.T
        lp, dlp = self._log_prior(theta[:, : d + 2], w)
        grad[:, : d + 2] += dlp
        grad[:, d + 2 :] -= 1.0
        values = -(ll + lp) / n + failed * NOT_PD_PENALTY
        return values, -grad / n

    def _log_prior(
        self, logs: torch.Tensor, w: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Log prior ``R`` and its gradient ``R x (d + 2)`` in log space.

        The weights' Gamma(1, 1) = Exp(1) prior contributes ``-sum(w)`` (gradient -1,
        added by the caller).
        """
        d = logs.shape[1] - 2
        p = self.priors
        parts = ((p.lengthscale, logs[:, :d]), (p.outputscale, logs[:, d : d + 1]))
        parts += ((p.noise, logs[:, d + 1 :]),)
        lp = sum(log_prob(prior, t.exp()).sum(-1) for prior, t in parts) - w.sum(-1)
        dlp = torch.cat([dlog_prob(prior, t) for prior, t in parts], dim=-1)
        return lp, dlp


def box_bounds(d: int, m: int) -> list[tuple[float | None, float | None]]:
    """L-BFGS-B bounds of one start: log kernel, log noise, then M weights."""
    k = (math.log(KERNEL_BOUNDS[0]), math.log(KERNEL_BOUNDS[1]))
    nb = (math.log(NOISE_BOUNDS[0]), math.log(NOISE_BOUNDS[1]))
    return [k] * (d + 1) + [nb] + [(WEIGHT_LOWER, None)] * m


def minimise_starts(
    obj: MapObjective,
    starts: Sequence[np.ndarray],
    bounds: list[tuple[float | None, float | None]],
    maxiter: int,
) -> list[tuple[torch.Tensor, float]]:
    """Optimise R starts by independent, batched L-BFGS-B runs.

    Args:
        obj: The objective.
        starts: R start vectors (``P`` each), clipped into ``bounds``.
        bounds: Bounds of one start (``P`` pairs).
        maxiter: L-BFGS-B iteration cap of each start.

    Returns:
        Per start, the optimum ``P`` and its objective value (``inf`` where K is
        still not positive definite there).
    """
    lo = np.array([b[0] for b in bounds])
    hi = np.array([np.inf if b[1] is None else b[1] for b in bounds])
    x0 = np.clip(np.stack(starts), lo, hi)

    def fun(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        with torch.no_grad():
            values, grads = obj.values_and_grads(torch.from_numpy(x))
        return values.numpy(), grads.numpy()

    # scipy's bundled OpenBLAS threads spin between the tiny L-BFGS-B calls and
    # double the CPU time of a fit for no speed-up: keep them to one thread.
    with threadpool_limits(limits=1, user_api="blas"):
        xs, _, _ = fmin_l_bfgs_b_batched(fun, x0, bounds=bounds, maxiter=maxiter)
    x = torch.from_numpy(np.ascontiguousarray(xs))
    with torch.no_grad():
        values = obj(x)
    values = torch.where(values < NOT_PD_PENALTY / 2, values, torch.inf)
    return [(x[r], float(values[r])) for r in range(len(starts))]
