from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from gpytorch.mlls import ExactMarginalLogLikelihood

from raymeta.errors import MetaDataError
from raymeta.gp.fit import TaskGPState, build_meta_gp, fit_task_gp, seed_from_hash
from raymeta.gp.meta import MetaStack
from raymeta.gp.priors import KERNEL_BOUNDS, NOISE_BOUNDS
from raymeta.tasks.data import TaskData
from tests.unit.gp.conftest import smooth, uniform


@pytest.fixture(scope="module")
def task() -> TaskData:
    X = uniform(12, 2, 7)
    return TaskData("t", X, 3 * smooth(X) + 2)


@pytest.fixture(scope="module")
def state(task) -> TaskGPState:
    return fit_task_gp(task, seed=0, restarts=1, maxiter=40)


def test_state_roundtrips_through_bytes(state):
    back = TaskGPState.from_bytes(state.to_bytes())
    for f in dataclasses.fields(TaskGPState):
        a, b = getattr(state, f.name), getattr(back, f.name)
        assert torch.equal(a, b) if isinstance(a, torch.Tensor) else a == b


def test_hyperparameters_are_float64_and_within_bounds(state):
    assert state.X.dtype == torch.float64 and state.chol.dtype == torch.float64
    lo, hi = KERNEL_BOUNDS
    assert ((state.lengthscale >= lo) & (state.lengthscale <= hi)).all()
    assert lo <= float(state.outputscale) <= hi
    assert NOISE_BOUNDS[0] <= float(state.noise) <= NOISE_BOUNDS[1]


@pytest.mark.parametrize("kernel", ["rbf", "matern52"])
def test_state_posterior_equals_the_fitted_single_task_gp(task, kernel, request):
    from gpytorch.kernels import MaternKernel, RBFKernel

    state = request.getfixturevalue("state" if kernel == "rbf" else "matern_state")
    assert state.kernel == kernel
    gp = build_meta_gp(task.sorted(), kernel=kernel)
    base = RBFKernel if kernel == "rbf" else MaternKernel
    assert isinstance(gp.covar_module.base_kernel, base)
    gp.covar_module.base_kernel.lengthscale = state.lengthscale[None]
    gp.covar_module.outputscale = state.outputscale
    gp.likelihood.noise = state.noise.reshape(1)
    gp.eval()
    Z = uniform(5, 2, 8)
    ref = gp.posterior(Z)
    mean, cov = MetaStack([state]).posterior(Z)
    assert torch.allclose(mean[0], ref.mean.reshape(-1).detach(), atol=1e-9)
    assert torch.allclose(cov[0], ref.mvn.covariance_matrix.detach(), atol=1e-9)
    assert float(state.y_mean) == pytest.approx(float(task.y.mean()))
    assert float(state.y_std) == pytest.approx(float(task.y.std()))
    assert TaskGPState.from_bytes(state.to_bytes()).kernel == kernel


def test_fit_reaches_at_least_the_map_value_of_the_default_start(task, state):
    gp = build_meta_gp(task.sorted())
    mll = ExactMarginalLogLikelihood(gp.likelihood, gp)
    gp.train()
    start = float(mll(gp(*gp.train_inputs), gp.train_targets))
    assert state.mll > start


def test_fit_ignores_row_order_and_is_seed_deterministic(task, state):
    perm = torch.randperm(task.n, generator=torch.Generator().manual_seed(1))
    again = fit_task_gp(
        TaskData("t", task.X[perm], task.y[perm]), seed=0, restarts=1, maxiter=40
    )
    assert torch.equal(again.lengthscale, state.lengthscale)
    assert torch.equal(again.alpha, state.alpha)


def test_seed_from_hash_depends_on_hash_and_seed():
    h1, h2 = "a" * 40, "b" * 40
    assert seed_from_hash(h1, 0) == seed_from_hash(h1, 0)
    assert (
        len({seed_from_hash(h1, 0), seed_from_hash(h2, 0), seed_from_hash(h1, 1)}) == 3
    )


def test_fit_rejects_non_task_input():
    with pytest.raises(MetaDataError, match="fit_task_gp expects a TaskData"):
        fit_task_gp((torch.zeros(2, 2), torch.zeros(2)), seed=0)


def _meta_objective(t: TaskData, kernel: str = "rbf"):
    """The meta-task MAP objective (no weights, meta priors) on standardised y."""
    from raymeta.gp.mll import MapObjective
    from raymeta.gp.priors import META_PRIORS

    return MapObjective(
        t.X,
        (t.y - t.y.mean()) / t.y.std(),
        torch.zeros(0, t.n, dtype=torch.float64),
        torch.zeros(0, t.n, t.n, dtype=torch.float64),
        META_PRIORS,
        kernel,
    )


