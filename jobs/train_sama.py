"""Train SAMA (meta-weight-net reweighting or data pruning scores) on Ray Train.

    python jobs/train_sama.py jobs/configs/sama_reweight_digits.toml [--store S]
    ray job submit --working-dir . -- python jobs/train_sama.py CONFIG --store S

Validates the config, runs the TorchTrainer (rerunning with the same run name resumes
from the latest checkpoint), writes metrics, per-example weights and a summary to the
results store, and prints the headline figures.
"""

import sys

from raymeta.runner import job_main

if __name__ == "__main__":
    sys.exit(job_main("sama", __doc__))
