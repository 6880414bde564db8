"""MAP objective of a GP (optionally with weighted meta-task terms) and its optimiser.

One objective serves both fits of ScaML-GP: a meta-task GP (no weights, meta priors)
and the target model (M weights, meta posteriors cached at the target inputs, target
priors). Parameters are optimised by L-BFGS-B in log space for the kernel and noise
(box bounds from :mod:`raymeta.gp.priors`) and directly for the weights (w >= 1e-10),
with analytic gradients, which is several times faster than autograd on these small
problems.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from scipy.optimize import minimize

from raymeta.gp.kernel import scaled_rbf
from raymeta.gp.priors import (
    KERNEL_BOUNDS,
    NOISE_BOUNDS,
    WEIGHT_LOWER,
    HyperPriors,
    dlog_prob,
    log_prob,
)

__all__ = ["MapObjective", "box_bounds", "minimise"]


@dataclass(frozen=True)
class MapObjective:
    """Negative MAP objective per point of a GP with optional meta-task terms.

    ``theta`` is ``(R x) (d + 2 + M)``: log lengthscales, log outputscale, log noise
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
    """

    X: torch.Tensor
    z: torch.Tensor  # y / S (M > 0) or (y - Ybar) / S (M = 0)
    means: torch.Tensor  # M x n meta posterior means / S
    covs: torch.Tensor  # M x n x n, divided by S^2
    priors: HyperPriors

    def __call__(self, theta: torch.Tensor) -> torch.Tensor:
        """``R`` objective values (minimise)."""
        n, d = self.X.shape
        ls, os_, noise = theta[:, :d].exp(), theta[:, d].exp(), theta[:, d + 1].exp()
        w = theta[:, d + 2 :]
        eye = torch.eye(n, dtype=theta.dtype)
        K = scaled_rbf(self.X, self.X, ls, os_) + noise[:, None, None] * eye
        resid = self.z.expand(theta.shape[0], n)
        if w.shape[1]:
            K = K + torch.einsum("rm,mij->rij", w**2, self.covs)
            resid = resid - w @ self.means
        L, info = torch.linalg.cholesky_ex(K)
        failed = info > 0
        if failed.any():  # push the optimiser away from non-PD regions
            L = torch.linalg.cholesky_ex(K + failed[:, None, None] * 1e-3 * eye)[0]
        a = torch.linalg.solve_triangular(L, resid[..., None], upper=False)
        ll = (
            -0.5 * (a**2).sum((-1, -2))
            - L.diagonal(dim1=-2, dim2=-1).log().sum(-1)
            - 0.5 * n * math.log(2 * math.pi)
        )
        lp = (
            log_prob(self.priors.lengthscale, ls).sum(-1)
            + log_prob(self.priors.outputscale, os_)
            + log_prob(self.priors.noise, noise)
            - w.sum(-1)  # Gamma(1, 1) = Exp(1) on every weight
        )
        return -(ll + lp) / n + failed * 1e3

    def value_and_grad(self, theta: torch.Tensor) -> tuple[float, torch.Tensor]:
        """Objective and its analytic gradient at one ``P`` vector (no autograd).

        Uses d ll / dK = (a a^T - K^{-1}) / 2 with a = K^{-1} r; returns a large
        value and zero gradient where K is not positive definite.
        """
        n, d = self.X.shape
        ls, os_, noise = theta[:d].exp(), theta[d].exp(), theta[d + 1].exp()
        w = theta[d + 2 :]
        sq = (self.X[:, None, :] - self.X[None, :, :]) ** 2 / ls**2  # n x n x d
        rbf = torch.exp(-0.5 * sq.sum(-1))
        K = os_ * rbf + noise * torch.eye(n, dtype=theta.dtype)
        resid = self.z
        if w.numel():
            K = K + torch.einsum("m,mij->ij", w**2, self.covs)
            resid = resid - w @ self.means
        L, info = torch.linalg.cholesky_ex(K)
        if info > 0:
            return 1e10, torch.zeros_like(theta)
        a = torch.cholesky_solve(resid[:, None], L).reshape(-1)
        G = 0.5 * (torch.outer(a, a) - torch.cholesky_inverse(L))
        ll = (
            -0.5 * (resid @ a)
            - L.diagonal().log().sum()
            - 0.5 * n * math.log(2 * math.pi)
        )
        grad = torch.empty_like(theta)
        grad[:d] = torch.einsum("ij,ijk->k", G * os_ * rbf, sq)
        grad[d] = (G * os_ * rbf).sum()
        grad[d + 1] = noise * G.diagonal().sum()
        if w.numel():
            grad[d + 2 :] = 2 * w * torch.einsum("ij,mij->m", G, self.covs)
            grad[d + 2 :] += self.means @ a
        logs = theta[: d + 2]
        lp = (
            log_prob(self.priors.lengthscale, ls).sum()
            + log_prob(self.priors.outputscale, os_)
            + log_prob(self.priors.noise, noise)
            - w.sum()
        )
        grad[: d + 2] += torch.cat(
            [
                dlog_prob(self.priors.lengthscale, logs[:d]),
                dlog_prob(self.priors.outputscale, logs[d : d + 1]),
                dlog_prob(self.priors.noise, logs[d + 1 :]),
            ]
        )
        grad[d + 2 :] -= 1.0
        return float(-(ll + lp) / n), -grad / n


def box_bounds(d: int, m: int) -> list[tuple[float | None, float | None]]:
    k = (math.log(KERNEL_BOUNDS[0]), math.log(KERNEL_BOUNDS[1]))
    nb = (math.log(NOISE_BOUNDS[0]), math.log(NOISE_BOUNDS[1]))
    return [k] * (d + 1) + [nb] + [(WEIGHT_LOWER, None)] * m


def minimise(obj: MapObjective, x0: np.ndarray, bounds, maxiter: int):
    """L-BFGS-B from one start ``x0`` (``P``) with analytic gradients."""

    def fun(x: np.ndarray) -> tuple[float, np.ndarray]:
        with torch.no_grad():
            value, grad = obj.value_and_grad(torch.from_numpy(x.copy()))
        return value, grad.numpy()

    lo = np.array([b[0] for b in bounds])
    hi = np.array([np.inf if b[1] is None else b[1] for b in bounds])
    res = minimize(
        fun,
        np.clip(x0, lo, hi),
        jac=True,
        method="L-BFGS-B",
        bounds=bounds,
        options={"maxiter": maxiter},
    )
    return torch.tensor(res.x, dtype=torch.float64), float(res.fun)
