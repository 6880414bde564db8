from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import pytest

from raymeta.config import JobConfig, load_config, parse_section, register_job_config
from raymeta.errors import ConfigError


@dataclass(frozen=True, kw_only=True)
class Inner:
    lr: float = 0.1
    kind: Literal["sgd", "adam"] = "sgd"


@register_job_config("toy-test")
@dataclass(frozen=True, kw_only=True)
class ToyConfig(JobConfig):
    steps: int
    name: str = "x"
    ratio: float | None = None
    widths: list[int] | None = None
    optim: Inner = Inner()

    def problems(self) -> list[str]:
        return [f"steps: must be positive, got {self.steps}"] if self.steps <= 0 else []


def test_valid_toml_round_trip(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text(
        'job = "toy-test"\nsteps = 3\nratio = 1\nwidths = [4, 8]\n'
        '[optim]\nkind = "adam"\n'
    )
    cfg = load_config(path)
    assert cfg == ToyConfig(
        job="toy-test", steps=3, ratio=1.0, widths=[4, 8], optim=Inner(kind="adam")
    )


def test_every_problem_is_reported_at_once():
    data = {
        "job": "toy-test",
        "stpes": 3,
        "name": 5,
        "optim": {"kind": "rmsprop", "lr": "hi"},
    }
    with pytest.raises(ConfigError) as err:
        parse_section(ToyConfig, data, source="c.toml")
    text = str(err.value)
    assert "5 problem(s)" in text and "c.toml" in text
    assert "stpes: unknown key; did you mean 'steps'?" in text
    assert "steps: required key is missing" in text
    assert "name: expected str, got 5" in text
    assert "optim.kind: expected one of ['sgd', 'adam'], got 'rmsprop'" in text
    assert "optim.lr: expected float, got 'hi'" in text


def test_cross_field_checks_run_after_types():
    with pytest.raises(ConfigError, match="steps: must be positive, got 0"):
        parse_section(ToyConfig, {"job": "toy-test", "steps": 0}, source="c")


def test_bool_is_not_an_int():
    with pytest.raises(ConfigError, match="steps: expected int, got boolean True"):
        parse_section(ToyConfig, {"steps": True}, source="c")


def test_unknown_job_and_missing_file(tmp_path):
    bad = tmp_path / "b.toml"
    bad.write_text('job = "nope"\n')
    with pytest.raises(ConfigError, match="'job' must be one of .*got 'nope'"):
        load_config(bad)
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "missing.toml")
    bad.write_text("job = \n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(bad)
