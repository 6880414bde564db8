from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from raymeta.errors import EpisodeError
from raymeta.tasks.fewshot import EpisodeStream, build_task_family
from raymeta.tasks.imagefolder import list_image_classes, load_image_folder


@pytest.fixture
def image_tree(tmp_path: Path) -> Path:
    """4 classes x 3 tiny PNGs; class c has mean brightness ~ 50 * (c + 1)."""
    rng = np.random.default_rng(0)
    for c in range(4):
        folder = tmp_path / f"char_{c:02d}"
        folder.mkdir()
        for i in range(3):
            pixels = np.clip(50 * (c + 1) + rng.integers(-5, 5, (10, 12)), 0, 255)
            Image.fromarray(pixels.astype(np.uint8), mode="L").save(folder / f"{i}.png")
    (tmp_path / "char_00" / "notes.txt").write_text("not an image")
    (tmp_path / "empty").mkdir()
    return tmp_path


def test_loads_one_class_per_folder(image_tree: Path) -> None:
    assert list_image_classes(image_tree) == [f"char_{c:02d}" for c in range(4)]
    data = load_image_folder(image_tree, size=8)
    assert data.features.shape == (12, 8, 8)
    assert data.labels.tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2, 3, 3, 3]
    means = [float(data.features[data.labels == c].mean()) for c in range(4)]
    assert means == sorted(means) and 0.0 <= min(means) and max(means) <= 1.0
    assert abs(means[0] - 50 / 255) < 0.03


def test_image_folder_family_draws_episodes(image_tree: Path) -> None:
    family = build_task_family(
        "image_folder", root=str(image_tree), ways=3, shots=1, queries=2, size=8
    )
    batch = EpisodeStream(family=family, tasks_per_batch=2, seed=0).batch(0)
    assert batch.support_x.shape == (2, 3, 64) and batch.query_x.shape == (2, 6, 64)


def test_too_many_shots_for_the_fixture_is_rejected(image_tree: Path) -> None:
    with pytest.raises(EpisodeError, match="has 3 examples but shots"):
        build_task_family(
            "image_folder", root=str(image_tree), ways=2, shots=2, queries=2
        )


def test_missing_root_and_bad_image_are_clear_errors(image_tree: Path) -> None:
    with pytest.raises(EpisodeError, match="is not a directory"):
        load_image_folder(image_tree / "nope")
    with pytest.raises(EpisodeError, match="no class folders"):
        load_image_folder(image_tree / "empty")
    (image_tree / "char_01" / "broken.png").write_bytes(b"not a png")
    with pytest.raises(EpisodeError, match="cannot read image .*broken.png"):
        load_image_folder(image_tree)


def test_rgb_mode_keeps_three_channels(image_tree: Path) -> None:
    data = load_image_folder(image_tree, size=4, grayscale=False)
    assert data.features.shape == (12, 3, 4, 4) and data.features.dtype == torch.float32
