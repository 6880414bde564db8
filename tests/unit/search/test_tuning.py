"""Searcher construction by name, the timing wrapper, and the shipped job configs."""

from __future__ import annotations

from pathlib import Path

import pytest
from ray import tune

from raymeta.config import TuneScaMLGPConfig, load_config, parse_config
from raymeta.errors import ConfigError
from raymeta.search.searcher import ScaMLGPSearch
from raymeta.search.tuning import SEARCHERS, TimedSearcher, build_searcher

CONFIGS = Path(__file__).resolve().parents[3] / "jobs" / "configs"


@pytest.mark.parametrize("name", ["tune_scamlgp_branin.toml", "tune_scamlgp_tiny.toml"])
def test_shipped_configs_load(name):
    cfg = load_config(CONFIGS / name)
    assert isinstance(cfg, TuneScaMLGPConfig)
    assert set(cfg.searcher_options()) <= set(
        ScaMLGPSearch.__init__.__code__.co_varnames
    )


def test_config_problems_are_collected():
    with pytest.raises(ConfigError, match=r"(?s)family: expected one of.*num_samples"):
        parse_config({"job": "tune_scamlgp", "family": "nope", "num_samples": 0})


@pytest.mark.parametrize("name", SEARCHERS)
def test_build_searcher_by_name(name):
    searcher = build_searcher(name, metric="loss", mode="min", seed=0)
    assert searcher.metric == "loss" and searcher.mode == "min"


def test_build_searcher_rejects_unknown_names():
    with pytest.raises(ConfigError, match=r"unknown searcher 'hyperopt'"):
        build_searcher("hyperopt", metric="loss", mode="min", seed=0)


def test_timed_searcher_forwards_and_times():
    inner = ScaMLGPSearch(
        metric="loss", mode="min", restarts=0, num_restarts=1, raw_samples=32
    )
    timed = TimedSearcher(inner)
    assert timed.set_search_properties(None, None, {"x": tune.uniform(0, 1)})
    config = timed.suggest("1")
    timed.on_trial_complete("1", result={"loss": config["x"]})
    assert inner.num_observations == 1 and len(timed.suggest_seconds) == 1


def test_an_experiment_that_escapes_the_storage_path_touches_nothing(tmp_path):
    from raymeta.errors import InvalidNameError
    from raymeta.search.tuning import run_family_tuning
    from raymeta.tasks.bo import FAMILIES, draw_study

    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / ".x.tmp").write_text("a temporary the resume helpers would delete")
    study = draw_study(FAMILIES["branin"], seed=0, num_meta=1, n_meta=4)
    with pytest.raises(InvalidNameError, match="experiment name '../outside'"):
        run_family_tuning(
            study,
            searcher=None,
            experiment="../outside",
            storage_path=str(tmp_path / "runs"),
            num_samples=1,
        )
    assert [p.name for p in outside.iterdir()] == [".x.tmp"]
    assert not (tmp_path / "runs").exists()
