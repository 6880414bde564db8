"""Train HeTRoM (ranked-range episodic meta-learning) on Ray Train.

    python jobs/train_hetrom.py jobs/configs/hetrom_gaussian.toml [--store S]
    ray job submit --working-dir . -- python jobs/train_hetrom.py CONFIG --store S

Validates the config, runs the TorchTrainer (a run of the same name resumes), writes
per-task statistics (``task_stats``) and step metrics (``metrics``) to the results
store, and prints the clean-test metric and the selection quality.
"""

import sys

from raymeta.runner import job_main

if __name__ == "__main__":
    sys.exit(job_main("hetrom", __doc__))
