"""Few-shot task families, contamination injection and seeded episode streams.

Families draw one :class:`~raymeta.tasks.episodes.Episode` from a generator:

- ``gaussian_clusters`` (:class:`GaussianClusterFamily`): n-way tasks in R^32 whose
  classes differ in 8 signal dimensions, mixed with 24 high-variance nuisance dimensions
  by a fixed rotation; outlier tasks put the class structure in the nuisance dimensions.
- ``sinusoid`` (:class:`SinusoidFamily`): regression ``y = a sin(x - phase)``; outlier
  tasks are lines.
- ``digits`` (:class:`DatasetFamily` over scikit-learn's bundled digits): smoke only;
  outlier tasks use a fixed pixel permutation.
- ``glyphs``: rendered characters (:mod:`raymeta.tasks.glyphs`); outlier tasks come
  from another domain (scikit-learn's digits upscaled to the glyph canvas, or pure
  noise images, or permuted pixels).
- ``image_folder``: one folder per class (:mod:`raymeta.tasks.imagefolder`).

:class:`EpisodeStream` turns a family into meta-batches, injecting noisy tasks (labels
resampled with probability ``noise_prob``), outlier tasks and easy tasks (a family's
``sample_easy``: Gaussian clusters four times further apart; for labelled data, one
example per class repeated as every support and query example, so a query is a copy
of its class's support); every task carries its ground-truth kind. Build families
by name with :func:`build_task_family`.

Example:
    >>> family = build_task_family("gaussian_clusters", ways=5, shots=1, queries=15)
    >>> stream = EpisodeStream(family, tasks_per_batch=4, seed=0, noisy_fraction=0.5)
    >>> batch = stream.batch(step=0)
    >>> tuple(batch.support_x.shape), tuple(batch.query_x.shape)
    ((4, 5, 32), (4, 75, 32))
"""

from __future__ import annotations

import dataclasses
import difflib
from collections.abc import Callable, Sequence
from typing import Any, Literal, Protocol

import numpy as np
import torch

from raymeta.errors import EpisodeError, UnknownTaskFamilyError
from raymeta.tasks.episodes import (
    Episode,
    EpisodeBatch,
    KShots,
    LabelledData,
    NWays,
    RelabelClasses,
    collate_episodes,
    episode_generator,
    local_task_indices,
    sample_episode,
)

__all__ = [
    "TASK_FAMILIES",
    "DatasetFamily",
    "EpisodeStream",
    "GaussianClusterFamily",
    "SinusoidFamily",
    "TaskFamily",
    "build_task_family",
    "register_task_family",
    "resample_labels",
]

Problem = Literal["classification", "regression"]


class TaskFamily(Protocol):
    """What an episode stream needs from a family of tasks."""

    problem: Problem
    ways: int  # classes per task (1 for regression)
    in_features: int

    def sample_episode(self, rng: np.random.Generator, *, outlier: bool) -> Episode:
        """Draw one clean (or outlier-distribution) episode."""
        ...

    def corrupt(self, episode: Episode, p: float, rng: np.random.Generator) -> Episode:
        """Return a noisy copy: each label resampled with probability ``p``."""
        ...

    # optional: ``sample_easy(rng) -> Episode`` draws an easy task (kind "easy")


def resample_labels(
    episode: Episode, p: float, ways: int, rng: np.random.Generator
) -> Episode:
    """Resample each support and query label uniformly from ``0..ways-1`` w.p. ``p``.

    Returns:
        A copy of ``episode`` with ``kind="noisy"``.
    """

    def noisy(y: torch.Tensor) -> torch.Tensor:
        flip = rng.random(y.shape[0]) < p
        fresh = rng.integers(0, ways, size=y.shape[0])
        return torch.from_numpy(np.where(flip, fresh, y.numpy()).astype(np.int64))

    return dataclasses.replace(
        episode,
        support_y=noisy(episode.support_y),
        query_y=noisy(episode.query_y),
        kind="noisy",
    )


