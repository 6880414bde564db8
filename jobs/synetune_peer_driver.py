"""Drive Syne Tune's transfer-learning searchers over line-based JSON.

Run this with a python that has Syne Tune 0.16.0 (a venv outside this repository:
``python3 -m venv /work/scratch/synetune-venv && /work/scratch/synetune-venv/bin/pip
install "syne-tune==0.16.0" huggingface_hub``; its transfer-learning modules import
the blackbox repository, which needs ``huggingface_hub``); it imports nothing from
raymeta. ``jobs/bench_scamlgp_regret.py --methods synetune_<name>``
starts it once per study. The protocol is ``jobs/driver_protocol.py``'s; the
problem names the searcher (``"searcher": name``).

Searchers (Syne Tune's own classes, default settings unless said):

- ``quantile``: ``QuantileBasedSurrogateSearcher`` (Salinas et al. 2020, copula
  Thompson sampling: an XGBoost surrogate of the meta-tasks' Gaussian-copula
  transformed y; it does not model the target's observations);
- ``bounding_box``: ``BoundingBox`` (Perrone et al. 2019) around the best
  configuration of each meta-task, with ``RandomSearch`` inside, as Syne Tune's
  documentation pairs them.

Not driven: ``ZeroShotTransfer`` (Wistuba et al. 2015). raymeta's meta-tasks are not
evaluated on one common set of configurations, so it needs ``use_surrogates=True``,
and in 0.16.0 that path fails before the first suggestion (``AttributeError:
'ZeroShotTransfer' object has no attribute 'random_state'``: its surrogate sampling
runs before ``__init__`` sets ``random_state``).
"""

from __future__ import annotations

import datetime as dt
import time
from typing import Any

_IMPORT_CPU0 = time.process_time()

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from driver_protocol import names, serve  # noqa: E402
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


class SyneTunePeer:
    """A Syne Tune scheduler asked and told through its trial interface."""

    def __init__(self, problem: dict[str, Any]) -> None:
        """Build the scheduler the problem names, seeded with its seed."""
        self.dim, seed = int(problem["dim"]), int(problem["seed"])
        np.random.seed(seed)  # Syne Tune's surrogates draw from numpy's global state
        self.scheduler = make_scheduler(
            problem["searcher"], self.dim, problem["meta"], seed
        )
        self._trial: Trial | None = None

    def ask(self) -> list[float]:
        """Suggest and register a trial; its config as a unit-cube point."""
        trial_id = 0 if self._trial is None else self._trial.trial_id + 1
        config = self.scheduler.suggest().config
        self._trial = Trial(trial_id, config, dt.datetime.now())
        self.scheduler.on_trial_add(self._trial)
        return [float(config[k]) for k in names(self.dim)]

    def tell(self, y: float) -> None:
        """Complete the last trial with ``y``."""
        self.scheduler.on_trial_complete(self._trial, {METRIC: y})

    def report(self) -> dict[str, Any]:
        """Nothing beyond the protocol's figures."""
        return {}


if __name__ == "__main__":
    serve(SyneTunePeer, IMPORT_CPU_SECONDS)
