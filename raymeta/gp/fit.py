"""Fit one meta-task GP as a pure function and keep a small, picklable state.

:func:`fit_task_gp` fits a botorch ``SingleTaskGP`` (zero mean, ``Standardize``
outcome transform, Scale(RBF-ARD) kernel with the meta priors and bounds of
:mod:`raymeta.gp.priors`) by MAP: one L-BFGS-B fit from the default start, then five
restarts from hyperparameters drawn from the priors; the best MAP value wins. The
restarts are seeded by ``seed`` only, so a fit does not depend on which process runs
it or what was fitted before (unlike the reference's warm-start chain).

The returned :class:`TaskGPState` holds hyperparameters, the (row-sorted) training
inputs, the Cholesky factor and solve vector of the standardised kernel matrix and the
output normalisation: everything the driver needs to evaluate the task's posterior
without gpytorch (:class:`raymeta.gp.model.MetaStack`).

Example:
    >>> import torch
    >>> from raymeta.tasks.data import TaskData
    >>> X = torch.rand(8, 2, dtype=torch.float64)
    >>> state = fit_task_gp(TaskData("t", X, X.sum(1)), seed=0, restarts=0)
    >>> TaskGPState.from_bytes(state.to_bytes()).task_hash == state.task_hash
    True
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import time
import warnings
from dataclasses import asdict, dataclass, fields

import numpy as np
import torch
from botorch.models import SingleTaskGP
from botorch.models.transforms.outcome import Standardize
from botorch.optim.fit import fit_gpytorch_mll_scipy
from gpytorch.constraints import Interval
from gpytorch.kernels import MaternKernel, RBFKernel, ScaleKernel
from gpytorch.likelihoods import GaussianLikelihood
from gpytorch.means import ZeroMean
from gpytorch.mlls import ExactMarginalLogLikelihood
from gpytorch.priors import GammaPrior, LogNormalPrior

from raymeta.errors import FitError, MetaDataError
from raymeta.gp.kernel import check_kernel, cholesky_jitter, scaled_kernel
from raymeta.gp.mll import MapObjective, box_bounds, minimise_starts
from raymeta.gp.priors import KERNEL_BOUNDS, META_PRIORS, NOISE_BOUNDS, draw_in_bounds
from raymeta.tasks.data import TaskData

__all__ = [
    "FitSettings",
    "TaskGPState",
    "build_meta_gp",
    "fit_task_gp",
    "seed_from_hash",
]

STATE_FORMAT = 1  # bump when TaskGPState's fields or their meaning change

log = logging.getLogger(__name__)


@dataclass(frozen=True, eq=False)
class TaskGPState:
    """A fitted meta-task GP, all tensors float64.

    Attributes:
        task_id: The task's id.
        task_hash: ``TaskData.content_hash()`` of the fitted data.
        X: ``n x d`` training inputs (rows in canonical order).
        lengthscale: ``d`` ARD lengthscales.
        outputscale: Scalar outputscale (standardised units).
        noise: Scalar noise variance (standardised units).
        y_mean: Mean of the task's raw y.
        y_std: Standard deviation of the task's raw y (1 when undefined).
        chol: ``n x n`` lower Cholesky factor of ``K + noise I`` (standardised).
        alpha: ``n`` solve vector ``(K + noise I)^{-1} (y - y_mean) / y_std``.
        mll: Best MAP objective (per point) reached by the fit.
        fit_seconds: Wall time of the fit.
    """

    task_id: str
    task_hash: str
    X: torch.Tensor
    lengthscale: torch.Tensor
    outputscale: torch.Tensor
    noise: torch.Tensor
    y_mean: torch.Tensor
    y_std: torch.Tensor
    chol: torch.Tensor
    alpha: torch.Tensor
    mll: float
    fit_seconds: float
    kernel: str = "rbf"

    @property
    def n(self) -> int:
        """Number of training points."""
        return int(self.X.shape[0])

    @property
    def dim(self) -> int:
        """Input dimension."""
        return int(self.X.shape[1])

    def hyperparameters(self) -> dict[str, list[float] | float]:
        """Lengthscales, outputscale and noise as plain Python numbers."""
        return {
            "lengthscale": self.lengthscale.tolist(),
            "outputscale": float(self.outputscale),
            "noise": float(self.noise),
        }

    def to_bytes(self, *, content_only: bool = False) -> bytes:
        """Serialise (numpy ``.npz``, no pickle).

        Args:
            content_only: Leave out the task's name and the fit's wall time, so the
                bytes depend only on the data, the seed and the fit settings (the
                store's ``state`` column; its SHA-256 is then a content digest).
        """
        arrays = {}
        for f in fields(self):
            if content_only and f.name in ("task_id", "fit_seconds"):
                continue
            value = getattr(self, f.name)
            if f.name == "kernel" and value == "rbf":
                continue  # RBF states keep the bytes (and digests) of before Matern
            arrays[f.name] = (
                value.numpy() if isinstance(value, torch.Tensor) else np.asarray(value)
            )
        buf = io.BytesIO()
        np.savez(buf, **arrays)
        return buf.getvalue()

    @classmethod
    def from_bytes(cls, data: bytes) -> TaskGPState:
        """Inverse of :meth:`to_bytes` (content-only bytes: empty id, 0 s)."""
        with np.load(io.BytesIO(data), allow_pickle=False) as npz:
            kw: dict = {"task_id": "", "fit_seconds": 0.0}
            for f in fields(cls):
                if f.name not in npz.files:
                    continue
                arr = npz[f.name]
                if f.name in ("task_id", "task_hash", "kernel"):
                    kw[f.name] = str(arr)
                elif f.name in ("mll", "fit_seconds"):
                    kw[f.name] = float(arr)
                else:
                    kw[f.name] = torch.from_numpy(arr.copy())
        return cls(**kw)


@dataclass(frozen=True)
class FitSettings:
    """Every fit setting besides the data and the seed that changes a fitted state.

    A cached state is reused only under the same :meth:`digest`, which also covers
    the meta priors, the bounds and the state format, so changing any of them (or a
    kernel added later) never reuses a state fitted under other settings.

    Attributes:
        restarts: Prior-drawn restarts after the default start.
        maxiter: L-BFGS-B iteration cap per start.
        optimizer: ``"lbfgs"`` or ``"botorch"`` (see :func:`fit_task_gp`).
        kernel: The kernel family, ``"rbf"`` or ``"matern52"``.
    """

    restarts: int = 5
    maxiter: int = 200
    optimizer: str = "lbfgs"
    kernel: str = "rbf"

    def __post_init__(self) -> None:
        """Reject settings the fit does not implement."""
        check_kernel(self.kernel)
        if self.optimizer not in ("lbfgs", "botorch"):
            raise MetaDataError(
                f"optimizer must be 'lbfgs' or 'botorch'; got {self.optimizer!r}"
            )
        if self.restarts < 0 or self.maxiter < 1:
            raise MetaDataError(
                f"restarts must be >= 0 and maxiter >= 1; got {self.restarts}, "
                f"{self.maxiter}"
            )

    def digest(self) -> str:
        """16 hex characters identifying these settings, priors and format."""
        payload = {
            **asdict(self),
            "priors": repr(META_PRIORS),
            "bounds": [KERNEL_BOUNDS, NOISE_BOUNDS],
            "format": STATE_FORMAT,
        }
        text = json.dumps(payload, sort_keys=True, default=str)
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    def fit(self, task: TaskData, seed: int) -> TaskGPState:
        """:func:`fit_task_gp` with these settings."""
        return fit_task_gp(
            task,
            seed=seed,
            restarts=self.restarts,
            maxiter=self.maxiter,
            optimizer=self.optimizer,
            kernel=self.kernel,
        )


def seed_from_hash(task_hash: str, seed: int) -> int:
    """Per-task seed derived from content hash and a base seed (not the position)."""
    return (int(task_hash[:15], 16) + 1_000_003 * int(seed)) % (2**63 - 1)


def build_meta_gp(task: TaskData, kernel: str = "rbf") -> SingleTaskGP:
    """The meta-task SingleTaskGP with the spec's priors, bounds and start values."""
    d = task.dim
    ls, os_, noise = META_PRIORS.start
    base_kwargs = {
        "ard_num_dims": d,
        "lengthscale_prior": GammaPrior(*META_PRIORS.lengthscale[1:]),
        "lengthscale_constraint": Interval(*KERNEL_BOUNDS),
    }
    base = (
        RBFKernel(**base_kwargs)
        if check_kernel(kernel) == "rbf"
        else MaternKernel(nu=2.5, **base_kwargs)
    )
    kernel = ScaleKernel(
        base,
        outputscale_prior=GammaPrior(*META_PRIORS.outputscale[1:]),
        outputscale_constraint=Interval(*KERNEL_BOUNDS),
    )
    likelihood = GaussianLikelihood(
        noise_prior=LogNormalPrior(*META_PRIORS.noise[1:]),
        noise_constraint=Interval(*NOISE_BOUNDS),
    )
    model = SingleTaskGP(
        task.X,
        task.y[:, None],
        likelihood=likelihood,
        covar_module=kernel,
        mean_module=ZeroMean(),
        outcome_transform=Standardize(m=1),
    ).to(torch.float64)
    _set_hypers(model, np.full(d, ls), os_, noise)
    return model


def _set_hypers(model: SingleTaskGP, ls: np.ndarray, os_: float, noise: float) -> None:
    kernel = model.covar_module
    kernel.base_kernel.lengthscale = torch.as_tensor(ls, dtype=torch.float64)[None]
    kernel.outputscale = torch.as_tensor(os_, dtype=torch.float64)
    model.likelihood.noise = torch.as_tensor([noise], dtype=torch.float64)


def _restart_starts(d: int, restarts: int, seed: int) -> list[tuple]:
    rng = np.random.default_rng(seed)
    ls0, os0, noise0 = META_PRIORS.start
    starts = [(np.full(d, ls0), os0, noise0)]
    for _ in range(restarts):
        ls = draw_in_bounds(META_PRIORS.lengthscale, d, KERNEL_BOUNDS, rng)
        os_ = draw_in_bounds(META_PRIORS.outputscale, 1, KERNEL_BOUNDS, rng)[0]
        noise = draw_in_bounds(META_PRIORS.noise, 1, NOISE_BOUNDS, rng)[0]
        starts.append((ls, os_, noise))
    return starts


def _map_value(mll: ExactMarginalLogLikelihood) -> float:
    model = mll.model
    model.train()
    with torch.no_grad():
        out = model(*model.train_inputs)
        value = mll(out, model.train_targets)
    return float(value)


def fit_task_gp(
    task: TaskData,
    *,
    seed: int,
    restarts: int = 5,
    maxiter: int = 200,
    optimizer: str = "lbfgs",
    kernel: str = "rbf",
) -> TaskGPState:
    """Fit one meta-task GP by MAP with 1 default start plus prior-drawn restarts.

    Args:
        task: The task's observations (rows are put in canonical order first, so the
            fit does not depend on their order).
        seed: Seed of the restart draws (derive it from the task hash, not its
            position, for order-independent meta-fits).
        restarts: Number of prior-drawn restarts after the default start.
        maxiter: L-BFGS-B iteration cap per start.
        optimizer: ``"lbfgs"`` (default): L-BFGS-B in log space on the same MAP
            objective with analytic gradients (:class:`~raymeta.gp.mll.MapObjective`,
            about 5x faster); ``"botorch"``: botorch's ``fit_gpytorch_mll_scipy`` on
            the ``SingleTaskGP`` of :func:`build_meta_gp`.
        kernel: ``"rbf"`` or ``"matern52"`` (Scale(kernel-ARD)).

    Returns:
        The fitted state (float64).

    Raises:
        MetaDataError: ``task`` is not a TaskData or the optimizer is unknown.
        FitError: Every start failed numerically.
    """
    if not isinstance(task, TaskData):
        raise MetaDataError(f"fit_task_gp expects a TaskData; got {type(task)}")
    if optimizer not in ("lbfgs", "botorch"):
        raise MetaDataError(
            f"optimizer must be 'lbfgs' or 'botorch'; got {optimizer!r}"
        )
    check_kernel(kernel)
    start_time = time.perf_counter()
    task = task.sorted()
    if optimizer == "lbfgs":
        best, y_mean, y_std = _fit_fast(task, seed, restarts, maxiter, kernel)
        seconds = time.perf_counter() - start_time
        return _make_state(task, y_mean, y_std, best, seconds, kernel)
    model = build_meta_gp(task, kernel)
    mll = ExactMarginalLogLikelihood(model.likelihood, model)
    best: tuple[float, dict] | None = None
    for ls, os_, noise in _restart_starts(task.dim, restarts, seed):
        _set_hypers(model, ls, os_, noise)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                mll.train()
                fit_gpytorch_mll_scipy(mll, options={"maxiter": maxiter})
            value = _map_value(mll)
        except Exception as err:  # numerical trouble in one start: try the next
            log.warning("task %r: a GP fit start failed: %s", task.task_id, err)
            continue
        if np.isfinite(value) and (best is None or value > best[0]):
            best = (value, _hypers_of(model))
    if best is None:
        raise FitError(
            f"task {task.task_id!r}: every GP fit start failed; check the data "
            "(constant or duplicated y?)"
        )
    tf = model.outcome_transform
    y_mean = tf.means.detach().reshape(())
    y_std = tf.stdvs.detach().reshape(())
    seconds = time.perf_counter() - start_time
    return _make_state(task, y_mean, y_std, best, seconds, kernel)


def _fit_fast(
    task: TaskData, seed: int, restarts: int, maxiter: int, kernel: str = "rbf"
) -> tuple[tuple[float, dict], torch.Tensor, torch.Tensor]:
    """MAP fit with :class:`MapObjective` (no weights, meta priors)."""
    y_mean = task.y.mean()
    y_std = task.y.std() if task.n > 1 else torch.ones((), dtype=torch.float64)
    if not y_std > 0:
        y_std = torch.ones((), dtype=torch.float64)
    n, d = task.n, task.dim
    obj = MapObjective(
        task.X,
        (task.y - y_mean) / y_std,
        torch.zeros(0, n, dtype=torch.float64),
        torch.zeros(0, n, n, dtype=torch.float64),
        META_PRIORS,
        kernel,
    )
    starts = [
        np.log(np.concatenate([ls, [os_, noise]]))
        for ls, os_, noise in _restart_starts(d, restarts, seed)
    ]
    best = None
    for x, value in minimise_starts(obj, starts, box_bounds(d, 0), maxiter):
        if np.isfinite(value) and (best is None or -value > best[0]):
            best = (
                -value,
                {
                    "lengthscale": x[:d].exp(),
                    "outputscale": x[d].exp(),
                    "noise": x[d + 1].exp(),
                },
            )
    if best is None:
        raise FitError(
            f"task {task.task_id!r}: every GP fit start failed; check the data "
            "(constant or duplicated y?)"
        )
    return best, y_mean, y_std


def _hypers_of(model: SingleTaskGP) -> dict:
    kernel = model.covar_module
    return {
        "lengthscale": kernel.base_kernel.lengthscale.detach().reshape(-1).clone(),
        "outputscale": kernel.outputscale.detach().reshape(()).clone(),
        "noise": model.likelihood.noise.detach().reshape(()).clone(),
    }


def _make_state(
    task: TaskData,
    y_mean: torch.Tensor,
    y_std: torch.Tensor,
    best: tuple[float, dict],
    seconds: float,
    kernel: str = "rbf",
) -> TaskGPState:
    value, hp = best
    z = (task.y - y_mean) / y_std
    K = scaled_kernel(task.X, task.X, hp["lengthscale"], hp["outputscale"], kernel)
    K = K + hp["noise"] * torch.eye(task.n, dtype=torch.float64)
    try:
        chol, _ = cholesky_jitter(K)
    except torch.linalg.LinAlgError as err:
        raise FitError(f"task {task.task_id!r}: kernel matrix not PD: {err}") from err
    alpha = torch.cholesky_solve(z[:, None], chol).reshape(-1)
    return TaskGPState(
        task_id=task.task_id,
        task_hash=task.content_hash(),
        X=task.X,
        lengthscale=hp["lengthscale"],
        outputscale=hp["outputscale"],
        noise=hp["noise"],
        y_mean=y_mean.clone(),
        y_std=y_std.clone(),
        chol=chol,
        alpha=alpha,
        mll=value,
        fit_seconds=seconds,
        kernel=kernel,
    )
