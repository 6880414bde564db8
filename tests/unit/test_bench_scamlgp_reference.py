"""The reference harness feeds the authors' driver exactly raymeta's study numbers.

No Ray and no reference venv: only the problem-building and answering functions.
"""

from __future__ import annotations

import dataclasses
import importlib
import json
from pathlib import Path

import numpy as np
import pytest

from raymeta.gp.benchmark import run_bo
from raymeta.tasks.bo import FAMILIES, draw_study

JOBS = Path(__file__).resolve().parents[2] / "jobs"


@pytest.fixture()
def bench(monkeypatch):
    monkeypatch.syspath_prepend(str(JOBS))
    return importlib.import_module("bench_scamlgp_reference")


@pytest.mark.parametrize("family", ["branin", "hartmann3"])
def test_problem_carries_the_study_meta_data_exactly(bench, family):
    study = draw_study(FAMILIES[family], seed=3, num_meta=4, n_meta=6)
    # through JSON, as the driver receives it
    problem = json.loads(json.dumps(bench.driver_problem(study)))
    assert problem["dim"] == FAMILIES[family].dim and problem["seed"] == 3
    assert len(problem["meta"]) == len(study.meta_tasks)
    for sent, task in zip(problem["meta"], study.meta_tasks):
        np.testing.assert_array_equal(np.array(sent["X"]), task.X.numpy())
        np.testing.assert_array_equal(np.array(sent["y"]), task.y.numpy())


def test_problem_is_deterministic_per_seed(bench):
    def problem(seed):
        study = draw_study(FAMILIES["branin"], seed=seed, num_meta=3, n_meta=5)
        return bench.driver_problem(study)

    assert problem(7) == problem(7)
    assert problem(7) != problem(8)


class _Recorder:
    """Wraps a target task and records the noisy observations run_bo makes."""

    def __init__(self, target):
        self.target, self.observed = target, []

    def canonical(self, x):
        return self.target.canonical(x)

    def __call__(self, x, rng=None):
        y = self.target(x, rng)
        if rng is not None:
            self.observed.append(float(y[0]))
        return y


def test_observer_matches_run_bo_noise_stream(bench):
    study = draw_study(FAMILIES["branin"], seed=5, num_meta=0, n_meta=1)
    recorder = _Recorder(study.target)
    res = run_bo(
        dataclasses.replace(study, target=recorder), "random", [], budget=8, f_star=0.0
    )
    observe = bench.make_observer(study)
    answers = [observe(x) for x in res.X]
    assert [a[0] for a in answers] == recorder.observed
    np.testing.assert_array_equal([a[1] for a in answers], res.values)
    assert bench.make_observer(study)(res.X[0]) == answers[0]  # fresh stream per study


def test_near_duplicates_counts_points_close_to_earlier_ones(bench):
    X = np.array([[0.1, 0.1], [0.5, 0.5], [0.1, 0.1005], [0.5, 0.5], [0.9, 0.9]])
    assert bench.near_duplicates(X) == 2
    assert bench.near_duplicates(X[:2]) == 0
