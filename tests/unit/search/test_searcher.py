"""ScaMLGPSearch called directly (no Ray): ports of Ray's generic searcher checks."""

from __future__ import annotations

import pickle

import numpy as np
import pandas as pd
import pytest
from ray import tune

from raymeta.errors import MetaDataError, SearcherSetupError, SearchSpaceError
from raymeta.search.searcher import ScaMLGPSearch

METRIC = "metric"
# Cheap model settings: unit tests check bookkeeping, not optimisation quality.
FAST = {"restarts": 0, "num_restarts": 1, "raw_samples": 64, "meta_restarts": 0}


def _meta_frame(n_tasks=2, n=6, seed=0):
    rng = np.random.default_rng(seed)
    rows = []
    for t in range(n_tasks):
        for a in rng.uniform(0, 5, size=n):
            rows.append({"task_id": f"old-{t}", "a": a, METRIC: -((a - 2.0 - t) ** 2)})
    return pd.DataFrame(rows)


def _objective(config):
    return -((config["a"] - 2.5) ** 2)


def _drive(searcher, trial_id, value=None):
    config = searcher.suggest(trial_id)
    result = {METRIC: _objective(config) if value is None else value}
    searcher.on_trial_complete(trial_id, result=result)
    return config


def _meta_searcher(n_tasks: int, n: int) -> ScaMLGPSearch:
    return ScaMLGPSearch(
        {"a": tune.uniform(0, 5)},
        metric=METRIC,
        mode="max",
        meta_data=_meta_tasks(n_tasks, n),
        **FAST,
    )


@pytest.mark.slow
def test_save_restore_checkpoint_continues_bit_identically(tmp_path):
    # Port of ray's SaveRestoreCheckpointTest at the size of check C5: 10
    # observations + 1 pending trial, then 5 bit-identical suggestions.
    searcher = ScaMLGPSearch(meta_data=_meta_frame(), metric=METRIC, seed=3, **FAST)
    searcher.set_search_properties(METRIC, "max", {"a": tune.uniform(0, 5)})
    for i in range(1, 11):
        searcher.suggest(str(i))
    searcher.suggest("not_completed")
    for i in range(1, 10):
        searcher.on_trial_complete(str(i), result={METRIC: float(i)})
    path = str(tmp_path / "searcher.pkl")
    searcher.save(path)

    restored = ScaMLGPSearch()
    restored.restore(path)  # no set_search_properties
    assert restored.metric == METRIC and restored.mode == "max"
    assert set(restored.pending_trials) == {"10", "not_completed"}
    for s in (searcher, restored):
        s.on_trial_complete("10", result={METRIC: 10.0})
    assert restored.num_observations == searcher.num_observations == 10
    for i in range(11, 16):
        configs = [_drive(s, str(i)) for s in (searcher, restored)]
        assert configs[0] == configs[1], i  # bit-identical floats
    assert "not_completed" in restored.pending_trials
    assert restored.num_observations == searcher.num_observations == 15


def _meta_tasks(n_tasks, n, dim=1, seed=0):
    import torch

    from raymeta.tasks.data import TaskData

    g = torch.Generator().manual_seed(seed)
    tasks = []
    for t in range(n_tasks):
        X = torch.rand(n, dim, generator=g, dtype=torch.float64)
        tasks.append(TaskData(f"old-{t}", X, (X[:, 0] - 0.4 - 0.1 * t) ** 2))
    return tasks


def _checkpoint_sizes(tmp_path, tasks, name):
    searcher = ScaMLGPSearch(
        {"a": tune.uniform(0, 5)}, metric=METRIC, mode="max", meta_data=tasks, **FAST
    )
    _drive(searcher, "0")  # fits the meta-task GPs
    searcher.suggest("pending")
    directory = tmp_path / name
    directory.mkdir()
    searcher.save(str(directory / "searcher.pkl"))
    searcher.save(str(directory / "searcher.pkl"))  # meta file written once
    (meta_file,) = directory.glob("scamlgp-meta-*.pkl")
    return (directory / "searcher.pkl").stat().st_size, meta_file.stat().st_size


