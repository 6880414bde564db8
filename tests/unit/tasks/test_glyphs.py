"""The rendered glyph family: classes, determinism, splits, balance, real ink."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from raymeta.errors import EpisodeError
from raymeta.tasks.fewshot import build_task_family
from raymeta.tasks.glyphs import (
    MIN_FACES,
    glyph_classes,
    glyph_classification,
    glyph_split,
    outlier_images,
    render_example,
    split_classes,
)


def test_about_a_thousand_classes_each_in_eight_or_more_faces():
    classes = glyph_classes()
    assert len(classes) >= 1000
    assert min(len(c.faces) for c in classes) >= MIN_FACES
    chars = {c.char for c in classes}
    assert len(chars) == len(classes)
    # look-alikes across scripts are one class; precomposed accents are none
    assert "A" in chars and "\u0391" not in chars and "\u0410" not in chars
    assert "\u00e9" not in chars and "e" in chars
    assert {c.script for c in classes} >= {"LATIN", "GREEK", "CYRILLIC", "SYMBOL"}


def test_examples_are_deterministic_per_seed_class_and_example():
    cls = glyph_classes()[10]
    a = render_example(cls, np.random.default_rng([0, 10, 3]))
    b = render_example(cls, np.random.default_rng([0, 10, 3]))
    c = render_example(cls, np.random.default_rng([0, 10, 4]))
    assert np.array_equal(a, b) and not np.array_equal(a, c)
    assert a.shape == (28, 28) and a.dtype == np.float32


@pytest.mark.parametrize("by", ["character", "script"])
def test_splits_are_disjoint_and_cover_every_class(by):
    classes = glyph_classes()
    parts = split_classes(classes, seed=0, by=by)
    sets = [set(parts[s]) for s in ("train", "val", "test")]
    assert all(sets) and not (
        sets[0] & sets[1] or sets[0] & sets[2] or sets[1] & sets[2]
    )
    assert set().union(*sets) == set(range(len(classes)))
    if by == "script":
        scripts = {s: {classes[i].script for i in parts[s]} for s in parts}
        assert not scripts["train"] & scripts["test"]


def test_a_split_is_balanced_not_blank_and_cached(tmp_path, monkeypatch):
    monkeypatch.setenv("RAYMETA_CACHE", str(tmp_path))
    data = glyph_split("val", seed=1, examples_per_class=3)
    counts = torch.bincount(data.labels)[torch.unique(data.labels)]
    assert set(counts.tolist()) == {3}
    ink = data.features.reshape(len(data), -1)
    assert float(ink.max(1).values.min()) > 0.5  # every image has a stroke
    assert 0.02 < float((ink > 0.5).float().mean()) < 0.5  # not blank, not full
    assert len(list(tmp_path.rglob("*.npy"))) == 1
    again = glyph_split("val", seed=1, examples_per_class=3)
    assert torch.equal(again.features, data.features)


def test_bad_requests_are_clear_errors():
    with pytest.raises(EpisodeError, match="split must be one of"):
        glyph_split("dev", cache=False)
    with pytest.raises(EpisodeError, match="split by must be"):
        split_classes(glyph_classes(), seed=0, by="font")


def test_the_registered_family_draws_five_way_episodes(tmp_path, monkeypatch):
    monkeypatch.setenv("RAYMETA_CACHE", str(tmp_path))
    family = build_task_family(
        "glyphs", ways=5, shots=1, queries=2, split="test", examples_per_class=3
    )
    ep = family.sample_episode(np.random.default_rng(0), outlier=False)
    assert ep.support_x.shape == (5, 28 * 28) and ep.query_x.shape == (10, 28 * 28)


@pytest.mark.parametrize("domain", ["digits", "noise"])
def test_outlier_domains_are_other_images_on_the_glyph_canvas(domain):
    data = outlier_images(domain, seed=0)
    assert data.features.shape[1:] == (28, 28) and data.features.dtype == torch.float32
    assert 0.0 <= float(data.features.min()) and float(data.features.max()) <= 1.0
    assert len(data.classes) >= 10
    assert min(len(rows) for rows in data.class_rows.values()) >= 20
    with pytest.raises(EpisodeError, match="unknown outlier domain 'mnist'"):
        outlier_images("mnist")


def test_glyph_outlier_tasks_come_from_digits(tmp_path, monkeypatch):
    monkeypatch.setenv("RAYMETA_CACHE", str(tmp_path))
    family = build_task_family(
        "glyphs", ways=5, shots=1, queries=2, split="test", examples_per_class=3
    )
    ep = family.sample_episode(np.random.default_rng(0), outlier=True)
    assert ep.support_x.shape == (5, 28 * 28)
    digits = outlier_images("digits").features.reshape(-1, 28 * 28)
    assert all(bool((digits == row).all(1).any()) for row in ep.support_x)


def test_impossible_glyph_episodes_fail_before_training(tmp_path, monkeypatch):
    monkeypatch.setenv("RAYMETA_CACHE", str(tmp_path))
    with pytest.raises(EpisodeError, match="only 285 classes; lower ways"):
        build_task_family("glyphs", ways=300, split="test", examples_per_class=3)
    with pytest.raises(EpisodeError, match="has 3 examples but shots \\+ queries"):
        build_task_family(
            "glyphs", ways=5, shots=2, queries=2, split="test", examples_per_class=3
        )


def test_glyph_classification_sets_are_seeded_balanced_and_relabelled(
    tmp_path, monkeypatch
):
    monkeypatch.setenv("RAYMETA_CACHE", str(tmp_path))
    a = glyph_classification(num_classes=4, examples_per_class=3, seed=0)
    b = glyph_classification(num_classes=4, examples_per_class=3, seed=0)
    c = glyph_classification(num_classes=4, examples_per_class=3, seed=1)
    assert torch.equal(a.features, b.features) and not torch.equal(
        a.features, c.features
    )
    assert a.labels.tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2, 3, 3, 3]
    with pytest.raises(EpisodeError, match="2 <= num_classes"):
        glyph_classification(num_classes=1)
