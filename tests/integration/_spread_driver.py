"""Driver for the 3-node meta-fit test: a simulated cluster in its own process.

Prints one JSON line: the nodes, where the fits ran, and whether they equal the
serial fits.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import ray
import torch
from ray.cluster_utils import Cluster

from raymeta.gp.fit import FitSettings
from raymeta.results import ResultStore
from raymeta.search.fitting import FitReport, fit_meta_tasks
from raymeta.tasks.bo import FAMILIES, draw_study


def main(workdir: str) -> None:
    cluster = Cluster(
        initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False}
    )
    for _ in range(2):
        cluster.add_node(num_cpus=1)
    cluster.wait_for_nodes()
    ray.init(address=cluster.address)
    try:
        tasks = draw_study(FAMILIES["branin"], seed=0, num_meta=24, n_meta=8).meta_tasks
        settings = FitSettings(restarts=0, maxiter=30)
        report = FitReport()
        spread = fit_meta_tasks(
            tasks,
            seed=0,
            num_workers=6,
            settings=settings,
            store=ResultStore(Path(workdir, "store")),
            report=report,
        )
        serial = fit_meta_tasks(tasks, seed=0, num_workers=0, settings=settings)
        same = all(
            torch.equal(a.chol, b.chol) and a.task_id == b.task_id
            for a, b in zip(spread, serial, strict=True)
        )
        print(
            json.dumps(
                {
                    "nodes": len(ray.nodes()),
                    "fit_nodes": {str(k): v for k, v in report.nodes.items()},
                    "fitted": report.fitted,
                    "same_as_serial": same,
                }
            )
        )
    finally:
        ray.shutdown()
        cluster.shutdown()


if __name__ == "__main__":
    main(sys.argv[1])