def test_checkpoint_size_does_not_grow_with_meta_data(tmp_path):
    small = _checkpoint_sizes(tmp_path, _meta_tasks(2, 10), "small")
    large = _checkpoint_sizes(tmp_path, _meta_tasks(2, 300), "large")
    assert large[1] > 100 * small[1]  # the fitted states grow ~ n^2 ...
    assert large[0] == small[0]  # ... the checkpoint not at all


def test_checkpoint_with_1000_meta_points_per_task_is_small(tmp_path):
    # 32 meta-tasks x 1000 points in 4-d: 1.3 MB of raw meta-data alone
    tasks = _meta_tasks(32, 1000, dim=4)
    space = {name: tune.uniform(0, 1) for name in "abcd"}
    searcher = ScaMLGPSearch(
        space,
        metric=METRIC,
        mode="max",
        meta_data=tasks,
        points_to_evaluate=[{"a": 0.5}],
        **FAST,
    )
    searcher.suggest("pending")  # served from points_to_evaluate: nothing fitted
    path = tmp_path / "searcher.pkl"
    searcher.save(str(path))
    assert path.stat().st_size <= 1_000_000
    restored = ScaMLGPSearch()
    restored.restore(str(path))
    assert restored.pending_trials == ["pending"]
    meta = restored.get_state()["meta_tasks"]
    assert [task_id for task_id, _, _ in meta] == [t.task_id for t in tasks]
    assert all(np.array_equal(X, t.X.numpy()) for (_, X, _), t in zip(meta, tasks))


def test_restore_without_the_meta_data_file_is_a_clear_error(tmp_path):
    searcher = _meta_searcher(1, 5)
    searcher.save(str(tmp_path / "searcher.pkl"))
    moved = tmp_path / "moved"
    moved.mkdir()
    (tmp_path / "searcher.pkl").rename(moved / "searcher.pkl")
    with pytest.raises(SearcherSetupError, match=r"meta-data file 'scamlgp-meta-"):
        ScaMLGPSearch().restore(str(moved / "searcher.pkl"))


def test_restore_with_a_truncated_meta_data_file_is_a_clear_error(tmp_path):
    searcher = _meta_searcher(1, 5)
    searcher.save(str(tmp_path / "searcher.pkl"))
    (meta_file,) = tmp_path.glob("scamlgp-meta-*.pkl")
    meta_file.write_bytes(meta_file.read_bytes()[:100])  # as a killed copy leaves it
    with pytest.raises(SearcherSetupError, match=r"is truncated or corrupt"):
        ScaMLGPSearch().restore(str(tmp_path / "searcher.pkl"))


def test_version_1_checkpoint_with_embedded_meta_data_still_restores(tmp_path):
    searcher = _meta_searcher(2, 6)
    _drive(searcher, "0")
    legacy = {**searcher.get_state(), "version": 1}  # version 1 embedded the meta
    path = tmp_path / "v1.pkl"
    path.write_bytes(pickle.dumps(legacy))
    restored = ScaMLGPSearch()
    restored.restore(str(path))
    assert _drive(restored, "1") == _drive(searcher, "1")


def test_restore_rejects_unknown_state_version(tmp_path):
    path = tmp_path / "bad.pkl"
    path.write_bytes(pickle.dumps({"version": 999}))
    with pytest.raises(SearcherSetupError, match=r"state version 999"):
        ScaMLGPSearch().restore(str(path))


def test_searcher_pickles_at_construction_and_after_use():
    searcher = ScaMLGPSearch(
        {"a": tune.uniform(0, 5)},
        metric=METRIC,
        mode="max",
        meta_data=_meta_frame(),
        **FAST,
    )
    clone = pickle.loads(pickle.dumps(searcher))
    _drive(searcher, "1")
    pickle.loads(pickle.dumps(searcher))
    assert clone.suggest("1") == ScaMLGPSearch(
        {"a": tune.uniform(0, 5)},
        metric=METRIC,
        mode="max",
        meta_data=_meta_frame(),
        **FAST,
    ).suggest("1")


