"""Image encoders: shapes at odd sizes, descriptor sizes, registry behaviour, the tiny CNN's budget."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
import torch
from torch import nn

from visloc.errors import ConfigError
from visloc.models import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    BackboneConfig,
    backbones,
    build_backbone,
    count_parameters,
    imagenet_normalize,
)

OUT_DIMS = {"resnet18": 512, "resnet34": 512, "mobilenet_v2": 1280, "tiny": 256, "vgg16": 512}


def _random(name: str) -> nn.Module:
    torch.manual_seed(0)
    return build_backbone(BackboneConfig(name, weights="none", allow_random_init=True)).eval()


def test_registered_names() -> None:
    assert backbones.names() == sorted(OUT_DIMS)


@pytest.mark.parametrize("name", sorted(OUT_DIMS))
def test_descriptor_shape_at_odd_size(name: str) -> None:
    net = _random(name)
    assert net.out_dim == OUT_DIMS[name]
    images = torch.randn(2, 3, 97, 131)
    with torch.inference_mode():
        desc = net(images)
        fmap = net.feature_map(images)
    assert desc.shape == (2, OUT_DIMS[name])
    assert desc.dtype == torch.float32
    assert torch.isfinite(desc).all()
    # stride 32 with "same" padding: ceil(97 / 32) = 4, ceil(131 / 32) = 5
    assert fmap.shape == (2, OUT_DIMS[name], 4, 5)
    # the descriptor is the global average of the feature map
    torch.testing.assert_close(desc, fmap.mean(dim=(2, 3)))


@pytest.mark.parametrize("name", ["resnet18", "tiny"])
def test_channels_last_gives_the_same_descriptor(name: str) -> None:
    net = _random(name)
    images = torch.randn(2, 3, 64, 80)
    with torch.inference_mode():
        ref = net(images)
        net = net.to(memory_format=torch.channels_last)
        out = net(images.contiguous(memory_format=torch.channels_last))
    torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-5)


def test_create_by_name_fixes_the_config_name() -> None:
    net = backbones.create("tiny", weights="none", allow_random_init=True)
    assert net.config == BackboneConfig("tiny", weights="none", allow_random_init=True)
    assert net.initialised_from == "random"


def test_unknown_backbone_and_bad_input() -> None:
    with pytest.raises(ConfigError, match="unknown backbone 'vgg'"):
        build_backbone(BackboneConfig("vgg", weights="none", allow_random_init=True))
    with pytest.raises(ConfigError, match="unknown option"):
        backbones.create("tiny", pretrained=True)
    net = _random("tiny")
    with pytest.raises(ValueError, match=r"\(B, 3, H, W\)"):
        net(torch.randn(3, 64, 64))
    with pytest.raises(ValueError, match=r"\(B, 3, H, W\)"):
        net(torch.randn(1, 1, 64, 64))


def test_tiny_fits_its_budget() -> None:
    net = _random("tiny")
    n = count_parameters(net)
    assert 200_000 < n < 750_000
    buffer = io.BytesIO()
    torch.save(net.state_dict(), buffer)
    assert buffer.tell() < 3_000_000
    # a few hundred thousand parameters in conv-BN-ReLU stages only
    kinds = {type(m) for m in net.body.modules()} - {nn.Sequential, type(net.body)}
    assert kinds == {nn.Conv2d, nn.BatchNorm2d, nn.ReLU}


def test_count_parameters_trainable_only() -> None:
    net = _random("tiny")
    total = count_parameters(net)
    for p in net.body.features[0].parameters():
        p.requires_grad_(False)
    frozen = net.body.features[0].weight.numel()
    assert count_parameters(net, trainable_only=True) == total - frozen
    assert count_parameters(net) == total


def test_imagenet_normalize() -> None:
    images = torch.zeros(1, 3, 2, 2)
    images[:, 0] = 0.485 + 0.229  # one standard deviation above the mean in R
    out = imagenet_normalize(images)
    torch.testing.assert_close(out[0, 0], torch.ones(2, 2))
    torch.testing.assert_close(out[0, 1], torch.full((2, 2), -IMAGENET_MEAN[1] / IMAGENET_STD[1]))


def test_config_keeps_weights_as_plain_text(tmp_path: Path) -> None:
    config = BackboneConfig("tiny", weights=tmp_path / "w.pt")
    assert config.weights == str(tmp_path / "w.pt") and isinstance(config.weights, str)
    with pytest.raises(ConfigError, match="backbone weights must be"):
        BackboneConfig("tiny", weights="")
