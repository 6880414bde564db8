"""Episodes (support/query tasks) built by a pipeline of tiny seeded transforms.

Use :func:`sample_episode` with the transforms :class:`NWays`, :class:`KShots` and
:class:`RelabelClasses` to draw an n-way, k-shot episode from any labelled dataset
(:class:`LabelledData`), and :func:`collate_episodes` to batch episodes as
``tasks x ways*shots x features``. Every transform takes an explicit
``numpy.random.Generator``; :func:`episode_generator` derives one per
``(seed, step, task_index)`` so that a global meta-batch is the same whatever the
number of ranks and DataLoader workers, ranks draw disjoint tasks
(:func:`local_task_indices`), and a restart at step ``s`` resumes the same stream.

Example:
    >>> import numpy as np, torch
    >>> data = LabelledData(torch.randn(40, 3), torch.arange(40) % 4)
    >>> rng = episode_generator(seed=0, step=0, task_index=0)
    >>> ep = sample_episode(data, [NWays(2), KShots(1, 3), RelabelClasses()], rng)
    >>> ep.support_x.shape, ep.query_x.shape
    (torch.Size([2, 3]), torch.Size([6, 3]))
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Protocol

import numpy as np
import torch

from raymeta.errors import EpisodeError

__all__ = [
    "TASK_KINDS",
    "Episode",
    "EpisodeBatch",
    "EpisodeDescription",
    "EpisodeTransform",
    "KShots",
    "LabelledData",
    "NWays",
    "RelabelClasses",
    "collate_episodes",
    "episode_generator",
    "local_task_indices",
    "sample_episode",
]

#: Ground-truth kinds a task can carry; the integer code is the list position.
TASK_KINDS: tuple[str, ...] = ("clean", "noisy", "outlier", "unknown", "easy")


class LabelledData:
    """A labelled dataset with its class -> row-index map computed once.

    Args:
        features: ``N x ...`` tensor of examples.
        labels: ``N`` integer class labels.

    Raises:
        EpisodeError: Lengths differ or labels are not integers.
    """

    def __init__(self, features: torch.Tensor, labels: torch.Tensor) -> None:
        """Validate shapes and index the rows of every class."""
        if features.shape[0] != labels.shape[0]:
            raise EpisodeError(
                f"features have {features.shape[0]} rows but labels have "
                f"{labels.shape[0]}; pass one label per example"
            )
        if labels.dtype.is_floating_point or labels.ndim != 1:
            raise EpisodeError(
                f"labels must be a 1-D integer tensor, got {labels.dtype} with shape "
                f"{tuple(labels.shape)}"
            )
        self.features = features
        self.labels = labels
        np_labels = labels.numpy()
        self.classes = np.unique(np_labels)
        self.class_rows = {int(c): np.flatnonzero(np_labels == c) for c in self.classes}

    def __len__(self) -> int:
        """Number of examples."""
        return int(self.labels.shape[0])


@dataclasses.dataclass(frozen=True)
class EpisodeDescription:
    """What a transform pipeline has decided so far (rows, not data).

    Attributes:
        classes: Original class ids of the episode's ways.
        support_rows: ``ways x shots`` row indices (empty until :class:`KShots`).
        query_rows: ``ways x queries`` row indices.
        class_order: Episode label of each way (identity until relabelled).
    """

    classes: np.ndarray
    support_rows: np.ndarray = dataclasses.field(
        default_factory=lambda: np.empty((0, 0), dtype=np.int64)
    )
    query_rows: np.ndarray = dataclasses.field(
        default_factory=lambda: np.empty((0, 0), dtype=np.int64)
    )
    class_order: np.ndarray | None = None


class EpisodeTransform(Protocol):
    """One step of an episode pipeline: ``(data, description, rng) -> description``."""

    def __call__(
        self,
        data: LabelledData,
        desc: EpisodeDescription | None,
        rng: np.random.Generator,
    ) -> EpisodeDescription:
        """Refine ``desc`` (``None`` at the start of the pipeline)."""
        ...


@dataclasses.dataclass(frozen=True)
class NWays:
    """Pick ``ways`` distinct classes at random (the first transform)."""

    ways: int

    def __call__(
        self,
        data: LabelledData,
        desc: EpisodeDescription | None,
        rng: np.random.Generator,
    ) -> EpisodeDescription:
        """Choose the classes; raises EpisodeError when there are too few."""
        if self.ways < 1:
            raise EpisodeError(f"ways must be >= 1, got {self.ways}")
        if len(data.classes) < self.ways:
            raise EpisodeError(
                f"asked for a {self.ways}-way episode but the data have only "
                f"{len(data.classes)} classes; lower ways to <= {len(data.classes)}"
            )
        chosen = rng.choice(data.classes, size=self.ways, replace=False)
        return EpisodeDescription(classes=np.asarray(chosen, dtype=np.int64))


@dataclasses.dataclass(frozen=True)
class KShots:
    """Pick ``shots`` support and ``queries`` query rows per class, without overlap."""

    shots: int
    queries: int

    def __call__(
        self,
        data: LabelledData,
        desc: EpisodeDescription | None,
        rng: np.random.Generator,
    ) -> EpisodeDescription:
        """Draw rows per class; raises EpisodeError if a class is too small."""
        if desc is None:
            raise EpisodeError("KShots needs classes; put NWays before it")
        if self.shots < 1 or self.queries < 0:
            raise EpisodeError(
                f"need shots >= 1 and queries >= 0, got {self.shots}, {self.queries}"
            )
        need = self.shots + self.queries
        rows = []
        for c in desc.classes:
            pool = data.class_rows[int(c)]
            if len(pool) < need:
                raise EpisodeError(
                    f"class {int(c)} has {len(pool)} examples but shots + queries = "
                    f"{self.shots} + {self.queries} = {need}; lower shots/queries"
                )
            rows.append(rng.choice(pool, size=need, replace=False))
        table = np.stack(rows).astype(np.int64)
        return dataclasses.replace(
            desc, support_rows=table[:, : self.shots], query_rows=table[:, self.shots :]
        )


@dataclasses.dataclass(frozen=True)
class RelabelClasses:
    """Map the ways to episode labels ``0..ways-1`` (in random order if ``shuffle``)."""

    shuffle: bool = True

    def __call__(
        self,
        data: LabelledData,
        desc: EpisodeDescription | None,
        rng: np.random.Generator,
    ) -> EpisodeDescription:
        """Set ``class_order``."""
        if desc is None:
            raise EpisodeError("RelabelClasses needs classes; put NWays before it")
        n = len(desc.classes)
        order = rng.permutation(n) if self.shuffle else np.arange(n)
        return dataclasses.replace(desc, class_order=order.astype(np.int64))


@dataclasses.dataclass(frozen=True)
class Episode:
    """One task: support and query sets plus bookkeeping.

    Attributes:
        support_x: ``S x F`` support inputs (``S = ways * shots``).
        support_y: ``S`` labels (int64 for classification, float for regression).
        query_x: ``Q x F`` query inputs.
        query_y: ``Q`` query labels.
        kind: Ground-truth kind, one of :data:`TASK_KINDS`.
    """

    support_x: torch.Tensor
    support_y: torch.Tensor
    query_x: torch.Tensor
    query_y: torch.Tensor
    kind: str = "clean"


@dataclasses.dataclass(frozen=True)
class EpisodeBatch:
    """Episodes stacked along a leading task dimension.

    Attributes:
        support_x: ``T x S x F``.
        support_y: ``T x S``.
        query_x: ``T x Q x F``.
        query_y: ``T x Q``.
        task_index: ``T`` int64 position of each task in its global meta-batch
            (unique within a step; breaks ranking ties).
        kind_code: ``T`` int64 index into :data:`TASK_KINDS`.
        step: Meta-iteration the batch belongs to.
    """

    support_x: torch.Tensor
    support_y: torch.Tensor
    query_x: torch.Tensor
    query_y: torch.Tensor
    task_index: torch.Tensor
    kind_code: torch.Tensor
    step: int = 0

    @property
    def kinds(self) -> list[str]:
        """Kinds as strings."""
        return [TASK_KINDS[int(c)] for c in self.kind_code]

    def __len__(self) -> int:
        """Number of tasks."""
        return int(self.task_index.shape[0])

    def to(self, device: torch.device | str) -> EpisodeBatch:
        """The batch with its examples and labels on ``device`` (indices stay)."""
        moved = {
            name: getattr(self, name).to(device)
            for name in ("support_x", "support_y", "query_x", "query_y")
        }
        return dataclasses.replace(self, **moved)


def sample_episode(
    data: LabelledData,
    transforms: Sequence[EpisodeTransform],
    rng: np.random.Generator,
    *,
    kind: str = "clean",
) -> Episode:
    """Run a transform pipeline and load the chosen rows.

    Args:
        data: The labelled dataset.
        transforms: E.g. ``[NWays(5), KShots(1, 15), RelabelClasses()]``.
        rng: The episode's generator (see :func:`episode_generator`).
        kind: Ground-truth kind recorded on the episode.

    Returns:
        An :class:`Episode` with ``ways*shots`` support and ``ways*queries`` query
        rows, class-major.

    Raises:
        EpisodeError: Too few classes, or a class smaller than shots + queries.
    """
    desc: EpisodeDescription | None = None
    for transform in transforms:
        desc = transform(data, desc, rng)
    if desc is None or desc.support_rows.size == 0:
        raise EpisodeError("the pipeline must contain NWays and KShots")
    order = desc.class_order
    if order is None:
        order = np.arange(len(desc.classes))

    def load(rows: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        labels = np.repeat(order, rows.shape[1])
        flat = torch.from_numpy(rows.reshape(-1))
        return data.features[flat], torch.from_numpy(labels)

    sx, sy = load(desc.support_rows)
    qx, qy = load(desc.query_rows)
    return Episode(sx, sy, qx, qy, kind=kind)


def collate_episodes(
    episodes: Sequence[Episode], task_index: Sequence[int], *, step: int = 0
) -> EpisodeBatch:
    """Stack equally shaped episodes into a ``tasks x ...`` batch.

    Raises:
        EpisodeError: Episodes differ in shape or ``task_index`` has another length.
    """
    if len(episodes) != len(task_index) or not episodes:
        raise EpisodeError(
            f"need one task index per episode and at least one episode; got "
            f"{len(episodes)} episodes and {len(task_index)} indices"
        )
    shapes = {(tuple(e.support_x.shape), tuple(e.query_x.shape)) for e in episodes}
    if len(shapes) != 1:
        raise EpisodeError(f"episodes must share one shape to batch, got {shapes}")
    return EpisodeBatch(
        support_x=torch.stack([e.support_x for e in episodes]),
        support_y=torch.stack([e.support_y for e in episodes]),
        query_x=torch.stack([e.query_x for e in episodes]),
        query_y=torch.stack([e.query_y for e in episodes]),
        task_index=torch.as_tensor(list(task_index), dtype=torch.int64),
        kind_code=torch.as_tensor(
            [TASK_KINDS.index(e.kind) for e in episodes], dtype=torch.int64
        ),
        step=step,
    )


def episode_generator(
    *, seed: int, step: int, task_index: int, stream: int = 0
) -> np.random.Generator:
    """The generator of one task of one global meta-batch.

    Seeds depend on ``(seed, stream, step, task_index)`` only. Ranks and DataLoader
    workers own disjoint task indices (:func:`local_task_indices`), so seeds are
    effectively per ``(seed, rank, worker, step)`` while the global batch stays the
    same for any world size.

    Args:
        seed: Base seed of the run.
        step: Meta-iteration.
        task_index: Position of the task in the global meta-batch.
        stream: Separates independent streams (e.g. 0 = train, 1 = test).
    """
    if min(seed, step, task_index, stream) < 0:
        raise EpisodeError(
            f"seed, step, task_index and stream must be >= 0; got "
            f"{(seed, step, task_index, stream)}"
        )
    return np.random.default_rng(
        np.random.SeedSequence([seed, stream, step, task_index])
    )


def local_task_indices(
    tasks_per_batch: int,
    *,
    rank: int,
    world_size: int,
    worker: int = 0,
    num_workers: int = 1,
) -> list[int]:
    """Contiguous slice of global task indices owned by one (rank, worker) slot.

    Args:
        tasks_per_batch: Global meta-batch size ``B``.
        rank: This process's rank.
        world_size: Number of ranks.
        worker: DataLoader worker id within the rank.
        num_workers: DataLoader workers per rank.

    Raises:
        EpisodeError: ``B`` is not divisible by ``world_size * num_workers``.
    """
    slots = world_size * num_workers
    if tasks_per_batch < 1 or tasks_per_batch % slots:
        raise EpisodeError(
            f"tasks_per_batch={tasks_per_batch} must be a positive multiple of "
            f"world_size*num_workers={slots}; change the batch size or workers"
        )
    per = tasks_per_batch // slots
    slot = rank * num_workers + worker
    return list(range(slot * per, (slot + 1) * per))
