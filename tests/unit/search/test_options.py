"""Searcher options are validated once, at construction, with the allowed range."""

from __future__ import annotations

import numpy as np
import pytest
from ray import tune

from raymeta.errors import SearcherSetupError
from raymeta.search.options import SearcherOptions
from raymeta.search.searcher import ScaMLGPSearch


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"acquisition": "bogus"}, r"acquisition: expected one of \['ucb', 'ei'"),
        ({"raw_samples": 0}, "raw_samples: must be an integer >= 1"),
        ({"num_restarts": 0}, "num_restarts: must be an integer >= 1"),
        ({"beta": float("nan")}, "beta: must be a finite number > 0, got nan"),
        ({"beta": -1.0}, "beta: must be a finite number > 0"),
        ({"fit_num_cpus": float("nan")}, "fit_num_cpus: must be a finite number >= 0"),
        ({"restarts": True}, "restarts: must be an integer >= 0, got True"),
        ({"restarts": 2.5}, "restarts: must be an integer >= 0"),
        ({"num_threads": 0}, "num_threads: must be an integer >= 1"),
        ({"raw_samples": 2, "num_restarts": 4}, "raw_samples: must be >= num_restarts"),
    ],
)
def test_bad_options_are_refused_at_construction(options, message):
    with pytest.raises(SearcherSetupError, match=message):
        ScaMLGPSearch({"x": tune.uniform(0, 1)}, metric="m", mode="min", **options)


def test_every_problem_is_reported_at_once():
    with pytest.raises(SearcherSetupError, match="beta.*raw_samples"):
        SearcherOptions(beta=float("inf"), raw_samples=-3)


def test_numpy_scalars_are_accepted_and_stored_as_python_numbers():
    options = SearcherOptions(raw_samples=np.int64(64), beta=np.float32(4.0))
    assert options.raw_samples == 64 and type(options.raw_samples) is int
    assert type(options.beta) is float


def test_a_checkpoint_without_newer_options_restores_their_defaults():
    old = SearcherOptions().as_dict()
    del old["min_task_points"]
    assert SearcherOptions.from_mapping(old) == SearcherOptions()
    with pytest.raises(SearcherSetupError, match="unknown option"):
        SearcherOptions.from_mapping({**old, "bogus": 1})


def test_the_tune_config_defaults_are_the_searchers_defaults():
    from raymeta.config import TuneScaMLGPConfig

    config = TuneScaMLGPConfig().searcher_options()
    defaults = SearcherOptions().as_dict()
    assert config == {k: defaults[k] for k in config}
