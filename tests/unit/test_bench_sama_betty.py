"""The raymeta-vs-Betty SAMA harness: shared problem generation (no Betty needed)."""

from __future__ import annotations

import importlib
import json
from pathlib import Path

import pytest
import torch

JOBS = Path(__file__).resolve().parents[2] / "jobs"


@pytest.fixture()
def harness(monkeypatch):
    monkeypatch.syspath_prepend(str(JOBS))
    return importlib.import_module("bench_sama_betty")


def test_problem_is_deterministic_and_well_formed(harness):
    settings = harness.default_settings(0, 4)
    a, b = harness.build_problem(settings), harness.build_problem(settings)
    for key in ("x_train", "y_train", "base_idx", "meta_idx"):
        assert torch.equal(a[key], b[key])
    for name, t in a["theta"].items():
        assert torch.equal(t, b["theta"][name])
    assert a["base_idx"].shape == (4, 128) and a["meta_idx"].shape == (4, 100)
    n_train, n_meta = len(a["y_train"]), len(a["y_meta"])
    assert int(a["base_idx"].max()) < n_train and int(a["meta_idx"].max()) < n_meta
    assert all(len(set(row.tolist())) == len(row) for row in a["base_idx"])
    other = harness.build_problem(harness.default_settings(1, 4))
    assert not torch.equal(a["base_idx"], other["base_idx"])


def test_mlp_init_uses_only_its_generator(harness):
    before = torch.get_rng_state()
    m1 = harness.bs.build_mlp([64, 8, 3], torch.Generator().manual_seed(3))
    m2 = harness.bs.build_mlp([64, 8, 3], torch.Generator().manual_seed(3))
    assert torch.equal(torch.get_rng_state(), before)
    assert all(torch.equal(p, q) for p, q in zip(m1.parameters(), m2.parameters()))
    assert float(m1[0].weight.detach().abs().max()) <= 1 / 8  # uniform in ±1/sqrt(64)


def test_problem_file_round_trip(harness, tmp_path):
    settings = harness.default_settings(0, 3)
    problem = harness.build_problem(settings)
    path = tmp_path / "p.pt"
    harness.write_problem(path, problem)
    loaded = harness.bs.load_problem(path)
    assert loaded["settings"] == json.loads(json.dumps(settings))
    assert torch.equal(loaded["meta_idx"], problem["meta_idx"])
    model, meta = harness.bs.build_models(loaded)
    assert sum(p.numel() for p in meta.parameters()) == 301


def test_peak_memory_probe_sees_a_step_allocation(harness):
    def step():
        x = torch.ones(1 << 18)  # 1 MiB
        return float(x.sum())

    value, peak = harness.bs.peak_extra_bytes(step)
    assert value == float(1 << 18)
    assert 1 << 20 <= peak < 2 << 20


def test_raymeta_child_snapshots_reproduce_its_step(harness, tmp_path):
    settings = harness.default_settings(0, 3, mem_every=2, warmup=1)
    problem = tmp_path / "p.pt"
    harness.write_problem(problem, harness.build_problem(settings))
    snaps, result = tmp_path / "snaps", tmp_path / "r.json"
    harness.raymeta_train(problem, result, cache=True, snap_dir=snaps)
    out = json.loads(result.read_text())
    assert out["meta_peak_bytes"] and 0.0 <= out["test_acc"] <= 1.0
    saved = sorted(snaps.glob("step*.pt"))
    assert len(saved) == len(settings["probe_steps"])
    blob = harness.bs.load_problem(problem)
    snap = torch.load(saved[0], weights_only=True)
    probe = harness.raymeta_probe(blob, snap, torch.float32)
    assert probe["grads_cache"].shape == (301,)
    assert not torch.equal(probe["grads_cache"], probe["grads_nocache"])
