from __future__ import annotations

import numpy as np
import pytest
import torch

from raymeta.errors import EpisodeError
from raymeta.tasks.episodes import (
    KShots,
    LabelledData,
    NWays,
    RelabelClasses,
    collate_episodes,
    episode_generator,
    local_task_indices,
    sample_episode,
)
from raymeta.tasks.fewshot import EpisodeStream, GaussianClusterFamily


def small_data(classes: int = 6, per_class: int = 5) -> LabelledData:
    labels = torch.arange(classes).repeat_interleave(per_class)
    # feature 0 is the class id, feature 1 a unique row id
    features = torch.stack([labels.float(), torch.arange(len(labels)).float()], 1)
    return LabelledData(features, labels)


def pipeline(ways: int = 3, shots: int = 2, queries: int = 2) -> list:
    return [NWays(ways), KShots(shots, queries), RelabelClasses()]


def test_episode_shapes_relabel_and_disjoint_support_query() -> None:
    data = small_data()
    ep = sample_episode(
        data, pipeline(), episode_generator(seed=1, step=0, task_index=0)
    )
    assert ep.support_x.shape == (6, 2) and ep.query_x.shape == (6, 2)
    assert sorted(ep.support_y.unique().tolist()) == [0, 1, 2]
    # one original class per episode label, the same in support and query
    for y in range(3):
        s_cls = ep.support_x[ep.support_y == y, 0].unique()
        q_cls = ep.query_x[ep.query_y == y, 0].unique()
        assert len(s_cls) == 1 and torch.equal(s_cls, q_cls)
    rows = set(ep.support_x[:, 1].tolist()) | set(ep.query_x[:, 1].tolist())
    assert len(rows) == 12  # no row in both support and query


def test_same_generator_same_episode_other_step_differs() -> None:
    data = small_data()
    a = sample_episode(
        data, pipeline(), episode_generator(seed=3, step=5, task_index=2)
    )
    b = sample_episode(
        data, pipeline(), episode_generator(seed=3, step=5, task_index=2)
    )
    c = sample_episode(
        data, pipeline(), episode_generator(seed=3, step=6, task_index=2)
    )
    assert torch.equal(a.support_x, b.support_x) and torch.equal(a.query_y, b.query_y)
    assert not torch.equal(a.support_x, c.support_x)


def test_fewer_classes_than_ways_is_a_clear_error() -> None:
    with pytest.raises(EpisodeError, match="only 6 classes; lower ways"):
        sample_episode(small_data(), pipeline(ways=7), np.random.default_rng(0))


def test_shots_exceeding_class_size_is_a_clear_error() -> None:
    with pytest.raises(EpisodeError, match="has 5 examples but shots"):
        sample_episode(
            small_data(), pipeline(shots=4, queries=2), np.random.default_rng(0)
        )


def test_pipeline_without_kshots_and_mismatched_lengths_are_rejected() -> None:
    with pytest.raises(EpisodeError, match="NWays and KShots"):
        sample_episode(small_data(), [NWays(2)], np.random.default_rng(0))
    with pytest.raises(EpisodeError, match="one label per example"):
        LabelledData(torch.zeros(3, 2), torch.zeros(4, dtype=torch.int64))


def test_collate_stacks_tasks_by_ways_times_shots() -> None:
    data = small_data()
    eps = [
        sample_episode(
            data, pipeline(), episode_generator(seed=0, step=0, task_index=i)
        )
        for i in range(4)
    ]
    batch = collate_episodes(eps, [0, 1, 2, 3], step=7)
    assert batch.support_x.shape == (4, 6, 2) and batch.query_y.shape == (4, 6)
    assert batch.kinds == ["clean"] * 4 and batch.step == 7


def test_local_task_indices_partition_the_global_batch() -> None:
    slots = [
        local_task_indices(8, rank=r, world_size=2, worker=w, num_workers=2)
        for r in range(2)
        for w in range(2)
    ]
    assert sorted(sum(slots, [])) == list(range(8))
    with pytest.raises(EpisodeError, match="positive multiple"):
        local_task_indices(5, rank=0, world_size=2)


def task_keys(batch) -> set:
    return {tuple(np.round(x.flatten()[:6].numpy(), 5)) for x in batch.support_x}


def test_streams_differ_across_ranks_and_repeat_across_restarts() -> None:
    family = GaussianClusterFamily(ways=3, shots=1, queries=2)
    stream = EpisodeStream(
        family=family, tasks_per_batch=4, seed=11, noisy_fraction=0.5
    )
    for step in range(5):
        r0 = stream.batch(step, rank=0, world_size=2)
        r1 = stream.batch(step, rank=1, world_size=2)
        assert not task_keys(r0) & task_keys(r1)  # ranks never draw the same task
        full = stream.batch(step)  # 1 rank sees the union, in the same order
        assert torch.equal(full.support_x, torch.cat([r0.support_x, r1.support_x]))
    # a "restart": a fresh stream object resumes at step 3 with identical batches
    again = EpisodeStream(family=family, tasks_per_batch=4, seed=11, noisy_fraction=0.5)
    first, resumed = stream.batch(3), again.batch(3)
    assert torch.equal(first.support_x, resumed.support_x)
    assert torch.equal(first.query_y, resumed.query_y)
    assert torch.equal(first.kind_code, resumed.kind_code)
    other_seed = EpisodeStream(family=family, tasks_per_batch=4, seed=12).batch(3)
    assert not torch.equal(first.support_x, other_seed.support_x)
