"""Benchmark families as Tune problems, and their meta-data round trip via the store."""

from __future__ import annotations

import numpy as np
import pytest

from raymeta.results import ResultStore
from raymeta.search.metadata import StoreMetaData, build_meta_tasks, load_meta_frame
from raymeta.search.space import convert_search_space
from raymeta.search.trainables import family_space, record_meta_tasks, unit_point
from raymeta.tasks.bo import FAMILIES, draw_study


@pytest.mark.parametrize(
    "name", ["branin", "hartmann3", "digits_svm", "digits_svm_noisy"]
)
def test_space_encoding_is_the_family_unit_cube(name):
    family = FAMILIES[name]
    space = convert_search_space(family_space(family))
    rng = np.random.default_rng(0)
    for x in rng.random((20, family.dim)):
        config = space.decode(x)
        np.testing.assert_allclose(unit_point(family, config), x, atol=1e-12)
        np.testing.assert_allclose(space.encode(config), x, atol=1e-12)


def test_recorded_meta_tasks_read_back_identically(tmp_path):
    study = draw_study(FAMILIES["branin"], seed=3, num_meta=3, n_meta=5)
    store = ResultStore(tmp_path / "store")
    experiments = record_meta_tasks(store, study)
    assert record_meta_tasks(store, study) == experiments  # idempotent
    space = convert_search_space(family_space(study.family))
    frame = load_meta_frame(
        StoreMetaData(store, experiments=experiments), metric="loss"
    )
    tasks = build_meta_tasks(frame, space, mode="min")
    assert len(frame) == 15 and len(tasks) == 3
    for original, read in zip(study.meta_tasks, tasks):
        assert read.task_id == f"{original.task_id}:{original.task_id}"
        np.testing.assert_allclose(read.X.numpy(), original.X.numpy(), atol=1e-12)
        np.testing.assert_allclose(read.y.numpy(), original.y.numpy())
