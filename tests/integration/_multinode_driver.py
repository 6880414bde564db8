"""Driver for the multi-node test: a 2-node simulated cluster, run in its own process.

Prints one JSON line with what ran where, so the test can assert on it.
"""

from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path

import ray
from ray.cluster_utils import Cluster

from raymeta.config import load_config
from raymeta.results import ResultStore
from raymeta.search.fitting import fit_meta_tasks
from raymeta.tasks.bo import FAMILIES, draw_study
from raymeta.training.sama_loop import fit_sama, write_sama_results

ROOT = Path(__file__).resolve().parents[2]


def main(workdir: str) -> None:
    cluster = Cluster(
        initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False}
    )
    cluster.add_node(num_cpus=1)
    cluster.wait_for_nodes()
    ray.init(address=cluster.address)
    try:
        store = ResultStore(Path(workdir, "shared-store"))
        cfg = dataclasses.replace(
            load_config(ROOT / "jobs/configs/sama_tiny.toml"),
            num_workers=2,
            placement_strategy="STRICT_SPREAD",
            storage_path=str(Path(workdir, "shared-runs")),
            store=str(store.root),
        )
        result = fit_sama(cfg, run_name="multinode")
        summary = result.return_value
        write_sama_results(store, cfg, summary, run_id="multinode")

        study = draw_study(FAMILIES["branin"], seed=0, num_meta=4, n_meta=8)
        states = fit_meta_tasks(study.meta_tasks, seed=0, num_workers=2, store=store)
        print(
            json.dumps(
                {
                    "nodes": len(ray.nodes()),
                    "train_nodes": sorted(set(summary["node_ids"])),
                    "fitted": len(states),
                    "meta_rows": store.read("meta_tasks").num_rows,
                    "weight_rows": store.read("data_weights").num_rows,
                }
            )
        )
    finally:
        ray.shutdown()
        cluster.shutdown()


if __name__ == "__main__":
    main(sys.argv[1])
