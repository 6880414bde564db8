from __future__ import annotations

import numpy as np
import pytest
import torch
from botorch.models import SingleTaskGP
from botorch.models.transforms.outcome import Standardize
from gpytorch.kernels import RBFKernel, ScaleKernel
from gpytorch.means import ZeroMean

from raymeta.gp.meta import MetaStack
from raymeta.gp.model import ScaMLGP, TargetHypers, fit_target, prune_mask
from tests.unit.gp.conftest import smooth, uniform

# ---------------------------------------------------------------- explicit joint GP


def rbf_np(A, B, ls, os_, kind="rbf"):
    diff = (A[:, None, :] - B[None, :, :]) / ls
    q = (diff**2).sum(-1)
    if kind == "rbf":
        return os_ * np.exp(-0.5 * q)
    r = np.sqrt(q)
    return os_ * (1 + np.sqrt(5) * r + 5 * q / 3) * np.exp(-np.sqrt(5) * r)


def joint_posterior(tasks, states, Xt, yt, hyp, Z):
    """Test-task posterior of the explicit (M+1)-task GP with the block kernel."""
    ordered = {s.task_id: s for s in states}
    M = len(tasks)
    w = hyp["w"]
    raw = np.concatenate([t.y.numpy() for t in tasks] + [yt])
    S = raw.std(ddof=1)
    kmeta = []
    for t in tasks:
        s = ordered[t.task_id]
        sm2 = float(s.y_std) ** 2
        ls, os_, kind = s.lengthscale.numpy(), float(s.outputscale), s.kernel
        kmeta.append(
            lambda A, B, ls=ls, os_=os_, sm2=sm2, kind=kind: (
                sm2 * rbf_np(A, B, ls, os_, kind)
            )
        )

    def k_target(A, B):
        out = S**2 * rbf_np(A, B, hyp["ls"], hyp["os"], hyp.get("kernel", "rbf"))
        return out + sum(w[m] ** 2 * kmeta[m](A, B) for m in range(M))

    blocks_X = [t.X.numpy() for t in tasks] + [Xt]
    n_all = sum(len(b) for b in blocks_X)
    K = np.zeros((n_all, n_all))
    mean = np.zeros(n_all)
    offs = np.cumsum([0] + [len(b) for b in blocks_X])
    for m, t in enumerate(tasks):
        s = ordered[t.task_id]
        a, b = offs[m], offs[m + 1]
        K[a:b, a:b] = kmeta[m](blocks_X[m], blocks_X[m]) + float(s.y_std) ** 2 * float(
            s.noise
        ) * np.eye(b - a)
        K[a:b, offs[M] :] = w[m] * kmeta[m](blocks_X[m], Xt)
        K[offs[M] :, a:b] = K[a:b, offs[M] :].T
        mean[a:b] = float(s.y_mean)
    K[offs[M] :, offs[M] :] = k_target(Xt, Xt) + S**2 * hyp["noise"] * np.eye(len(Xt))
    prior_t = sum(w[m] * float(ordered[t.task_id].y_mean) for m, t in enumerate(tasks))
    mean[offs[M] :] = prior_t
    Kz = np.concatenate(
        [w[m] * kmeta[m](Z, blocks_X[m]) for m in range(M)] + [k_target(Z, Xt)], axis=1
    )
    yall = np.concatenate([t.y.numpy() for t in tasks] + [yt])
    sol = np.linalg.solve(K, yall - mean)
    mu = prior_t + Kz @ sol
    var = np.diag(k_target(Z, Z)) - np.einsum("ij,ji->i", Kz, np.linalg.solve(K, Kz.T))
    return mu, var


def hypers_for(meta, w_by_id, ls, os_, noise, kernel="rbf"):
    w = torch.tensor([w_by_id[t] for t in meta.task_ids], dtype=torch.float64)
    return TargetHypers(
        torch.tensor(ls, dtype=torch.float64),
        torch.tensor(os_, dtype=torch.float64),
        torch.tensor(noise, dtype=torch.float64),
        w,
        kernel=kernel,
    )


