"""Shared fixtures: one session-scoped local Ray, GPU skipping, RNG hygiene.

Unit tests (``tests/unit``) never start Ray. Integration tests are marked ``ray``
and share the ``ray_local`` fixture below: one ``ray.init(num_cpus=2)`` per session.
"""

from __future__ import annotations

import os
import random

import numpy as np
import pytest
import torch

# Ray Train polls workers every 2 s by default; tests report often.
os.environ.setdefault("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "0.1")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("RAY_DEDUP_LOGS", "0")
# A hung (SIGSTOPped) Train worker is torn down after this wait, not Ray's 30 s default:
# the C3 hang tests then restart in about 45 s instead of 75 s. Ray reads it from the
# environment the node starts with, so it must be set before ray.init.
os.environ.setdefault("TORCH_PROCESS_GROUP_SHUTDOWN_TIMEOUT_S", "5")
# Test tensors are tiny: extra intra-op threads only contend with Ray's workers.
torch.set_num_threads(1)


def pytest_collection_modifyitems(config: pytest.Config, items: list) -> None:
    """Skip ``gpu`` tests when no CUDA device is present (they are never counted)."""
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(autouse=True)
def _restore_global_rng():
    """Library code must not touch global RNGs; restore them anyway after each test."""
    py, np_state, torch_state = (
        random.getstate(),
        np.random.get_state(),
        torch.get_rng_state(),
    )
    yield
    random.setstate(py)
    np.random.set_state(np_state)
    torch.set_rng_state(torch_state)


@pytest.fixture(scope="session")
def ray_local():
    """One local Ray cluster with 2 CPUs for the whole session."""
    import ray

    if not ray.is_initialized():
        # address="local": never attach to a head someone started with `ray start`.
        ray.init(
            address="local", num_cpus=2, include_dashboard=False, log_to_driver=False
        )
    yield ray
    ray.shutdown()
