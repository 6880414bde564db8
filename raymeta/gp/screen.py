"""Screening meta-tasks by marginal-likelihood gain, so proposals stay cheap at large M.

The target fit optimises one weight per meta-task; at M = 10,000 an L-BFGS run over
10,000 weights dominates a proposal. Before the fit, :func:`screen_tasks` keeps the
``max_tasks`` meta-tasks that explain the target data best on their own, each scored
by the exact log marginal-likelihood gain of the single-task model

    z ~ N(w_m mu_m, w_m^2 C_m + K_0)   against   z ~ N(0, K_0)

(standardised units as in :class:`~raymeta.gp.mll.MapObjective`; ``mu_m, C_m`` the
meta posterior at the target inputs, ``K_0`` the residual kernel plus noise at the
warm-start or default target hyperparameters), with ``w_m >= 0`` the closed-form
least-squares weight when ``C_m`` is left out. A task that does not help gets
``w_m = 0`` and gain 0; the weights' prior is left to the target fit itself (its cost
of about one nat per unit weight would otherwise rank every useful task below the
useless ones on small target data). With more than ``SHORTLIST x max_tasks``
tasks, a cheaper pass first shortlists by the gain of each task's posterior mean alone
(:func:`mean_gains`, no per-task factorisation), so the exact gains are computed for
the shortlist only. Screening is exact when nothing is screened out: with
``M <= max_tasks`` (or no target data) the stack is returned unchanged, so the model
is the unscreened one.
"""

from __future__ import annotations

import torch

from raymeta.gp.kernel import scaled_rbf
from raymeta.gp.meta import MetaStack

__all__ = ["SHORTLIST", "likelihood_gains", "mean_gains", "screen_tasks"]

SHORTLIST = 4  # with M > SHORTLIST * max_tasks, a means-only pass shortlists first


def _residual_kernel(
    X: torch.Tensor, lengthscale: torch.Tensor, outputscale: float, noise: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """``K_0`` (residual kernel + noise + 1e-10 jitter) and its Cholesky factor."""
    eye = torch.eye(X.shape[0], dtype=torch.float64)
    K0 = scaled_rbf(X, X, lengthscale, torch.tensor(outputscale))
    K0 = K0 + (noise + 1e-10) * eye
    return K0, torch.linalg.cholesky(K0)


def mean_gains(
    mu: torch.Tensor, X: torch.Tensor, z: torch.Tensor, L0: torch.Tensor
) -> torch.Tensor:
    """Likelihood gain of each task's scaled posterior mean alone, ``C_m`` left out.

    ``max_w>=0 [log N(z; w mu_m, K_0) - log N(z; 0, K_0)] = (a.b)_+^2 / (2 a.a)``
    with ``a = L_0^{-1} mu_m``, ``b = L_0^{-1} z``: ``O(M n^2)``, no factorisation
    per task; used to shortlist before the exact :func:`likelihood_gains`.
    """
    b = torch.linalg.solve_triangular(L0, z[:, None], upper=False)[:, 0]
    a = torch.linalg.solve_triangular(L0, mu.T, upper=False).T
    ab = (a @ b).clamp_min(0.0)
    return 0.5 * ab**2 / (a * a).sum(-1).clamp_min(1e-12)


def likelihood_gains(
    meta: MetaStack,
    X: torch.Tensor,
    z: torch.Tensor,
    lengthscale: torch.Tensor,
    outputscale: float,
    noise: float,
    scale: float,
    posterior: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> torch.Tensor:
    """Log marginal-likelihood gain of each meta-task alone (``M``, float64).

    Args:
        meta: The meta-task GPs.
        X: ``n x d`` target inputs (n >= 1).
        z: ``n`` target outputs divided by ``scale``.
        lengthscale: ``d`` residual-kernel lengthscales.
        outputscale: Residual outputscale (standardised units).
        noise: Noise variance (standardised units).
        scale: The output scale S of the model (original units / S).
        posterior: ``meta.posterior(X)`` if already computed.
    """
    n = X.shape[0]
    eye = torch.eye(n, dtype=torch.float64)
    K0, L0 = _residual_kernel(X, lengthscale, outputscale, noise)
    means, covs = posterior if posterior is not None else meta.posterior(X)
    mu, C = means / scale, covs / scale**2
    b = torch.linalg.solve_triangular(L0, z[:, None], upper=False)[:, 0]
    a = torch.linalg.solve_triangular(L0, mu.T, upper=False).T  # M x n
    w = ((a @ b) / (a * a).sum(-1).clamp_min(1e-12)).clamp_min(0.0)
    K = w[:, None, None] ** 2 * C + K0
    L, info = torch.linalg.cholesky_ex(K + 1e-10 * eye)
    resid = z - w[:, None] * mu
    alpha = torch.linalg.solve_triangular(L, resid[..., None], upper=False)[..., 0]
    ll = -0.5 * (alpha * alpha).sum(-1) - L.diagonal(dim1=-2, dim2=-1).log().sum(-1)
    ll0 = -0.5 * float(b @ b) - float(L0.diagonal().log().sum())
    gain = ll - ll0
    return torch.where(info == 0, gain, torch.full_like(gain, -torch.inf))


def screen_tasks(
    meta: MetaStack,
    X: torch.Tensor,
    y: torch.Tensor,
    max_tasks: int | None,
    *,
    lengthscale: torch.Tensor,
    outputscale: float,
    noise: float,
    scale: float,
    posterior: tuple[torch.Tensor, torch.Tensor | None] | None = None,
) -> MetaStack:
    """The ``max_tasks`` meta-tasks with the highest likelihood gain.

    Args:
        meta: The meta-task GPs.
        X: ``n x d`` target inputs.
        y: ``n`` target outputs (original units).
        max_tasks: How many tasks the target fit may use; None = all.
        lengthscale: ``d`` residual-kernel lengthscales of the gain model.
        outputscale: Its outputscale (standardised units).
        noise: Its noise variance (standardised units).
        scale: The model's output scale S.
        posterior: ``meta.posterior(X)`` if already computed (saves its cost), or
            ``(meta.means(X), None)`` when only the means are.

    Returns:
        ``meta`` itself when nothing needs screening (exact), else the subset of the
        best-scoring tasks (ties broken by stack order, so the result does not
        depend on the order the states were given in).
    """
    if max_tasks is None or len(meta) <= max_tasks or X.shape[0] == 0:
        return meta
    means, covs = posterior if posterior is not None else (None, None)
    if covs is None and len(meta) > SHORTLIST * max_tasks:
        _, L0 = _residual_kernel(X, lengthscale, outputscale, noise)
        means = meta.means(X) if means is None else means
        rough = mean_gains(means / scale, X, y / scale, L0)
        meta = meta.subset(_top(rough, SHORTLIST * max_tasks))
    posterior = (means, covs) if covs is not None else None
    gains = likelihood_gains(
        meta, X, y / scale, lengthscale, outputscale, noise, scale, posterior
    )
    return meta.subset(_top(gains, max_tasks))


def _top(gains: torch.Tensor, k: int) -> torch.Tensor:
    """Mask of the ``k`` largest finite gains (ties by stack order).

    A task whose gain is not finite (its covariance did not factor) is never kept.
    """
    gains = torch.nan_to_num(gains, nan=-torch.inf)
    order = torch.sort(-gains, stable=True).indices
    keep = torch.zeros(gains.numel(), dtype=torch.bool)
    keep[order[:k]] = True
    return keep & torch.isfinite(gains)
