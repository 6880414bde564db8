from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
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


# ---- names, encodings and searcher options (issue: names that cannot escape) ----

CONFIGS = Path(__file__).resolve().parents[2] / "jobs" / "configs"
SAMA_TINY = CONFIGS / "sama_tiny.toml"


def _toml(tmp_path, text: str):
    path = tmp_path / "c.toml"
    path.write_text(text)
    return path


@pytest.mark.parametrize(
    ("job", "key", "value"),
    [
        ("sama", "run_name", "../../x"),
        ("sama", "experiment", "../escaped"),
        ("hetrom", "run_name", "/abs"),
        ("hetrom", "experiment", "a/b"),
        ("tune_scamlgp", "experiment", "../escaped-tune"),
    ],
)
def test_validate_refuses_names_that_escape(tmp_path, job, key, value):
    section = "" if job == "tune_scamlgp" else "[storage]\n"
    path = _toml(tmp_path, f'job = "{job}"\n{section}{key} = "{value}"\n')
    with pytest.raises(ConfigError, match=r"name '.*' is not allowed"):
        load_config(path)


def test_extra_meta_experiments_are_checked_one_by_one(tmp_path):
    path = _toml(
        tmp_path, 'job = "tune_scamlgp"\nextra_meta_experiments = ["ok", "../x"]\n'
    )
    with pytest.raises(ConfigError, match=r"extra_meta_experiments\[1\]"):
        load_config(path)


def test_overridden_run_name_is_checked_before_anything_runs():
    from raymeta.runner import with_overrides

    cfg = load_config(SAMA_TINY)
    for bad in ("../escaped", "/tmp/anywhere"):
        with pytest.raises(ConfigError, match="run name"):
            with_overrides(cfg, run_name=bad)
    assert with_overrides(cfg, run_name="fine-1").run_name == "fine-1"


def test_run_name_is_refused_for_a_tuning_job():
    from raymeta.runner import with_overrides

    cfg = load_config(CONFIGS / "tune_scamlgp_tiny.toml")
    with pytest.raises(ConfigError, match="--run-name does not apply"):
        with_overrides(cfg, run_name="x")


def test_a_config_built_in_code_is_checked_by_the_library_before_training():
    import dataclasses

    from raymeta.training import preflight

    cfg = load_config(SAMA_TINY)
    storage = dataclasses.replace(cfg.storage, experiment="../escaped")
    with pytest.raises(ConfigError, match="experiment name '../escaped'"):
        preflight(dataclasses.replace(cfg, storage=storage))


def test_non_utf8_config_names_the_file_and_the_byte_offset(tmp_path):
    path = tmp_path / "latin1.toml"
    path.write_bytes('job = "sama"\nexperiment = "caf\xe9"\n'.encode("latin-1"))
    with pytest.raises(ConfigError, match=r"latin1.toml: not UTF-8 .*offset 30"):
        load_config(path)


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("raw_samples = 0", "raw_samples: must be an integer >= 1"),
        ("num_restarts = 0", "num_restarts: must be an integer >= 1"),
        ("beta = nan", "beta: must be a finite number > 0, got nan"),
        ("fit_num_cpus = nan", "fit_num_cpus: must be a finite number >= 0"),
        ("min_task_points = 0", "min_task_points: must be an integer >= 1"),
        ("raw_samples = 2\nnum_restarts = 4", "raw_samples: must be >= num_restarts"),
    ],
)
def test_tune_config_rejects_searcher_options_that_would_make_it_random(
    tmp_path, line, message
):
    path = _toml(tmp_path, f'job = "tune_scamlgp"\n{line}\n')
    with pytest.raises(ConfigError, match=message):
        load_config(path)


def test_tune_config_rejects_an_unknown_acquisition(tmp_path):
    path = _toml(tmp_path, 'job = "tune_scamlgp"\nacquisition = "bogus"\n')
    with pytest.raises(ConfigError, match="acquisition: expected one of"):
        load_config(path)


def test_an_old_flat_training_config_gets_one_error_showing_the_new_shape(tmp_path):
    path = _toml(
        tmp_path,
        'job = "sama"\nsteps = 5\ndataset = "blobs"\nbase_lr = 0.1\n'
        'num_workers = 2\nrun_name = "r"\nhidden = []\n',
    )
    with pytest.raises(ConfigError, match="1 problem") as err:
        load_config(path)
    text = str(err.value)
    assert "belong in sections now" in text
    for line in ("steps = 5", "[data]", 'dataset = "blobs"', "[optim]", "lr = 0.1"):
        assert line in text
    assert "[scaling]\n    num_workers = 2" in text
    assert '[storage]\n    run_name = "r"' in text
    # the shown shape is itself a valid config
    shown = text.split("new shape:\n", 1)[1]
    fixed = _toml(tmp_path, "\n".join(s.strip() for s in shown.splitlines()))
    assert load_config(fixed).optim.lr == 0.1


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('[optim]\nname = "rmsprop"', "optim.name: expected one of ['sgd', 'adam'"),
        ("[scaling]\nnum_workrs = 2", "did you mean 'num_workers'"),
        ("[model]\nfactory = 'resnet'", "model.factory: expected one of"),
        ('[model]\nprecision = "bf16"\ndtype = "float64"', "bf16 autocast needs"),
        ("[optim]\nnesterov = true\ndampening = 0.5", "optim.nesterov: needs"),
        ('[data]\nkwargs = "x"', "data.kwargs: expected a table"),
    ],
)
def test_section_problems_are_named_with_their_section(tmp_path, text, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        load_config(_toml(tmp_path, f'job = "sama"\n{text}\n'))


def test_override_reaches_into_sections_and_rechecks():
    from raymeta.config import override

    cfg = load_config(SAMA_TINY)
    out = override(cfg, {"steps": 3, "scaling.num_workers": 2, "optim.lr": 0.5})
    assert (out.steps, out.scaling.num_workers, out.optim.lr) == (3, 2, 0.5)
    assert out.data == cfg.data and cfg.scaling.num_workers == 0
    with pytest.raises(ConfigError, match="unknown keys"):
        override(cfg, {"scalng.num_workers": 2})
    with pytest.raises(ConfigError, match="optim.lr: must be > 0"):
        override(cfg, {"optim.lr": -1.0})


@pytest.mark.parametrize(
    "lines, message",
    [
        ('family = "fcnett"', "family: expected one of .*'fcnet'"),
        ('family = "fcnet"', "target: the fcnet target dataset, one of"),
        ('family = "fcnet"\ntarget = "naval"', "got 'naval'"),
        ('family = "branin"\ntarget = "naval_propulsion"', "only for the tabular"),
    ],
)
def test_tune_config_checks_the_family_and_target(tmp_path, lines, message):
    path = _toml(tmp_path, f'job = "tune_scamlgp"\n{lines}\n')
    with pytest.raises(ConfigError, match=message):
        load_config(path)


def test_the_fcnet_job_config_is_valid():
    cfg = load_config(CONFIGS / "tune_scamlgp_fcnet.toml")
    assert cfg.family == "fcnet" and cfg.target == "protein_structure"


def test_the_hpobench_mlp_job_config_is_the_noisy_variant():
    cfg = load_config(CONFIGS / "tune_scamlgp_hpobench_mlp.toml")
    assert (cfg.family, cfg.target, cfg.noisy, cfg.n_meta) == (
        "hpobench_mlp",
        "car",
        True,
        128,
    )