def test_map_objective_equals_gpytorch_mll_with_priors(task):

    t = task.sorted()
    gp = build_meta_gp(t)
    ls, os_, noise = torch.tensor([0.3, 0.8]), 2.0, 1e-3
    gp.covar_module.base_kernel.lengthscale = ls[None]
    gp.covar_module.outputscale = torch.tensor(os_)
    gp.likelihood.noise = torch.tensor([noise])
    gp.train()
    mll = ExactMarginalLogLikelihood(gp.likelihood, gp)
    ref = float(mll(gp(*gp.train_inputs), gp.train_targets))
    obj = _meta_objective(t)
    theta = torch.log(torch.tensor([0.3, 0.8, os_, noise], dtype=torch.float64))
    value, _ = obj.value_and_grad(theta)
    assert value == pytest.approx(-ref, abs=1e-6)
    assert float(obj(theta[None])[0]) == pytest.approx(value, abs=1e-10)


def test_fast_and_botorch_optimizers_reach_the_same_map_value(task):
    fast = fit_task_gp(task, seed=0, restarts=1, maxiter=200)
    slow = fit_task_gp(task, seed=0, restarts=1, maxiter=200, optimizer="botorch")
    assert fast.mll == pytest.approx(slow.mll, abs=1e-4)
    with pytest.raises(MetaDataError, match="optimizer must be 'lbfgs' or 'botorch'"):
        fit_task_gp(task, seed=0, optimizer="adam")


def test_batched_starts_are_independent_lbfgs_runs(task):
    """Each start of the batched fit ends where a lone scipy L-BFGS-B run ends."""
    from scipy.optimize import minimize

    from raymeta.gp.mll import MapObjective, box_bounds, minimise_starts
    from raymeta.gp.priors import META_PRIORS

    z = (task.y - task.y.mean()) / task.y.std()
    empty = torch.zeros(0, task.n, dtype=torch.float64)
    obj = MapObjective(
        task.X, z, empty, empty[:, :, None] * empty[:, None, :], META_PRIORS
    )
    starts = [np.log([0.3, 0.8, 2.0, 1e-3]), np.log([2.0, 0.1, 0.5, 1e-2])]
    batched = minimise_starts(obj, starts, box_bounds(2, 0), maxiter=200)

    def fun(x):
        value, grad = obj.value_and_grad(torch.from_numpy(x))
        return value, grad.numpy()

    for (x, value), x0 in zip(batched, starts):
        alone = minimize(
            fun, x0, jac=True, method="L-BFGS-B", bounds=box_bounds(2, 0),
            options={"maxiter": 200},
        )  # fmt: skip
        assert value == pytest.approx(alone.fun, abs=1e-6)
        assert np.allclose(x.numpy(), alone.x, atol=1e-4)


# ------------------------------------------------------------------ Matern-5/2


@pytest.fixture(scope="module")
def matern_state(task) -> TaskGPState:
    return fit_task_gp(task, seed=0, restarts=1, maxiter=40, kernel="matern52")


@pytest.mark.parametrize("kernel", ["rbf", "matern52"])
def test_map_objective_value_and_gradient_match_gpytorch(task, kernel):
    """Value equals gpytorch's MLL with priors; analytic gradient = its central
    finite differences (in log hyperparameters)."""

    t = task.sorted()
    gp = build_meta_gp(t, kernel=kernel)
    theta = torch.log(torch.tensor([0.3, 0.8, 2.0, 1e-3], dtype=torch.float64))
    gp.train()
    mll = ExactMarginalLogLikelihood(gp.likelihood, gp)

    def reference(th):
        gp.covar_module.base_kernel.lengthscale = th[:2].exp()[None].detach()
        gp.covar_module.outputscale = th[2].exp().detach()
        gp.likelihood.noise = th[3].exp().reshape(1).detach()
        return -float(mll(gp(*gp.train_inputs), gp.train_targets))

    obj = _meta_objective(t, kernel)
    value, grad = obj.value_and_grad(theta)
    assert value == pytest.approx(reference(theta), abs=1e-6)
    eps = 1e-6
    for j in range(4):
        step = torch.zeros(4, dtype=torch.float64)
        step[j] = eps
        fd = (reference(theta + step) - reference(theta - step)) / (2 * eps)
        assert float(grad[j]) == pytest.approx(fd, rel=1e-4, abs=1e-6), (kernel, j)


def test_unknown_kernel_is_rejected(task):
    from raymeta.gp.fit import FitSettings

    with pytest.raises(MetaDataError, match="kernel must be one of"):
        fit_task_gp(task, seed=0, kernel="matern32")
    with pytest.raises(MetaDataError, match="kernel must be one of"):
        FitSettings(kernel="linear")
    assert FitSettings(kernel="matern52").digest() != FitSettings().digest()
