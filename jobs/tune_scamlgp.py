"""Tune a benchmark task with ScaMLGPSearch, learning from earlier runs in the store.

Usage: ``python jobs/tune_scamlgp.py jobs/configs/tune_scamlgp_branin.toml``
(or ``ray job submit -- python jobs/tune_scamlgp.py ...``).

Draws the study from the config's family and seed, records its meta-task observations
in the store's ``trials`` table (idempotent), reads them back as meta-data, and runs
the Tune experiment with ``StoreCallback`` on. Resubmitting the same config resumes
the experiment with ``Tuner.restore`` instead of starting over.
"""

from __future__ import annotations

import argparse

import ray

from raymeta.config import TuneScaMLGPConfig, load_config
from raymeta.results import ResultStore
from raymeta.search.metadata import StoreMetaData
from raymeta.search.trainables import record_meta_tasks
from raymeta.search.tuning import build_searcher, run_family_tuning
from raymeta.tasks.bo import FAMILIES, draw_study


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("config", help="TOML file with job = 'tune_scamlgp'")
    args = parser.parse_args()
    cfg = load_config(args.config)
    if not isinstance(cfg, TuneScaMLGPConfig):
        raise SystemExit(
            f"{args.config}: expected job = 'tune_scamlgp', got {cfg.job!r}"
        )
    study = draw_study(
        FAMILIES[cfg.family],
        seed=cfg.seed,
        num_meta=cfg.num_meta_tasks,
        n_meta=cfg.n_meta,
    )
    store = ResultStore(cfg.store)
    meta = StoreMetaData(store, experiments=record_meta_tasks(store, study))
    searcher = build_searcher(
        "scamlgp" if cfg.use_meta_data else "scamlgp_nometa",
        metric="loss",
        mode="min",
        seed=cfg.seed,
        meta_data=meta,
        options=cfg.searcher_options(),
    )
    ray.init(ignore_reinit_error=True)  # joins RAY_ADDRESS under `ray job submit`
    grid, _ = run_family_tuning(
        study,
        searcher=searcher,
        experiment=cfg.experiment,
        storage_path=cfg.storage_path,
        num_samples=cfg.num_samples,
        max_concurrent=cfg.max_concurrent,
        store=store,
    )
    best = grid.get_best_result(metric="true_loss", mode="min", filter_nan_and_inf=True)
    regret = best.metrics["true_loss"] - study.target.optimum()
    print(f"{cfg.experiment}: {len(grid)} trials, best true regret {regret:.4g}")


if __name__ == "__main__":
    main()