def _classification_episode(
    draw: Callable[[int], np.ndarray], ways: int, shots: int, queries: int
) -> Episode:
    """Build an episode from ``draw(n) -> ways x n x F`` samples (class-major)."""
    x = draw(shots + queries)
    sx = torch.from_numpy(x[:, :shots].reshape(ways * shots, -1)).float()
    qx = torch.from_numpy(x[:, shots:].reshape(ways * queries, -1)).float()
    return Episode(
        sx,
        torch.arange(ways).repeat_interleave(shots),
        qx,
        torch.arange(ways).repeat_interleave(queries),
    )


@dataclasses.dataclass(frozen=True, kw_only=True)
class GaussianClusterFamily:
    """Gaussian-cluster few-shot tasks with signal and nuisance dimensions (spec (f)).

    A clean task draws ``ways`` class means ``~ N(0, mean_std^2)`` in the
    ``signal_dims``; examples add ``N(0, signal_std^2)`` there and pure noise
    ``N(0, nuisance_std^2)`` in the ``nuisance_dims``; a fixed rotation (from
    ``family_seed``) mixes all dimensions. An outlier task puts its class means
    (``~ N(0, nuisance_std^2)``, spread ``0.3 * nuisance_std``) in the nuisance
    dimensions and leaves the signal dimensions structureless.
    """

    ways: int = 5
    shots: int = 1
    queries: int = 15
    signal_dims: int = 8
    nuisance_dims: int = 24
    mean_std: float = 1.0
    signal_std: float = 0.6
    nuisance_std: float = 2.0
    easy_spread: float = 4.0
    family_seed: int = 0
    problem: Problem = "classification"

    def __post_init__(self) -> None:
        """Validate sizes and build the fixed rotation."""
        if min(self.ways, self.shots, self.signal_dims) < 1 or self.queries < 1:
            raise EpisodeError(
                f"ways, shots, queries and signal_dims must be >= 1; got ways="
                f"{self.ways}, shots={self.shots}, queries={self.queries}, "
                f"signal_dims={self.signal_dims}"
            )
        d = self.in_features
        gauss = np.random.default_rng(self.family_seed).normal(size=(d, d))
        rotation, _ = np.linalg.qr(gauss)
        object.__setattr__(self, "_rotation", rotation)

    @property
    def in_features(self) -> int:
        """Input dimension (signal + nuisance)."""
        return self.signal_dims + self.nuisance_dims

    def sample_easy(self, rng: np.random.Generator) -> Episode:
        """A clean task with class means ``easy_spread`` times further apart."""
        ep = self.sample_episode(rng, outlier=False, easy=True)
        return dataclasses.replace(ep, kind="easy")

    def sample_episode(
        self, rng: np.random.Generator, *, outlier: bool, easy: bool = False
    ) -> Episode:
        """Draw one episode (see the class docstring for the distributions)."""
        ways, sd, nd = self.ways, self.signal_dims, self.nuisance_dims
        if outlier:
            means = rng.normal(0.0, self.nuisance_std, (ways, 1, nd))
            spread = 0.3 * self.nuisance_std
            flat_std = float(np.hypot(self.mean_std, self.signal_std))

            def draw(n: int) -> np.ndarray:
                sig = rng.normal(0.0, flat_std, (ways, n, sd))
                nuis = means + rng.normal(0.0, spread, (ways, n, nd))
                return np.concatenate([sig, nuis], -1) @ self._rotation.T

        else:
            means = rng.normal(0.0, self.mean_std, (ways, 1, sd))
            means = means * (self.easy_spread if easy else 1.0)

            def draw(n: int) -> np.ndarray:
                sig = means + rng.normal(0.0, self.signal_std, (ways, n, sd))
                nuis = rng.normal(0.0, self.nuisance_std, (ways, n, nd))
                return np.concatenate([sig, nuis], -1) @ self._rotation.T

        return _classification_episode(draw, ways, self.shots, self.queries)

    def corrupt(self, episode: Episode, p: float, rng: np.random.Generator) -> Episode:
        """Resample labels with probability ``p``."""
        return resample_labels(episode, p, self.ways, rng)


