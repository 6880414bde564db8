"""convert_search_space: every supported domain round-trips; unsupported ones fail."""

from __future__ import annotations

import numpy as np
import pytest
from ray import tune

from raymeta.errors import SearchSpaceError
from raymeta.search.space import (
    convert_search_space,
    flatten_config,
    ordinal,
    unflatten_config,
)

# name -> (domain, python type of decoded values, number of distinct values or None)
DOMAINS = {
    "uniform": (tune.uniform(-2.0, 3.0), float, None),
    "loguniform": (tune.loguniform(1e-4, 1e-1), float, None),
    "quniform": (tune.quniform(0.0, 0.3, 0.1), float, 4),
    "qloguniform": (tune.qloguniform(1e-3, 1.0, 1e-3), float, None),
    "randint": (tune.randint(3, 7), int, 4),
    "qrandint": (tune.qrandint(2, 20, 3), int, 6),
    "lograndint": (tune.lograndint(1, 100), int, 99),
    "qlograndint": (tune.qlograndint(4, 64, 4), int, 16),
    "choice": (tune.choice(["a", "b", 3]), None, 3),
    "ordinal_log": (ordinal([8, 16, 32, 64], log=True), int, 4),
    "ordinal": (ordinal([0.0, 0.3, 0.6]), float, 3),
}


def _space():
    spec = {name: dom for name, (dom, _, _) in DOMAINS.items()}
    spec["nested"] = {"inner": tune.uniform(0, 1), "const": 7}
    spec["top_const"] = "x"
    return spec


def test_dimension_counts_one_hot_columns():
    space = convert_search_space(_space())
    # 8 numeric + 3 one-hot + 2 ordinal + nested/inner
    assert space.dim == 14
    assert "nested/inner" in space.names
    assert space.constants == {"nested/const": 7, "top_const": "x"}


def test_every_decoded_point_is_inside_the_space():
    spec = _space()
    space = convert_search_space(spec)
    rng = np.random.default_rng(0)
    points = rng.random((2000, space.dim))
    # the cube's corners must decode inside too
    points = np.vstack([points, np.zeros(space.dim), np.ones(space.dim)])
    configs = [space.decode(x) for x in points]
    for name, (domain, kind, distinct) in DOMAINS.items():
        values = [c[name] for c in configs]
        assert all(domain.is_valid(v) for v in values), name
        if kind is not None:
            assert all(type(v) is kind for v in values), name
        if distinct is not None:
            assert len({repr(v) for v in values}) == distinct, name
    assert all(c["nested/const"] == 7 and c["top_const"] == "x" for c in configs)


def test_upper_bounds_follow_tune_conventions():
    space = convert_search_space(
        {
            "r": tune.randint(0, 3),
            "q": tune.qrandint(0, 9, 3),
            "f": tune.quniform(0, 1, 0.25),
        }
    )
    rng = np.random.default_rng(1)
    configs = [space.decode(rng.random(space.dim)) for _ in range(500)]
    assert {c["r"] for c in configs} == {0, 1, 2}  # randint: upper exclusive
    assert {c["q"] for c in configs} == {0, 3, 6, 9}  # qrandint: upper inclusive
    assert {c["f"] for c in configs} == {0.0, 0.25, 0.5, 0.75, 1.0}


def test_encode_decode_round_trip_and_canonical_is_idempotent():
    space = convert_search_space(_space())
    rng = np.random.default_rng(2)
    for _ in range(200):
        config = space.decode(rng.random(space.dim))
        x = space.encode(config)
        assert np.all((x >= 0) & (x <= 1))
        assert space.decode(x) == config
        np.testing.assert_array_equal(space.canonical(x), x)


def test_encode_accepts_nested_configs():
    space = convert_search_space({"a": {"b": tune.uniform(0, 2)}})
    np.testing.assert_allclose(space.encode({"a": {"b": 1.5}}), [0.75])
    np.testing.assert_allclose(space.encode({"a/b": 0.5}), [0.25])


def test_flatten_and_unflatten_are_inverse():
    nested = {"a": {"b": 1, "c": {"d": "x"}}, "e": [1, 2]}
    flat = flatten_config(nested)
    assert flat == {"a/b": 1, "a/c/d": "x", "e": [1, 2]}
    assert unflatten_config(flat) == nested


@pytest.mark.parametrize(
    ("spec", "match"),
    [
        ({"f": tune.sample_from(lambda _: 1)}, r"'f'.*sample_from.*supported: uniform"),
        ({"g": tune.grid_search([1, 2])}, r"'g'.*grid_search.*supported: uniform"),
        ({"n": tune.randn(0, 1)}, r"'n'.*Normal.*supported: uniform"),
        ({"o": {"q": tune.qrandn(0, 1, 0.1)}}, r"'o/q'.*Normal"),
        ({"l": [tune.uniform(0, 1)]}, r"'l'.*list holding domains"),
        ({"a/b": tune.uniform(0, 1)}, r"'a/b'.*contains '/'"),
        ({"e": tune.qrandint(1, 2, 5)}, r"'e'.*holds no value"),
    ],
)
def test_unsupported_domains_are_rejected_naming_key_and_domain(spec, match):
    with pytest.raises(SearchSpaceError, match=match):
        convert_search_space(spec)


def test_encode_rejects_values_outside_the_space():
    space = convert_search_space({"x": tune.uniform(0, 1), "c": tune.choice(["a"])})
    with pytest.raises(SearchSpaceError, match=r"'x': value 2.0 is outside"):
        space.encode({"x": 2.0, "c": "a"})
    with pytest.raises(SearchSpaceError, match=r"'c': value 'z' is outside"):
        space.encode({"x": 0.5, "c": "z"})
    with pytest.raises(SearchSpaceError, match=r"no value for parameter 'c'"):
        space.encode({"x": 0.5})


def test_ordinal_is_one_ordered_column_in_value_or_log_spacing():
    space = convert_search_space(
        {
            "batch": ordinal([8, 16, 32, 64], log=True),
            "lr": ordinal([5e-4, 1e-3, 1e-1], log=True),
        }
    )
    assert space.dim == 2
    np.testing.assert_allclose(space.encode({"batch": 16, "lr": 1e-3})[0], 1 / 3)
    lr_coords = np.log([5e-4, 1e-3, 1e-1]) - np.log(5e-4)
    np.testing.assert_allclose(
        space.encode({"batch": 8, "lr": 1e-3})[1], lr_coords[1] / lr_coords[2]
    )
    assert space.decode(np.array([0.2, 0.0]))["batch"] == 16  # nearest grid value
    assert space.decode(np.array([0.0, 0.9]))["lr"] == 1e-1
    with pytest.raises(SearchSpaceError, match="outside its domain ordinal"):
        space.encode({"batch": 12, "lr": 1e-3})


def test_ordinal_is_a_choice_for_other_searchers():
    from ray.tune.search.optuna.optuna_search import OptunaSearch
    from ray.tune.search.sample import Categorical

    domain = ordinal([1, 2, 3])
    assert isinstance(domain, Categorical) and domain.sample() in (1, 2, 3)
    converted = OptunaSearch.convert_search_space({"depth": domain})
    assert converted["depth"].choices == (1, 2, 3)


@pytest.mark.parametrize(
    "values, log, match",
    [
        ([1], False, "at least two numbers"),
        ([1, "a"], False, "at least two numbers"),
        ([2, 1], False, "strictly increasing"),
        ([0, 1], True, "must be > 0"),
    ],
)
def test_bad_ordinal_grids_are_rejected(values, log, match):
    with pytest.raises(SearchSpaceError, match=match):
        ordinal(values, log=log)
