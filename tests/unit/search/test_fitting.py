from __future__ import annotations

import torch

from raymeta.search import fitting
from raymeta.search.fitting import fit_meta_tasks
from raymeta.tasks.data import TaskData


def _tasks(n: int) -> list[TaskData]:
    gen = torch.Generator().manual_seed(0)
    out = []
    for i in range(n):
        X = torch.rand(8, 2, generator=gen, dtype=torch.float64)
        out.append(TaskData(f"t{i}", X, (X - 0.1 * i).pow(2).sum(1)))
    return out


class _NoRay:
    def options(self, **kwargs):
        raise AssertionError("a Ray fitter was started")


def test_too_few_tasks_for_a_ray_worker_are_fitted_in_process(monkeypatch):
    tasks = _tasks(3)
    monkeypatch.setattr(fitting, "_remote_fit_batch", _NoRay())
    local = fit_meta_tasks(tasks, seed=0, num_workers=2, min_tasks_per_worker=4)
    serial = fit_meta_tasks(tasks, seed=0, num_workers=0)
    assert [s.task_id for s in local] == ["t0", "t1", "t2"]
    for a, b in zip(local, serial, strict=True):
        assert torch.equal(a.lengthscale, b.lengthscale) and a.mll == b.mll
