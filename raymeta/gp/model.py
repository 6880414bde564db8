"""The ScaML-GP model (Tighineanu et al., AISTATS 2024) as a botorch ``Model``.

Given M fitted meta-task GPs (a :class:`~raymeta.gp.meta.MetaStack`), the target
function has the prior

    mu_s(x) = sum_m w_m mu_m(x),
    Sigma_s(x, x') = sum_m w_m^2 Sigma_m(x, x') + S^2 k_t(x, x'),

(original units; mu_m, Sigma_m are the meta posteriors, k_t a Scale(RBF-ARD) residual
kernel) and the target data are observed with noise S^2 sigma_t^2. The posterior is
exact GP regression under this prior. ``Ybar, S`` are the mean and standard deviation
of all raw meta and target y's (``S = 1`` without target data). With M = 0 the prior
mean is ``Ybar``, i.e. a zero-mean GP on standardised target data (plain GP-BO).

:func:`fit_target` fits ``w >= 0``, ``k_t`` and ``sigma_t`` by MAP with the meta GPs
frozen, using meta posteriors cached at the target inputs, so each objective
evaluation costs ``O(M n^2 + n^3)``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from botorch.models.model import Model
from botorch.posteriors.gpytorch import GPyTorchPosterior
from gpytorch.distributions import MultivariateNormal

from raymeta.gp.kernel import check_kernel, cholesky_jitter, scaled_kernel
from raymeta.gp.meta import MetaStack
from raymeta.gp.mll import MapObjective, box_bounds, minimise_starts
from raymeta.gp.priors import (
    KERNEL_BOUNDS,
    NOISE_BOUNDS,
    TARGET_PRIORS,
    WEIGHT_LOWER,
    draw_in_bounds,
)

__all__ = [
    "PRUNE_THRESHOLD",
    "ScaMLGP",
    "SingleOutput",
    "TargetHypers",
    "fit_target",
    "normalisation",
]

PRUNE_THRESHOLD = 1e-3


@dataclass(frozen=True)
class TargetHypers:
    """Fitted target-model hyperparameters (float64).

    Attributes:
        lengthscale: ``d`` ARD lengthscales of k_t.
        outputscale: Outputscale of k_t (standardised units).
        noise: Noise variance sigma_t^2 (standardised units).
        weights: ``M`` meta-task weights, in :class:`MetaStack` order.
        objective: Best negative MAP objective per point (nan if not fitted).
        kernel: The residual kernel k_t, ``"rbf"`` or ``"matern52"``.
    """

    lengthscale: torch.Tensor
    outputscale: torch.Tensor
    noise: torch.Tensor
    weights: torch.Tensor
    objective: float = float("nan")
    kernel: str = "rbf"

    @classmethod
    def default(cls, dim: int, num_tasks: int, kernel: str = "rbf") -> TargetHypers:
        """Start values: lengthscale 1, outputscale 0.1, noise 1e-3, w = 1/M."""
        ls, os_, noise = TARGET_PRIORS.start
        return cls(
            torch.full((dim,), ls, dtype=torch.float64),
            torch.tensor(os_, dtype=torch.float64),
            torch.tensor(noise, dtype=torch.float64),
            torch.full((num_tasks,), 1.0 / max(num_tasks, 1), dtype=torch.float64),
            kernel=check_kernel(kernel),
        )


def normalisation(meta: MetaStack, y: torch.Tensor) -> tuple[float, float]:
    """Mean and (unbiased) std of all raw meta y's and the target y's.

    Meta-task contributions are rebuilt exactly from each state's count, mean and
    std. Without target data the model has no outcome transform: ``(0, 1)``.
    """
    if y.numel() == 0:
        return 0.0, 1.0
    counts = [s.n for s in meta.states] + [y.numel()]
    n_all = float(sum(counts))
    total = float(sum(s.n * float(s.y_mean) for s in meta.states) + y.sum())
    mean = total / n_all
    ss = sum(
        (s.n - 1) * float(s.y_std) ** 2 + s.n * (float(s.y_mean) - mean) ** 2
        for s in meta.states
    )
    ss += float(((y - mean) ** 2).sum())
    std = math.sqrt(ss / (n_all - 1)) if n_all > 1 else 1.0
    return mean, std if std > 0 else 1.0


class SingleOutput:
    """botorch ``Model`` properties of a single-output model without a batch."""

    _num_outputs = 1

    @property
    def num_outputs(self) -> int:
        """One output."""
        return 1

    @property
    def batch_shape(self) -> torch.Size:
        """No model batch."""
        return torch.Size([])


class ScaMLGP(SingleOutput, Model):
    """Exact ScaML-GP posterior for the target task (single output, float64).

    Args:
        meta: The fitted meta-task GPs.
        X: ``n x d`` target inputs in the unit cube (n may be 0).
        y: ``n`` target outputs (minimisation convention).
        hypers: Target hyperparameters; ``hypers.weights`` follows ``meta`` order.
        prune_threshold: Drop task m at prediction when
            ``w_m s_m M / sum_j w_j s_j`` is below it (0 keeps every task).

    Example:
        >>> import torch
        >>> model = ScaMLGP(MetaStack([]), torch.zeros(0, 2, dtype=torch.float64),
        ...                 torch.zeros(0, dtype=torch.float64),
        ...                 TargetHypers.default(2, 0))
        >>> model.posterior(torch.rand(3, 1, 2, dtype=torch.float64)).mean.shape
        torch.Size([3, 1, 1])
    """

    def __init__(
        self,
        meta: MetaStack,
        X: torch.Tensor,
        y: torch.Tensor,
        hypers: TargetHypers,
        prune_threshold: float = PRUNE_THRESHOLD,
    ) -> None:
        """Prune, cache the meta posteriors at X and factor the target covariance."""
        super().__init__()
        self.hypers = hypers
        self.y_bar, self.scale = normalisation(meta, y)
        self.all_task_ids = meta.task_ids
        self.keep = prune_mask(hypers.weights, meta.y_std, prune_threshold)
        self.meta = meta.subset(self.keep)
        self.weights = hypers.weights[self.keep]
        self.train_X, self.train_y = X, y
        self._cache_target()

    def _residual(self, A: torch.Tensor, B: torch.Tensor) -> torch.Tensor:
        h = self.hypers
        return self.scale**2 * scaled_kernel(
            A, B, h.lengthscale, h.outputscale, h.kernel
        )

    def _prior_mean(self, meta_means: torch.Tensor) -> torch.Tensor:
        if len(self.meta) == 0:
            return torch.full(meta_means.shape[1:], self.y_bar, dtype=torch.float64)
        return self.weights @ meta_means

    def _weighted(self, parts: list[torch.Tensor], pattern: str) -> torch.Tensor:
        """Sum over tasks of ``w_m^2 s_m^2 part_m`` (parts listed per group)."""
        coef = (self.weights * self.meta.y_std) ** 2
        out, start = 0.0, 0
        for part in parts:
            g = part.shape[0]
            out = out + torch.einsum(pattern, coef[start : start + g], part)
            start += g
        return out

    def _cache_target(self) -> None:
        X, n = self.train_X, self.train_X.shape[0]
        self._v_train = self.meta.factors(X)
        if n == 0:
            self._chol = torch.zeros(0, 0, dtype=torch.float64)
            self._alpha = torch.zeros(0, dtype=torch.float64)
            return
        means, covs = self.meta.posterior(X)
        cov = self._residual(X, X)
        if len(self.meta):
            cov = cov + torch.einsum("m,mij->ij", self.weights**2, covs)
        noise = self.scale**2 * self.hypers.noise
        self._chol, self.jitter = cholesky_jitter(
            cov + noise * torch.eye(n, dtype=torch.float64)
        )
        resid = self.train_y - self._prior_mean(means)
        self._alpha = torch.linalg.solve_triangular(
            self._chol, resid[:, None], upper=False
        ).reshape(-1)

    def mean_and_cov(self, Z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Latent posterior mean ``B x q`` and covariance ``B x q x q`` at ``Z``.

        Args:
            Z: ``B x q x d`` test points.
        """
        B, q, d = Z.shape
        flat = Z.reshape(B * q, d)
        X = self.train_X
        means, cross, v_z = self.meta.cross_parts(flat, X, self._v_train)
        mean = self._prior_mean(means).reshape(B, q)
        cov = self._residual(Z, Z)
        if len(self.meta):
            within = [self._group_block(g, Z, v) for g, v in zip(self.meta.groups, v_z)]
            cov = cov + self._weighted(within, "g,gbij->bij")
        if X.shape[0] == 0:
            return mean, cov
        kzx = self._residual(flat, X)
        if len(self.meta):
            kzx = kzx + self._weighted(cross, "g,gpn->pn")
        v = torch.linalg.solve_triangular(self._chol, kzx.T, upper=False)
        mean = mean + (v.T @ self._alpha).reshape(B, q)
        vb = v.reshape(-1, B, q)
        cov = cov - torch.einsum("nbi,nbj->bij", vb, vb)
        return mean, cov

    @staticmethod
    def _group_block(group, Z: torch.Tensor, v_z: torch.Tensor) -> torch.Tensor:
        """Unscaled meta posterior covariance within each q-batch: ``G x B x q x q``."""
        B, q, _ = Z.shape
        G = group.X.shape[0]
        prior = scaled_kernel(
            Z[None],
            Z[None],
            group.lengthscale[:, None, :],
            group.outputscale[:, None],
            group.kind,
        )
        vb = v_z.reshape(G, -1, B, q)
        return prior - torch.einsum("gnbi,gnbj->gbij", vb, vb)

    def posterior(
        self,
        X: torch.Tensor,
        output_indices: list[int] | None = None,
        observation_noise: bool | torch.Tensor = False,
        posterior_transform=None,
        **kwargs,
    ) -> GPyTorchPosterior:
        """Posterior at ``X`` (``batch x q x d``) as a GPyTorchPosterior.

        Args:
            X: ``batch_shape x q x d`` points.
            output_indices: Ignored (single output).
            observation_noise: Add the target noise ``S^2 sigma_t^2`` if True.
            posterior_transform: Optional botorch posterior transform.
            kwargs: Ignored.
        """
        batch, q, d = X.shape[:-2], X.shape[-2], X.shape[-1]
        mean, cov = self.mean_and_cov(X.reshape(-1, q, d).to(torch.float64))
        eye = torch.eye(q, dtype=torch.float64)
        if observation_noise is not False:
            cov = cov + self.scale**2 * self.hypers.noise * eye
        diag = cov.diagonal(dim1=-2, dim2=-1)
        cov = cov + eye * (diag.clamp_min(1e-12) - diag).unsqueeze(-1)
        mvn = MultivariateNormal(mean.reshape(*batch, q), cov.reshape(*batch, q, q))
        post = GPyTorchPosterior(mvn)
        return posterior_transform(post) if posterior_transform is not None else post


