"""Dense matcher: odd-size shapes, exact pixel conversions, gradients, UCMD transfer, pyramids, configs."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from visloc.errors import ConfigError, InputError
from visloc.geometry.flow import identity_map
from visloc.models import BackboneConfig, build_backbone, load_model, save_model
from visloc.models.backbones import pyramid_strides, pyramid_taps, stride_trunk
from visloc.models.correlation import ConsensusConfig
from visloc.models.dense import (
    DenseMatcher,
    DenseMatcherConfig,
    correspondence_to_grid,
    grid_to_correspondence,
    internal_size,
)
from visloc.models.dense_decoders import BlockwisePairDecoder
from visloc.models.weights import imagenet_cache_path

SMALL_NC = ConsensusConfig(kernel_sizes=(3,), channels=(1,))


def _random(name: str) -> BackboneConfig:
    return BackboneConfig(name, "none", allow_random_init=True)


def _net(decoder: str = "ucmd", name: str = "tiny", **kwargs) -> DenseMatcher:
    torch.manual_seed(0)
    kwargs.setdefault("width", 0.25)
    return DenseMatcher(DenseMatcherConfig(backbone=_random(name), decoder=decoder, **kwargs))


def _images(b: int, h: int, w: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(b, 3, h, w, generator=torch.Generator().manual_seed(seed))


def _identity_grid(b: int, h: int, w: int) -> torch.Tensor:
    """``x_n = (2 i + 1) / w - 1`` per cell, written out."""
    xs = torch.tensor([(2 * i + 1) / w - 1 for i in range(w)])
    ys = torch.tensor([(2 * j + 1) / h - 1 for j in range(h)])
    return torch.stack([xs.expand(h, w), ys[:, None].expand(h, w)]).expand(b, 2, h, w).clone()


@pytest.mark.parametrize("decoder", ["dgc", "ucmd"])
@pytest.mark.parametrize("consensus", [None, SMALL_NC])
def test_output_shapes_at_different_sizes(decoder: str, consensus: ConsensusConfig | None) -> None:
    net = _net(decoder, consensus=consensus, coarse_size=(6, 5)).eval()
    source, target = _images(2, 200, 300), _images(2, 256, 192, seed=1)
    with torch.no_grad():
        out = net(source, target)
    assert net.level_strides == out.level_strides == (16, 8, 4, 2)  # tiny has no stride-1 layers
    # target used at 256x192 (already multiples of 16): levels 32x24, 64x48, 128x96
    shapes = [(2, 2, 6, 5), (2, 2, 32, 24), (2, 2, 64, 48), (2, 2, 128, 96)]
    assert [tuple(g.shape) for g in out.grids] == shapes
    assert out.correspondence.shape == (2, 2, 256, 192)
    assert out.matchability_logits is not None and out.matchability_logits.shape == (2, 1, 256, 192)
    torch.testing.assert_close(out.confidence, torch.sigmoid(out.matchability_logits))
    assert torch.isfinite(out.correspondence).all()


def test_internal_size_by_hand() -> None:
    assert internal_size((200, 300)) == (208, 304)  # 12.5 -> 13, 18.75 -> 19
    assert internal_size((256, 192)) == (256, 192)
    assert internal_size((23, 24)) == (16, 32)  # 1.44 -> 1, 1.5 -> 2
    assert internal_size((5, 7)) == (16, 16)


@pytest.mark.parametrize("decoder", ["dgc", "ucmd"])
@pytest.mark.parametrize(("source_hw", "target_hw"), [((200, 300), (256, 192)), ((100, 130), (100, 130))])
def test_identity_grid_gives_the_pixel_map_of_the_resize(decoder, source_hw, target_hw) -> None:
    net = _net(decoder, matchability=False).eval()
    finest = net.refine if decoder == "ucmd" else net.refine["2"]
    hook = finest.register_forward_hook(lambda m, args, out: _identity_grid(*out.shape[:1], *out.shape[-2:]))
    with torch.no_grad():
        out = net(_images(1, *source_hw), _images(1, *target_hw, seed=1))
    hook.remove()
    hs, ws = source_hw
    ht, wt = target_hw
    # the identity between the two images' extents: x_s = (x_t + 0.5) * Ws / Wt - 0.5 (same for y)
    expected = torch.zeros(1, 2, ht, wt)
    for y in range(ht):
        expected[0, 1, y, :] = (y + 0.5) * hs / ht - 0.5
    for x in range(wt):
        expected[0, 0, :, x] = (x + 0.5) * ws / wt - 0.5
    torch.testing.assert_close(out.correspondence, expected, rtol=0, atol=1e-4)
    if source_hw == target_hw:
        torch.testing.assert_close(out.correspondence, identity_map(1, ht, wt), rtol=0, atol=1e-4)


def test_constant_final_grid_gives_constant_source_pixels() -> None:
    net = _net("dgc").eval()
    head = net.refine["2"].decoder.head
    with torch.no_grad():
        head.weight.zero_()
        head.bias.copy_(torch.tensor([0.5, -0.25]))
        out = net(_images(1, 200, 300), _images(1, 90, 70, seed=1))
    # x = ((x_n + 1) * Ws - 1) / 2 with Ws = 300, Hs = 200
    assert out.correspondence.shape == (1, 2, 90, 70)
    torch.testing.assert_close(out.correspondence[0, 0], torch.full((90, 70), (1.5 * 300 - 1) / 2))
    torch.testing.assert_close(out.correspondence[0, 1], torch.full((90, 70), (0.75 * 200 - 1) / 2))


def test_grid_and_correspondence_conversions_invert_each_other() -> None:
    grid = torch.rand(2, 2, 7, 9, generator=torch.Generator().manual_seed(4)) * 2 - 1
    corr = grid_to_correspondence(grid, (50, 60), (7, 9))
    torch.testing.assert_close(correspondence_to_grid(corr, (50, 60), (7, 9)), grid)
    torch.testing.assert_close(corr[:, 0], ((grid[:, 0] + 1) * 60 - 1) / 2)


@pytest.mark.parametrize("decoder", ["dgc", "ucmd"])
def test_gradients_reach_the_decoders(decoder: str) -> None:
    net = _net(decoder, consensus=SMALL_NC, coarse_size=(5, 5)).train()
    out = net(_images(2, 64, 80), _images(2, 48, 64, seed=1))
    loss = sum(g.abs().mean() for g in out.grids) + out.matchability_logits.mean()
    loss.backward()
    modules = [net.coarse_decoder, net.consensus, net.matchability_head]
    modules += [net.refine] if decoder == "ucmd" else list(net.refine.values())
    for module in modules:
        grads = [p.grad for p in module.parameters()]
        assert all(g is not None for g in grads) and sum(float(g.abs().sum()) for g in grads) > 0
    assert all(p.grad is None for p in net.encoder.parameters())  # frozen
    assert not net.encoder.training  # BN statistics frozen too


def test_trainable_encoder_gets_gradients() -> None:
    net = _net("ucmd", train_encoder=True, refine_strides=(8,)).train()
    out = net(_images(1, 64, 64), _images(1, 64, 64, seed=1))
    out.grids[-1].abs().mean().backward()
    assert net.encoder.training
    assert all(p.grad is not None for p in net.encoder.stages[0].parameters())


def test_blockwise_decoder_is_the_mean_over_padded_blocks() -> None:
    torch.manual_seed(0)
    dec = BlockwisePairDecoder(8, 2, (6, 5), (1, 2)).eval()
    g = torch.Generator().manual_seed(5)
    src, tgt, grid = (torch.randn(2, c, 5, 7, generator=g) for c in (20, 20, 2))
    with torch.no_grad():
        out = dec(src, tgt, grid)
        # explicit loop: 20 channels -> blocks 0:8, 8:16, 16:20 + 4 zero channels
        firsts = []
        for k in range(3):
            s, t = torch.zeros(2, 8, 5, 7), torch.zeros(2, 8, 5, 7)
            s[:, : min(8, 20 - 8 * k)] = src[:, 8 * k : 8 * k + 8]
            t[:, : min(8, 20 - 8 * k)] = tgt[:, 8 * k : 8 * k + 8]
            firsts.append(dec.first(torch.cat([s, t, grid], dim=1)))
        expected = dec.rest(torch.stack(firsts).mean(dim=0))
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-6)


def test_ucmd_decoder_moves_from_tiny_to_mobilenet_v2() -> None:
    tiny = _net("ucmd", consensus=SMALL_NC, coarse_size=(6, 6)).eval()
    torch.manual_seed(1)
    mobile = DenseMatcher(DenseMatcherConfig(
        backbone=_random("mobilenet_v2"), decoder="ucmd", width=0.25, consensus=SMALL_NC, coarse_size=(6, 6)
    )).eval()
    g = torch.Generator().manual_seed(6)
    corr = torch.rand(1, 36 + 2, 6, 6, generator=g)
    src, tgt = torch.randn(1, 40, 9, 11, generator=g), torch.randn(1, 40, 9, 11, generator=g)
    grid = torch.rand(1, 2, 9, 11, generator=g)
    corr4d = torch.rand(1, 1, 6, 6, 6, 6, generator=g)

    def decode(net: DenseMatcher) -> list[torch.Tensor]:
        with torch.no_grad():
            return [net.coarse_decoder(corr), net.refine(src, tgt, grid), net.matchability_head(src, tgt),
                    net.consensus(corr4d)]

    before = decode(mobile)
    assert not torch.allclose(before[0], decode(tiny)[0])
    mobile.load_decoder_state_dict(tiny.decoder_state_dict())
    for a, b in zip(decode(mobile), decode(tiny), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    with torch.no_grad():
        out = mobile(_images(1, 96, 112), _images(1, 80, 64, seed=1))
    assert out.correspondence.shape == (1, 2, 80, 64) and torch.isfinite(out.correspondence).all()
    assert mobile.feature_channels != tiny.feature_channels  # the encoders really differ


def test_dgc_decoder_does_not_fit_another_encoder() -> None:
    tiny, mobile = _net("dgc"), _net("dgc", name="mobilenet_v2")
    with pytest.raises(ConfigError, match="wrong shape"):
        mobile.load_decoder_state_dict(tiny.decoder_state_dict())
    assert not any(k.startswith("encoder.") for k in tiny.decoder_state_dict())


def test_checkpoint_round_trip(tmp_path: Path) -> None:
    net = _net("ucmd", consensus=SMALL_NC, coarse_size=(4, 4), refine_strides=(8, 4)).eval()
    path = save_model(tmp_path / "dense.pt", net, net.config)
    loaded = load_model(path)
    assert loaded.config == net.config and isinstance(loaded.config.consensus, ConsensusConfig)
    source, target = _images(1, 64, 48), _images(1, 48, 64, seed=1)
    with torch.no_grad():
        torch.testing.assert_close(loaded(source, target).correspondence, net(source, target).correspondence)


# --- pyramids --------------------------------------------------------------------------------------------


def test_vgg16_pyramid_is_dgcnets() -> None:
    import torchvision

    torch.manual_seed(0)
    backbone = build_backbone(_random("vgg16")).eval()
    assert pyramid_strides(backbone) == (1, 2, 4, 8, 16, 32)
    pyramid = pyramid_taps(backbone, (1, 2, 4, 8, 16))
    x = _images(1, 64, 64)
    with torch.no_grad():
        maps = pyramid(x)
    assert pyramid.channels == (64, 64, 128, 256, 512)
    shapes = [(64, 64, 64), (64, 32, 32), (128, 16, 16), (256, 8, 8), (512, 4, 4)]
    assert [tuple(m.shape[1:]) for m in maps] == shapes
    # torchvision's vgg16().features with the same weights, cut as DGC-Net's VGGPyramid
    reference = torchvision.models.vgg16(weights=None).features.eval()
    reference.load_state_dict({k[len("features."):]: v for k, v in backbone.body.state_dict().items()})
    with torch.no_grad():
        for m, (a, b) in zip(maps, [(0, 2), (0, 5), (0, 10), (0, 17), (0, 24)], strict=True):
            torch.testing.assert_close(m, reference[a:b](x), rtol=1e-4, atol=1e-4)
        # the descriptor map rounds up as the other backbones: ceil(97 / 32) x ceil(131 / 32)
        assert backbone.feature_map(_images(1, 97, 131)).shape == (1, 512, 4, 5)


@pytest.mark.parametrize(
    ("name", "channels"),
    [("tiny", (16, 32, 64, 128)), ("mobilenet_v2", (16, 24, 32, 96)), ("resnet18", (64, 64, 128, 256))],
)
def test_pyramid_taps_end_at_the_stride_16_trunk(name: str, channels: tuple[int, ...]) -> None:
    torch.manual_seed(0)
    backbone = build_backbone(_random(name), load_weights=False).eval()
    pyramid = pyramid_taps(backbone, (2, 4, 8, 16))
    assert pyramid.channels == channels
    x = _images(1, 48, 80)
    with torch.no_grad():
        maps = pyramid(x)
        torch.testing.assert_close(maps[-1], stride_trunk(backbone, 16)[0](x))
    assert [tuple(m.shape[-2:]) for m in maps] == [(24, 40), (12, 20), (6, 10), (3, 5)]
    with pytest.raises(ConfigError, match="stride"):
        pyramid_taps(backbone, (1, 2))
    with pytest.raises(ConfigError, match="increasing"):
        pyramid_taps(backbone, (4, 2))


def test_vgg16_keeps_the_stride_1_level() -> None:
    net = DenseMatcher(DenseMatcherConfig(backbone=_random("vgg16"), width=0.25), load_weights=False)
    assert net.level_strides == (16, 8, 4, 2, 1)
    assert net.feature_channels == {1: 64, 2: 64, 4: 128, 8: 256, 16: 512}


def test_vgg16_imagenet_weights_come_from_the_cache(hub: Path) -> None:
    with pytest.raises(InputError, match=r"vgg16-397923af\.pth"):
        build_backbone(BackboneConfig("vgg16"))
    torch.manual_seed(3)
    donor = build_backbone(_random("vgg16"))
    state = {k[len("body."):]: v for k, v in donor.state_dict().items()}
    state["classifier.0.weight"] = torch.zeros(2, 2)  # torchvision's file has the classifier: ignored
    path = imagenet_cache_path("vgg16")
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(state, path)
    net = build_backbone(BackboneConfig("vgg16"))
    assert net.initialised_from == f"imagenet:{path}"
    torch.testing.assert_close(net.body.features[0].weight, donor.body.features[0].weight)


# --- configs ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs",
    [dict(decoder="raft"), dict(refine_strides=(4, 8)), dict(refine_strides=(3,)), dict(refine_strides=()),
     dict(coarse_size=(0, 5)), dict(coarse_size=(5,)), dict(width=0.0), dict(width=float("nan")),
     dict(decoder="dgc", decoder_channels=(64, 32)), dict(decoder_channels=()), dict(block_channels=0),
     dict(consensus="nc"), dict(train_encoder="yes"), dict(backbone="tiny"), dict(local_radius=-1),
     dict(local_radius=1.5), dict(residual="no")],
)
def test_config_validation(kwargs) -> None:
    with pytest.raises(ConfigError):
        DenseMatcherConfig(**kwargs)


def test_config_accepts_plain_data() -> None:
    config = DenseMatcherConfig(consensus={"kernel_sizes": [3], "channels": [1], "symmetric": False},
                                coarse_size=[8, 6], refine_strides=[16, 4], decoder="ucmd",
                                decoder_channels=[32, 16])
    assert config.consensus == ConsensusConfig((3,), (1,), False)
    assert config.coarse_size == (8, 6) and config.refine_strides == (16, 4)
    with pytest.raises(ConfigError):
        DenseMatcherConfig(consensus={"kernel_sizes": [3], "channels": [2]})


def test_bad_inputs() -> None:
    net = _net("ucmd", refine_strides=(8,))
    with pytest.raises(ValueError, match=r"\(B, 3, H, W\)"):
        net(torch.zeros(1, 1, 32, 32), torch.zeros(1, 3, 32, 32))
    with pytest.raises(ValueError, match="batch"):
        net(torch.zeros(2, 3, 32, 32), torch.zeros(1, 3, 32, 32))


def test_default_model_budget() -> None:
    net = DenseMatcher(DenseMatcherConfig(decoder="ucmd"), load_weights=False)
    assert sum(p.numel() for p in net.parameters()) < 2_000_000


@pytest.mark.parametrize("decoder", ["dgc", "ucmd"])
def test_residual_refinement_adds_the_decoder_output_to_the_upsampled_grid(decoder: str) -> None:
    """With ``residual`` a zero decoder head leaves the coarse estimate unchanged (upsampled); without it the
    grid becomes the head's bias."""
    for residual in (False, True):
        net = _net(decoder, refine_strides=(8, 4), residual=residual, local_radius=2, coarse_size=(4, 4)).eval()
        heads = [net.refine.rest.head] if decoder == "ucmd" else [d.decoder.head for d in net.refine.values()]
        for head in heads:
            torch.nn.init.zeros_(head.weight)
            torch.nn.init.constant_(head.bias, 0.25)
        with torch.no_grad():
            out = net(_images(1, 64, 64), _images(1, 64, 64, seed=1))
        coarse = out.grids[0]
        up = torch.nn.functional.interpolate(coarse, size=(8, 8), mode="bilinear", align_corners=False)
        expected = up + 0.25 if residual else torch.full_like(up, 0.25)
        torch.testing.assert_close(out.grids[1], expected)


