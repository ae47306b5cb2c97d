"""CNNGeometric / two-stage WeakAlign model: shapes, correlation layout, frozen extractor, checkpoints."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from visloc.errors import ConfigError
from visloc.geometry.warps import Warp, identity_theta, warp_source_to_target
from visloc.models.backbones import BackboneConfig, build_backbone
from visloc.models.checkpoint import load_model, save_model
from visloc.models.cnngeometric import (
    GeometricMatcher,
    GeometricMatcherConfig,
    RegressorConfig,
    TwoStageMatcher,
    TwoStageMatcherConfig,
    feature_correlation,
    feature_l2_norm,
    stride_split,
    stride_trunk,
)

TINY = BackboneConfig("tiny", weights="none", allow_random_init=True)
#: 64 px images -> 4x4 stride-16 features -> one 3x3 conv -> 2x2: keeps the CPU tests fast.
SMALL = {"image_size": 64, "backbone": TINY}
SMALL_REGRESSOR = RegressorConfig(kernel_sizes=(3,), channels=(8,))


def _small(kind: str = "affine", **options) -> GeometricMatcher:
    torch.manual_seed(0)
    options = {"regressor": SMALL_REGRESSOR, "identity_init": False, **SMALL, **options}
    return GeometricMatcher(GeometricMatcherConfig(kind=kind, **options))


def _small_two_stage(**options) -> TwoStageMatcher:
    torch.manual_seed(0)
    options = {
        "affine_regressor": SMALL_REGRESSOR,
        "tps_regressor": SMALL_REGRESSOR,
        "identity_init": False,
        **SMALL,
        **options,
    }
    return TwoStageMatcher(TwoStageMatcherConfig(**options))


def _images(batch: int, size: int = 64, seed: int = 0) -> torch.Tensor:
    return torch.randn(batch, 3, size, size, generator=torch.Generator().manual_seed(seed))


def test_defaults_follow_upstream() -> None:
    config = GeometricMatcherConfig()
    assert config.image_size == 240 and config.feature_size == 15 and config.feature_stride == 16
    assert config.regressor.kernel_sizes == (7, 5) and config.regressor.channels == (128, 64)
    assert not config.train_fe and config.backbone.name == "resnet34"
    assert config.regressor.output_size(config.feature_size) == 5


def test_shapes_for_240_input() -> None:
    torch.manual_seed(0)
    net = GeometricMatcher(GeometricMatcherConfig(backbone=TINY, kind="tps")).eval()
    with torch.no_grad():  # forward() step by step, to check every shape with two feature extractions
        source, target = net.extract(_images(1, 240)), net.extract(_images(1, 240, seed=1))
        assert source.shape == target.shape == (1, 128, 15, 15)
        correlation = net.correlate(source, target)
        assert correlation.shape == (1, 225, 15, 15)
        assert net.regressor.conv[0].in_channels == 225 and net.regressor.linear.in_features == 64 * 5 * 5
        theta = net.regressor(correlation)
    assert theta.shape == (1, 18)
    # identity-friendly initialisation: the untrained model predicts the identity
    torch.testing.assert_close(theta, identity_theta("tps"))
    with pytest.raises(ValueError, match="resize"):
        net.extract(_images(1, 96))


def test_two_stage_shapes_for_240_input() -> None:
    torch.manual_seed(0)
    net = TwoStageMatcher(TwoStageMatcherConfig(backbone=TINY)).eval()
    with torch.no_grad():
        warp = net(_images(2, 240), _images(2, 240, seed=1))
    assert isinstance(warp, Warp) and warp.kind == "two_stage"
    assert warp.affine.shape == (2, 6) and warp.tps.shape == (2, 18)


def test_correlation_ordering_matches_an_explicit_loop() -> None:
    g = torch.Generator().manual_seed(0)
    source, target = torch.randn(2, 5, 3, 4, generator=g), torch.randn(2, 5, 2, 3, generator=g)
    corr = feature_correlation(source, target)
    hs, ws, ht, wt = 3, 4, 2, 3
    expected = torch.zeros(2, hs * ws, ht, wt)
    for b in range(2):
        for row_s in range(hs):
            for col_s in range(ws):
                for row_t in range(ht):
                    for col_t in range(wt):
                        expected[b, row_s + hs * col_s, row_t, col_t] = torch.dot(
                            source[b, :, row_s, col_s], target[b, :, row_t, col_t]
                        )
    torch.testing.assert_close(corr, expected)


def test_l2_norm_puts_eps_inside_the_square_root() -> None:
    f = torch.tensor([3.0, 4.0]).view(1, 2, 1, 1)
    torch.testing.assert_close(feature_l2_norm(f, eps=11.0), f / 6.0)  # sqrt(9 + 16 + 11) = 6
    assert feature_l2_norm(torch.zeros(1, 4, 2, 2)).abs().max() == 0


def test_self_correlation_peaks_at_the_identity_position() -> None:
    net = _small(image_size=128).eval()
    with torch.no_grad():
        features = net.extract(_images(1, 128))
        corr = net.correlate(features, features)
    s = features.shape[-1]
    peak = corr.argmax(dim=1)[0]  # (s, s): channel of the best source location for each target location
    rows, cols = torch.meshgrid(torch.arange(s), torch.arange(s), indexing="ij")
    assert torch.equal(peak, rows + s * cols)


def test_frozen_feature_extractor_gets_no_gradient_and_keeps_its_statistics() -> None:
    net = _small().train()
    assert not net.features.trunk.training  # frozen: BN statistics are not updated
    bn = next(m for m in net.features.modules() if isinstance(m, nn.BatchNorm2d))
    stats = bn.running_mean.clone()
    net(_images(2), _images(2, seed=1)).square().sum().backward()
    assert all(not p.requires_grad and p.grad is None for p in net.features.parameters())
    assert all(p.grad is not None for p in net.regressor.parameters())
    torch.testing.assert_close(bn.running_mean, stats, rtol=0, atol=0)
    trainable = _small(train_fe=True).train()
    assert trainable.features.trunk.training
    trainable(_images(2), _images(2, seed=1)).square().sum().backward()
    assert all(p.grad is not None for p in trainable.features.parameters())


@pytest.mark.parametrize("two_stage", [False, True])
def test_save_load_round_trip_gives_identical_outputs(tmp_path: Path, two_stage: bool) -> None:
    net = (_small_two_stage() if two_stage else _small("tps")).eval()
    with torch.no_grad():  # make the batch-norm statistics non-trivial
        for m in net.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
    path = save_model(tmp_path / "model.pt", net, net.config)
    loaded = load_model(path)
    assert type(loaded) is type(net) and loaded.config == net.config
    source, target = _images(2), _images(2, seed=1)
    with torch.no_grad():
        a, b = net(source, target), loaded(source, target)
    if two_stage:
        torch.testing.assert_close(a.affine, b.affine, rtol=0, atol=0)
        torch.testing.assert_close(a.tps, b.tps, rtol=0, atol=0)
    else:
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_two_stage_regresses_the_tps_on_the_affinely_warped_source() -> None:
    net = _small_two_stage().eval()
    theta_affine = torch.tensor([0.9, 0.1, 0.2, -0.1, 1.1, -0.15])
    with torch.no_grad():  # hand-set stage 1: a constant affine prediction
        net.affine_regressor.linear.weight.zero_()
        net.affine_regressor.linear.bias.copy_(theta_affine)
    inputs: list[torch.Tensor] = []
    net.features.register_forward_hook(lambda module, args, output: inputs.append(args[0].detach().clone()))
    source, target = _images(2), _images(2, seed=1)
    with torch.no_grad():
        warp = net(source, target)
        expected_warped = warp_source_to_target(source, theta_affine.expand(2, 6), "affine")
        expected_tps = net.tps_regressor(net.correlate(net.extract(expected_warped), net.extract(target)))
    torch.testing.assert_close(warp.affine, theta_affine.expand(2, 6))
    assert len(inputs) >= 3
    fed = [x for x in inputs[:3] if not torch.equal(x, source) and not torch.equal(x, target)]
    assert len(fed) == 1  # the third feature extraction ran on the warped source
    torch.testing.assert_close(fed[0], expected_warped)
    torch.testing.assert_close(warp.tps, expected_tps)
    # and the TPS stage depends on the affine: another affine gives another TPS
    with torch.no_grad():
        net.affine_regressor.linear.bias.copy_(identity_theta("affine")[0])
        assert not torch.allclose(net(source, target).tps, warp.tps)


def test_two_stage_tps_gradient_reaches_the_affine_regressor() -> None:
    net = _small_two_stage(train_fe=False).train()
    warp = net(_images(2), _images(2, seed=1))
    (warp.tps.square().sum()).backward()
    assert net.affine_regressor.linear.weight.grad is not None
    assert net.affine_regressor.linear.weight.grad.abs().sum() > 0


def test_stride_16_cuts_of_the_registered_backbones() -> None:
    for name, channels in (("tiny", 128), ("resnet18", 256), ("mobilenet_v2", 96)):
        backbone = build_backbone(BackboneConfig(name, "none", allow_random_init=True), load_weights=False)
        trunk, c = stride_trunk(backbone, 16)
        assert c == channels
        with torch.no_grad():
            assert trunk.eval()(torch.zeros(1, 3, 48, 80)).shape == (1, channels, 3, 5)
    with pytest.raises(ConfigError, match="no cut"):
        stride_trunk(build_backbone(TINY, load_weights=False), 64)


@pytest.mark.parametrize("name", ["tiny", "resnet18", "mobilenet_v2"])
def test_stride_split_parts_compose_to_the_feature_map(name: str) -> None:
    torch.manual_seed(0)
    backbone = build_backbone(BackboneConfig(name, "none", allow_random_init=True), load_weights=False).eval()
    head, tail, _ = stride_split(backbone, 8)
    x = torch.randn(1, 3, 64, 96)
    with torch.no_grad():
        assert head(x).shape[-2:] == (8, 12)
        torch.testing.assert_close(tail(head(x)), backbone.feature_map(x))


def test_config_errors() -> None:
    with pytest.raises(ConfigError):
        GeometricMatcherConfig(kind="homography")
    with pytest.raises(ConfigError):
        RegressorConfig(kernel_sizes=(7, 5), channels=(128,))
    with pytest.raises(ConfigError, match="do not fit"):
        GeometricMatcherConfig(image_size=64)  # 4x4 features are too small for conv7
    with pytest.raises(ConfigError):
        TwoStageMatcherConfig(feature_stride=12)
