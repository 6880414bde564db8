"""The BO loop shared by ScaML-GP, plain GP-BO and random search, and regret metrics.

:func:`run_bo` runs one study with one method and returns per-step noise-free values,
simple regrets and timings. Plain GP-BO is ScaML-GP with no meta-tasks (same kernel,
priors, acquisition and optimiser); random search draws uniform points from the same
seed. All three share the target's noise stream (paired by seed).

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

import numpy as np
import torch

from raymeta.errors import MetaDataError
from raymeta.gp.fit import TaskGPState
from raymeta.gp.propose import propose
from raymeta.tasks.bo import Study
from raymeta.tasks.data import TaskData

__all__ = [
    "METHODS",
    "BOResult",
    "cumulative_regret",
    "icm_mll_seconds",
    "median_ci",
    "regret_bands",
    "run_bo",
    "simple_regret",
]

METHODS = ("scamlgp", "gpbo", "random")


@dataclass(frozen=True)
class BOResult:
    """One study run by one method.

    Attributes:
        method: ``"scamlgp"``, ``"gpbo"`` or ``"random"``.
        seed: Study seed.
        X: ``T x d`` evaluated points (unit cube).
        values: ``T`` noise-free objective values.
        regret: ``T`` simple regrets ``min_{i<=t} f(x_i) - f*``.
        f_star: The optimum used.
        step_seconds: ``T`` wall seconds per proposal.
        cpu_seconds: Process CPU seconds of the whole loop.
        fallbacks: Per step the proposal's fallback label (or None).
    """

    method: str
    seed: int
    X: np.ndarray
    values: np.ndarray
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
    study: Study,
    method: str,
    meta_states: Sequence[TaskGPState],
    *,
    budget: int,
    f_star: float | None = None,
    acquisition: str = "ucb",
    **propose_kwargs,
) -> BOResult:
    """Run ``budget`` sequential evaluations of ``study``'s target with ``method``.

    Args:
        study: The study (target task, seed).
        method: One of :data:`METHODS`.
        meta_states: Fitted meta-task GPs (used by ``"scamlgp"`` only).
        budget: Number of evaluations T.
        f_star: The target's optimum (computed with shgo if None).
        acquisition: Acquisition for the GP methods.
        propose_kwargs: Passed on to :func:`~raymeta.gp.propose.propose`.

    Returns:
        The per-step record.

    Raises:
        MetaDataError: Unknown method.
    """
    if method not in METHODS:
        raise MetaDataError(f"method must be one of {METHODS}; got {method!r}")
    f_star = study.target.optimum() if f_star is None else f_star
    d, seed = study.family.dim, study.seed
    noise = np.random.default_rng([seed, 2])
    uniform = np.random.default_rng([seed, 3])
    states = list(meta_states) if method == "scamlgp" else []
    X = np.zeros((0, d))
    y_obs, values, steps, fallbacks = [], [], [], []
    init_state = None
    cpu0 = time.process_time()
    for t in range(budget):
        t0 = time.perf_counter()
        if method == "random":
            x, label = uniform.uniform(size=d), None
        else:
            target = (
                None
                if t == 0
                else TaskData(
                    "target", torch.tensor(X), torch.tensor(np.asarray(y_obs))
                )
            )
            prop = propose(
                states,
                target,
                dim=d,
                seed=seed * 100_003 + t,
                acquisition=acquisition,
                init_state=init_state,
                **propose_kwargs,
            )
            x, label, init_state = prop.x.numpy(), prop.fallback, prop.target_state
        steps.append(time.perf_counter() - t0)
        fallbacks.append(label)
        X = np.vstack([X, x[None]])
        y_obs.append(float(study.target(x[None], noise)[0]))
        values.append(float(study.target(x[None])[0]))
    return BOResult(
        method,
        seed,
        X,
        np.array(values),
        simple_regret(values, f_star),
        f_star,
        np.array(steps),
        time.process_time() - cpu0,
        fallbacks,
    )


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
