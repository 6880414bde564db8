"""Drive Syne Tune's transfer-learning searchers over line-based JSON.

Run this with a python that has ``syne-tune[basic]==0.16.0`` (a venv outside this
repository: ``python3 -m venv /work/scratch/synetune-venv &&
/work/scratch/synetune-venv/bin/pip install "syne-tune[basic]==0.16.0"``); it imports
nothing from raymeta. ``jobs/bench_scamlgp_regret.py --methods synetune_<name>``
starts it once per study. The protocol is the one of
``jobs/scamlgp_reference_driver.py``, plus the searcher's name:

- in: ``{"searcher": name, "dim": d, "seed": s, "budget": T, "threads": 1,
  "meta": [{"X": [[...], ...], "y": [...]}, ...]}`` (meta X in the unit cube);
- out: ``{"ready": true, "meta_fit_cpu_seconds": ...}`` once the searcher is built;
- then T times: out ``{"x": [x_0, ..., x_{d-1}]}``, in ``{"y": observed}``;
- out: ``{"done": true, "cpu_seconds": ..., "import_cpu_seconds": ...}``.

Searchers (Syne Tune's own classes, default settings unless said):

- ``quantile``: ``QuantileBasedSurrogateSearcher`` (Salinas et al. 2020, copula
  Thompson sampling: an XGBoost surrogate of the meta-tasks' Gaussian-copula
  transformed y; it does not model the target's observations);
- ``bounding_box``: ``BoundingBox`` (Perrone et al. 2019) around the best
  configuration of each meta-task, with ``RandomSearch`` inside, as Syne Tune's
  documentation pairs them;

Not driven: ``ZeroShotTransfer`` (Wistuba et al. 2015). raymeta's meta-tasks are not
evaluated on one common set of configurations, so it needs ``use_surrogates=True``,
and in 0.16.0 that path fails before the first suggestion (``AttributeError:
'ZeroShotTransfer' object has no attribute 'random_state'``: its surrogate sampling
runs before ``__init__`` sets ``random_state``).

On a malformed message or a failure the driver writes ``{"error": "..."}`` and exits
with status 1; library output goes to stderr.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import sys
import time
import traceback
from typing import IO, Any

_IMPORT_CPU0 = time.process_time()

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from syne_tune.backend.trial_status import Trial  # noqa: E402
from syne_tune.config_space import uniform  # noqa: E402
from syne_tune.optimizer.baselines import RandomSearch  # noqa: E402
from syne_tune.optimizer.schedulers.single_objective_scheduler import (  # noqa: E402
    SingleObjectiveScheduler,
)
from syne_tune.optimizer.schedulers.transfer_learning.bounding_box import (  # noqa: E402
    BoundingBox,
)
from syne_tune.optimizer.schedulers.transfer_learning.quantile_based.quantile_based_searcher import (  # noqa: E402, E501
    QuantileBasedSurrogateSearcher,
)
from syne_tune.optimizer.schedulers.transfer_learning.transfer_learning_task_evaluation import (  # noqa: E402, E501
    TransferLearningTaskEvaluations,
)

IMPORT_CPU_SECONDS = time.process_time() - _IMPORT_CPU0
METRIC = "y"
SEARCHERS = ("quantile", "bounding_box")


def names(dim: int) -> list[str]:
    """The fixed parameter order ``x0..x{dim-1}``."""
    return [f"x{j}" for j in range(dim)]


def config_space(dim: int) -> dict[str, Any]:
    """``dim`` continuous parameters on [0, 1]."""
    return {name: uniform(0.0, 1.0) for name in names(dim)}


def evaluations(
    meta: list[dict], space: dict[str, Any]
) -> dict[str, TransferLearningTaskEvaluations]:
    """Meta-data as Syne Tune task evaluations (one seed, one fidelity)."""
    return {
        f"task{m}": TransferLearningTaskEvaluations(
            configuration_space=space,
            hyperparameters=pd.DataFrame(task["X"], columns=list(space)),
            objectives_names=[METRIC],
            objectives_evaluations=np.asarray(task["y"], float).reshape(-1, 1, 1, 1),
        )
        for m, task in enumerate(meta)
    }


def make_scheduler(name: str, dim: int, meta: list[dict], seed: int) -> Any:
    """The Syne Tune scheduler ``name``, minimising ``METRIC``."""
    space = config_space(dim)
    tasks = evaluations(meta, space)
    if name == "quantile":
        searcher = QuantileBasedSurrogateSearcher(
            space, transfer_learning_evaluations=tasks, random_seed=seed
        )
        return SingleObjectiveScheduler(
            space, metric=METRIC, searcher=searcher, random_seed=seed
        )
    if name == "bounding_box":
        return BoundingBox(
            lambda box, metric, minimize, rs: RandomSearch(
                box, metrics=[metric], do_minimize=minimize, random_seed=rs
            ),
            space,
            metric=METRIC,
            transfer_learning_evaluations=tasks,
            random_seed=seed,
        )
    raise ValueError(f"searcher must be one of {SEARCHERS}; got {name!r}")


def send(out: IO[str], message: dict[str, Any]) -> None:
    out.write(json.dumps(message) + "\n")
    out.flush()


def receive(inp: IO[str]) -> dict[str, Any]:
    line = inp.readline()
    if not line:
        raise EOFError("harness closed the pipe")
    return json.loads(line)


def run(inp: IO[str], out: IO[str]) -> None:
    """One study: build the searcher, then ask/tell ``budget`` times."""
    problem = receive(inp)
    dim, budget, seed = int(problem["dim"]), int(problem["budget"]), problem["seed"]
    np.random.seed(seed)  # Syne Tune's surrogates draw from numpy's global state
    cpu0 = time.process_time()
    scheduler = make_scheduler(problem["searcher"], dim, problem["meta"], seed)
    send(out, {"ready": True, "meta_fit_cpu_seconds": time.process_time() - cpu0})
    for trial_id in range(budget):
        config = scheduler.suggest().config
        trial = Trial(trial_id, config, dt.datetime.now())
        scheduler.on_trial_add(trial)
        send(out, {"x": [float(config[k]) for k in names(dim)]})
        y = float(receive(inp)["y"])
        scheduler.on_trial_complete(trial, {METRIC: y})
    send(
        out,
        {
            "done": True,
            "cpu_seconds": time.process_time(),
            "import_cpu_seconds": IMPORT_CPU_SECONDS,
        },
    )


def main() -> None:
    protocol = sys.stdout
    sys.stdout = sys.stderr  # library prints must not corrupt the protocol
    try:
        with contextlib.redirect_stdout(sys.stderr):
            run(sys.stdin, protocol)
    except Exception as exc:  # reported to the harness, then exit 1
        traceback.print_exc()
        send(protocol, {"error": f"{type(exc).__name__}: {exc}"})
        sys.exit(1)


if __name__ == "__main__":
    main()
