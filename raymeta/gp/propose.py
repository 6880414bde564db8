"""One ScaML-GP proposal: fit the target model, fantasise pending points, optimise.

:func:`propose` is the single entry point the searcher and the benchmark loop use. It
never raises for numerical trouble: a failing fit or Cholesky falls back, in order, to
dropping the offending meta-tasks, a target-only GP, and finally a seeded random point,
with a logged warning and the fallback named in :attr:`Proposal.fallback`.

Example:
    >>> import torch
    >>> p = propose([], None, dim=2, seed=0, raw_samples=16)
    >>> p.x.shape
    torch.Size([2])
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from botorch.acquisition import (
    ExpectedImprovement,
    LogExpectedImprovement,
    UpperConfidenceBound,
)
from botorch.acquisition.acquisition import AcquisitionFunction
from botorch.optim import optimize_acqf
from torch.quasirandom import SobolEngine

from raymeta.errors import MetaDataError
from raymeta.gp.fit import TaskGPState
from raymeta.gp.kernel import check_kernel
from raymeta.gp.meta import MetaStack
from raymeta.gp.model import (
    PRUNE_THRESHOLD,
    ScaMLGP,
    TargetHypers,
    fit_target,
    normalisation,
)
from raymeta.gp.screen import screen_tasks
from raymeta.tasks.data import TaskData

__all__ = [
    "ACQUISITIONS",
    "MAX_FIT_TASKS",
    "Proposal",
    "optimise_acquisition",
    "propose",
]

log = logging.getLogger(__name__)
ACQUISITIONS = ("ucb", "ei", "logei")
MAX_FIT_TASKS = 128  # target fits over more meta-tasks than this screen first
_AVOID_RADIUS = 1e-6


@dataclass(frozen=True)
class Proposal:
    """The next point to evaluate and how it was found.

    Attributes:
        x: ``d`` point in the unit cube.
        weights: Fitted weight per meta-task id (0.0 for dropped tasks).
        target_state: Fitted target hyperparameters as a plain dict (lengthscale,
            outputscale, noise, weights by task id); pass back as ``init_state``.
        fallback: None, ``"jitter"``, ``"drop_task:<id>[,<id>...]"``,
            ``"target_only"`` or ``"random"``.
        pruned: Ids of meta-tasks pruned at prediction time.
        acq_value: Acquisition value at ``x`` (nan for a random point).
        screened: Ids of meta-tasks left out of the target fit by screening
            (only with more than ``max_fit_tasks`` meta-tasks).
    """

    x: torch.Tensor
    weights: dict[str, float]
    target_state: dict
    fallback: str | None = None
    pruned: list[str] = field(default_factory=list)
    acq_value: float = float("nan")
    screened: list[str] = field(default_factory=list)


def propose(
    meta_states: Sequence[TaskGPState],
    target: TaskData | None,
    *,
    dim: int,
    seed: int,
    pending: torch.Tensor | None = None,
    avoid: torch.Tensor | None = None,
    acquisition: str = "ucb",
    beta: float = 9.0,
    init_state: dict | None = None,
    restarts: int = 5,
    maxiter: int = 200,
    num_restarts: int = 4,
    raw_samples: int = 1024,
    prune_threshold: float = PRUNE_THRESHOLD,
    max_fit_tasks: int | None = MAX_FIT_TASKS,
    kernel: str = "rbf",
) -> Proposal:
    """Propose the next target point with ScaML-GP (plain GP-BO when no meta-tasks).

    Args:
        meta_states: Fitted meta-task GPs (any order; the result does not depend on it).
        target: The target task's observations so far, or None.
        dim: Input dimension d.
        seed: Seeds the target-fit restarts, fantasies and acquisition start points.
        pending: ``q x d`` points under evaluation, fantasised (one posterior sample).
        avoid: ``k x d`` failed points; the proposal keeps a distance > 1e-6 from them.
        acquisition: ``"ucb"`` (minimiser of mu - sqrt(beta) sigma), ``"ei"`` or
            ``"logei"`` (both fall back to UCB without target data).
        beta: UCB beta (9 gives mu - 3 sigma).
        init_state: A previous :attr:`Proposal.target_state` (warm start).
        restarts: Prior-drawn restarts of the target fit.
        maxiter: L-BFGS-B iteration cap per target-fit start.
        num_restarts: Acquisition optimiser restarts.
        raw_samples: Sobol candidates screened for the acquisition starts.
        prune_threshold: Weight pruning threshold at prediction.
        max_fit_tasks: With more meta-tasks than this, the target fit uses only
            the ones with the highest marginal-likelihood gain
            (:func:`~raymeta.gp.screen.screen_tasks`); the rest get weight 0 and are
            listed in :attr:`Proposal.screened`. None never screens.
        kernel: The target's residual kernel k_t, ``"rbf"`` or ``"matern52"`` (the
            meta-task GPs keep the kernel they were fitted with).

    Returns:
        The proposal.

    Raises:
        MetaDataError: Inputs of the wrong dimension or shape, or an unknown
            acquisition (bad input, not numerical trouble).
    """
    X, y = _check_inputs(meta_states, target, dim, pending, avoid, acquisition)
    check_kernel(kernel)
    gen = torch.Generator().manual_seed(int(seed))
    meta = MetaStack(meta_states)
    plan = _FitPlan(
        int(seed), restarts, maxiter, prune_threshold, max_fit_tasks, kernel
    )
    model, hypers, fallback = _fit_with_fallbacks(meta, X, y, init_state, plan)
    weights = _weights_by_id(meta_states, model, hypers)
    state = _target_state(hypers, weights)
    if model is None:
        return Proposal(_random_point(dim, gen, avoid), weights, state, "random")
    pruned = [t for t, k in zip(model.all_task_ids, model.keep.tolist()) if not k]
    fitted = set(model.all_task_ids)
    screened = (
        []
        if fallback == "target_only"
        else [s.task_id for s in meta.states if s.task_id not in fitted]
    )
    try:
        if pending is not None and pending.shape[0] > 0:
            model = _fantasise(model, pending.to(torch.float64), gen)
        acq = _acquisition(model, acquisition, beta, y)
        x, value = optimise_acquisition(
            acq,
            dim,
            int(seed),
            num_restarts=num_restarts,
            raw_samples=raw_samples,
            avoid=avoid,
        )
    except (RuntimeError, ValueError, torch.linalg.LinAlgError) as err:
        log.warning("acquisition optimisation failed (%s); proposing at random", err)
        return Proposal(
            _random_point(dim, gen, avoid), weights, state, "random", pruned
        )
    return Proposal(x, weights, state, fallback, pruned, value, screened)


def _check_inputs(meta_states, target, dim, pending, avoid, acquisition):
    if acquisition not in ACQUISITIONS:
        raise MetaDataError(
            f"acquisition must be one of {ACQUISITIONS}; got {acquisition!r}"
        )
    for s in meta_states:
        if not isinstance(s, TaskGPState):
            raise MetaDataError(
                f"meta_states must be TaskGPState objects; got {type(s).__name__}"
            )
        if s.dim != dim:
            raise MetaDataError(
                f"meta-task {s.task_id!r} has dimension {s.dim}, expected dim={dim}"
            )
    if target is not None and target.dim != dim:
        raise MetaDataError(
            f"target task {target.task_id!r} has dimension {target.dim}, "
            f"expected dim={dim}"
        )
    for name, pts in (("pending", pending), ("avoid", avoid)):
        if pts is not None and (pts.ndim != 2 or pts.shape[1] != dim):
            raise MetaDataError(
                f"{name} must be a k x {dim} tensor; got shape {tuple(pts.shape)}"
            )
    if target is None:
        return torch.zeros(0, dim, dtype=torch.float64), torch.zeros(
            0, dtype=torch.float64
        )
    t = target.sorted()
    return t.X, t.y


def _hypers_from_state(state: dict | None, meta: MetaStack, dim: int, kernel: str):
    if not state:
        return None
    try:
        return TargetHypers(
            torch.tensor(state["lengthscale"], dtype=torch.float64).reshape(dim),
            torch.tensor(float(state["outputscale"]), dtype=torch.float64),
            torch.tensor(float(state["noise"]), dtype=torch.float64),
            torch.full((len(meta),), 1.0 / max(len(meta), 1), dtype=torch.float64),
            kernel=kernel,
        )
    except (KeyError, TypeError, ValueError, RuntimeError) as err:
        log.warning("ignoring unusable init_state (%s)", err)
        return None


@dataclass(frozen=True)
class _FitPlan:
    """How the target model is fitted (the proposal's fit arguments)."""

    seed: int
    restarts: int
    maxiter: int
    prune_threshold: float
    max_fit_tasks: int | None
    kernel: str = "rbf"


def _try_fit(meta, X, y, init, plan: _FitPlan, posterior=None):
    """Screen (large M only), fit the target hyperparameters, build the model.

    ``posterior``: the meta posteriors at ``X`` if already computed for ``meta``.
    """
    stack = meta
    if plan.max_fit_tasks is not None and len(meta) > plan.max_fit_tasks:
        start = init or TargetHypers.default(X.shape[1], 0)
        stack = screen_tasks(
            meta,
            X,
            y,
            plan.max_fit_tasks,
            lengthscale=start.lengthscale,
            outputscale=float(start.outputscale),
            noise=float(start.noise),
            scale=normalisation(meta, y)[1],
            posterior=posterior,
        )
    hypers = fit_target(
        stack,
        X,
        y,
        seed=plan.seed,
        init=init,
        restarts=plan.restarts,
        maxiter=plan.maxiter,
        kernel=plan.kernel,
    )
    return ScaMLGP(stack, X, y, hypers, plan.prune_threshold), hypers


def _fit_with_fallbacks(meta, X, y, init_state, plan: _FitPlan):
    """Full model, then without non-finite tasks, then target-only; None = random."""
    init = _hypers_from_state(init_state, meta, X.shape[1], plan.kernel)
    posterior = _probe_posterior(meta, X, plan.max_fit_tasks)
    bad = _bad_tasks(meta, posterior)
    attempts = []
    if not bad:
        attempts.append((meta, None, posterior))
    else:
        attempts.append((_without(meta, bad), "drop_task:" + ",".join(bad), None))
    attempts.append((MetaStack([]), "target_only", None))
    for stack, label, known in attempts:
        try:
            model, hypers = _try_fit(stack, X, y, init, plan, known)
        except (RuntimeError, ValueError, torch.linalg.LinAlgError) as err:
            log.warning("ScaML-GP fit failed (%s); falling back", err)
            continue
        if label is not None:
            log.warning("ScaML-GP proposal used fallback %r", label)
        elif getattr(model, "jitter", 0.0) > 0:
            label = "jitter"
            log.warning("target covariance needed jitter %.1e", model.jitter)
        return model, hypers, label
    log.warning("every ScaML-GP fit failed; proposing a random point")
    return None, TargetHypers.default(X.shape[1], 0, plan.kernel), None


def _bad_tasks(meta: MetaStack, posterior) -> list[str]:
    """Ids of meta-tasks whose state or posterior at the target is not finite."""
    finite = meta.finite_mask(*posterior).tolist()
    return [s.task_id for s, ok in zip(meta.states, finite, strict=True) if not ok]


def _probe_posterior(meta: MetaStack, X: torch.Tensor, max_fit_tasks: int | None):
    """The meta posteriors at the target inputs (or the centre without data).

    With more tasks than the target fit may use, only the means (the covariances
    of the tasks that screening keeps are computed there): ``(means, None)``.
    """
    probe = X if X.shape[0] else torch.full((1, X.shape[1]), 0.5, dtype=torch.float64)
    if max_fit_tasks is not None and len(meta) > max_fit_tasks:
        return meta.means(probe), None
    return meta.posterior(probe)


def _without(meta: MetaStack, ids: list[str]) -> MetaStack:
    return MetaStack([s for s in meta.states if s.task_id not in set(ids)])


def _weights_by_id(meta_states, model, hypers) -> dict[str, float]:
    weights = {s.task_id: 0.0 for s in meta_states}
    if model is not None:
        weights.update(zip(model.all_task_ids, hypers.weights.tolist()))
    return weights


def _target_state(hypers: TargetHypers, weights: dict[str, float]) -> dict:
    return {
        "lengthscale": hypers.lengthscale.tolist(),
        "outputscale": float(hypers.outputscale),
        "noise": float(hypers.noise),
        "weights": dict(weights),
    }


def _fantasise(model: ScaMLGP, pending: torch.Tensor, gen: torch.Generator):
    """Condition on one latent posterior sample at the pending points."""
    mean, cov = model.mean_and_cov(pending[None])
    eps = torch.randn(pending.shape[0], generator=gen, dtype=torch.float64)
    L = torch.linalg.cholesky_ex(
        cov[0] + 1e-10 * torch.eye(pending.shape[0], dtype=torch.float64)
    )[0]
    sample = mean[0] + L @ eps
    X = torch.cat([model.train_X, pending])
    y = torch.cat([model.train_y, sample])
    fant = ScaMLGP(model.meta, X, y, _kept_hypers(model), 0.0)
    fant.all_task_ids = model.all_task_ids
    fant.keep = model.keep
    return fant


def _kept_hypers(model: ScaMLGP) -> TargetHypers:
    h = model.hypers
    return TargetHypers(
        h.lengthscale, h.outputscale, h.noise, model.weights, kernel=h.kernel
    )


def _acquisition(model, name: str, beta: float, y: torch.Tensor) -> AcquisitionFunction:
    if name == "ucb" or y.numel() == 0:
        return UpperConfidenceBound(model, beta=beta, maximize=False)
    cls = ExpectedImprovement if name == "ei" else LogExpectedImprovement
    return cls(model, best_f=y.min(), maximize=False)


def _too_close(x: torch.Tensor, avoid: torch.Tensor | None) -> torch.Tensor:
    """Boolean per row of ``x`` (``k x d``): within 1e-6 of an avoided point."""
    if avoid is None or avoid.shape[0] == 0:
        return torch.zeros(x.shape[0], dtype=torch.bool)
    return (torch.cdist(x, avoid.to(x)) <= _AVOID_RADIUS).any(-1)


def optimise_acquisition(
    acq: AcquisitionFunction,
    dim: int,
    seed: int,
    *,
    num_restarts: int = 4,
    raw_samples: int = 1024,
    avoid: torch.Tensor | None = None,
) -> tuple[torch.Tensor, float]:
    """Maximise ``acq`` on the unit cube as :func:`propose` does: screen
    ``raw_samples`` Sobol points, start L-BFGS-B from the ``num_restarts`` best, return
    the best point not within 1e-6 of ``avoid``.

    Returns:
        ``(x, value)``: the best point (``d``) and its acquisition value.
    """
    raw = SobolEngine(dim, scramble=True, seed=seed).draw(raw_samples)
    raw = raw.to(torch.float64)
    with torch.no_grad():
        raw_val = acq(raw[:, None, :])
    raw_val = raw_val.masked_fill(_too_close(raw, avoid), -torch.inf)
    top = raw_val.topk(min(num_restarts, raw_samples)).indices
    bounds = torch.stack([torch.zeros(dim), torch.ones(dim)]).to(torch.float64)
    cand, val = optimize_acqf(
        acq,
        bounds,
        q=1,
        num_restarts=top.numel(),
        batch_initial_conditions=raw[top][:, None, :],
        return_best_only=False,
        options={"maxiter": 100},
    )
    cand, val = cand.reshape(-1, dim), val.reshape(-1)
    pool = torch.cat([cand, raw[top]])
    pool_val = torch.cat([val, raw_val[top]])
    pool_val = pool_val.masked_fill(
        _too_close(pool, avoid) | ~pool_val.isfinite(), -torch.inf
    )
    best = int(pool_val.argmax())
    if not torch.isfinite(pool_val[best]):
        raise ValueError("every acquisition candidate lies on an avoided point")
    return pool[best].clone(), float(pool_val[best])


def _random_point(dim: int, gen: torch.Generator, avoid: torch.Tensor | None):
    while True:
        x = torch.rand(1, dim, generator=gen, dtype=torch.float64)
        if not _too_close(x, avoid).any():
            return x[0]
