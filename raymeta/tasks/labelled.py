"""HeTRoM's episodes from the user's labelled data: class splits and their checks.

``data`` is ``{"train": ..., "test": ...}`` (each any form
:func:`raymeta.tasks.sources.as_arrays` reads) or one labelled set whose classes are
split: ``test_classes`` of them, chosen by ``seed``, go to testing, so test episodes
come from classes the embedding never trained on.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import torch

from raymeta.errors import TrainingSetupError
from raymeta.tasks.episodes import LabelledData
from raymeta.tasks.fewshot import DatasetFamily
from raymeta.tasks.sources import Arrays, as_arrays

__all__ = ["labelled_families", "split_classes"]


def labelled_families(
    section: Any, data: Any, *, seed: int
) -> tuple[DatasetFamily, DatasetFamily]:
    """Train and test families over the user's labelled data.

    Args:
        section: HeTRoM's ``[data]`` section (episode shape, columns, test_classes).
        data: The labelled data (see the module docstring).
        seed: Seeds the class split and the outlier permutation.

    Raises:
        TrainingSetupError: A split has fewer classes than ``ways`` or a class fewer
            examples than ``shots + queries``.
    """
    if isinstance(data, dict) and "train" in data:
        train = as_arrays(data["train"], section, what="data split 'train'")
        test = None
        if data.get("test") is not None:
            test = as_arrays(data["test"], section, what="data split 'test'")
    else:
        train, test = as_arrays(data, section, what="labelled data"), None
    if test is None:
        train, test = split_classes(train, section.test_classes, seed)
    return _family(section, train, "train", seed), _family(section, test, "test", seed)


def split_classes(arrays: Arrays, fraction: float, seed: int) -> tuple[Arrays, Arrays]:
    """``(train, test)``: a seeded ``fraction`` of the classes (at least 1) is test."""
    classes = torch.unique(arrays.y)
    gen = torch.Generator().manual_seed(seed)
    order = classes[torch.randperm(len(classes), generator=gen)]
    n_test = max(1, math.floor(len(classes) * fraction))
    is_test = torch.isin(arrays.y, order[:n_test])
    train, test = (
        dataclasses.replace(arrays, x=arrays.x[m], y=arrays.y[m], ids=arrays.ids[m])
        for m in (~is_test, is_test)
    )
    return train, test


def _family(section: Any, arrays: Arrays, split: str, seed: int) -> DatasetFamily:
    classes = torch.unique(arrays.y)
    need = section.shots + section.queries
    counts = torch.bincount(arrays.y)[classes]
    if len(classes) < section.ways:
        raise TrainingSetupError(
            f"the {split} split has {len(classes)} classes, fewer than "
            f"ways={section.ways}"
        )
    if int(counts.min()) < need:
        raise TrainingSetupError(
            f"a class of the {split} split has {int(counts.min())} examples, fewer "
            f"than shots + queries = {need}; lower them or drop small classes"
        )
    return DatasetFamily(
        data=LabelledData(arrays.x.float(), arrays.y),
        ways=section.ways,
        shots=section.shots,
        queries=section.queries,
        family_seed=seed,
    )
