"""Driver-side evaluation of many fitted meta-task GPs at once.

:class:`MetaStack` stacks :class:`~raymeta.gp.fit.TaskGPState` objects (grouped by
their number of points) and evaluates their *latent* posteriors in original units:

    mu_m(x) = ybar_m + s_m k_m(x, X_m) alpha_m
    Sigma_m(x, x') = s_m^2 (k_m(x, x') - v_m(x)^T v_m(x')),
    v_m(x) = L_m^{-1} k_m(X_m, x)

Tasks are ordered by content hash, so everything built on a stack is invariant to the
order in which the states were given.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from raymeta.errors import MetaDataError
from raymeta.gp.fit import TaskGPState
from raymeta.gp.kernel import scaled_kernel

__all__ = ["MetaStack"]


@dataclass(frozen=True)
class _Group:
    """Tasks with equal n and kernel, stacked along a leading dimension G."""

    X: torch.Tensor  # G x N x d
    lengthscale: torch.Tensor  # G x d
    outputscale: torch.Tensor  # G
    y_mean: torch.Tensor  # G
    y_std: torch.Tensor  # G
    chol: torch.Tensor  # G x N x N
    alpha: torch.Tensor  # G x N
    kind: str = "rbf"  # the kernel of every task in the group

    def kernel(self, A: torch.Tensor, B: torch.Tensor) -> torch.Tensor:
        """Per-task prior kernel ``G x |A| x |B|`` (A, B shared ``p x d`` points)."""
        return scaled_kernel(A, B, self.lengthscale, self.outputscale, self.kind)

    def means(self, Z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Means ``G x P`` and the cross kernel ``k(X, Z)``, ``G x N x P``."""
        kxz = scaled_kernel(
            self.X,
            Z.expand(self.X.shape[0], *Z.shape),
            self.lengthscale,
            self.outputscale,
            self.kind,
        )
        mean = self.y_mean[:, None] + self.y_std[:, None] * (
            kxz.transpose(-1, -2) @ self.alpha[..., None]
        ).squeeze(-1)
        return mean, kxz

    def factors(self, Z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Means ``G x P`` and factors ``v = L^{-1} k(X, Z)``, ``G x N x P``."""
        mean, kxz = self.means(Z)
        return mean, torch.linalg.solve_triangular(self.chol, kxz, upper=False)


class MetaStack:
    """M fitted meta-task GPs, evaluated together.

    Args:
        states: The fitted states (any order; they are sorted by content hash).

    Raises:
        MetaDataError: The states disagree on the input dimension or repeat a hash.
    """

    def __init__(self, states: Sequence[TaskGPState]) -> None:
        """Sort states by content hash and stack them by size."""
        states = sorted(states, key=lambda s: (s.task_hash, s.task_id))
        dims = {s.dim for s in states}
        if len(dims) > 1:
            raise MetaDataError(
                f"meta-task states have different input dimensions {sorted(dims)}; "
                "all tasks must share one search space"
            )
        keys = sorted({(s.n, s.kernel) for s in states})
        self.states = [s for key in keys for s in states if (s.n, s.kernel) == key]
        self.groups = [
            self._stack([s for s in self.states if (s.n, s.kernel) == key])
            for key in keys
        ]

    @staticmethod
    def _stack(states: list[TaskGPState]) -> _Group:
        return _Group(
            X=torch.stack([s.X for s in states]),
            lengthscale=torch.stack([s.lengthscale for s in states]),
            outputscale=torch.stack([s.outputscale.reshape(()) for s in states]),
            y_mean=torch.stack([s.y_mean.reshape(()) for s in states]),
            y_std=torch.stack([s.y_std.reshape(()) for s in states]),
            chol=torch.stack([s.chol for s in states]),
            alpha=torch.stack([s.alpha for s in states]),
            kind=states[0].kernel,
        )

    def __len__(self) -> int:
        return len(self.states)

    @property
    def task_ids(self) -> list[str]:
        """Task ids in stack order."""
        return [s.task_id for s in self.states]

    @property
    def y_std(self) -> torch.Tensor:
        """``M`` output standard deviations s_m."""
        return torch.tensor([float(s.y_std) for s in self.states], dtype=torch.float64)

    @property
    def y_mean(self) -> torch.Tensor:
        """``M`` output means ybar_m."""
        return torch.tensor([float(s.y_mean) for s in self.states], dtype=torch.float64)

    def subset(self, keep: torch.Tensor) -> MetaStack:
        """The stack restricted to tasks where the boolean ``keep`` (``M``) holds."""
        return MetaStack([s for s, k in zip(self.states, keep.tolist()) if k])

    def posterior(self, A: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-task latent posterior means ``M x p`` and covariances ``M x p x p``."""
        means, covs = [], []
        for g in self.groups:
            mean, v = g.factors(A)
            cov = g.kernel(A, A) - v.transpose(-1, -2) @ v
            means.append(mean)
            covs.append(g.y_std[:, None, None] ** 2 * cov)
        if not means:
            p = A.shape[0]
            return torch.zeros(0, p, dtype=A.dtype), torch.zeros(0, p, p, dtype=A.dtype)
        return torch.cat(means), torch.cat(covs)

    def cross_parts(
        self, Z: torch.Tensor, A: torch.Tensor, v_a: list[torch.Tensor]
    ) -> tuple[torch.Tensor, list[torch.Tensor], list[torch.Tensor]]:
        """Pieces of the posteriors at new points Z given cached factors at A.

        Args:
            Z: ``P x d`` new points.
            A: ``n x d`` cached points (the target inputs).
            v_a: Per group ``G x N x n`` factors at A (from :meth:`factors`).

        Returns:
            ``(means, cross, v_z)``: means ``M x P``; per group the unscaled
            cross-covariance ``G x P x n``; per group factors ``G x N x P``.
        """
        means, cross, v_zs = [], [], []
        for g, va in zip(self.groups, v_a):
            mean, v_z = g.factors(Z)
            means.append(mean)
            cross.append(g.kernel(Z, A) - v_z.transpose(-1, -2) @ va)
            v_zs.append(v_z)
        if not means:
            return torch.zeros(0, Z.shape[0], dtype=Z.dtype), cross, v_zs
        return torch.cat(means), cross, v_zs

    def finite_mask(
        self, means: torch.Tensor, covs: torch.Tensor | None = None
    ) -> torch.Tensor:
        """``M`` booleans: the task's state and its posterior are finite.

        Args:
            means: ``M x p`` posterior means (from :meth:`posterior` or
                :meth:`means`).
            covs: ``M x p x p`` posterior covariances, if computed.

        One batched check for all tasks (a per-task loop costs seconds at
        M = 10,000).
        """
        ok = [
            torch.isfinite(g.chol).flatten(1).all(-1)
            & torch.isfinite(g.alpha).all(-1)
            & torch.isfinite(g.y_mean)
            & torch.isfinite(g.y_std)
            & (g.y_std > 0)
            for g in self.groups
        ]
        if not ok:
            return torch.zeros(0, dtype=torch.bool)
        mask = torch.cat(ok) & torch.isfinite(means).all(-1)
        if covs is not None:
            mask &= torch.isfinite(covs).flatten(1).all(-1)
        return mask

    def means(self, A: torch.Tensor) -> torch.Tensor:
        """Per-task latent posterior means ``M x p`` only (no triangular solves)."""
        out = [g.means(A)[0] for g in self.groups]
        return torch.cat(out) if out else torch.zeros(0, A.shape[0], dtype=A.dtype)

    def factors(self, A: torch.Tensor) -> list[torch.Tensor]:
        """Per group factors ``G x N x |A|`` at shared points A."""
        return [g.factors(A)[1] for g in self.groups]
