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


def test_batches_stay_small_next_to_a_fit_and_cover_every_task_once():
    batches = fitting._batches(10_000, 2, 32)
    assert len(batches) == 40 and {b.stop - b.start for b in batches} == {256}
    covered = [i for b in fitting._batches(1000, 3, 1) for i in range(1000)[b]]
    assert covered == list(range(1000))
    assert len(fitting._batches(24, 6, 1)) == 6  # one batch per worker when small
