"""ResNet-12: the standard layout, the builder, seeded initialisation."""

from __future__ import annotations

import pytest
import torch

from raymeta.config import ModelSection
from raymeta.errors import TrainingSetupError
from raymeta.metalearn.models import build_model
from raymeta.metalearn.resnet import ResNet12


def test_the_default_widths_are_the_few_shot_resnet12() -> None:
    net = ResNet12(28, 64)
    convs = [m for m in net.modules() if isinstance(m, torch.nn.Conv2d)]
    assert len([c for c in convs if c.kernel_size == (3, 3)]) == 12
    assert [b.shortcut[0].out_channels for b in net.blocks] == [64, 160, 320, 640]
    # the published ResNet-12 has about 12.4M parameters
    assert 12.0e6 < sum(p.numel() for p in net.parameters()) < 12.6e6


def test_builder_makes_identical_nets_per_seed_and_trains() -> None:
    section = ModelSection(factory="resnet12", kwargs={"channels": [4, 6, 8, 8]})
    a = build_model(section, in_shape=(784,), out_features=5, seed=3)
    b = build_model(section, in_shape=(784,), out_features=5, seed=3)
    c = build_model(section, in_shape=(784,), out_features=5, seed=4)
    for p, q in zip(a.parameters(), b.parameters()):
        assert torch.equal(p, q)
    assert not torch.equal(a.project.weight, c.project.weight)
    x = torch.rand(6, 28, 28, generator=torch.Generator().manual_seed(0))
    out = a(x)
    assert out.shape == (6, 5)
    out.square().sum().backward()
    assert all(p.grad is not None for p in a.parameters())


def test_non_square_inputs_are_rejected() -> None:
    with pytest.raises(TrainingSetupError, match="needs square grey images"):
        build_model(
            ModelSection(factory="resnet12"), in_shape=(30,), out_features=5, seed=0
        )
