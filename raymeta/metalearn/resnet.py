"""ResNet-12, the few-shot backbone of TADAM / MetaOptNet, for square grey images.

Four residual blocks, each three Conv3x3-BatchNorm(-LeakyReLU 0.1) layers with a
Conv1x1-BatchNorm shortcut, a LeakyReLU after the sum and a 2x2 max-pool, at widths
``(64, 160, 320, 640)`` by default; then global average pooling and a linear
projection to ``out_features``. A 28x28 glyph shrinks 28 -> 14 -> 7 -> 3 -> 1.
BatchNorm behaves as in :class:`~raymeta.metalearn.models.SmallCNN` (batch
statistics in train mode, which episodic training keeps).

Example:
    >>> net = ResNet12(28, 16, channels=(8, 8, 8, 8))
    >>> net(torch.zeros(3, 784)).shape
    torch.Size([3, 16])
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

__all__ = ["ResidualBlock", "ResNet12"]


def _conv_bn(a: int, b: int, kernel: int, dtype: torch.dtype) -> list[nn.Module]:
    conv = nn.Conv2d(a, b, kernel, padding=kernel // 2, bias=False, dtype=dtype)
    return [conv, nn.BatchNorm2d(b, dtype=dtype)]


class ResidualBlock(nn.Module):
    """Three 3x3 conv-BN layers plus a 1x1 conv-BN shortcut, LeakyReLU, max-pool."""

    def __init__(self, in_ch: int, out_ch: int, *, dtype: torch.dtype) -> None:
        """Build the layers (PyTorch's default init; seed the caller's RNG)."""
        super().__init__()
        layers: list[nn.Module] = []
        for i in range(3):
            layers += _conv_bn(in_ch if i == 0 else out_ch, out_ch, 3, dtype)
            if i < 2:
                layers.append(nn.LeakyReLU(0.1))
        self.body = nn.Sequential(*layers)
        self.shortcut = nn.Sequential(*_conv_bn(in_ch, out_ch, 1, dtype))
        self.out = nn.Sequential(nn.LeakyReLU(0.1), nn.MaxPool2d(2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``N x C_in x H x W -> N x C_out x H/2 x W/2``."""
        return self.out(self.body(x) + self.shortcut(x))


class ResNet12(nn.Module):
    """ResNet-12 on flat, ``s x s`` or ``1 x s x s`` grey images.

    Args:
        side: Image side ``s``.
        out_features: Width of the final linear projection.
        channels: Widths of the four blocks.
        generator: Initialisation generator (no global RNG).
        dtype: Parameter dtype.
    """

    def __init__(
        self,
        side: int,
        out_features: int,
        *,
        channels: Sequence[int] = (64, 160, 320, 640),
        generator: torch.Generator | None = None,
        dtype: torch.dtype = torch.float32,
    ) -> None:
        """Build the blocks and the projection, initialised from ``generator``."""
        super().__init__()
        self.side = side
        widths = [1, *channels]
        self.blocks = nn.Sequential(
            *(ResidualBlock(a, b, dtype=dtype) for a, b in zip(widths[:-1], widths[1:]))
        )
        self.project = nn.Linear(widths[-1], out_features, dtype=dtype)
        gen = generator or torch.Generator().manual_seed(0)
        with torch.no_grad():
            for p in self.parameters():
                if p.ndim > 1:  # He-uniform for convs and the projection
                    fan_in = p[0].numel()
                    bound = (6.0 / fan_in) ** 0.5
                    p.uniform_(-bound, bound, generator=gen)
            self.project.bias.zero_()  # BatchNorm starts at (1, 0); convs have no bias

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Map images to ``(N, out_features)``."""
        x = x.reshape(x.shape[0], 1, self.side, self.side)
        return self.project(self.blocks(x).mean(dim=(-2, -1)))
