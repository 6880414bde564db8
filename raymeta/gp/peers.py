"""Meta-BO peers for the benchmark harness: RGPE, an ICM multi-task GP, Optuna.

What a user would pick instead of ScaML-GP, each behind the same ask interface
(:class:`Proposer`: ``next(X, y) -> x`` on the unit cube) so that
:func:`raymeta.gp.benchmark.run_bo` runs every method on the same study, seeds and
budget:

- :class:`RGPEProposer`: the ranking-weighted GP ensemble of Feurer et al. (2018),
  implemented from the paper: one GP per meta-task (raymeta's fitted meta-task GPs,
  each in its own standardised units) and one on the target; the ensemble's mean is
  ``sum_i w_i mu_i`` and its variance ``sum_i w_i^2 sigma_i^2``. The weight of model
  ``i`` is the share of posterior samples in which it has the lowest *ranking loss*
  (misordered pairs of target observations; the target model is scored on
  leave-one-out predictions, in closed form for fixed hyperparameters), ties broken
  at random. Optional (``dilution=True``, off by default as in botorch's RGPE
  tutorial): the paper's later weight-dilution prevention, dropping a meta-task
  with probability ``1 - p_keep``, ``p_keep = P(loss_i < loss_target) (1 - n / T)``.
- :class:`ICMProposer`: botorch's ``MultiTaskGP`` (ICM kernel, full-rank task
  covariance) on all meta and target points, each task's y standardised; refitted
  every step, warm-started from the previous step's hyperparameters.
- :class:`OptunaProposer`: Optuna's ``TPESampler`` or warm-started
  ``CmaEsSampler(source_trials=...)`` (WS-CMA-ES; the meta-data as source trials,
  each task's y standardised), asked and told one trial at a time.

The GP peers use the same acquisition as ScaML-GP and plain GP-BO in the harness
(UCB minimising ``mu - 3 sigma``, same optimiser), so the comparison is of models.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import torch
from botorch.acquisition import UpperConfidenceBound
from botorch.models.model import Model
from botorch.posteriors.gpytorch import GPyTorchPosterior
from gpytorch.distributions import MultivariateNormal

from raymeta.gp.fit import TaskGPState
from raymeta.gp.meta import MetaStack
from raymeta.gp.model import ScaMLGP, SingleOutput, TargetHypers, fit_target
from raymeta.gp.propose import optimise_acquisition
from raymeta.tasks.data import TaskData

__all__ = [
    "ICMProposer",
    "OptunaProposer",
    "Proposer",
    "RGPEProposer",
    "loo_ranking_losses",
    "ranking_losses",
    "rgpe_weights",
]


class Proposer(Protocol):
    """Proposes the next unit-cube point from the target observations so far."""

    def next(self, X: np.ndarray, y: np.ndarray) -> np.ndarray:
        """``d`` point to evaluate next, given ``n x d`` inputs and ``n`` outputs."""
        ...


def ranking_losses(samples: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Misordered pairs of each sampled function at the target points.

    Args:
        samples: ``S x n`` function values at the ``n`` target inputs.
        y: ``n`` target observations.

    Returns:
        ``S`` counts of pairs ``(j, k)`` with ``f(x_j) < f(x_k)`` xor ``y_j < y_k``.
    """
    f_less = samples[:, :, None] < samples[:, None, :]
    y_less = y[:, None] < y[None, :]
    return (f_less ^ y_less).sum((-1, -2)).to(torch.float64)


