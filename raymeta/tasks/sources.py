"""Where a training method's data comes from: built-in sets or the user's own.

A user gives data in one of three forms, for every split:

* a **Ray Data** ``Dataset`` (on the workers, the train split is read with
  ``ray.train.get_dataset_shard``, the Ray Train convention; other splits are
  read whole by every worker),
* a map-style ``torch.utils.data.Dataset`` whose items are ``(x, y)``,
  ``(x, y, id)`` or dicts with the configured columns,
* arrays: ``(x, y)`` / ``(x, y, ids)`` tuples or a dict of columns.

SAMA takes ``{"train": ..., "meta": ..., "test": ...}`` (test optional); HeTRoM a
labelled set (``{"train": ..., "test": ...}`` or one set whose classes are split).
``[data] dataset = "package.module:function"`` names a function returning such a
dict, called with ``[data] kwargs`` on the driver.

Every split becomes tensors :class:`Arrays` (features, int64 labels, int64 ids) on
the worker; the checks (label column present, integer labels, labels inside the
model's classes, meta set not larger than the training set) run on the driver,
before any worker starts (:func:`check_splits`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch

from raymeta.errors import TrainingSetupError
from raymeta.tasks.datasets import NoisyDataset, noisy_blobs, noisy_digits

__all__ = [
    "Arrays",
    "BUILTIN_SAMA_DATA",
    "as_arrays",
    "builtin_sama_data",
    "check_splits",
    "is_ray_dataset",
    "load_user_data",
    "ray_schema_problem",
    "training_arrays",
    "user_sama_data",
]

BUILTIN_SAMA_DATA = ("digits", "blobs")


@dataclasses.dataclass(frozen=True)
class Arrays:
    """One split as tensors: ``x`` ``(N, ...)``, int64 ``y`` and ``ids`` ``(N,)``."""

    x: torch.Tensor
    y: torch.Tensor
    ids: torch.Tensor

    def __len__(self) -> int:
        """Number of examples."""
        return int(self.y.shape[0])


def is_ray_dataset(obj: Any) -> bool:
    """True for a Ray Data ``Dataset`` or a worker's ``DataIterator`` shard."""
    kind = type(obj)
    return kind.__module__.startswith("ray.data") and hasattr(obj, "iter_torch_batches")


def load_user_data(section: Any) -> Any:
    """Call the ``[data] dataset`` import path with ``[data] kwargs`` (driver side)."""
    from raymeta.metalearn.models import load_object

    fn = load_object(section.dataset, what="data function")
    if not callable(fn):
        raise TrainingSetupError(f"data function {section.dataset!r} is not callable")
    return fn(**section.kwargs)


def as_arrays(obj: Any, section: Any, *, what: str) -> Arrays:
    """Read one split (any supported form) into :class:`Arrays`.

    Raises:
        TrainingSetupError: A missing feature/label column, non-integer labels, or
            lengths that disagree; the message names the split.
    """
    if is_ray_dataset(obj):
        return _from_batches(_ray_batches(obj), section, what)
    if isinstance(obj, Mapping):
        return _from_columns(obj, section, what)
    if isinstance(obj, tuple | list) and len(obj) in (2, 3):
        x, y, *ids = obj
        return _checked(x, y, ids[0] if ids else None, what)
    if hasattr(obj, "__getitem__") and hasattr(obj, "__len__"):
        return _from_torch_dataset(obj, section, what)
    raise TrainingSetupError(
        f"{what}: unsupported data {type(obj).__name__}; give a Ray Dataset, a "
        "map-style torch Dataset, an (x, y[, ids]) tuple or a dict of columns"
    )


def _ray_batches(obj: Any) -> list[dict[str, Any]]:
    return list(obj.iter_torch_batches(batch_size=4096))


def _from_batches(batches: list[dict[str, Any]], section: Any, what: str) -> Arrays:
    if not batches:
        raise TrainingSetupError(
            f"{what}: the dataset (or this worker's shard) is empty"
        )
    columns = {k: torch.cat([b[k] for b in batches]) for k in batches[0]}
    return _from_columns(columns, section, what)


def _from_columns(columns: Mapping[str, Any], section: Any, what: str) -> Arrays:
    for column in (section.feature_column, section.label_column):
        if column not in columns:
            raise TrainingSetupError(
                f"{what}: no column {column!r} (columns: {sorted(columns)}); set "
                f"[data] feature_column / label_column to the names your data uses"
            )
    ids = columns.get(getattr(section, "id_column", "id"))
    return _checked(
        columns[section.feature_column], columns[section.label_column], ids, what
    )


def _from_torch_dataset(dataset: Any, section: Any, what: str) -> Arrays:
    items = [dataset[i] for i in range(len(dataset))]
    if not items:
        raise TrainingSetupError(f"{what}: the torch Dataset is empty")
    if isinstance(items[0], Mapping):
        keys = items[0].keys()
        return _from_columns(
            {k: torch.stack([torch.as_tensor(it[k]) for it in items]) for k in keys},
            section,
            what,
        )
    parts = list(zip(*items))
    if len(parts) not in (2, 3):
        raise TrainingSetupError(
            f"{what}: torch Dataset items must be (x, y) or (x, y, id), got "
            f"{len(parts)} fields"
        )
    stacked = [torch.stack([torch.as_tensor(v) for v in p]) for p in parts]
    ids = stacked[2] if len(stacked) == 3 else None
    return _checked(stacked[0], stacked[1], ids, what)


