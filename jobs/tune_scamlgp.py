"""Tune a benchmark task with ScaMLGPSearch, learning from earlier runs in the store.

    python jobs/tune_scamlgp.py jobs/configs/tune_scamlgp_branin.toml [--store S]
    ray job submit --working-dir . -- python jobs/tune_scamlgp.py CONFIG --store S

Draws the study from the config's family and seed, records its meta-task observations
in the store's ``trials`` table (idempotent), reads them back as meta-data, and runs
the Tune experiment with ``StoreCallback`` on. Resubmitting the same config resumes
the experiment with ``Tuner.restore`` instead of starting over.
"""

import sys

from raymeta.runner import job_main

if __name__ == "__main__":
    sys.exit(job_main("tune_scamlgp", __doc__))
