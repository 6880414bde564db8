"""The driver protocol: run_bo evaluates what a driver asks and tells it each result.

The driver here is a real child process built on ``jobs/driver_protocol.py`` (a
peer that asks seeded random points and remembers what it is told), so both ends,
the pipes, the line framing and the end-of-study handshake are exercised; no peer
library is needed.
"""

from __future__ import annotations

import importlib
import json
import sys
import textwrap
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from raymeta.gp.benchmark import run_bo
from raymeta.tasks.bo import FAMILIES, draw_study

JOBS = Path(__file__).resolve().parents[2] / "jobs"

ECHO_DRIVER = textwrap.dedent(
    """
    import numpy as np
    from driver_protocol import serve

    class Echo:
        def __init__(self, problem):
            if problem.get("searcher") == "missing":
                raise ValueError("no such searcher")
            self.rng = np.random.default_rng(problem["seed"])
            self.dim, self.told = problem["dim"], []

        def ask(self):
            return self.rng.uniform(size=self.dim).tolist()

        def tell(self, y):
            self.told.append(y)

        def report(self):
            return {"told": self.told}

    serve(Echo, 0.0)
    """
)


@pytest.fixture()
def client(monkeypatch):
    monkeypatch.syspath_prepend(str(JOBS))
    monkeypatch.setenv("PYTHONPATH", str(JOBS))  # the driver imports driver_protocol
    return importlib.import_module("driver_client")


def _script(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "driver.py"
    path.write_text(text)
    return path


def test_run_bo_evaluates_the_driver_points_and_tells_it_each_observation(
    client, tmp_path
):
    study = draw_study(FAMILIES["branin"], seed=5, num_meta=3, n_meta=4)
    problem = {**client.driver_problem(study), "budget": 6}
    session = client.DriverSession(
        sys.executable, _script(tmp_path, ECHO_DRIVER), tmp_path / "log", problem
    )
    assert session.ready["ready"] is True
    proposer = client.DriverProposer(session)
    res = run_bo(study, "echo", [], budget=6, proposer=proposer)
    done = proposer.finish(res.observed[-1])

    asked = np.random.default_rng(5).uniform(size=(6, 2))
    np.testing.assert_allclose(res.X, asked)
    assert done["told"] == res.observed.tolist()
    assert res.method == "echo" and len(res.regret) == 6


def test_a_driver_error_is_raised_with_its_message_and_log(client, tmp_path):
    study = draw_study(FAMILIES["branin"], seed=0, num_meta=2, n_meta=4)
    problem = {**client.driver_problem(study), "budget": 3, "searcher": "missing"}
    with pytest.raises(RuntimeError, match="ValueError: no such searcher.*log"):
        client.DriverSession(
            sys.executable, _script(tmp_path, ECHO_DRIVER), tmp_path / "log", problem
        )
    assert "Traceback" in (tmp_path / "log").read_text()


def test_the_problem_is_json_and_carries_the_meta_data(client):
    study = draw_study(FAMILIES["hartmann3"], seed=2, num_meta=2, n_meta=5)
    problem = json.loads(json.dumps(client.driver_problem(study)))
    assert problem["dim"] == 3 and problem["seed"] == 2
    for sent, task in zip(problem["meta"], study.meta_tasks, strict=True):
        np.testing.assert_array_equal(np.array(sent["X"]), task.X)
        np.testing.assert_array_equal(np.array(sent["y"]), task.y)


@pytest.fixture()
def regret_bench(monkeypatch):
    monkeypatch.syspath_prepend(str(JOBS))
    return importlib.import_module("bench_scamlgp_regret")


def test_unknown_methods_are_named(regret_bench):
    args = SimpleNamespace(methods=["scamlgp", "smac"], synetune_python=None)
    with pytest.raises(SystemExit, match="'smac'"):
        regret_bench.check_methods(args)


def test_syne_tune_without_its_python_says_how_to_install(regret_bench):
    args = SimpleNamespace(methods=["synetune_quantile"], synetune_python=None)
    with pytest.raises(SystemExit, match="pip install"):
        regret_bench.check_methods(args)
