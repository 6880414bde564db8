"""Drive the ScaML-GP authors' research implementation over line-based JSON.

Run this with the REFERENCE venv's python (torch, botorch 0.7.3, blackboxopt,
parameterspace and the authors' ``scamlgp`` package, installed per
``shared/design/benchmarks.md`` section 3); it imports nothing from raymeta, and the
reference (AGPL-3.0) stays outside this repository: this script only calls its public
API. ``jobs/bench_scamlgp_reference.py`` starts it once per study.

Protocol, one JSON object per line (stdin -> driver, stdout -> harness):

- in: ``{"dim": d, "seed": s, "budget": T, "threads": 1,
  "meta": [{"X": [[...], ...], "y": [...]}, ...]}`` (meta X in the unit cube);
- out: ``{"ready": true, "meta_fit_cpu_seconds": ...}`` once the optimizer (and so
  the meta-fit) is built;
- then T times: out ``{"x": [x_0, ..., x_{d-1}]}`` (unit cube, parameters
  ``x0..x{d-1}`` in that order), in ``{"y": observed}``; the driver reports it,
  which refits the target model, as the authors' sequential loop does;
- out: ``{"done": true, "cpu_seconds": ..., "import_cpu_seconds": ...,
  "outputscale": [...], "weights": [...], "lengthscale": [...], "noise": ...}``
  (``outputscale``: the residual kernel's fitted outputscale after each report;
  the rest are the final fit's).

On a malformed message or a failure the driver writes ``{"error": "..."}`` and exits
with status 1. Library output goes to stderr, so stdout carries the protocol only.

Deviation from the authors' benchmark runner: it passes no seed, so its studies are
not reproducible; this driver seeds numpy and torch with the study seed and passes
``seed`` to ``ScaMLGPBO`` (which seeds the meta-fit and the search-space sampler).
It also pins torch to ``threads`` threads (default 1) so CPU seconds compare.
"""

from __future__ import annotations

import json
import sys
import time
import traceback
from typing import IO, Any

_IMPORT_CPU0 = time.process_time()

import numpy as np  # noqa: E402
import parameterspace as ps  # noqa: E402
import torch  # noqa: E402
from blackboxopt import Evaluation, Objective  # noqa: E402
from scamlgp.optimizer import ScaMLGPBO  # noqa: E402

IMPORT_CPU_SECONDS = time.process_time() - _IMPORT_CPU0


def names(dim: int) -> list[str]:
    """The fixed parameter order ``x0..x{dim-1}``."""
    return [f"x{j}" for j in range(dim)]


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


def send(out: IO[str], message: dict[str, Any]) -> None:
    out.write(json.dumps(message) + "\n")
    out.flush()


def receive(inp: IO[str]) -> dict[str, Any]:
    line = inp.readline()
    if not line:
        raise EOFError("harness closed stdin")
    return json.loads(line)


def fitted(model: Any) -> dict[str, Any]:
    """The target model's residual-kernel, weight and noise hyperparameters."""
    kernel = model.covar_module
    return {
        "weights": model.weights.detach().reshape(-1).tolist(),
        "lengthscale": kernel.base_kernel.lengthscale.detach().reshape(-1).tolist(),
        "noise": float(model.likelihood.noise.detach().reshape(-1)[0]),
    }


def run(inp: IO[str], out: IO[str]) -> None:
    problem = receive(inp)
    dim, seed = int(problem["dim"]), int(problem["seed"])
    torch.set_num_threads(int(problem.get("threads", 1)))
    np.random.seed(seed)
    torch.manual_seed(seed)
    cpu0 = time.process_time()
    optimizer = ScaMLGPBO(
        search_space(dim),
        Objective("loss", False),
        meta_evaluations(problem["meta"], dim),
        seed=seed,
    )
    send(out, {"ready": True, "meta_fit_cpu_seconds": time.process_time() - cpu0})
    outputscales = []
    for _ in range(int(problem["budget"])):
        spec = optimizer.generate_evaluation_specification()
        send(out, {"x": [float(spec.configuration[k]) for k in names(dim)]})
        y = float(receive(inp)["y"])
        optimizer.report(spec.create_evaluation(objectives={"loss": y}))
        outputscales.append(float(optimizer.model.covar_module.outputscale.detach()))
    send(
        out,
        {
            "done": True,
            "cpu_seconds": time.process_time(),
            "import_cpu_seconds": IMPORT_CPU_SECONDS,
            "outputscale": outputscales,
            **fitted(optimizer.model),
        },
    )


def main() -> None:
    protocol, sys.stdout = sys.stdout, sys.stderr
    try:
        run(sys.stdin, protocol)
    except Exception as exc:  # report any failure to the harness, then exit 1
        traceback.print_exc()
        send(protocol, {"error": f"{type(exc).__name__}: {exc}"})
        sys.exit(1)


if __name__ == "__main__":
    main()
