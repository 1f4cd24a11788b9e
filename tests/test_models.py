"""Backbones: the E2E ResNet-15's size and shapes, the wide variant, the CIFAR ResNet-18."""

import pytest
import torch

from ssl_lightning.models.heads import mlp
from ssl_lightning.models.resnet15 import ResNet15
from ssl_lightning.models.resnet18_cifar import ResNet18CIFAR


def e2e(in_channels: int = 3, norm: str = "none") -> ResNet15:
    return ResNet15(
        in_channels, norm, widths=[16, 32], blocks=[3, 4], stem_kernel=7, stem_padding=1
    )


def n_params(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def test_e2e_resnet15_has_the_papers_size():
    assert 86_000 <= n_params(e2e()) <= 91_000
    convs = [
        m for m in e2e().modules() if isinstance(m, torch.nn.Conv2d) and m.kernel_size != (1, 1)
    ]
    assert len(convs) == 15  # the "15" in ResNet-15: stem + 7 blocks x 2


@pytest.mark.parametrize("channels", [3, 8])
@pytest.mark.parametrize("size", [16, 32, 125])
def test_resnet15_maps_any_size_to_32_features(channels: int, size: int):
    net = e2e(channels)
    assert net.out_dim == 32
    assert net(torch.randn(2, channels, size, size)).shape == (2, 32)


def test_batch_norm_option_adds_a_norm_after_every_conv():
    net = e2e(norm="batch")
    convs = sum(isinstance(m, torch.nn.Conv2d) for m in net.modules())
    norms = sum(isinstance(m, torch.nn.BatchNorm2d) for m in net.modules())
    assert norms == convs
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in e2e().modules())


def test_unknown_norm_is_rejected():
    with pytest.raises(ValueError, match="unknown norm"):
        e2e(norm="layer")


def test_wide_resnet15_is_about_2_8m_parameters():
    wide = ResNet15(
        3, "batch", widths=[64, 128, 256], blocks=[2, 2, 2], stem_kernel=7, stem_padding=3
    )
    assert 2.6e6 < n_params(wide) < 3.0e6
    assert wide(torch.randn(2, 3, 32, 32)).shape == (2, 256)


def test_resnet18_cifar_keeps_resolution_in_the_stem():
    net = ResNet18CIFAR(in_channels=8)
    assert net.net.conv1.stride == (1, 1) and net.net.conv1.kernel_size == (3, 3)
    assert isinstance(net.net.maxpool, torch.nn.Identity)
    assert net(torch.randn(2, 8, 32, 32)).shape == (2, 512)


def test_projector_layers_and_output():
    head = mlp(32, 64, 16, layers=3, last_norm=True)
    linears = [m for m in head if isinstance(m, torch.nn.Linear)]
    assert [m.out_features for m in linears] == [64, 64, 16]
    assert head(torch.randn(4, 32)).shape == (4, 16)


def test_e2e_stem_pads_by_one_like_the_e2e_code():
    stem_conv = e2e().stem[0]
    assert stem_conv(torch.randn(1, 3, 32, 32)).shape[-2:] == (28, 28)
