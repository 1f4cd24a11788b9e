"""ResNet-15: the E2E quark/gluon network (Andrews et al.) and its wide variant.

The E2E net is small on purpose (~86k parameters for 3 channels): jet images are sparse and
labelled sets are small. Layout: conv 7x7 stem -> ReLU -> max-pool 2 -> stages of residual blocks
(the first block of every later stage halves the resolution with a 1x1 stride-2 shortcut) ->
global max pool. 1 stem conv + 7 blocks x 2 convs = 15 layers for the E2E widths (16, 32).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


def _norm(kind: str, channels: int) -> nn.Module:
    """BatchNorm or nothing: the original E2E net has no normalisation."""
    if kind == "batch":
        return nn.BatchNorm2d(channels)
    if kind == "none":
        return nn.Identity()
    raise ValueError(f"unknown norm {kind!r}: use 'none' or 'batch'")


class ResidualBlock(nn.Module):
    """conv3x3 -> (norm) -> ReLU -> conv3x3 -> (norm) -> + shortcut -> ReLU."""

    def __init__(self, in_ch: int, out_ch: int, stride: int, norm: str) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, stride=stride, padding=1)
        self.norm1 = _norm(norm, out_ch)
        self.conv2 = nn.Conv2d(out_ch, out_ch, 3, padding=1)
        self.norm2 = _norm(norm, out_ch)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_ch != out_ch:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_ch, out_ch, 1, stride=stride), _norm(norm, out_ch)
            )

    def forward(self, x: Tensor) -> Tensor:
        h = torch.relu(self.norm1(self.conv1(x)))
        h = self.norm2(self.conv2(h))
        return torch.relu(h + self.shortcut(x))


class ResNet15(nn.Module):
    """Stem + residual stages + global max pool; `out_dim` is the last stage's width.

    `widths` and `blocks` describe the stages: E2E is widths (16, 32) with blocks (3, 4);
    the wide variant many GSoC solutions call ResNet-15 is (64, 128, 256) with (2, 2, 2) + BN.
    The E2E stem pads its 7x7 conv by 1, not 3: a 32x32 image gives 28x28 maps, which also makes
    the stem and the first stage ~1.3x cheaper than 'same' padding.
    """

    def __init__(
        self,
        in_channels: int,
        norm: str,
        widths: list[int] | tuple[int, ...],
        blocks: list[int] | tuple[int, ...],
        stem_kernel: int,
        stem_padding: int,
    ) -> None:
        super().__init__()
        if len(widths) != len(blocks):
            raise ValueError("widths and blocks need one entry per stage")
        self.in_channels = in_channels
        self.stem = nn.Sequential(
            nn.Conv2d(in_channels, widths[0], stem_kernel, padding=stem_padding),
            _norm(norm, widths[0]),
            nn.ReLU(),
            nn.MaxPool2d(2),
        )
        layers: list[nn.Module] = []
        prev = widths[0]
        for stage, (width, count) in enumerate(zip(widths, blocks, strict=True)):
            for i in range(count):
                stride = 2 if stage > 0 and i == 0 else 1
                layers.append(ResidualBlock(prev, width, stride, norm))
                prev = width
        self.stages = nn.Sequential(*layers)
        self.out_dim = prev

    def forward(self, x: Tensor) -> Tensor:
        h = self.stages(self.stem(x))
        return torch.amax(h, dim=(2, 3))
