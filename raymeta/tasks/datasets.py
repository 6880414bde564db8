"""Offline datasets (no downloads): scikit-learn's bundled digits, deterministic splits.

:func:`noisy_digits` returns the split every SAMA digits experiment uses: a stratified
test split, a small clean meta set with a fixed number of examples per class, and a
training set whose labels are flipped by :func:`symmetric_label_noise` (with the
ground truth kept, so weight quality can be scored). Everything derives from one seed
through ``numpy.random.Generator``.

Example:
    >>> data = noisy_digits(seed=0, noise_rate=0.4, meta_per_class=10)
    >>> data.x_meta.shape, data.num_classes
    (torch.Size([100, 64]), 10)
    >>> round(float(data.is_noisy.float().mean()), 1)
    0.4
"""

from __future__ import annotations

import dataclasses

import numpy as np
import torch

from raymeta.errors import ConfigError

__all__ = ["NoisyDataset", "noisy_blobs", "noisy_digits", "symmetric_label_noise"]


@dataclasses.dataclass(frozen=True)
class NoisyDataset:
    """A classification split with injected label noise.

    Attributes:
        x_train: ``(N, d)`` float32 features.
        y_train: ``(N,)`` int64 observed (possibly flipped) labels.
        y_train_true: ``(N,)`` int64 true labels.
        is_noisy: ``(N,)`` bool, ``y_train != y_train_true``.
        train_ids: ``(N,)`` int64 stable example ids (row index in the source data).
        x_meta: ``(M, d)`` clean meta-set features.
        y_meta: ``(M,)`` clean meta-set labels.
        x_test: ``(T, d)`` test features.
        y_test: ``(T,)`` test labels.
        num_classes: Number of classes.
    """

    x_train: torch.Tensor
    y_train: torch.Tensor
    y_train_true: torch.Tensor
    is_noisy: torch.Tensor
    train_ids: torch.Tensor
    x_meta: torch.Tensor
    y_meta: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    num_classes: int


def symmetric_label_noise(
    labels: np.ndarray, rate: float, num_classes: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Flip each label with probability ``rate`` to a uniformly chosen *other* class.

    Args:
        labels: ``(N,)`` integer labels in ``[0, num_classes)``.
        rate: Flip probability in [0, 1).
        num_classes: Number of classes (>= 2).
        rng: Source of randomness.

    Returns:
        ``(observed, is_noisy)``, both ``(N,)``.

    Raises:
        ConfigError: ``rate`` outside [0, 1) or fewer than 2 classes.
    """
    if not 0.0 <= rate < 1.0:
        raise ConfigError(f"noise_rate must be in [0, 1), got {rate}")
    if num_classes < 2:
        raise ConfigError(f"label noise needs >= 2 classes, got {num_classes}")
    flip = rng.random(labels.shape[0]) < rate
    shift = rng.integers(1, num_classes, size=labels.shape[0])
    observed = np.where(flip, (labels + shift) % num_classes, labels)
    return observed.astype(np.int64), flip


def noisy_digits(
    *,
    seed: int,
    noise_rate: float = 0.4,
    meta_per_class: int = 10,
    test_fraction: float = 0.25,
) -> NoisyDataset:
    """The sklearn digits data (1797 x 64) split into noisy train / clean meta / test.

    Features are scaled to [0, 1] (pixel / 16). The test split is stratified; the
    meta set takes ``meta_per_class`` examples of each class from the rest; the
    remaining examples form the training set, whose labels get symmetric noise.

    Args:
        seed: Seed of every random choice (same seed, same split and noise).
        noise_rate: Label flip probability for the training set.
        meta_per_class: Clean meta examples per class.
        test_fraction: Fraction of each class held out for testing.

    Returns:
        A :class:`NoisyDataset`.

    Raises:
        ConfigError: Impossible fractions or sizes.
    """
    from sklearn.datasets import load_digits

    if not 0.0 < test_fraction < 1.0:
        raise ConfigError(f"test_fraction must be in (0, 1), got {test_fraction}")
    if meta_per_class < 1:
        raise ConfigError(f"meta_per_class must be >= 1, got {meta_per_class}")
    x, y = load_digits(return_X_y=True)
    num_classes = int(y.max()) + 1
    rng = np.random.default_rng(seed)
    test, meta, train = [], [], []
    for c in range(num_classes):
        idx = rng.permutation(np.flatnonzero(y == c))
        n_test = int(round(test_fraction * idx.size))
        if idx.size - n_test <= meta_per_class:
            raise ConfigError(
                f"class {c} has {idx.size - n_test} non-test examples, not enough for "
                f"meta_per_class={meta_per_class}; lower meta_per_class"
            )
        test.append(idx[:n_test])
        meta.append(idx[n_test : n_test + meta_per_class])
        train.append(idx[n_test + meta_per_class :])
    test_i, meta_i = np.concatenate(test), np.concatenate(meta)
    train_i = np.sort(np.concatenate(train))
    observed, flipped = symmetric_label_noise(y[train_i], noise_rate, num_classes, rng)
    feats = torch.as_tensor(x / 16.0, dtype=torch.float32)
    labels = torch.as_tensor(y, dtype=torch.int64)
    return NoisyDataset(
        x_train=feats[train_i],
        y_train=torch.as_tensor(observed),
        y_train_true=labels[train_i],
        is_noisy=torch.as_tensor(flipped),
        train_ids=torch.as_tensor(train_i, dtype=torch.int64),
        x_meta=feats[meta_i],
        y_meta=labels[meta_i],
        x_test=feats[test_i],
        y_test=labels[test_i],
        num_classes=num_classes,
    )


def noisy_blobs(
    *,
    seed: int,
    num_train: int = 128,
    num_meta: int = 32,
    num_test: int = 128,
    dim: int = 5,
    num_classes: int = 2,
    noise_rate: float = 0.3,
    dtype: torch.dtype = torch.float64,
) -> NoisyDataset:
    """A tiny Gaussian-blob classification set with label noise (for fast tests).

    Class means are drawn from N(0, 4I); examples are mean + N(0, I). Only the
    training labels get symmetric noise.

    Args:
        seed: Seed of every random choice.
        num_train: Training examples.
        num_meta: Clean meta examples.
        num_test: Test examples.
        dim: Feature dimension.
        num_classes: Number of classes (>= 2).
        noise_rate: Label flip probability for the training set.
        dtype: Feature dtype.

    Returns:
        A :class:`NoisyDataset` (train ids are ``0..num_train-1``).
    """
    rng = np.random.default_rng(seed)
    means = 2.0 * rng.standard_normal((num_classes, dim))
    sizes = (num_train, num_meta, num_test)
    parts = []
    for n in sizes:
        y = rng.integers(0, num_classes, size=n)
        x = means[y] + rng.standard_normal((n, dim))
        parts.append((torch.as_tensor(x, dtype=dtype), torch.as_tensor(y)))
    (x_tr, y_tr), (x_me, y_me), (x_te, y_te) = parts
    observed, flipped = symmetric_label_noise(
        y_tr.numpy(), noise_rate, num_classes, rng
    )
    return NoisyDataset(
        x_train=x_tr,
        y_train=torch.as_tensor(observed),
        y_train_true=y_tr,
        is_noisy=torch.as_tensor(flipped),
        train_ids=torch.arange(num_train, dtype=torch.int64),
        x_meta=x_me,
        y_meta=y_me,
        x_test=x_te,
        y_test=y_te,
        num_classes=num_classes,
    )