def test_points_to_evaluate_are_served_first_in_order():
    points = [{"a": 1.0, "b": {"c": "y"}}, {"a": 4.5}]  # the second one is partial
    searcher = ScaMLGPSearch(
        {"a": tune.uniform(0, 5), "b": {"c": tune.choice(["x", "y"])}},
        metric=METRIC,
        mode="max",
        points_to_evaluate=points,
        **FAST,
    )
    first = searcher.suggest("1")
    second = searcher.suggest("2")
    assert first == {"a": 1.0, "b": {"c": "y"}}
    assert second["a"] == 4.5 and second["b"]["c"] in ("x", "y")


def test_evaluated_rewards_become_observations_without_trials():
    searcher = ScaMLGPSearch(
        {"a": tune.uniform(0, 5)},
        metric=METRIC,
        mode="max",
        points_to_evaluate=[{"a": 1.0}, {"a": 3.0}],
        evaluated_rewards=[-2.0, -0.3],
        **FAST,
    )
    assert searcher.num_observations == 2
    config = searcher.suggest("1")
    assert config["a"] not in (1.0, 3.0)


def test_add_evaluated_point_adds_data_and_failures():
    searcher = ScaMLGPSearch(
        {"a": tune.uniform(0, 5)}, metric=METRIC, mode="min", **FAST
    )
    searcher.add_evaluated_point({"a": 1.0}, 0.5)
    searcher.add_evaluated_point({"a": 2.0}, float("nan"))
    searcher.add_evaluated_point({"a": 3.0}, 0.1, error=True)
    assert (searcher.num_observations, searcher.num_failed) == (1, 2)
    assert 0.0 <= searcher.suggest("1")["a"] <= 5.0


@pytest.mark.parametrize(
    ("result", "error"),
    [
        ({METRIC: float("nan")}, False),
        ({METRIC: float("inf")}, False),
        ({METRIC: float("-inf")}, False),
        ({"other": 1.0}, False),
        ({METRIC: "text"}, False),
        (None, True),
        ({METRIC: 1.0}, True),
    ],
)
def test_invalid_results_never_raise_and_never_enter_the_gp(result, error):
    searcher = ScaMLGPSearch(
        {"a": tune.uniform(0, 5)}, metric=METRIC, mode="max", **FAST
    )
    _drive(searcher, "0")
    searcher.suggest("1")
    searcher.on_trial_complete("1", result=result, error=error)
    assert (searcher.num_observations, searcher.num_failed) == (1, 1)
    assert 0.0 <= searcher.suggest("2")["a"] <= 5.0
    # reports after completion (ray's testOptunaReportTooOften) are ignored
    searcher.on_trial_result("1", {METRIC: 1.0})
    searcher.on_trial_complete("1", result={METRIC: 1.0})
    assert searcher.num_observations == 1


def test_trial_removed_before_running_is_forgotten():
    searcher = ScaMLGPSearch(
        {"a": tune.uniform(0, 5)}, metric=METRIC, mode="max", **FAST
    )
    searcher.suggest("1")
    searcher.on_trial_complete(trial_id="1", result=None, error=False)
    assert (searcher.num_observations, searcher.num_failed) == (0, 0)
    assert searcher.pending_trials == []


def test_failed_points_are_never_proposed_again():
    searcher = ScaMLGPSearch(
        {"c": tune.choice(["x", "y", "z"])}, metric=METRIC, mode="min", seed=1, **FAST
    )
    seen = []
    for i, outcome in enumerate(({METRIC: float("nan")}, None)):
        seen.append(searcher.suggest(str(i))["c"])
        searcher.on_trial_complete(str(i), result=outcome, error=outcome is None)
    third = searcher.suggest("2")["c"]
    assert len(set(seen)) == 2 and third not in seen


def test_concurrent_pending_suggestions_differ_and_limit_is_enforced():
    searcher = ScaMLGPSearch(
        {"a": tune.uniform(0, 5)}, metric=METRIC, mode="max", **FAST
    )
    _drive(searcher, "0")
    _drive(searcher, "1")
    assert searcher.set_max_concurrency(4) is True
    configs = [searcher.suggest(f"p{i}") for i in range(4)]
    assert searcher.suggest("p4") is None
    values = sorted(c["a"] for c in configs)
    assert min(np.diff(values)) > 1e-3 * 5


