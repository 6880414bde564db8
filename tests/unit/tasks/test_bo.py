from __future__ import annotations

import numpy as np
import pytest

from raymeta.errors import MetaDataError
from raymeta.tasks import bo
from raymeta.tasks.bo import FAMILIES, draw_study


def test_branin_standard_minimum_by_shgo():
    branin = FAMILIES["branin"]
    assert branin.task(branin.standard).optimum() == pytest.approx(0.397887, abs=1e-5)


def test_hartmann3_standard_minimum_by_shgo():
    h3 = FAMILIES["hartmann3"]
    assert h3.task(h3.standard).optimum() == pytest.approx(-3.86278, abs=1e-5)


def test_hartmann6_standard_minimum_at_known_minimiser():
    h6 = FAMILIES["hartmann6"]
    xstar = np.array([[0.20169, 0.150011, 0.476874, 0.275332, 0.311652, 0.6573]])
    assert h6.task(h6.standard)(xstar)[0] == pytest.approx(-3.32237, abs=1e-5)


def test_unit_cube_maps_to_branin_domain():
    t = FAMILIES["branin"].task(FAMILIES["branin"].standard)
    assert t.to_domain(np.array([[0.0, 1.0]])).tolist() == [[-5.0, 15.0]]
    # the three textbook minimisers of Branin, mapped to the unit cube
    for x1, x2 in [(-np.pi, 12.275), (np.pi, 2.275), (9.42478, 2.475)]:
        u = np.array([[(x1 + 5) / 15, x2 / 15]])
        assert t(u)[0] == pytest.approx(0.397887, abs=1e-5)


@pytest.mark.parametrize("name", ["branin", "hartmann3", "hartmann6"])
def test_task_parameters_lie_in_the_spec_ranges(name):
    fam = FAMILIES[name]
    rng = np.random.default_rng(0)
    for _ in range(20):
        p = fam.sample_params(rng)
        assert all(lo <= p[k] <= hi for k, (lo, hi) in fam.ranges.items())
    assert all(lo <= fam.standard[k] <= hi for k, (lo, hi) in fam.ranges.items())


def test_study_is_reproducible_per_seed_and_differs_across_seeds():
    fam = FAMILIES["hartmann3"]
    a = draw_study(fam, seed=3, num_meta=2, n_meta=5)
    b = draw_study(fam, seed=3, num_meta=2, n_meta=5)
    c = draw_study(fam, seed=4, num_meta=2, n_meta=5)
    assert [t.content_hash() for t in a.meta_tasks] == [
        t.content_hash() for t in b.meta_tasks
    ]
    assert a.target.params == b.target.params  # the target task is seeded too
    assert a.noise_rng.standard_normal() == b.noise_rng.standard_normal()
    assert a.meta_tasks[0].content_hash() != c.meta_tasks[0].content_hash()
    assert a.target.params != c.target.params


def test_noise_level_of_meta_data_matches_family():
    fam = FAMILIES["branin"]
    study = draw_study(fam, seed=0, num_meta=1, n_meta=400)
    task = study.meta_tasks[0]
    # re-derive the noise-free values from the same parameter draw
    rng = np.random.default_rng(0)
    params = fam.sample_params(rng)
    clean = fam.task(params)(task.X.numpy())
    assert np.std(task.y.numpy() - clean) == pytest.approx(1.0, rel=0.15)


def test_wrong_point_dimension_is_rejected():
    t = FAMILIES["branin"].task(FAMILIES["branin"].standard)
    with pytest.raises(MetaDataError, match="branin: points must have 2 columns"):
        t(np.zeros((1, 3)))


@pytest.mark.parametrize("flip", [0.0, 0.1])
def test_digits_svm_grid_matches_a_direct_cross_validation(flip):
    from sklearn.datasets import load_digits
    from sklearn.model_selection import StratifiedKFold, cross_val_score
    from sklearn.svm import SVC

    grid = bo._svm_grid((3, 8), flip, 2)  # corners: log10 C {-2, 4}, gamma {-5, 1}
    data = load_digits()
    mask = np.isin(data.target, (3, 8))
    X, y = data.data[mask] / 16.0, (data.target[mask] == 8).astype(int)
    flipped = np.random.default_rng([3, 8]).random(y.size) < flip
    assert flipped.any() == (flip > 0)
    y = np.where(flipped, 1 - y, y)
    acc = cross_val_score(
        SVC(C=1e4, gamma=1e-5),
        X,
        y,
        cv=StratifiedKFold(3, shuffle=True, random_state=0),
    ).mean()
    assert grid[1, 0] == pytest.approx(1.0 - acc)
    assert np.all((grid >= 0) & (grid <= 1))


def test_digits_families_read_their_own_tables(monkeypatch):
    size = bo._DIGITS_GRID
    monkeypatch.setattr(bo, "_GRID_CACHE", {})
    bo.install_digits_tables(
        {
            ((3, 8), 0.0): np.full((size, size), 0.01),
            ((3, 8), 0.1): np.ones((size, size)),
        }
    )
    clean = FAMILIES["digits_svm"].task({"choice": (3, 8)})
    noisy = FAMILIES["digits_svm_noisy"].task({"choice": (3, 8)})
    assert clean.optimum() == 0.01 and noisy.optimum() == 1.0
    assert clean(np.array([[0.3, 0.7]]))[0] == pytest.approx(0.01)


def test_digits_family_interpolates_its_grid_and_optimum_is_grid_min(monkeypatch):
    fam = FAMILIES["digits_svm"]
    size = bo._DIGITS_GRID
    grid = np.add.outer(np.linspace(0.5, 0.1, size), np.linspace(0.0, 0.2, size))
    monkeypatch.setitem(bo._GRID_CACHE, ((0, 1), 0.0), grid)  # known table, pair (0, 1)
    task = fam.task({"choice": (0, 1)})
    corners = task(np.array([[0.0, 0.0], [1.0, 1.0], [1.0, 0.0]]))
    assert corners.tolist() == pytest.approx([grid[0, 0], grid[-1, -1], grid[-1, 0]])
    mid = task(np.array([[0.5 / (size - 1), 0.0]]))[0]  # halfway between two rows
    assert mid == pytest.approx(0.5 * (grid[0, 0] + grid[1, 0]))
    assert task.optimum() == pytest.approx(grid.min())


def test_digits_study_uses_distinct_pairs(monkeypatch):
    fam = FAMILIES["digits_svm"]
    for pair in fam.choices:  # skip the SVM fits: tabulate every pair as zeros
        monkeypatch.setitem(
            bo._GRID_CACHE, (pair, 0.0), np.zeros((bo._DIGITS_GRID,) * 2)
        )
    study = draw_study(fam, seed=0, num_meta=8, n_meta=4)
    ids = {t.task_id for t in study.meta_tasks}
    assert len(ids) == 8 and study.target.params["choice"] in fam.choices
    with pytest.raises(MetaDataError, match="at most 44 meta-tasks"):
        draw_study(fam, seed=0, num_meta=45, n_meta=2)


def test_installed_digits_tables_are_used_and_bad_shapes_rejected(monkeypatch):
    table = np.full((bo._DIGITS_GRID,) * 2, 0.25)
    monkeypatch.setattr(bo, "_GRID_CACHE", {})
    bo.install_digits_tables({((2, 5), 0.0): table})
    assert FAMILIES["digits_svm"].task({"choice": (2, 5)}).optimum() == 0.25
    with pytest.raises(MetaDataError, match=r"pair \(2, 6\) \(label_flip 0.1\): exp"):
        bo.install_digits_tables({((2, 6), 0.1): np.zeros((3, 3))})
