"""The HeTRoM and SAMA-glyph benchmark settings are valid configs and real splits."""

from __future__ import annotations

import importlib
from pathlib import Path

import pytest
import torch

from raymeta.config import HeTRoMConfig, override

JOBS = Path(__file__).resolve().parents[2] / "jobs"


@pytest.fixture()
def jobs(monkeypatch):
    monkeypatch.syspath_prepend(str(JOBS))
    return importlib.import_module


def test_every_setting_and_method_is_a_valid_config(jobs):
    bench = jobs("bench_hetrom")
    for setting, changes in bench.SETTINGS.items():
        for method, rule in bench.METHODS.items():
            cfg = override(HeTRoMConfig(job="hetrom"), {**changes, **rule})
            assert cfg.rule == rule["rule"], (setting, method)
    glyph = bench.SETTINGS["glyphs-1shot-maml"]
    assert glyph["learner"] == "maml" and glyph["model.factory"] == "conv4"
    assert bench.SETTINGS["glyphs-1shot-protonet-easy"]["data.easy_fraction"] > 0


def test_sama_glyph_splits_are_disjoint_noisy_and_class_balanced(
    jobs, tmp_path, monkeypatch
):
    monkeypatch.setenv("RAYMETA_CACHE", str(tmp_path))
    bench = jobs("bench_sama_reweighting")
    splits, noisy = bench.glyph_splits(seed=0, noise=0.4, classes=3)
    (xt, yt), (xm, ym), (xs, ys) = splits["train"], splits["meta"], splits["test"]
    assert (len(xt), len(xm), len(xs)) == (180, 30, 90)
    assert torch.bincount(ym).tolist() == [10, 10, 10]
    assert torch.bincount(ys).tolist() == [30, 30, 30] and int(yt.max()) == 2
    assert 0.25 < float(noisy.double().mean()) < 0.55
    rows = torch.cat([xt, xm, xs])
    assert len(torch.unique(rows, dim=0)) == len(rows)  # no example in two splits