@pytest.fixture(scope="module")
def mixed_states(meta_tasks):
    """Meta GPs with Matern-5/2 and RBF kernels in one stack."""
    from raymeta.gp.fit import fit_task_gp

    kinds = ["matern52", "rbf", "matern52"]
    return [
        fit_task_gp(t, seed=i, restarts=1, maxiter=30, kernel=k)
        for i, (t, k) in enumerate(zip(meta_tasks, kinds))
    ]


@pytest.mark.parametrize("kernel", ["rbf", "matern52"])
def test_posterior_equals_explicit_joint_gp(
    meta_tasks, meta_states, mixed_states, kernel
):
    states = meta_states if kernel == "rbf" else mixed_states
    Xt = uniform(6, 2, 11)
    yt = 2.0 * smooth(Xt, 0.1) + 0.5
    Z = uniform(7, 2, 12)
    w_by_id = {"m0": 0.7, "m1": 1.3, "m2": 0.2}
    ls, os_, noise = [0.4, 0.9], 0.3, 1e-3
    meta = MetaStack(states)
    hypers = hypers_for(meta, w_by_id, ls, os_, noise, kernel)
    model = ScaMLGP(meta, Xt, yt, hypers, 0.0)
    mean, cov = model.mean_and_cov(Z[:, None, :])
    hyp = {
        "w": [w_by_id[t.task_id] for t in meta_tasks],
        "ls": np.array(ls),
        "os": os_,
        "noise": noise,
        "kernel": kernel,
    }
    mu_ref, var_ref = joint_posterior(
        meta_tasks, states, Xt.numpy(), yt.numpy(), hyp, Z.numpy()
    )
    assert np.abs(mean.reshape(-1).numpy() - mu_ref).max() <= 1e-8
    assert np.abs(cov.reshape(-1).numpy() - var_ref).max() <= 1e-8
    # joint q-batch covariance agrees with the per-point variances
    _, cov_q = model.mean_and_cov(Z[None])
    assert torch.allclose(cov_q[0].diagonal(), cov.reshape(-1), atol=1e-10)


def test_prior_is_weighted_meta_posteriors(meta_tasks, meta_states):
    meta = MetaStack(meta_states)
    w_by_id = {"m0": 0.5, "m1": 2.0, "m2": 0.25}
    hyp = hypers_for(meta, w_by_id, [0.5, 0.5], 0.1, 1e-3)
    empty = torch.zeros(0, 2, dtype=torch.float64)
    model = ScaMLGP(meta, empty, torch.zeros(0, dtype=torch.float64), hyp, 0.0)
    Z = uniform(5, 2, 3)
    mean, cov = model.mean_and_cov(Z[:, None, :])
    exp_mean = torch.zeros(5, dtype=torch.float64)
    exp_var = torch.full((5,), 0.1, dtype=torch.float64)  # k_t(x, x), S = 1
    by_id = {s.task_id: s for s in meta_states}
    for task in meta_tasks:
        s = by_id[task.task_id]
        gp = SingleTaskGP(
            task.X,
            task.y[:, None],
            mean_module=ZeroMean(),
            covar_module=ScaleKernel(RBFKernel(ard_num_dims=2)),
            outcome_transform=Standardize(m=1),
        ).to(torch.float64)
        gp.covar_module.base_kernel.lengthscale = s.lengthscale[None]
        gp.covar_module.outputscale = s.outputscale
        gp.likelihood.noise = s.noise.reshape(1)
        gp.eval()
        post = gp.posterior(Z)
        w = w_by_id[task.task_id]
        exp_mean += w * post.mean.reshape(-1).detach()
        exp_var += w**2 * post.variance.reshape(-1).detach()
    assert torch.allclose(mean.reshape(-1), exp_mean, atol=1e-10, rtol=0)
    assert torch.allclose(cov.reshape(-1), exp_var, atol=1e-10, rtol=0)