@dataclasses.dataclass(frozen=True, kw_only=True)
class SinusoidFamily:
    """Sinusoid regression tasks ``y = a sin(x - phase)``, ``x ~ U[-5, 5]``.

    ``a ~ U[0.1, 5]``, ``phase ~ U[0, pi]``. Outlier tasks are lines ``y = s x + c``
    with ``s, c ~ U[-3, 3]``. Noisy tasks replace each target w.p. ``p`` by
    ``N(0, noise_std^2)``. ``shots``/``queries`` count points.
    """

    shots: int = 5
    queries: int = 10
    noise_std: float = 3.0
    ways: int = 1
    in_features: int = 1
    problem: Problem = "regression"

    def __post_init__(self) -> None:
        """Validate sizes."""
        if self.shots < 1 or self.queries < 1:
            raise EpisodeError(
                f"shots and queries must be >= 1; got {self.shots}, {self.queries}"
            )

    def sample_episode(self, rng: np.random.Generator, *, outlier: bool) -> Episode:
        """Draw one sinusoid (or line, if ``outlier``) task."""
        x = rng.uniform(-5.0, 5.0, self.shots + self.queries)
        if outlier:
            slope, intercept = rng.uniform(-3.0, 3.0, 2)
            y = slope * x + intercept
        else:
            amplitude, phase = rng.uniform(0.1, 5.0), rng.uniform(0.0, np.pi)
            y = amplitude * np.sin(x - phase)
        xt = torch.from_numpy(x).float().unsqueeze(-1)
        yt = torch.from_numpy(y).float()
        s = self.shots
        return Episode(xt[:s], yt[:s], xt[s:], yt[s:])

    def corrupt(self, episode: Episode, p: float, rng: np.random.Generator) -> Episode:
        """Replace each target with ``N(0, noise_std^2)`` w.p. ``p``."""

        def noisy(y: torch.Tensor) -> torch.Tensor:
            flip = rng.random(y.shape[0]) < p
            fresh = rng.normal(0.0, self.noise_std, y.shape[0])
            return torch.from_numpy(np.where(flip, fresh, y.numpy())).float()

        return dataclasses.replace(
            episode,
            support_y=noisy(episode.support_y),
            query_y=noisy(episode.query_y),
            kind="noisy",
        )


@dataclasses.dataclass(frozen=True, kw_only=True)
class DatasetFamily:
    """n-way k-shot episodes over a labelled dataset (digits, image folders).

    Outlier tasks come from ``outlier_data`` if given, else from the same data with
    a fixed feature permutation (drawn from ``family_seed``).
    """

    data: LabelledData
    ways: int = 5
    shots: int = 1
    queries: int = 15
    outlier_data: LabelledData | None = None
    family_seed: int = 0
    problem: Problem = "classification"

    def __post_init__(self) -> None:
        """Reject impossible episodes up front (classes, class sizes)."""
        check = np.random.default_rng(0)
        sample_episode(self.data, self._transforms(), check)  # raises EpisodeError
        if self.outlier_data is None:
            n_feat = int(np.prod(self.data.features.shape[1:]))
            perm = np.random.default_rng(self.family_seed).permutation(n_feat)
            flat = self.data.features.reshape(len(self.data), -1)[:, perm]
            permuted = LabelledData(
                flat.reshape(self.data.features.shape), self.data.labels
            )
            object.__setattr__(self, "outlier_data", permuted)

    @property
    def in_features(self) -> int:
        """Flattened input dimension."""
        return int(np.prod(self.data.features.shape[1:]))

    def _transforms(self) -> list[Any]:
        return [NWays(self.ways), KShots(self.shots, self.queries), RelabelClasses()]

    def sample_episode(self, rng: np.random.Generator, *, outlier: bool) -> Episode:
        """Draw an episode, flattening inputs to ``ways*shots x features``."""
        source = self.outlier_data if outlier else self.data
        assert source is not None
        ep = sample_episode(source, self._transforms(), rng)
        return dataclasses.replace(
            ep,
            support_x=ep.support_x.reshape(ep.support_x.shape[0], -1).float(),
            query_x=ep.query_x.reshape(ep.query_x.shape[0], -1).float(),
        )

    def corrupt(self, episode: Episode, p: float, rng: np.random.Generator) -> Episode:
        """Resample labels with probability ``p``."""
        return resample_labels(episode, p, self.ways, rng)

    def sample_easy(self, rng: np.random.Generator) -> Episode:
        """One example per class, repeated as every support and query example."""
        desc = NWays(self.ways)(self.data, None, rng)
        rows = np.asarray(
            [rng.choice(self.data.class_rows[int(c)]) for c in desc.classes]
        )
        desc = RelabelClasses()(self.data, desc, rng)
        assert desc.class_order is not None
        order = torch.from_numpy(desc.class_order)
        x = self.data.features[torch.from_numpy(rows)].reshape(self.ways, -1).float()

        def repeat(n: int) -> tuple[torch.Tensor, torch.Tensor]:
            return x.repeat_interleave(n, 0), order.repeat_interleave(n)

        (sx, sy), (qx, qy) = repeat(self.shots), repeat(self.queries)
        return Episode(sx, sy, qx, qy, kind="easy")