def test_local_cost_volume_feeds_the_ucmd_decoder_whatever_the_encoder() -> None:
    """The local cost volume has ``(2r+1)^2`` channels for any encoder width, so UCMD still transfers."""
    tiny = _net("ucmd", refine_strides=(8, 4), local_radius=1, residual=True)
    assert tiny.refine.first[0].in_channels == 2 * 16 + 2 + 9
    other = _net("ucmd", name="mobilenet_v2", refine_strides=(8, 4), local_radius=1, residual=True)
    other.load_decoder_state_dict(tiny.decoder_state_dict())
    with torch.no_grad():
        out = other.eval()(_images(1, 64, 64), _images(1, 64, 64, seed=1))
    assert torch.isfinite(out.correspondence).all()


def test_with_decoder_of_keeps_one_models_encoder_and_the_others_decoder() -> None:
    from visloc.models.dense import with_decoder_of

    tiny = _net("ucmd", refine_strides=(8, 4), local_radius=1, residual=True).eval()
    torch.manual_seed(5)
    mobile = _net("ucmd", name="mobilenet_v2", refine_strides=(8, 4), local_radius=1, residual=True).eval()
    torch.manual_seed(7)
    for p in mobile.parameters():  # make the two decoders differ
        p.data.add_(0.1 * torch.randn_like(p))
    both = with_decoder_of(mobile, tiny)
    assert both.config.backbone.name == "mobilenet_v2" and not both.config.train_encoder
    for k, v in both.encoder.state_dict().items():
        torch.testing.assert_close(v, mobile.encoder.state_dict()[k], rtol=0, atol=0)
    for k, v in both.decoder_state_dict().items():
        torch.testing.assert_close(v, tiny.decoder_state_dict()[k], rtol=0, atol=0)
    src, tgt = _images(1, 64, 80), _images(1, 64, 80, seed=1)
    with torch.no_grad():
        out = both(src, tgt)
        swapped = DenseMatcher(both.config, load_weights=False).eval()
        swapped.load_state_dict(both.state_dict())
        torch.testing.assert_close(out.correspondence, swapped(src, tgt).correspondence)
    with pytest.raises(ConfigError, match="ucmd"):
        with_decoder_of(_net("dgc"), tiny)
    vgg = _net("ucmd", name="vgg16", refine_strides=(8, 4, 2, 1))
    with pytest.raises(ConfigError, match="levels"):  # tiny has no stride-1 level for this decoder
        with_decoder_of(tiny, vgg)