def _checked(x: Any, y: Any, ids: Any, what: str) -> Arrays:
    x, y = (
        torch.as_tensor(np.asarray(x) if not torch.is_tensor(x) else x),
        torch.as_tensor(y),
    )
    if y.dtype.is_floating_point or y.dtype == torch.bool or y.ndim != 1:
        raise TrainingSetupError(
            f"{what}: labels must be a 1-D integer column, got {y.dtype} with shape "
            f"{tuple(y.shape)}"
        )
    if x.shape[0] != y.shape[0]:
        raise TrainingSetupError(
            f"{what}: {x.shape[0]} feature rows but {y.shape[0]} labels"
        )
    ids_t = torch.arange(len(y)) if ids is None else torch.as_tensor(ids)
    return Arrays(x.float() if not x.is_floating_point() else x, y.long(), ids_t.long())


def ray_schema_problem(dataset: Any, section: Any, *, what: str) -> str | None:
    """A missing feature/label column of a Ray Dataset, read from its schema."""
    names = list(dataset.schema().names)
    for column in (section.feature_column, section.label_column):
        if column not in names:
            return (
                f"{what}: the Ray Dataset has no column {column!r} (columns: "
                f"{names}); set [data] feature_column / label_column"
            )
    return None


def check_splits(
    sizes: Mapping[str, int], max_label: int, *, num_classes: int, model_out: int
) -> None:
    """Driver-side checks of user splits against each other and the model.

    Args:
        sizes: Examples per split (``train`` and ``meta`` at least).
        max_label: Largest label over every split.
        num_classes: Classes the data declares (``max_label + 1`` if undeclared).
        model_out: Output width of the model on one example.

    Raises:
        TrainingSetupError: A meta set larger than the training set, or labels the
            model cannot predict.
    """
    if sizes.get("meta", 0) > sizes["train"]:
        raise TrainingSetupError(
            f"the meta set has {sizes['meta']} examples, more than the training set "
            f"({sizes['train']}); SAMA's meta set is a small clean subset"
        )
    if max_label >= model_out or num_classes > model_out:
        raise TrainingSetupError(
            f"labels go up to {max_label} ({num_classes} classes) but the model "
            f"outputs {model_out} values per example; make the model's last layer "
            f"output {max(num_classes, max_label + 1)} classes"
        )


def builtin_sama_data(section: Any, *, seed: int, dtype: torch.dtype) -> NoisyDataset:
    """The built-in SAMA dataset a ``[data]`` section names (deterministic in seed)."""
    if section.dataset == "blobs":
        return noisy_blobs(seed=seed, noise_rate=section.noise_rate, dtype=dtype)
    data = noisy_digits(
        seed=seed, noise_rate=section.noise_rate, meta_per_class=section.meta_per_class
    )
    cast = {f.name: getattr(data, f.name) for f in dataclasses.fields(data)}
    for key in ("x_train", "x_meta", "x_test"):
        cast[key] = cast[key].to(dtype)
    return NoisyDataset(**cast)


def user_sama_data(
    train: Arrays,
    meta: Arrays,
    test: Arrays | None,
    *,
    num_classes: int,
    dtype: torch.dtype,
) -> NoisyDataset:
    """User splits as a :class:`NoisyDataset` (no known noise: ``is_noisy`` all False).

    Meta example ids are used as given; without a test split, test accuracy is the
    meta set's.
    """
    test = test or meta
    return NoisyDataset(
        x_train=train.x.to(dtype),
        y_train=train.y,
        y_train_true=train.y,
        is_noisy=torch.zeros(len(train), dtype=torch.bool),
        train_ids=train.ids,
        x_meta=meta.x.to(dtype),
        y_meta=meta.y,
        x_test=test.x.to(dtype),
        y_test=test.y,
        num_classes=num_classes,
    )


def training_arrays(
    data: NoisyDataset, train_set: str
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(x, y, ids)`` of the training pool a baseline trains on.

    "noisy": the noisy training set; "noisy+meta": plus the clean meta set;
    "meta": only the clean meta set; "clean": only correctly labelled training points.
    Training examples keep their ``train_ids`` (the ids ``data_weights`` rows and
    ``keep_ids_path`` files use); meta example ``j`` gets id ``max(train_ids) + 1 + j``.
    """
    train_ids = data.train_ids
    first = int(train_ids.max()) + 1 if len(train_ids) else 0
    meta_ids = torch.arange(first, first + data.x_meta.shape[0])
    if train_set == "noisy":
        return data.x_train, data.y_train, train_ids
    if train_set == "noisy+meta":
        return (
            torch.cat([data.x_train, data.x_meta]),
            torch.cat([data.y_train, data.y_meta]),
            torch.cat([train_ids, meta_ids]),
        )
    if train_set == "meta":
        return data.x_meta, data.y_meta, meta_ids
    if train_set == "clean":
        keep = ~data.is_noisy
        return data.x_train[keep], data.y_train[keep], train_ids[keep]
    raise TrainingSetupError(f"unknown train_set {train_set!r}")
