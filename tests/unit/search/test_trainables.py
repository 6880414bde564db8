"""Benchmark families as Tune problems, and their meta-data round trip via the store."""

from __future__ import annotations

import numpy as np
import pytest

from raymeta.results import ResultStore
from raymeta.search.metadata import StoreMetaData, build_meta_tasks, load_meta_frame
from raymeta.search.space import convert_search_space
from raymeta.search.trainables import family_space, record_meta_tasks, unit_point
from raymeta.tasks.bo import FAMILIES, draw_study
from raymeta.tasks.tabular import TABULAR_FAMILIES, draw_tabular_study


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


@pytest.mark.parametrize("name", sorted(TABULAR_FAMILIES))
def test_tabular_space_translates_every_parameter_kind(name):
    family = TABULAR_FAMILIES[name]
    spec = family_space(family)
    space = convert_search_space(spec)
    for p in family.grid:
        if p.name in family.fixed:  # categoricals the protocol fixes: constants
            assert spec[p.name] == family.fixed[p.name]
        else:
            param = space.parameter(p.name)
            assert param.kind == "ordinal" and param.categories == p.values
            assert param.log == (p.scale == "log")
    rng = np.random.default_rng(0)
    for x in rng.random((20, family.dim)):
        config = space.decode(x)
        assert config == family.decode(x)  # same nearest grid value per parameter
        np.testing.assert_allclose(space.encode(config), family.encode(config))
        np.testing.assert_allclose(unit_point(family, config), family.encode(config))


def test_free_categoricals_become_choices():
    import dataclasses

    family = dataclasses.replace(TABULAR_FAMILIES["fcnet"], fixed={})
    space = convert_search_space(family_space(family))
    assert space.parameter("activation_fn_1").kind == "categorical"
    assert space.parameter("lr_schedule").categories == ("cosine", "const")


def test_recorded_tabular_meta_tasks_read_back_identically(tmp_path):
    study = draw_tabular_study(
        TABULAR_FAMILIES["hpobench_mlp"], target="segment", seed=1, n_meta=6
    )
    store = ResultStore(tmp_path / "store")
    experiments = record_meta_tasks(store, study)
    space = convert_search_space(family_space(study.family))
    frame = load_meta_frame(
        StoreMetaData(store, experiments=experiments), metric="loss"
    )
    tasks = build_meta_tasks(frame, space, mode="min")
    assert len(tasks) == 7
    for original, read in zip(study.meta_tasks, tasks):
        np.testing.assert_allclose(read.X.numpy(), original.X.numpy(), atol=1e-12)
        np.testing.assert_allclose(read.y.numpy(), original.y.numpy())