@pytest.mark.slow
def test_same_seed_same_suggestions_and_meta_data_changes_them():
    def first_three(meta):
        s = ScaMLGPSearch(
            {"a": tune.uniform(0, 5)},
            metric=METRIC,
            mode="max",
            meta_data=meta,
            seed=5,
            **FAST,
        )
        return [_drive(s, str(i))["a"] for i in range(3)]

    base = first_three(_meta_frame(seed=0))
    assert first_three(_meta_frame(seed=0)) == base
    assert first_three(_meta_frame(seed=1)) != base


@pytest.mark.slow
def test_suggestions_stay_inside_every_supported_domain():
    space = {
        "u": tune.uniform(-2.0, 3.0),
        "lu": tune.loguniform(1e-4, 1e-1),
        "qu": tune.quniform(0.0, 0.3, 0.1),
        "ri": tune.randint(3, 7),
        "qri": tune.qrandint(2, 20, 3),
        "lri": tune.lograndint(1, 100),
        "ch": tune.choice(["a", "b", 3]),
        "nested": {"c": 5},
    }
    searcher = ScaMLGPSearch(space, metric=METRIC, mode="min", seed=0, **FAST)
    rng = np.random.default_rng(0)
    for i in range(8):
        config = searcher.suggest(str(i))
        for key, domain in space.items():
            if key == "nested":
                assert config[key] == {"c": 5}
                continue
            assert domain.is_valid(config[key]), (key, config[key])
        assert isinstance(config["ri"], int) and config["ri"] < 7
        assert isinstance(config["lri"], int) and config["lri"] < 100
        assert config["qri"] % 3 == 0
        assert round(config["qu"] / 0.1, 9) == round(config["qu"] / 0.1)
        searcher.on_trial_complete(str(i), result={METRIC: float(rng.normal())})


# --- bad inputs: every one raises before any trial starts --------------------------


def test_bad_mode_is_rejected():
    with pytest.raises(SearcherSetupError, match=r"mode must be 'min' or 'max'"):
        ScaMLGPSearch(metric=METRIC, mode="maximize", **FAST)


def test_suggest_without_space_or_metric_is_a_clear_error():
    with pytest.raises(SearcherSetupError, match=r"no search space"):
        ScaMLGPSearch(metric=METRIC, mode="max", **FAST).suggest("1")
    with pytest.raises(SearcherSetupError, match=r"needs metric and mode"):
        ScaMLGPSearch({"a": tune.uniform(0, 1)}, **FAST).suggest("1")


def test_unsupported_domain_fails_at_set_search_properties():
    searcher = ScaMLGPSearch(metric=METRIC, mode="max", **FAST)
    with pytest.raises(SearchSpaceError, match=r"'g'.*grid_search"):
        searcher.set_search_properties(METRIC, "max", {"g": tune.grid_search([1, 2])})


def test_warm_start_lists_must_match():
    with pytest.raises(SearcherSetupError, match=r"evaluated_rewards has 1 values"):
        ScaMLGPSearch(
            points_to_evaluate=[{"a": 1}, {"a": 2}], evaluated_rewards=[1.0], **FAST
        )


def test_points_to_evaluate_outside_the_space_are_rejected():
    with pytest.raises(SearchSpaceError, match=r"'a'=9.0 lies outside"):
        ScaMLGPSearch(
            {"a": tune.uniform(0, 5)}, points_to_evaluate=[{"a": 9.0}], **FAST
        )
    with pytest.raises(SearchSpaceError, match=r"key 'b' is not a parameter"):
        ScaMLGPSearch(
            {"a": tune.uniform(0, 5)}, points_to_evaluate=[{"b": 1.0}], **FAST
        )


