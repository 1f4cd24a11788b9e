"""torchvision's ResNet-18 with the CIFAR stem, for comparing with peers on natural images."""

from __future__ import annotations

from torch import Tensor, nn
from torchvision.models import resnet18


class ResNet18CIFAR(nn.Module):
    """ResNet-18 with a 3x3 stride-1 stem and no max-pool (32x32 inputs keep their resolution)."""

    def __init__(self, in_channels: int) -> None:
        super().__init__()
        net = resnet18(weights=None)
        net.conv1 = nn.Conv2d(in_channels, 64, 3, stride=1, padding=1, bias=False)
        net.maxpool = nn.Identity()
        net.fc = nn.Identity()
        self.net = net
        self.in_channels = in_channels
        self.out_dim = 512

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)