def prune_mask(
    weights: torch.Tensor, y_std: torch.Tensor, threshold: float
) -> torch.Tensor:
    """Tasks kept at prediction: ``w_m s_m M / sum_j w_j s_j >= threshold``."""
    if weights.numel() == 0:
        return torch.zeros(0, dtype=torch.bool)
    rel = weights * y_std
    total = rel.sum()
    if total <= 0:
        return torch.zeros_like(weights, dtype=torch.bool)
    return rel * weights.numel() / total >= threshold


# --------------------------------------------------------------------------- fitting


def _theta(h: TargetHypers) -> np.ndarray:
    return np.concatenate(
        [
            h.lengthscale.log().numpy(),
            [math.log(float(h.outputscale)), math.log(float(h.noise))],
            h.weights.numpy(),
        ]
    )


def _starts(init: TargetHypers, restarts: int, seed: int) -> list[np.ndarray]:
    d, m = init.lengthscale.numel(), init.weights.numel()
    rng = np.random.default_rng(seed)
    starts = [_theta(init)]
    for _ in range(restarts):
        ls = draw_in_bounds(TARGET_PRIORS.lengthscale, d, KERNEL_BOUNDS, rng)
        os_ = draw_in_bounds(TARGET_PRIORS.outputscale, 1, KERNEL_BOUNDS, rng)
        noise = draw_in_bounds(TARGET_PRIORS.noise, 1, NOISE_BOUNDS, rng)
        w = np.maximum(rng.exponential(1.0, size=m), WEIGHT_LOWER)
        starts.append(np.concatenate([np.log(ls), np.log(os_), np.log(noise), w]))
    return starts