def test_zero_meta_tasks_is_plain_gp_on_standardised_data():
    Xt = uniform(8, 2, 5)
    yt = 3 * smooth(Xt) + 10
    hyp = TargetHypers(
        torch.tensor([0.3, 0.7], dtype=torch.float64),
        torch.tensor(1.5, dtype=torch.float64),
        torch.tensor(1e-3, dtype=torch.float64),
        torch.zeros(0, dtype=torch.float64),
    )
    model = ScaMLGP(MetaStack([]), Xt, yt, hyp)
    gp = SingleTaskGP(
        Xt,
        yt[:, None],
        mean_module=ZeroMean(),
        covar_module=ScaleKernel(RBFKernel(ard_num_dims=2)),
        outcome_transform=Standardize(m=1),
    ).to(torch.float64)
    gp.covar_module.base_kernel.lengthscale = hyp.lengthscale[None]
    gp.covar_module.outputscale = hyp.outputscale
    gp.likelihood.noise = hyp.noise.reshape(1)
    gp.eval()
    Z = uniform(6, 2, 9)
    ref = gp.posterior(Z)
    ours = model.posterior(Z[:, None, :])
    assert torch.allclose(
        ours.mean.reshape(-1), ref.mean.reshape(-1).detach(), atol=1e-10, rtol=0
    )
    assert torch.allclose(
        ours.variance.reshape(-1), ref.variance.reshape(-1).detach(), atol=1e-10, rtol=0
    )


def test_prune_mask_uses_scaled_relative_weights():
    w = torch.tensor([1.0, 1e-4, 0.5], dtype=torch.float64)
    s = torch.tensor([1.0, 1.0, 2.0], dtype=torch.float64)
    # relative: w s M / sum = [3/2.0001, 3e-4/2.0001, 3/2.0001]
    assert prune_mask(w, s, 1e-3).tolist() == [True, False, True]
    assert prune_mask(w, s, 0.0).all()


def test_fit_target_weights_recover_scale_of_identical_task():
    X = uniform(24, 2, 0)
    from raymeta.gp.fit import fit_task_gp
    from raymeta.tasks.data import TaskData

    state = fit_task_gp(TaskData("same", X, smooth(X)), seed=0, restarts=1)
    meta = MetaStack([state])
    Xt = uniform(10, 2, 1)
    for factor in (1.0, 2.0):
        hyp = fit_target(meta, Xt, factor * smooth(Xt), seed=0, restarts=2)
        assert abs(float(hyp.weights[0]) - factor) < 0.05 * factor
    assert float(hyp.outputscale) < 1e-2


def test_unrelated_and_anticorrelated_tasks_get_pruned():
    from raymeta.gp.fit import fit_task_gp
    from raymeta.tasks.data import TaskData
    from tests.unit.gp.conftest import unrelated

    X = uniform(24, 2, 40)
    states = [
        fit_task_gp(TaskData("relevant", X, smooth(X)), seed=0, restarts=1, maxiter=60),
        fit_task_gp(
            TaskData("unrelated", X, unrelated(X)), seed=1, restarts=1, maxiter=60
        ),
        fit_task_gp(TaskData("anti", X, -smooth(X)), seed=2, restarts=1, maxiter=60),
    ]
    meta = MetaStack(states)
    Xt = uniform(10, 2, 41)
    hyp = fit_target(meta, Xt, smooth(Xt), seed=0, restarts=2)
    w = dict(zip(meta.task_ids, hyp.weights.tolist()))
    s = dict(zip(meta.task_ids, meta.y_std.tolist()))
    total = sum(w[t] * s[t] for t in w)
    rel = {t: w[t] * s[t] * 3 / total for t in w}
    assert rel["unrelated"] < 1e-3 and rel["anti"] < 1e-3
    assert w["relevant"] == pytest.approx(1.0, abs=0.05)
    assert min(hyp.weights) >= 1e-10  # never negative
    model = ScaMLGP(meta, Xt, smooth(Xt), hyp)
    assert model.meta.task_ids == ["relevant"]
