"""Driver for the multi-node test: a 2-node simulated cluster, run in its own process.

Prints one JSON line with what ran where, so the test can assert on it.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import ray
from ray.cluster_utils import Cluster

from raymeta.config import load_config, override
from raymeta.results import ResultStore
from raymeta.search.fitting import fit_meta_tasks
from raymeta.tasks.bo import FAMILIES, draw_study
from raymeta.training import fit

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
        spread = {
            "scaling.num_workers": 2,
            "scaling.placement_strategy": "STRICT_SPREAD",
            "storage.storage_path": str(Path(workdir, "shared-runs")),
            "storage.store": str(store.root),
        }
        sama = override(load_config(ROOT / "jobs/configs/sama_tiny.toml"), spread)
        summary = fit(sama, run_name="multinode").return_value
        hetrom = override(load_config(ROOT / "jobs/configs/hetrom_tiny.toml"), spread)
        hetrom_out = fit(hetrom, run_name="multinode-hetrom").return_value

        study = draw_study(FAMILIES["branin"], seed=0, num_meta=4, n_meta=8)
        states = fit_meta_tasks(study.meta_tasks, seed=0, num_workers=2, store=store)
        print(
            json.dumps(
                {
                    "nodes": len(ray.nodes()),
                    "train_nodes": sorted(set(summary["node_ids"])),
                    "hetrom_nodes": sorted(set(hetrom_out["node_ids"])),
                    "task_rows": store.read("task_stats").num_rows,
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
