"""Train SAMA (meta-weight-net reweighting or data pruning scores) on Ray Train.

Usage: ``python jobs/train_sama.py jobs/configs/sama_reweight_digits.toml``.

Reads and validates the config, runs the TorchTrainer (rerunning with the same run
name resumes from the latest checkpoint), writes metrics, per-example weights and a
summary to the results store when ``results_path`` is set, and prints the summary.
"""

from __future__ import annotations

import argparse

import torch

from raymeta.config import SamaJobConfig, load_config
from raymeta.training.sama_loop import fit_sama, summary_metrics, write_sama_results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("config", help="TOML file with job = 'sama'")
    parser.add_argument("--run-name", default=None, help="Ray run name (resumes)")
    args = parser.parse_args()
    cfg = load_config(args.config)
    if not isinstance(cfg, SamaJobConfig):
        raise SystemExit(f"{args.config}: expected job = 'sama', got {cfg.job!r}")
    torch.set_num_threads(1)  # the driver runs the loop itself when num_workers = 0
    run_name = args.run_name or cfg.run_name
    summary = fit_sama(cfg, run_name=run_name).return_value
    if cfg.results_path:
        from raymeta.results import ResultStore

        write_sama_results(ResultStore(cfg.results_path), cfg, summary, run_id=run_name)
    figures = summary_metrics(summary)
    print(
        f"{cfg.experiment}/{run_name}: "
        + ", ".join(f"{k}={v:.4f}" for k, v in figures.items())
    )


if __name__ == "__main__":
    main()
