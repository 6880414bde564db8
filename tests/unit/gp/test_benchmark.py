from __future__ import annotations

import numpy as np
import pytest

from raymeta.errors import MetaDataError
from raymeta.gp.benchmark import (
    compare_methods,
    cumulative_regret,
    icm_mll_seconds,
    median_ci,
    regret_bands,
    run_bo,
    simple_regret,
)
from raymeta.tasks.bo import FAMILIES, draw_study


def test_simple_regret_is_running_minimum_minus_optimum():
    values = [5.0, 3.0, 4.0, 1.5, 2.0]
    assert simple_regret(values, 1.0).tolist() == [4.0, 2.0, 2.0, 0.5, 0.5]
    assert cumulative_regret([4.0, 2.0, 2.0, 0.5, 0.5]) == 9.0


def test_regret_bands_over_studies():
    r = np.array([[1.0, 0.5], [3.0, 0.1], [2.0, 0.3]])
    bands = regret_bands(r)
    assert bands["median"].tolist() == [2.0, 0.3]
    assert bands["q25"].tolist() == pytest.approx([1.5, 0.2])
    assert bands["q75"].tolist() == pytest.approx([2.5, 0.4])
    assert bands["mean"].tolist() == pytest.approx([2.0, 0.3])
    assert bands["sem"][0] == pytest.approx(1.0 / np.sqrt(3))


def test_compare_methods_reports_ratio_and_paired_test():
    steps = np.arange(1, 11)
    good = np.stack([1.0 / steps + 0.01 * i for i in range(8)])
    bad = good * 10
    stats = compare_methods({"scamlgp": good, "gpbo": bad}, steps=(1, 10))
    assert stats["ratio_median@10/scamlgp_over_gpbo"] == pytest.approx(0.1)
    assert stats["wilcoxon_p_cum/scamlgp_lt_gpbo"] < 0.01
    assert stats["median_regret@1/gpbo"] == pytest.approx(np.median(bad[:, 0]))
    lo, hi = stats["median_regret_ci_lo@10/gpbo"], stats["median_regret_ci_hi@10/gpbo"]
    assert bad[:, 9].min() <= lo <= np.median(bad[:, 9]) <= hi <= bad[:, 9].max()
    solved = compare_methods(
        {"scamlgp": np.array([[1.0, 0.0], [1.0, 0.5]])}, steps=(2,)
    )
    assert solved["frac_at_optimum@2/scamlgp"] == 0.5


def test_median_ci_covers_the_median_and_narrows_with_more_data():
    rng = np.random.default_rng(1)
    small = rng.exponential(size=16)
    large = rng.exponential(size=1024)
    lo_s, hi_s = median_ci(small, np.random.default_rng(0))
    lo_l, hi_l = median_ci(large, np.random.default_rng(0))
    assert lo_s <= np.median(small) <= hi_s and lo_l <= np.median(large) <= hi_l
    assert hi_l - lo_l < (hi_s - lo_s) / 2
    assert lo_l < np.log(2) < hi_l  # the exponential's true median
    assert median_ci([3.0] * 5, np.random.default_rng(0)) == (3.0, 3.0)


def test_random_and_gpbo_loops_are_reproducible_and_record_steps(tmp_path):
    study = draw_study(FAMILIES["branin"], seed=4, num_meta=0, n_meta=1)
    f_star = 0.0  # any reference value; regret is then the running minimum
    rnd = run_bo(study, "random", [], budget=4, f_star=f_star)
    again = run_bo(study, "random", [], budget=4, f_star=f_star)
    assert np.array_equal(rnd.X, again.X)
    assert rnd.regret.tolist() == simple_regret(rnd.values, f_star).tolist()
    gp = run_bo(
        study,
        "gpbo",
        [],
        budget=3,
        f_star=f_star,
        restarts=0,
        maxiter=20,
        raw_samples=32,
        num_restarts=1,
    )
    assert gp.X.shape == (3, 2) and len(gp.step_seconds) == 3
    assert np.all(np.diff(gp.regret) <= 0)


def test_unknown_method_is_rejected():
    study = draw_study(FAMILIES["branin"], seed=0, num_meta=0, n_meta=1)
    with pytest.raises(MetaDataError, match="method must be one of"):
        run_bo(study, "hyperband", [], budget=1, f_star=0.0)


def test_icm_baseline_is_timed_on_all_points_of_all_tasks():
    study = draw_study(FAMILIES["branin"], seed=0, num_meta=3, n_meta=5)
    seconds = icm_mll_seconds(study.meta_tasks, repeats=1)
    assert 0 < seconds < 60