BAD_META = [
    (lambda f: f.iloc[:0], r"meta-data is empty"),
    (lambda f: f.drop(columns=["a"]), r"task 'old-0': column 'a' missing"),
    (lambda f: f.assign(a=f["a"] + 10), r"task 'old-0': column 'a' has value 1\d\.\d+"),
    (lambda f: f.assign(**{METRIC: "x"}), r"task 'old-0'.*non-numeric value 'x'"),
    (lambda f: f.assign(a=np.nan), r"task 'old-0': column 'a' is NaN in row 0"),
    (
        lambda f: f.assign(c="nope"),
        r"task 'old-0': column 'c' has unknown category 'nope'",
    ),
]


@pytest.mark.parametrize(("corrupt", "match"), BAD_META)
def test_bad_meta_data_fails_at_construction(corrupt, match):
    space = {"a": tune.uniform(0, 5), "c": tune.choice(["x", "y"])}
    frame = _meta_frame().assign(c="x")
    with pytest.raises(MetaDataError, match=match):
        ScaMLGPSearch(
            space, metric=METRIC, mode="max", meta_data=corrupt(frame), **FAST
        )


def test_bad_meta_data_fails_at_set_search_properties_when_space_comes_from_tune():
    searcher = ScaMLGPSearch(
        metric=METRIC, mode="max", meta_data=_meta_frame().assign(a=99.0), **FAST
    )
    with pytest.raises(MetaDataError, match=r"column 'a' has value 99.0"):
        searcher.set_search_properties(METRIC, "max", {"a": tune.uniform(0, 5)})


def test_extra_meta_columns_warn_once():
    frame = _meta_frame().assign(extra=1.0)
    with pytest.warns(UserWarning, match=r"dropped column\(s\) \['extra'\]") as rec:
        ScaMLGPSearch(
            {"a": tune.uniform(0, 5)},
            metric=METRIC,
            mode="max",
            meta_data=frame,
            **FAST,
        )
    assert len(rec) == 1


def _best_regret_after(study, meta_data, trials=10, seed=0):
    from raymeta.search.trainables import family_space, unit_point

    searcher = ScaMLGPSearch(
        family_space(study.family),
        metric="loss",
        mode="min",
        seed=seed,
        meta_data=meta_data,
        restarts=0,
        num_restarts=1,
        raw_samples=128,
        meta_restarts=0,
    )
    best = np.inf
    for i in range(trials):
        config = searcher.suggest(str(i))
        x = unit_point(study.family, config)[None]
        searcher.on_trial_complete(
            str(i), result={"loss": float(study.target(x, study.noise_rng)[0])}
        )
        best = min(best, float(study.target(x)[0]))
    return best - study.target.optimum()


@pytest.mark.slow
def test_warm_start_beats_no_meta_data_on_branin_family():
    # Searcher level, paired over seeds: the same study (meta-tasks, target, noise
    # stream) is tuned with and without its 8 meta-tasks.
    from raymeta.tasks.bo import FAMILIES, draw_study

    with_meta, without = [], []
    for seed in range(4):
        study = draw_study(FAMILIES["branin"], seed=seed, num_meta=8, n_meta=32)
        with_meta.append(_best_regret_after(study, study.meta_tasks, seed=seed))
        study = draw_study(FAMILIES["branin"], seed=seed, num_meta=8, n_meta=32)
        without.append(_best_regret_after(study, None, seed=seed))
    wins = sum(m < w for m, w in zip(with_meta, without))
    assert np.median(with_meta) < np.median(without), (with_meta, without)
    assert wins >= 3, (with_meta, without)