def loo_ranking_losses(loo: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Ranking losses of leave-one-out samples ``loo`` (``S x n``: sample s of
    ``f^{-j}(x_j)``), each compared with the other observations ``y_k``, ``k != j``
    (the pairs :func:`ranking_losses` counts).
    """
    f_less = loo[:, :, None] < y[None, None, :]
    y_less = y[:, None] < y[None, :]
    off = ~torch.eye(len(y), dtype=torch.bool)
    return ((f_less ^ y_less) & off).sum((-1, -2)).to(torch.float64)


def rgpe_weights(
    losses: torch.Tensor,
    gen: torch.Generator,
    *,
    num_evals: int = 0,
    max_evals: int | None = None,
) -> torch.Tensor:
    """RGPE weights from ranking-loss samples (last row: the target model).

    Args:
        losses: ``(M + 1) x S`` ranking losses per model and sample.
        gen: Generator of the tie breaks and the dilution drops.
        num_evals: Target evaluations so far (n).
        max_evals: Budget T; None disables weight-dilution prevention.

    Returns:
        ``M + 1`` weights summing to one: the share of samples in which each model
        has the lowest loss (ties split at random); a dropped meta-task gets 0.
    """
    losses = losses.clone()
    if max_evals is not None and losses.shape[0] > 1:
        better = (losses[:-1] < losses[-1]).double().mean(1)
        p_keep = better * (1.0 - num_evals / max_evals)
        drop = torch.rand(p_keep.shape, generator=gen, dtype=torch.float64) > p_keep
        losses[:-1][drop] = torch.inf
    noise = torch.rand(losses.shape, generator=gen, dtype=torch.float64)
    best = torch.where(losses == losses.min(0).values, noise, -1.0).argmax(0)
    counts = torch.bincount(best, minlength=losses.shape[0]).to(torch.float64)
    return counts / counts.sum()


class WeightedEnsemble(SingleOutput, Model):
    """Independent GP posteriors combined as ``sum_i w_i f_i`` (botorch Model).

    Args:
        parts: Callables ``Z (P x d) -> (mean P, cov P x P)``, one per model, each in
            the model's standardised units.
        weights: One non-negative weight per part.
    """

    def __init__(self, parts: Sequence, weights: torch.Tensor) -> None:
        """Keep the parts with a positive weight."""
        super().__init__()
        keep = [i for i, w in enumerate(weights.tolist()) if w > 0]
        self.parts = [parts[i] for i in keep]
        self.weights = weights[keep]

    def posterior(self, X, output_indices=None, observation_noise=False, **kwargs):
        """Ensemble posterior at ``B x q x d`` points."""
        B, q, d = X.shape
        mean = torch.zeros(B, q, dtype=torch.float64)
        cov = torch.zeros(B, q, q, dtype=torch.float64)
        for w, part in zip(self.weights, self.parts, strict=True):
            m, c = part(X)
            mean, cov = mean + w * m, cov + w**2 * c
        eye = 1e-12 * torch.eye(q, dtype=torch.float64)
        return GPyTorchPosterior(MultivariateNormal(mean, cov + eye))


def _meta_part(state: TaskGPState):
    stack = MetaStack([state])
    model = ScaMLGP(
        stack,
        torch.zeros(0, state.dim, dtype=torch.float64),
        torch.zeros(0, dtype=torch.float64),
        _unit_weight_hypers(state.dim),
        0.0,
    )
    mu, s = float(state.y_mean), float(state.y_std)

    def part(Z):
        m, c = model.mean_and_cov(Z)
        return (m - mu) / s, c / s**2

    return part


def _unit_weight_hypers(dim: int) -> TargetHypers:
    h = TargetHypers.default(dim, 1)
    zero = torch.tensor(1e-12, dtype=torch.float64)
    return TargetHypers(
        h.lengthscale, zero, h.noise, torch.ones(1, dtype=torch.float64)
    )


@dataclass
class _TargetGP:
    """Plain GP on the target data (raymeta's M = 0 model), standardised units."""

    model: ScaMLGP

    @classmethod
    def fit(cls, X: torch.Tensor, y: torch.Tensor, seed: int, init) -> _TargetGP:
        meta = MetaStack([])
        hypers = fit_target(meta, X, y, seed=seed, init=init)
        return cls(ScaMLGP(meta, X, y, hypers, 0.0))

    def part(self, Z):
        m, c = self.model.mean_and_cov(Z)
        return (m - self.model.y_bar) / self.model.scale, c / self.model.scale**2

    def loo(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Leave-one-out predictive mean and variance at each target input (raw y)."""
        m = self.model
        K_inv = torch.cholesky_inverse(m._chol)
        alpha = K_inv @ (m.train_y - m.y_bar)
        diag = K_inv.diagonal()
        return m.train_y - alpha / diag, 1.0 / diag


class RGPEProposer:
    """RGPE with UCB (see the module docstring).

    Args:
        meta_states: Fitted meta-task GPs.
        dim: Input dimension.
        seed: Seeds samples, tie breaks, drops and the optimiser.
        budget: T, for weight-dilution prevention.
        samples: Posterior samples per model for the ranking losses.
        beta: UCB beta.
        dilution: Weight-dilution prevention (see the module docstring).
    """

    def __init__(
        self,
        meta_states: Sequence[TaskGPState],
        *,
        dim: int,
        seed: int,
        budget: int,
        samples: int = 256,
        beta: float = 9.0,
        dilution: bool = False,
    ) -> None:
        """Build the base models' posterior parts once."""
        self.states, self.dim, self.seed = list(meta_states), dim, seed
        self.budget, self.samples, self.beta = budget, samples, beta
        self.dilution = dilution
        self.parts = [_meta_part(s) for s in self.states]
        self.gen = torch.Generator().manual_seed(seed)
        self.weights = torch.full((len(self.states) + 1,), 1.0 / len(self.states))
        self._init = None
        self._t = 0

    def next(self, X: np.ndarray, y: np.ndarray) -> np.ndarray:
        """The UCB minimiser of the current ensemble."""
        self._t += 1
        Xt, yt = torch.tensor(X), torch.tensor(y)
        parts, weights = list(self.parts), torch.ones(len(self.parts)) / len(self.parts)
        if len(yt) >= 1:
            target = _TargetGP.fit(Xt, yt, self.seed + self._t, self._init)
            self._init = target.model.hypers
            weights = self._weights(Xt, yt, target)
            parts.append(target.part)
        self.weights = weights
        model = WeightedEnsemble(parts, weights.to(torch.float64))
        acq = UpperConfidenceBound(model, beta=self.beta, maximize=False)
        x, _ = optimise_acquisition(acq, self.dim, self.seed * 7919 + self._t)
        return x.numpy()

    def _weights(self, X, y, target: _TargetGP) -> torch.Tensor:
        S = self.samples
        rows = []
        for part in self.parts:
            m, c = part(X[None])
            eye = 1e-9 * torch.eye(len(y), dtype=torch.float64)
            L = torch.linalg.cholesky_ex(c[0] + eye)[0]
            eps = torch.randn(S, len(y), generator=self.gen, dtype=torch.float64)
            rows.append(ranking_losses(m[0] + eps @ L.T, y))
        mean, var = target.loo()
        eps = torch.randn(S, len(y), generator=self.gen, dtype=torch.float64)
        rows.append(loo_ranking_losses(mean + eps * var.clamp_min(0).sqrt(), y))
        return rgpe_weights(
            torch.stack(rows),
            self.gen,
            num_evals=len(y),
            max_evals=self.budget if self.dilution else None,
        )


class ICMProposer:
    """botorch ``MultiTaskGP`` (ICM) BO with UCB on the target task.

    Args:
        meta_tasks: The meta-tasks' observations.
        dim: Input dimension.
        seed: Seeds the optimiser starts.
        beta: UCB beta.
    """

    def __init__(
        self, meta_tasks: Sequence[TaskData], *, dim: int, seed: int, beta: float = 9.0
    ) -> None:
        """Stack the meta-data once (each task's y standardised)."""
        self.dim, self.seed, self.beta = dim, seed, beta
        self.num_tasks = len(meta_tasks)
        self.meta_X = torch.cat([_with_task(t.X, i) for i, t in enumerate(meta_tasks)])
        self.meta_y = torch.cat([_standardise(t.y) for t in meta_tasks])
        self._state = None
        self._t = 0

    def next(self, X: np.ndarray, y: np.ndarray) -> np.ndarray:
        """Fit the ICM GP on meta + target points, minimise UCB on the target."""
        from botorch.fit import fit_gpytorch_mll
        from botorch.models import MultiTaskGP
        from gpytorch.mlls import ExactMarginalLogLikelihood

        self._t += 1
        target_X = _with_task(torch.tensor(X).reshape(-1, self.dim), self.num_tasks)
        target_y = _standardise(torch.tensor(y)) if len(y) else torch.zeros(0)
        train_X = torch.cat([self.meta_X, target_X])
        train_Y = torch.cat([self.meta_y, target_y.to(torch.float64)])[:, None]
        # MultiTaskGP draws its task-covariance factor, and botorch redraws failed
        # fits from the priors, with torch's global RNG: seed it inside a forked
        # RNG state so that each step is reproducible.
        with torch.random.fork_rng():
            torch.manual_seed(self.seed * 7919 + self._t)
            model = MultiTaskGP(
                train_X, train_Y, task_feature=-1, output_tasks=[self.num_tasks],
                all_tasks=list(range(self.num_tasks + 1)),
            )  # fmt: skip
            if self._state is not None:
                model.load_state_dict(self._state, strict=False)
            mll = ExactMarginalLogLikelihood(model.likelihood, model)
            try:
                fit_gpytorch_mll(mll, optimizer_kwargs={"options": {"maxiter": 100}})
            except Exception:  # keep the warm-start hyperparameters on a failed fit
                pass
        model.eval()
        self._state = model.state_dict()
        acq = UpperConfidenceBound(model, beta=self.beta, maximize=False)
        x, _ = optimise_acquisition(acq, self.dim, self.seed * 7919 + self._t)
        return x.numpy()


def _with_task(X: torch.Tensor, index: int) -> torch.Tensor:
    column = torch.full((X.shape[0], 1), float(index), dtype=torch.float64)
    return torch.cat([X.to(torch.float64), column], 1)


def _standardise(y: torch.Tensor) -> torch.Tensor:
    y = y.to(torch.float64)
    if len(y) < 2 or float(y.std()) == 0.0:
        return y - y.mean() if len(y) else y
    return (y - y.mean()) / y.std()


class OptunaProposer:
    """An Optuna sampler asked and told one trial at a time on the unit cube.

    Args:
        sampler: ``"tpe"`` or ``"cmaes_ws"`` (warm-started from ``meta_tasks``).
        meta_tasks: Source trials for ``cmaes_ws``.
        dim: Input dimension.
        seed: Sampler seed.
    """

    def __init__(
        self,
        sampler: str,
        meta_tasks: Sequence[TaskData],
        *,
        dim: int,
        seed: int,
    ) -> None:
        """Create the in-memory study."""
        import optuna

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        self.dim = dim
        self.space = {
            f"x{i}": optuna.distributions.FloatDistribution(0.0, 1.0)
            for i in range(dim)
        }
        if sampler == "tpe":
            chosen = optuna.samplers.TPESampler(seed=seed)
        else:
            chosen = optuna.samplers.CmaEsSampler(
                seed=seed, source_trials=self._source_trials(meta_tasks)
            )
        self.study = optuna.create_study(sampler=chosen, direction="minimize")
        self._trial = None

    def _source_trials(self, meta_tasks: Sequence[TaskData]) -> list:
        import optuna

        trials = []
        for task in meta_tasks:
            for x, v in zip(
                task.X.tolist(), _standardise(task.y).tolist(), strict=True
            ):
                trials.append(
                    optuna.trial.create_trial(
                        params={f"x{i}": float(c) for i, c in enumerate(x)},
                        distributions=self.space,
                        value=float(v),
                    )
                )
        return trials

    def next(self, X: np.ndarray, y: np.ndarray) -> np.ndarray:
        """Tell the last trial its value, ask the next."""
        if self._trial is not None:
            self.study.tell(self._trial, float(y[-1]))
        self._trial = self.study.ask(self.space)
        return np.array([self._trial.params[f"x{i}"] for i in range(self.dim)])
