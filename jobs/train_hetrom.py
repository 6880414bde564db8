"""Train HeTRoM on Ray Train.

Usage: ``python jobs/train_hetrom.py jobs/configs/hetrom_gaussian.toml``.

Reads and validates the config, runs the TorchTrainer (resuming a run of the same
name), and prints the clean-test metric. Task statistics and step metrics are in the
results store (tables ``task_stats`` and ``metrics``) under ``results_uri``.
"""

from __future__ import annotations

import argparse

from raymeta.config import HeTRoMConfig, load_config
from raymeta.training.hetrom_loop import fit_hetrom


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("config", help="TOML file with job = 'hetrom'")
    parser.add_argument("--run-name", default=None, help="Ray run name (resumes)")
    args = parser.parse_args()
    cfg = load_config(args.config)
    if not isinstance(cfg, HeTRoMConfig):
        raise SystemExit(f"{args.config}: expected job = 'hetrom', got {cfg.job!r}")
    result = fit_hetrom(cfg, run_name=args.run_name or f"{cfg.experiment}-s{cfg.seed}")
    out = result.return_value
    print(
        f"{cfg.experiment}: clean-test metric {out['test_metric']:.4f} "
        f"+- {out['test_ci95']:.4f} (attempt {out['attempt']})"
    )


if __name__ == "__main__":
    main()
