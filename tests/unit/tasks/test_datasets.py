from __future__ import annotations

import numpy as np
import pytest
import torch

from raymeta.errors import ConfigError
from raymeta.tasks.datasets import noisy_digits, symmetric_label_noise


def test_splits_are_deterministic_disjoint_and_complete():
    a, b = noisy_digits(seed=3), noisy_digits(seed=3)
    assert torch.equal(a.y_train, b.y_train) and torch.equal(a.x_meta, b.x_meta)
    c = noisy_digits(seed=4)
    assert not torch.equal(a.y_train, c.y_train)
    n = a.x_train.shape[0] + a.x_meta.shape[0] + a.x_test.shape[0]
    assert n == 1797
    assert torch.bincount(a.y_meta).tolist() == [10] * 10
    assert a.train_ids.unique().numel() == a.train_ids.numel()


def test_noise_has_the_requested_rate_and_truthful_ground_truth():
    data = noisy_digits(seed=0, noise_rate=0.4)
    assert torch.equal(data.is_noisy, data.y_train != data.y_train_true)
    assert 0.35 < data.is_noisy.float().mean().item() < 0.45
    clean = noisy_digits(seed=0, noise_rate=0.0)
    assert not clean.is_noisy.any()


def test_symmetric_noise_never_keeps_the_label_when_flipping():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 5, size=20000)
    observed, flipped = symmetric_label_noise(labels, 0.5, 5, rng)
    assert np.all(observed[flipped] != labels[flipped])
    assert np.all(observed[~flipped] == labels[~flipped])
    # the new class is uniform over the 4 others
    shifts = (observed[flipped] - labels[flipped]) % 5
    counts = np.bincount(shifts, minlength=5)[1:] / flipped.sum()
    assert np.allclose(counts, 0.25, atol=0.02)


def test_bad_arguments_are_rejected():
    with pytest.raises(ConfigError, match="noise_rate must be in"):
        noisy_digits(seed=0, noise_rate=1.0)
    with pytest.raises(ConfigError, match="not enough for meta_per_class"):
        noisy_digits(seed=0, meta_per_class=500)