def fit_target(
    meta: MetaStack,
    X: torch.Tensor,
    y: torch.Tensor,
    *,
    seed: int,
    init: TargetHypers | None = None,
    restarts: int = 5,
    maxiter: int = 200,
    kernel: str = "rbf",
) -> TargetHypers:
    """MAP fit of the weights, k_t and sigma_t with the meta GPs frozen.

    Args:
        meta: The fitted meta-task GPs.
        X: ``n x d`` target inputs.
        y: ``n`` target outputs.
        seed: Seed of the prior-drawn restarts.
        init: Warm start for k_t and noise (its weights are reset to 1/M).
        restarts: Prior-drawn restarts after the warm start.
        maxiter: L-BFGS-B iteration cap per start.
        kernel: The residual kernel k_t (``"rbf"`` or ``"matern52"``).

    Returns:
        The best hyperparameters; the defaults (w = 1/M) when ``n == 0``.
    """
    d, m = X.shape[1], len(meta)
    default = TargetHypers.default(d, m, kernel)
    base = (
        default
        if init is None
        else TargetHypers(
            init.lengthscale,
            init.outputscale,
            init.noise,
            default.weights,
            kernel=kernel,
        )
    )
    if X.shape[0] == 0:
        return base
    y_bar, scale = normalisation(meta, y)
    means, covs = meta.posterior(X)
    z = (y - (y_bar if m == 0 else 0.0)) / scale
    obj = MapObjective(X, z, means / scale, covs / scale**2, TARGET_PRIORS, kernel)
    fits = minimise_starts(
        obj, _starts(base, restarts, seed), box_bounds(d, m), maxiter
    )
    finite = [(x, v) for x, v in fits if math.isfinite(v)]
    if not finite:
        raise torch.linalg.LinAlgError("every target fit start failed")
    best = min(finite, key=lambda fit: fit[1])
    x, value = best
    return TargetHypers(
        x[:d].exp(), x[d].exp(), x[d + 1].exp(), x[d + 2 :], value, kernel
    )