@dataclasses.dataclass(frozen=True, kw_only=True)
class EpisodeStream:
    """Seeded meta-batches from a family, with injected contamination.

    Task ``i`` of step ``s`` is a pure function of ``(seed, stream, s, i)``: its kind
    is drawn first (noisy w.p. ``noisy_fraction``, outlier w.p.
    ``outlier_fraction``, easy w.p. ``easy_fraction``), then its data. Ranks take
    disjoint slices of the global meta-batch, and a restart at step ``s`` reproduces
    the same batches.

    Args:
        family: A :class:`TaskFamily`.
        tasks_per_batch: Global meta-batch size ``B``.
        seed: Base seed.
        noisy_fraction: Probability that a task is noisy.
        outlier_fraction: Probability that a task is an outlier.
        noise_prob: Label-resampling probability inside a noisy task.
        stream: Independent stream id (use another one for test tasks).
        easy_fraction: Probability that a task is easy (needs ``sample_easy``).
    """

    family: TaskFamily
    tasks_per_batch: int
    seed: int = 0
    noisy_fraction: float = 0.0
    outlier_fraction: float = 0.0
    noise_prob: float = 0.8
    stream: int = 0
    easy_fraction: float = 0.0

    def __post_init__(self) -> None:
        """Validate fractions and the batch size."""
        fracs = (
            self.noisy_fraction,
            self.outlier_fraction,
            self.easy_fraction,
            self.noise_prob,
        )
        if min(fracs) < 0 or max(fracs) > 1:
            raise EpisodeError(
                f"fractions and noise_prob must lie in [0, 1]; got {fracs}"
            )
        if sum(fracs[:3]) > 1:
            raise EpisodeError(
                f"noisy_fraction + outlier_fraction + easy_fraction = "
                f"{sum(fracs[:3])} exceeds 1"
            )
        if self.easy_fraction and not hasattr(self.family, "sample_easy"):
            raise EpisodeError(
                f"easy_fraction={self.easy_fraction} but {type(self.family).__name__} "
                "has no easy tasks (no sample_easy); set easy_fraction = 0"
            )
        if self.tasks_per_batch < 1:
            raise EpisodeError(
                f"tasks_per_batch must be >= 1, got {self.tasks_per_batch}"
            )

    def episode(self, step: int, task_index: int) -> Episode:
        """Task ``task_index`` of the global meta-batch at ``step``."""
        rng = episode_generator(
            seed=self.seed, step=step, task_index=task_index, stream=self.stream
        )
        u = rng.random()
        if u < self.noisy_fraction:
            clean = self.family.sample_episode(rng, outlier=False)
            return self.family.corrupt(clean, self.noise_prob, rng)
        if u < self.noisy_fraction + self.outlier_fraction:
            ep = self.family.sample_episode(rng, outlier=True)
            return dataclasses.replace(ep, kind="outlier")
        if u < self.noisy_fraction + self.outlier_fraction + self.easy_fraction:
            return self.family.sample_easy(rng)  # type: ignore[attr-defined]
        return self.family.sample_episode(rng, outlier=False)

    def batch(
        self,
        step: int,
        *,
        rank: int = 0,
        world_size: int = 1,
        worker: int = 0,
        num_workers: int = 1,
    ) -> EpisodeBatch:
        """The local slice of the global meta-batch at ``step``.

        Returns:
            An :class:`EpisodeBatch` of ``B / (world_size * num_workers)`` tasks.
        """
        indices = local_task_indices(
            self.tasks_per_batch,
            rank=rank,
            world_size=world_size,
            worker=worker,
            num_workers=num_workers,
        )
        episodes = [self.episode(step, i) for i in indices]
        return collate_episodes(episodes, indices, step=step)


