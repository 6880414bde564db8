from __future__ import annotations

from pathlib import Path

import pytest
import torch

from raymeta.config import HeTRoMConfig, load_config, override, parse_config
from raymeta.errors import ConfigError
from raymeta.metalearn.heads import LinearHead, ProtoNetHead
from raymeta.metalearn.hetrom import DualThresholds
from raymeta.metalearn.learners import ANIL, MAML
from raymeta.training.hetrom_program import (
    build_hetrom_components,
    evaluate_components,
    train_hetrom_in_process,
)

CONFIGS = Path(__file__).resolve().parents[3] / "jobs" / "configs"


@pytest.mark.parametrize(
    "name", ["hetrom_gaussian.toml", "hetrom_tiny.toml", "hetrom_glyphs.toml"]
)
def test_shipped_configs_validate(name: str) -> None:
    cfg = load_config(CONFIGS / name)
    assert isinstance(cfg, HeTRoMConfig) and cfg.job == "hetrom"


def test_bad_configs_list_every_problem() -> None:
    with pytest.raises(ConfigError, match="3 problem") as err:
        parse_config(
            {
                "job": "hetrom",
                "m": 20,
                "k": 20,
                "tasks_per_batch": 10,
                "scaling": {"num_workers": 3},
            }
        )
    assert "need 0 <= m < k" in str(err.value)
    assert "k: must be <= tasks_per_batch=10, got 20" in str(err.value)
    assert "must be divisible by scaling.num_workers=3" in str(err.value)
    with pytest.raises(ConfigError, match="k: must be <= tasks_per_batch=10"):
        parse_config({"job": "hetrom", "m": 2, "k": 12, "tasks_per_batch": 10})
    with pytest.raises(ConfigError, match="did you mean 'shots'"):
        parse_config({"job": "hetrom", "data": {"shot": 1}})
    with pytest.raises(ConfigError, match="head: unknown key; did you mean 'learner'"):
        parse_config({"job": "hetrom", "head": "protonet"})
    with pytest.raises(ConfigError, match="learner") as err:
        parse_config({"job": "hetrom", "learner": "mamll"})
    assert "'maml'" in str(err.value)
    with pytest.raises(ConfigError, match="model.factory"):
        parse_config({"job": "hetrom", "model": {"factory": "resnet13"}})
    with pytest.raises(ConfigError, match="noisy \\+ outlier \\+ easy <= 1"):
        parse_config(
            {"job": "hetrom", "data": {"noisy_fraction": 0.5, "easy_fraction": 0.6}}
        )


def tiny(**changes) -> HeTRoMConfig:
    cfg = load_config(CONFIGS / "hetrom_tiny.toml")
    assert isinstance(cfg, HeTRoMConfig)
    return override(cfg, {"scaling.num_workers": 0, **changes})


def test_components_follow_the_config() -> None:
    c = build_hetrom_components(tiny())
    head = c.learner.head
    assert isinstance(head, LinearHead) and head.out_features == 3
    assert isinstance(c.objective.rule, DualThresholds)
    assert c.train_stream.noisy_fraction == 0.25 and c.test_stream.noisy_fraction == 0
    proto = build_hetrom_components(tiny(learner="protonet"))
    assert isinstance(proto.learner.head, ProtoNetHead)
    sine = build_hetrom_components(
        tiny(**{"data.dataset": "sinusoid", "data.shots": 5, "data.queries": 5})
    )
    assert sine.learner.problem == "regression"
    assert sine.learner.backbone.net[0].in_features == 1
    anil = build_hetrom_components(tiny(learner="anil"))
    assert isinstance(anil.learner, ANIL) and anil.learner.weight.shape == (8, 3)
    assert any(
        p is anil.learner.weight
        for g in anil.optimizer.param_groups
        for p in g["params"]
    )  # the head initialisation is meta-learned
    maml = build_hetrom_components(tiny(learner="maml", inner_steps=1))
    assert isinstance(maml.learner, MAML)
    assert maml.learner.network[-1].out_features == 3  # the network emits logits


def test_in_process_training_is_deterministic_and_records_every_step() -> None:
    records = []
    a = train_hetrom_in_process(tiny(), on_step=records.append)
    b = train_hetrom_in_process(tiny())
    assert [r.step for r in records] == list(range(6))
    assert all(r.selection.selected.all() for r in records[:2])  # warm-up
    for p, q in zip(a.learner.parameters(), b.learner.parameters()):
        assert torch.equal(p, q)
    assert a.objective.state_dict() == b.objective.state_dict()
    mean, ci = evaluate_components(a, test_tasks=20)
    assert 0.0 <= mean <= 1.0 and ci >= 0.0


def test_impossible_episodes_fail_in_preflight_before_any_worker() -> None:
    from raymeta.errors import EpisodeError
    from raymeta.training.fit import preflight

    digits = {"data.dataset": "digits"}
    with pytest.raises(EpisodeError, match="only 10 classes; lower ways to <= 10"):
        preflight(tiny(**digits, **{"data.ways": 11}))
    with pytest.raises(EpisodeError, match="shots \\+ queries = 100 \\+ 100"):
        preflight(tiny(**digits, **{"data.shots": 100, "data.queries": 100}))


def test_a_model_of_the_wrong_width_fails_in_preflight() -> None:
    from raymeta.errors import TrainingSetupError
    from raymeta.training.fit import preflight

    wrong = {
        "learner": "anil",
        "model.factory": "tests.unit.training.byo_fixtures:mlp16",
    }
    with pytest.raises(TrainingSetupError, match="embedding_dim=8 features"):
        preflight(tiny(**wrong))