def test_each_trial_is_recorded_once_even_if_the_searcher_lost_track_of_it():
    # Tune's experiment state can be newer than the searcher checkpoint it restores
    # (Tune copies its state files one by one): trials the searcher never suggested
    # still complete, and trials it already recorded may be re-run.
    searcher = ScaMLGPSearch({"a": tune.uniform(0, 5)}, METRIC, "max", seed=0, **FAST)
    searcher.on_trial_complete("unknown", result={METRIC: 1.0, "config": {"a": 2.0}})
    assert searcher.num_observations == 1
    assert searcher.get_state()["X"][0] == pytest.approx([0.4])
    searcher.on_trial_complete("unknown", result={METRIC: 1.0, "config": {"a": 2.0}})
    config = searcher.suggest("known")
    searcher.on_trial_complete("known", result={METRIC: 0.5, "config": config})
    searcher.on_trial_complete("known", result={METRIC: 0.5, "config": config})
    assert searcher.num_observations == 2  # no duplicate of either trial
    searcher.on_trial_complete("alien", result={METRIC: 1.0, "config": {"a": 9.0}})
    assert searcher.num_observations == 2  # outside the space: ignored
    retried = searcher.suggest("retried")
    searcher.on_trial_complete("retried", error=True)  # Tune may re-run it ...
    searcher.on_trial_complete("retried", result={METRIC: 0.1, "config": retried})
    assert searcher.num_observations == 3 and searcher.num_failed == 1


def test_restored_pending_trials_do_not_block_new_suggestions(tmp_path):
    # A restored pending trial may be a ghost Tune never recorded: it must not hold
    # a concurrency slot forever (that hung a restored run), yet its result counts.
    searcher = ScaMLGPSearch({"a": tune.uniform(0, 5)}, METRIC, "max", seed=0, **FAST)
    searcher.set_max_concurrency(1)
    searcher.suggest("ghost")
    assert searcher.suggest("blocked") is None
    searcher.save(str(tmp_path / "ckpt.pkl"))
    restored = ScaMLGPSearch()
    restored.restore(str(tmp_path / "ckpt.pkl"))
    assert restored.suggest("next") is not None
    assert restored.suggest("over") is None  # "next" holds the one slot
    restored.on_trial_complete("ghost", result={METRIC: 1.0})
    assert restored.num_observations == 1 and restored.pending_trials == ["next"]


def test_reconcile_aligns_a_restored_searcher_with_tunes_trials():
    from types import SimpleNamespace as Trial

    searcher = ScaMLGPSearch({"a": tune.uniform(0, 5)}, METRIC, "max", seed=0, **FAST)
    searcher.suggest("ghost")  # suggested, but Tune never recorded it
    # "done-unseen" was suggested and finished after this searcher's checkpoint
    done = Trial(
        trial_id="done-unseen",
        status="TERMINATED",
        config={"a": 1.0},
        last_result={METRIC: 2.0},
    )
    running = Trial(trial_id="running", status="RUNNING", config={"a": 4.0})
    errored = Trial(trial_id="err", status="ERROR", config={"a": 3.0})
    searcher.reconcile([done, running, errored])
    assert searcher.num_observations == 1
    assert searcher.get_state()["X"][0] == pytest.approx([0.2])
    assert sorted(searcher.pending_trials) == ["running"]
    searcher.reconcile([done, running, errored])  # idempotent
    assert searcher.num_observations == 1


@pytest.mark.slow
def test_one_row_meta_tasks_are_left_out_with_one_warning():
    # Two good meta-tasks put the first suggestion at their optimum (0.7); 20
    # one-row tasks from the same function used to move it to the worst point (1.0).
    grid = np.linspace(0, 1, 12)
    good = pd.DataFrame(
        [
            {"task_id": t, "x": x, "loss": (x - 0.7) ** 2 + off}
            for t, off in (("a", 0.0), ("b", 0.05))
            for x in grid
        ]
    )
    xs = np.random.default_rng(0).uniform(0, 1, 20)
    tiny = pd.DataFrame(
        {"task_id": [f"one-{i}" for i in range(20)], "x": xs, "loss": (xs - 0.7) ** 2}
    )

    def first(meta):
        searcher = ScaMLGPSearch(
            {"x": tune.uniform(0, 1)}, metric="loss", mode="min", meta_data=meta
        )
        return searcher.suggest("1")["x"]

    alone = first(good)
    with pytest.warns(
        UserWarning, match=r"left out 20 meta-task\(s\) with fewer than 3"
    ):
        with_tiny = first(pd.concat([good, tiny]))
    assert abs(alone - 0.7) < 0.05
    assert with_tiny == alone