# ---------------------------------------------------------------- registry ---------

TASK_FAMILIES: dict[str, Callable[..., TaskFamily]] = {}


def register_task_family(
    name: str,
) -> Callable[[Callable[..., TaskFamily]], Callable[..., TaskFamily]]:
    """Register a builder ``(**kwargs) -> TaskFamily`` under ``name``."""

    def decorate(builder: Callable[..., TaskFamily]) -> Callable[..., TaskFamily]:
        TASK_FAMILIES[name] = builder
        return builder

    return decorate


def build_task_family(name: str, **kwargs: Any) -> TaskFamily:
    """Build a registered task family by name.

    Args:
        name: One of ``sorted(TASK_FAMILIES)``.
        **kwargs: The builder's arguments (e.g. ``ways``, ``shots``, ``queries``).

    Raises:
        UnknownTaskFamilyError: The name is not registered (suggests the closest).
    """
    if name not in TASK_FAMILIES:
        close = difflib.get_close_matches(name, list(TASK_FAMILIES), n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise UnknownTaskFamilyError(
            f"unknown task family {name!r}{hint} (registered: {sorted(TASK_FAMILIES)})"
        )
    return TASK_FAMILIES[name](**kwargs)


register_task_family("gaussian_clusters")(GaussianClusterFamily)
register_task_family("sinusoid")(SinusoidFamily)


@register_task_family("digits")
def build_digits_family(
    *, ways: int = 5, shots: int = 1, queries: int = 15, classes: Sequence[int] = ()
) -> DatasetFamily:
    """scikit-learn's bundled 8x8 digits (offline), optionally a subset of classes."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    x = torch.from_numpy(digits.data / 16.0).float()
    y = torch.from_numpy(digits.target.astype(np.int64))
    if classes:
        keep = torch.isin(y, torch.as_tensor(list(classes)))
        x, y = x[keep], y[keep]
    return DatasetFamily(
        data=LabelledData(x, y), ways=ways, shots=shots, queries=queries
    )


@register_task_family("glyphs")
def build_glyphs_family(
    *,
    ways: int = 5,
    shots: int = 1,
    queries: int = 15,
    split: str = "train",
    by: str = "character",
    examples_per_class: int = 20,
    seed: int = 0,
    outlier: str = "digits",
) -> DatasetFamily:
    """Omniglot-like rendered glyphs (:mod:`raymeta.tasks.glyphs`), one split.

    ``outlier`` picks the outlier domain: "digits" (scikit-learn's 8x8 digits
    upscaled onto the glyph canvas), "noise" (uniform-noise images, 20 noise
    classes, each a fixed random template plus fresh noise) or "permuted" (glyphs
    with a fixed pixel permutation).
    """
    from raymeta.tasks.glyphs import glyph_split, outlier_images

    data = glyph_split(split, seed=seed, examples_per_class=examples_per_class, by=by)
    outliers = None if outlier == "permuted" else outlier_images(outlier, seed=seed)
    return DatasetFamily(
        data=data, ways=ways, shots=shots, queries=queries, outlier_data=outliers
    )


@register_task_family("image_folder")
def build_image_folder_family(
    *, root: str, ways: int = 5, shots: int = 1, queries: int = 15, size: int = 28
) -> DatasetFamily:
    """Episodes over a one-folder-per-class image tree (see ``imagefolder``)."""
    from raymeta.tasks.imagefolder import load_image_folder

    data = load_image_folder(root, size=size)
    return DatasetFamily(data=data, ways=ways, shots=shots, queries=queries)
