"""The BO loop shared by ScaML-GP, plain GP-BO and random search, and regret metrics.

:func:`run_bo` runs one study with one method and returns per-step noise-free values,
simple regrets and timings. Plain GP-BO is ScaML-GP with no meta-tasks (same kernel,
priors, acquisition and optimiser); random search draws uniform points from the same
seed. All three share the target's noise stream (paired by seed).

As :class:`~raymeta.search.searcher.ScaMLGPSearch` does, each proposal is moved to
the point really evaluated (``study.target.canonical``: the nearest grid point of a
tabular benchmark, the point itself on a continuous domain), and a proposal that
repeats an evaluated point exactly is replaced by a uniform draw that does not.

Example:
    >>> from raymeta.tasks.bo import FAMILIES, draw_study
    >>> study = draw_study(FAMILIES["branin"], seed=0, num_meta=0, n_meta=1)
    >>> run_bo(study, "random", [], budget=3).regret.shape
    (3,)
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch

from raymeta.errors import MetaDataError
from raymeta.gp.fit import TaskGPState
from raymeta.gp.propose import propose
from raymeta.tasks.bo import Study
from raymeta.tasks.data import TaskData
from raymeta.tasks.tabular import TabularStudy

if TYPE_CHECKING:
    from raymeta.gp.peers import Proposer

__all__ = [
    "METHODS",
    "BOResult",
    "cumulative_regret",
    "icm_mll_seconds",
    "mean_ranks",
    "median_ci",
    "regret_bands",
    "run_bo",
    "simple_regret",
]

METHODS = ("scamlgp", "gpbo", "random", "rgpe", "icm", "tpe", "cmaes_ws")


@dataclass(frozen=True)
class BOResult:
    """One study run by one method.

    Attributes:
        method: One of :data:`METHODS`.
        seed: Study seed.
        X: ``T x d`` evaluated points (unit cube).
        values: ``T`` noise-free objective values.
        observed: ``T`` observations the method was told (noisy where the
            family is).
        regret: ``T`` simple regrets ``min_{i<=t} f(x_i) - f*``.
        f_star: The optimum used.
        step_seconds: ``T`` wall seconds per proposal.
        cpu_seconds: Process CPU seconds of the whole loop.
        fallbacks: Per step the proposal's fallback label, ``"repeat"`` when an
            exact repeat of an evaluated point was redrawn, or None.
    """

    method: str
    seed: int
    X: np.ndarray
    values: np.ndarray
    observed: np.ndarray
    regret: np.ndarray
    f_star: float
    step_seconds: np.ndarray
    cpu_seconds: float
    fallbacks: list


def simple_regret(values: Sequence[float], f_star: float) -> np.ndarray:
    """Running minimum of noise-free ``values`` minus ``f_star`` (steps 1..T)."""
    return np.minimum.accumulate(np.asarray(values, dtype=np.float64)) - f_star


def cumulative_regret(regret: Sequence[float]) -> float:
    """Sum of simple regrets over the iterations."""
    return float(np.sum(regret))


def regret_bands(regrets: np.ndarray) -> dict[str, np.ndarray]:
    """Median, 25% and 75% quantiles, mean and SEM over studies (rows) per step."""
    regrets = np.asarray(regrets, dtype=np.float64)
    sem = regrets.std(0, ddof=1) / np.sqrt(regrets.shape[0]) if len(regrets) > 1 else 0
    return {
        "median": np.median(regrets, 0),
        "q25": np.quantile(regrets, 0.25, 0),
        "q75": np.quantile(regrets, 0.75, 0),
        "mean": regrets.mean(0),
        "sem": np.broadcast_to(sem, regrets.shape[1:]).copy(),
    }


def run_bo(
    study: Study | TabularStudy,
    method: str,
    meta_states: Sequence[TaskGPState],
    *,
    budget: int,
    f_star: float | None = None,
    acquisition: str = "ucb",
    proposer: Proposer | None = None,
    **propose_kwargs,
) -> BOResult:
    """Run ``budget`` sequential evaluations of ``study``'s target with ``method``.

    Args:
        study: The study (target task, seed).
        method: One of :data:`METHODS`, or only a label when ``proposer`` is given.
        meta_states: Fitted meta-task GPs (used by ``"scamlgp"`` and ``"rgpe"``).
        budget: Number of evaluations T.
        f_star: The target's optimum (computed with shgo if None).
        acquisition: Acquisition for ScaML-GP and plain GP-BO.
        proposer: A proposer built by the caller (e.g. one that drives a peer in
            another process); it replaces ``method``'s.
        propose_kwargs: Passed on to :func:`~raymeta.gp.propose.propose`.

    Returns:
        The per-step record.

    Raises:
        MetaDataError: Unknown method.
    """
    if proposer is None and method not in METHODS:
        raise MetaDataError(f"method must be one of {METHODS}; got {method!r}")
    f_star = study.target.optimum() if f_star is None else f_star
    d, seed = study.family.dim, study.seed
    if proposer is None:
        proposer = make_proposer(
            method, study, meta_states, budget, acquisition, propose_kwargs
        )
    noise = np.random.default_rng([seed, 2])
    distinct = np.random.default_rng([seed, 4])
    X = np.zeros((0, d))
    y_obs, values, steps, fallbacks = [], [], [], []
    cpu0 = time.process_time()
    for _ in range(budget):
        t0 = time.perf_counter()
        x = proposer.next(X, np.asarray(y_obs))
        label = getattr(proposer, "fallback", None)
        x, repeated = _distinct(study.target, x, X, distinct)
        label = "repeat" if repeated and label is None else label
        steps.append(time.perf_counter() - t0)
        fallbacks.append(label)
        X = np.vstack([X, x[None]])
        y_obs.append(float(study.target(x[None], noise)[0]))
        values.append(float(study.target(x[None])[0]))
    return BOResult(
        method=method,
        seed=seed,
        X=X,
        values=np.array(values),
        observed=np.array(y_obs),
        regret=simple_regret(values, f_star),
        f_star=f_star,
        step_seconds=np.array(steps),
        cpu_seconds=time.process_time() - cpu0,
        fallbacks=fallbacks,
    )


def make_proposer(
    method: str,
    study: Study | TabularStudy,
    meta_states: Sequence[TaskGPState],
    budget: int,
    acquisition: str = "ucb",
    propose_kwargs: dict | None = None,
):
    """The :class:`~raymeta.gp.peers.Proposer` of ``method`` for ``study``."""
    d, seed = study.family.dim, study.seed
    if method == "random":
        return _RandomProposer(np.random.default_rng([seed, 3]), d)
    if method in ("scamlgp", "gpbo"):
        states = list(meta_states) if method == "scamlgp" else []
        return _ScaMLGPProposer(states, d, seed, acquisition, propose_kwargs or {})
    from raymeta.gp import peers

    if method == "rgpe":
        return peers.RGPEProposer(meta_states, dim=d, seed=seed, budget=budget)
    if method == "icm":
        return peers.ICMProposer(study.meta_tasks, dim=d, seed=seed)
    return peers.OptunaProposer(
        "tpe" if method == "tpe" else "cmaes_ws", study.meta_tasks, dim=d, seed=seed
    )


@dataclass
class _RandomProposer:
    rng: np.random.Generator
    dim: int

    def next(self, X: np.ndarray, y: np.ndarray) -> np.ndarray:
        return self.rng.uniform(size=self.dim)


@dataclass
class _ScaMLGPProposer:
    """ScaML-GP (plain GP-BO without meta-tasks) via :func:`propose`."""

    states: list
    dim: int
    seed: int
    acquisition: str
    kwargs: dict
    fallback: str | None = None
    init_state: dict | None = None

    def next(self, X: np.ndarray, y: np.ndarray) -> np.ndarray:
        t = X.shape[0]
        target = (
            None if t == 0 else TaskData("target", torch.tensor(X), torch.tensor(y))
        )
        prop = propose(
            self.states,
            target,
            dim=self.dim,
            seed=self.seed * 100_003 + t,
            acquisition=self.acquisition,
            init_state=self.init_state,
            **self.kwargs,
        )
        self.fallback, self.init_state = prop.fallback, prop.target_state
        return prop.x.numpy()


def _distinct(target, x: np.ndarray, X: np.ndarray, rng: np.random.Generator):
    """``(canonical x, repeated?)``: an exact repeat of a row of ``X`` is redrawn.

    Up to 100 uniform draws; if every one repeats too (a tiny grid) the repeat stays.
    """
    x = target.canonical(x[None])[0]
    repeated = False
    for _ in range(100):
        if not X.shape[0] or np.abs(X - x).max(1).min() > 1e-9:
            return x, repeated
        repeated = True
        x = target.canonical(rng.uniform(size=(1, x.size)))[0]
    return x, repeated


def median_ci(
    values: Sequence[float],
    rng: np.random.Generator,
    *,
    level: float = 0.95,
    resamples: int = 4000,
) -> tuple[float, float]:
    """Percentile-bootstrap confidence interval of the median of ``values``."""
    x = np.asarray(values, dtype=np.float64)
    idx = rng.integers(0, x.size, size=(resamples, x.size))
    medians = np.median(x[idx], axis=1)
    alpha = (1.0 - level) / 2
    return float(np.quantile(medians, alpha)), float(np.quantile(medians, 1 - alpha))


def icm_mll_seconds(tasks: Sequence[TaskData], *, repeats: int = 3) -> float:
    """CPU seconds of one MLL value and gradient of an ICM multi-task GP on ``tasks``.

    The baseline of spec (e) 8: botorch's ``MultiTaskGP`` (task index as an input
    column, full-rank IndexKernel) on all tasks' points at once, Cholesky forced, so
    each evaluation costs ``O((sum_m N_m)^3)``, cubic in M, where ScaML-GP's
    meta-fit is linear. Each task's y is standardised on its own.

    Args:
        tasks: The tasks (same dimension).
        repeats: Evaluations timed; the median is returned.
    """
    import gpytorch
    from botorch.models import MultiTaskGP
    from gpytorch.mlls import ExactMarginalLogLikelihood
    from threadpoolctl import threadpool_limits

    X = torch.cat(
        [
            torch.cat([t.X, torch.full((t.n, 1), float(i), dtype=t.X.dtype)], 1)
            for i, t in enumerate(tasks)
        ]
    )
    Y = torch.cat([(t.y - t.y.mean()) / t.y.std() for t in tasks])[:, None]
    model = MultiTaskGP(X, Y, task_feature=-1)
    mll = ExactMarginalLogLikelihood(model.likelihood, model).train()
    seconds = []
    with gpytorch.settings.max_cholesky_size(10**7), threadpool_limits(1):
        for _ in range(repeats):
            cpu0 = time.process_time()
            loss = -mll(model(X), model.train_targets, X).sum()
            loss.backward()
            seconds.append(time.process_time() - cpu0)
    return float(np.median(seconds))


def mean_ranks(
    regrets: dict[str, np.ndarray], *, steps: Sequence[int]
) -> dict[str, float]:
    """Mean rank of each method over studies at each step (1 = best; ties averaged).

    Args:
        regrets: Method -> ``studies x T`` simple regrets, rows paired by study.
        steps: Iterations (1-based) to report; steps beyond T are skipped.

    Returns:
        ``mean_rank@T/<method>``.
    """
    from scipy.stats import rankdata

    methods = sorted(regrets)
    stacked = np.stack([np.asarray(regrets[m], dtype=np.float64) for m in methods])
    out = {}
    for t in steps:
        if t <= stacked.shape[2]:
            ranks = rankdata(stacked[:, :, t - 1], axis=0)  # methods x studies
            for m, r in zip(methods, ranks.mean(1), strict=True):
                out[f"mean_rank@{t}/{m}"] = float(r)
    return out


def compare_methods(
    regrets: dict[str, np.ndarray],
    *,
    steps: Sequence[int] = (1, 5, 10, 20, 40),
    rng: np.random.Generator | None = None,
) -> dict[str, float]:
    """Summary figures of paired regret curves.

    Args:
        regrets: Method -> ``studies x T`` simple regrets, rows paired by seed.
        steps: Iterations (1-based) at which to report the median simple regret.
        rng: Generator of the bootstrap (default ``default_rng(0)``).

    Returns:
        ``median_regret@T/<method>`` with its 95% bootstrap interval
        ``median_regret_ci_lo@T/<method>`` and ``median_regret_ci_hi@T/<method>``,
        the fraction of studies already at the optimum ``frac_at_optimum@T/<method>``
        (regret <= 0; telling on tabulated families where many studies reach it),
        ``mean_cum_regret/<method>``,
        ``sem_cum_regret/<method>`` and, when both ``scamlgp`` and ``gpbo`` are
        present, ``ratio_median@10/scamlgp_over_gpbo`` and the one-sided paired
        Wilcoxon p-value ``wilcoxon_p_cum/scamlgp_lt_gpbo``.
    """
    from scipy.stats import wilcoxon

    rng = np.random.default_rng(0) if rng is None else rng
    out: dict[str, float] = {}
    for method, r in regrets.items():
        cum = r.sum(1)
        out[f"mean_cum_regret/{method}"] = float(cum.mean())
        out[f"sem_cum_regret/{method}"] = float(cum.std(ddof=1) / np.sqrt(len(cum)))
        for t in steps:
            if t <= r.shape[1]:
                out[f"median_regret@{t}/{method}"] = float(np.median(r[:, t - 1]))
                out[f"frac_at_optimum@{t}/{method}"] = float(np.mean(r[:, t - 1] <= 0))
                lo, hi = median_ci(r[:, t - 1], rng)
                out[f"median_regret_ci_lo@{t}/{method}"] = lo
                out[f"median_regret_ci_hi@{t}/{method}"] = hi
    if "scamlgp" in regrets and "gpbo" in regrets:
        a, b = regrets["scamlgp"], regrets["gpbo"]
        med_b = np.median(b[:, min(10, b.shape[1]) - 1])
        med_a = np.median(a[:, min(10, a.shape[1]) - 1])
        out["ratio_median@10/scamlgp_over_gpbo"] = (
            float(med_a / med_b) if med_b else (float("nan"))
        )
        diff = a.sum(1) - b.sum(1)
        if np.any(diff != 0):
            out["wilcoxon_p_cum/scamlgp_lt_gpbo"] = float(
                wilcoxon(a.sum(1), b.sum(1), alternative="less").pvalue
            )
    return out
