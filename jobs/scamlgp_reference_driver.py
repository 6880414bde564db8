"""Drive the ScaML-GP authors' research implementation over line-based JSON.

Run this with the REFERENCE venv's python (torch, botorch 0.7.3, blackboxopt,
parameterspace and the authors' ``scamlgp`` package, installed per
``shared/design/benchmarks.md`` section 3); it imports nothing from raymeta, and the
reference (AGPL-3.0) stays outside this repository: this script only calls its public
API. ``jobs/bench_scamlgp_reference.py`` starts it once per study.

The protocol is ``jobs/driver_protocol.py``'s. Its ``done`` message adds
``"outputscale": [...]`` (the residual kernel's fitted outputscale after each report)
and the final fit's ``"weights"``, ``"lengthscale"`` and ``"noise"``.

Deviation from the authors' benchmark runner: it passes no seed, so its studies are
not reproducible; this driver seeds numpy and torch with the study seed and passes
``seed`` to ``ScaMLGPBO`` (which seeds the meta-fit and the search-space sampler).
It also pins torch to ``threads`` threads (default 1) so CPU seconds compare.
"""

from __future__ import annotations

import time
from typing import Any

_IMPORT_CPU0 = time.process_time()

import numpy as np  # noqa: E402
import parameterspace as ps  # noqa: E402
import torch  # noqa: E402
from blackboxopt import Evaluation, Objective  # noqa: E402
from driver_protocol import names, serve  # noqa: E402
from scamlgp.optimizer import ScaMLGPBO  # noqa: E402

IMPORT_CPU_SECONDS = time.process_time() - _IMPORT_CPU0


def search_space(dim: int) -> ps.ParameterSpace:
    """``dim`` continuous parameters on [0, 1] (to_numerical is then the identity)."""
    space = ps.ParameterSpace()
    for name in names(dim):
        space.add(ps.ContinuousParameter(name=name, bounds=[0.0, 1.0]))
    return space


def meta_evaluations(meta: list[dict], dim: int) -> dict[str, list[Evaluation]]:
    """Meta-data as blackboxopt Evaluations, keyed ``task0..task{M-1}``."""
    keys = names(dim)
    return {
        f"task{m}": [
            Evaluation(
                configuration=dict(zip(keys, map(float, x))),
                objectives={"loss": float(y)},
            )
            for x, y in zip(task["X"], task["y"])
        ]
        for m, task in enumerate(meta)
    }


def fitted(model: Any) -> dict[str, Any]:
    """The target model's residual-kernel, weight and noise hyperparameters."""
    kernel = model.covar_module
    return {
        "weights": model.weights.detach().reshape(-1).tolist(),
        "lengthscale": kernel.base_kernel.lengthscale.detach().reshape(-1).tolist(),
        "noise": float(model.likelihood.noise.detach().reshape(-1)[0]),
    }


class ReferencePeer:
    """The authors' ``ScaMLGPBO``, asked and told through blackboxopt's interface."""

    def __init__(self, problem: dict[str, Any]) -> None:
        """Seed numpy and torch with the study seed, then build the optimizer."""
        self.dim, seed = int(problem["dim"]), int(problem["seed"])
        torch.set_num_threads(int(problem.get("threads", 1)))
        np.random.seed(seed)
        torch.manual_seed(seed)
        self.optimizer = ScaMLGPBO(
            search_space(self.dim),
            Objective("loss", False),
            meta_evaluations(problem["meta"], self.dim),
            seed=seed,
        )
        self.outputscales: list[float] = []
        self._spec = None

    def ask(self) -> list[float]:
        """The optimizer's next evaluation specification as a point."""
        self._spec = self.optimizer.generate_evaluation_specification()
        return [float(self._spec.configuration[k]) for k in names(self.dim)]

    def tell(self, y: float) -> None:
        """Report ``y``, which refits the target model."""
        self.optimizer.report(self._spec.create_evaluation(objectives={"loss": y}))
        scale = self.optimizer.model.covar_module.outputscale
        self.outputscales.append(float(scale.detach()))

    def report(self) -> dict[str, Any]:
        """Outputscale after each report and the final fit's hyperparameters."""
        return {"outputscale": self.outputscales, **fitted(self.optimizer.model)}


if __name__ == "__main__":
    serve(ReferencePeer, IMPORT_CPU_SECONDS)
