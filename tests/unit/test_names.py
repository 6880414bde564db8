from __future__ import annotations

import pytest

from raymeta.errors import InvalidNameError
from raymeta.names import name_problem, validate_name


@pytest.mark.parametrize(
    "name",
    ["../escaped", "/abs/path", "a/b", "..", "a..b", "", ".hidden", "x\n", "a\\b", 3],
)
def test_names_that_could_escape_are_refused(name):
    with pytest.raises(InvalidNameError, match="run name .* is not allowed"):
        validate_name(name, what="run")
    assert name_problem(name, what="run")


@pytest.mark.parametrize("name", ["demo-sama-1", "tune_scamlgp.v2", "exp:a@b, c"])
def test_ordinary_names_pass(name):
    assert validate_name(name, what="experiment") == name
    assert name_problem(name, what="experiment") is None
