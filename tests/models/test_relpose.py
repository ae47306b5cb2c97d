"""The Siamese relative-pose network: weight sharing, input order, both heads, the loss, overfitting."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from visloc.errors import ConfigError
from visloc.models import (
    BackboneConfig,
    PoseNetConfig,
    RelPoseConfig,
    RelPoseNet,
    count_parameters,
    networks,
    relpose_loss,
    scalability,
)

TINY = BackboneConfig("tiny", weights="none", allow_random_init=True)


def _net(**options) -> RelPoseNet:
    torch.manual_seed(0)
    return RelPoseNet(RelPoseConfig(backbone=TINY, **options))


def _capture_trunk_input(net: RelPoseNet) -> list[torch.Tensor]:
    seen: list[torch.Tensor] = []
    net.trunk.register_forward_hook(lambda module, inputs, output: seen.append(inputs[0].detach().clone()))
    return seen


def test_output_shapes_and_defaults() -> None:
    config = RelPoseConfig()
    assert config.backbone.name == "resnet34" and config.head == "original"
    assert config.hidden == 1024 and config.head_dropout == 0.5 and config.translation_frame == "camera"
    net = _net(hidden=32).eval()
    t, q = net(torch.randn(3, 3, 64, 64), torch.randn(3, 3, 72, 56))  # the two images may differ in size
    assert t.shape == (3, 3) and q.shape == (3, 4)
    assert net.descriptor_dim == 256


def test_siamese_branches_share_the_encoder() -> None:
    net = _net(hidden=32).eval()
    seen = _capture_trunk_input(net)
    image = torch.randn(2, 3, 64, 64)
    with torch.inference_mode():
        net(image, image)
        desc = net.encode(image)
    d = net.descriptor_dim
    assert seen[0].shape == (2, 2 * d)
    torch.testing.assert_close(seen[0][:, :d], seen[0][:, d:], rtol=0, atol=0)
    torch.testing.assert_close(seen[0][:, :d], desc, rtol=0, atol=0)
    # one encoder's parameters + the head, nothing duplicated per branch
    h = 32
    head = (2 * d * h + h) + 2 * h + (h * 3 + 3) + (h * 4 + 4)
    assert count_parameters(net) == count_parameters(net.encoder) + head


def test_input_order_is_database_then_query() -> None:
    net = _net(hidden=32).eval()
    seen = _capture_trunk_input(net)
    a, b = torch.randn(2, 3, 64, 64), torch.randn(2, 3, 64, 64)
    with torch.inference_mode():
        t_ab, q_ab = net(a, b)
        t_ba, q_ba = net(b, a)
        da, db = net.encode(a), net.encode(b)
        t_reg, q_reg = net.regress(da, db)
    d = net.descriptor_dim
    torch.testing.assert_close(seen[0], torch.cat([da, db], dim=1))
    torch.testing.assert_close(seen[1], torch.cat([db, da], dim=1))
    torch.testing.assert_close(t_ab, t_reg)
    torch.testing.assert_close(q_ab, q_reg)
    assert not torch.allclose(t_ab, t_ba) and not torch.allclose(q_ab, q_ba)
    assert seen[0][:, :d].ne(seen[1][:, :d]).any()


def test_heads_follow_the_two_published_versions() -> None:
    original = _net(hidden=32)
    kinds = [type(m) for m in original.trunk]
    assert kinds == [nn.Linear, nn.BatchNorm1d, nn.ReLU, nn.Dropout]
    assert original.trunk[3].p == 0.5
    assert (
        original.trunk[0].in_features == 2 * 256
        and original.fc_t.out_features == 3
        and original.fc_q.out_features == 4
    )

    port = _net(hidden=32, head="pytorch_port")
    head_kinds = {type(m) for m in port.modules()} - {type(m) for m in port.encoder.modules()}
    assert nn.BatchNorm1d not in head_kinds and nn.ReLU not in head_kinds
    assert [type(m) for m in port.trunk] == [nn.Linear]
    assert isinstance(port.head_dropout, nn.Dropout) and port.head_dropout.p == 0.3
    assert _net(hidden=32, head="pytorch_port", dropout=0.1).head_dropout.p == 0.1
    # without BN/ReLU, the port in eval mode is an affine map of the descriptors: f(a) + f(b) = f(a + b) + f(0)
    port.eval()
    a, b = torch.randn(4, 512), torch.randn(4, 512)

    def f(x: torch.Tensor) -> torch.Tensor:
        return torch.cat(port.regress(x[:, :256], x[:, 256:]), dim=1)

    with torch.inference_mode():
        torch.testing.assert_close(f(a) + f(b), f(a + b) + f(torch.zeros(4, 512)), atol=1e-4, rtol=1e-4)
        original.eval()
        g = torch.cat(original.regress(a[:, :256], a[:, 256:]), dim=1)
        g2 = torch.cat(original.regress(-a[:, :256], -a[:, 256:]), dim=1)
        g0 = torch.cat(original.regress(torch.zeros(4, 256), torch.zeros(4, 256)), dim=1)
    assert not torch.allclose(g + g2, 2 * g0, atol=1e-3)  # the ReLU makes the original non-affine


def test_retrieval_descriptor_is_unit_norm() -> None:
    net = _net(hidden=32).eval()
    images = torch.randn(3, 3, 64, 64)
    with torch.inference_mode():
        desc = net.retrieval_descriptor(images)
        raw = net.encode(images)
    assert desc.dtype == torch.float32 and desc.shape == (3, 256)
    torch.testing.assert_close(desc.norm(dim=1), torch.ones(3))
    torch.testing.assert_close(desc, raw / raw.norm(dim=1, keepdim=True))


def test_loss_against_hand_computation() -> None:
    t_pred, t_gt = torch.tensor([[1.0, 2.0, 3.0], [0.0, 0.0, 0.0]]), torch.zeros(2, 3)
    q_pred, q_gt = torch.tensor([[1.0, 0.0, 0.0, 0.0]] * 2), torch.tensor([[0.0, 0.0, 0.0, 1.0]] * 2)
    # MSE(t) = (1 + 4 + 9) / 6; MSE(q) = (1 + 1) * 2 / 8; beta = 10
    expected = 14.0 / 6.0 + 10.0 * 0.5
    assert relpose_loss(t_pred, q_pred, t_gt, q_gt, beta=10.0).item() == pytest.approx(expected)
    assert relpose_loss(t_pred, q_pred, t_gt, q_gt).item() == pytest.approx(14.0 / 6.0 + 0.5)


def test_config_validation() -> None:
    with pytest.raises(ConfigError, match="unknown relpose head 'deep'"):
        RelPoseConfig(head="deep")
    with pytest.raises(ConfigError, match="unknown translation frame 'query'"):
        networks.create("relpose", translation_frame="query")
    with pytest.raises(ConfigError, match="dropout"):
        RelPoseConfig(dropout=1.0)
    with pytest.raises(ConfigError, match="hidden"):
        RelPoseConfig(hidden=0)
    net = networks.create("relpose", backbone=TINY, head="pytorch_port", hidden=8)
    assert isinstance(net, RelPoseNet) and net.trunk[0].out_features == 8


def test_scalability_counts() -> None:
    counts = scalability(7, RelPoseConfig(backbone=TINY, hidden=64), PoseNetConfig(backbone=TINY, hidden=64))
    tiny = 587_088
    assert counts["relpose"] == tiny + (512 * 64 + 64) + 2 * 64 + (64 * 3 + 3) + (64 * 4 + 4)
    assert counts["posenet_per_scene"] == tiny + (256 * 64 + 64) + (64 * 3 + 3) + (64 * 4 + 4)
    assert counts["posenet_total"] == 7 * counts["posenet_per_scene"]


def _smooth_images(n: int, size: int, generator: torch.Generator) -> torch.Tensor:
    """Distinct images: coarse random patterns upsampled (pure pixel noise would pool to the same mean)."""
    coarse = torch.randn(n, 3, 6, 6, generator=generator)
    return F.interpolate(coarse, size=(size, size), mode="bilinear", align_corners=False)


@pytest.fixture
def one_thread() -> Iterator[None]:
    """Run single-threaded: with another process on one of 2 cores, 2-thread OpenMP steps get 10x slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


@pytest.mark.parametrize(("options", "target"), [
    ({}, 0.01),
    ({"head": "correlation", "correlation_grid": (6, 6)}, 0.02),
])
def test_tiny_relposenet_overfits_eight_pairs(one_thread: None, options: dict, target: float) -> None:
    # about 3 s on one core each: 60 Adam steps on 8 pairs of 48x48 images (the loss is ~1e-3 by step 40)
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(1)
    img_db, img_q = _smooth_images(8, 48, g), _smooth_images(8, 48, g)
    t_gt = torch.randn(8, 3, generator=g)
    q_gt = F.normalize(torch.randn(8, 4, generator=g), dim=1)
    q_gt = torch.where(q_gt[:, :1] < 0, -q_gt, q_gt)
    net = RelPoseNet(RelPoseConfig(backbone=TINY, hidden=64, dropout=0.0, **options)).train()
    optimizer = torch.optim.Adam(net.parameters(), lr=3e-3)
    losses = []
    for _ in range(60):
        optimizer.zero_grad()
        loss = relpose_loss(*net(img_db, img_q), t_gt, q_gt, beta=1.0)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[0] > 0.5
    assert min(losses[-5:]) < target, losses[-5:]


def test_pool_grid_descriptor_keeps_the_layout(tmp_path) -> None:
    net = _net(hidden=16, pool_grid=(2, 3)).eval()
    assert net.descriptor_dim == 256 * 6 and net.trunk[0].in_features == 2 * 256 * 6
    images = torch.randn(2, 3, 64, 96)
    with torch.no_grad():
        fmap = net.encoder.feature_map(images)  # (2, 256, 2, 3): one feature per cell already
        desc = net.encode(images)
    assert fmap.shape[-2:] == (2, 3)
    # cells in row-major order, each cell's 256 channels contiguous
    assert torch.allclose(desc.view(2, 2, 3, 256), fmap.permute(0, 2, 3, 1))
    # the mean over cells is the original global descriptor
    assert torch.allclose(desc.view(2, 6, 256).mean(1), net.encoder(images), atol=1e-6)
    # a horizontally mirrored image swaps the left and right cells: the global pooling cannot tell
    assert not torch.allclose(net.encode(images.flip(-1)), desc, atol=1e-3)
    with pytest.raises(ConfigError, match="pool_grid"):
        RelPoseConfig(pool_grid=(0, 2))


def test_pool_grid_survives_save_and_load(tmp_path) -> None:
    from visloc.models import load_model, save_model

    net = _net(hidden=16, pool_grid=(2, 2)).eval()
    path = save_model(tmp_path / "m.pt", net, net.config)
    loaded = load_model(path)
    assert loaded.config.pool_grid == (2, 2)
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(loaded(x, x)[0], net(x, x)[0])


def test_correlation_head_descriptor_layout() -> None:
    from visloc.models.cnngeometric import feature_l2_norm, stride_trunk

    net = _net(head="correlation", hidden=32, correlation_stride=8, correlation_grid=(8, 8)).eval()
    assert net.global_dim == 256 and net.local_channels == 64
    assert net.descriptor_dim == 256 + 64 * 8 * 8
    images = torch.randn(2, 3, 64, 64)  # stride 8: an 8x8 map, so the pooling to the grid is the identity
    with torch.no_grad():
        desc = net.encode(images)
        trunk, channels = stride_trunk(net.encoder, 8)
        local = feature_l2_norm(trunk(images))
        glob = net.encoder(images)
        retrieval = net.retrieval_descriptor(images)
    assert channels == 64 and desc.shape == (2, net.descriptor_dim)
    # the pooled part is the encoder's own global descriptor; retrieval uses only that part
    torch.testing.assert_close(desc[:, :256], glob, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(retrieval, F.normalize(glob, dim=1), atol=1e-5, rtol=1e-5)
    # then the unit-norm feature map, flattened channel-major
    torch.testing.assert_close(desc[:, 256:].view(2, 64, 8, 8), local, atol=1e-5, rtol=1e-5)
    # a larger input is pooled to the same grid: the descriptor size does not depend on the image size
    with torch.no_grad():
        assert net.encode(torch.randn(1, 3, 96, 128)).shape == (1, net.descriptor_dim)


def test_correlation_head_regresses_from_the_correlation_volume() -> None:
    from visloc.models.cnngeometric import feature_correlation, feature_l2_norm

    net = _net(head="correlation", hidden=32, correlation_grid=(8, 8)).eval()
    a, b = torch.randn(3, 3, 64, 64), torch.randn(3, 3, 64, 64)
    seen: list[torch.Tensor] = []
    net.correlation_net.register_forward_hook(lambda m, inputs, out: seen.append(inputs[0].detach().clone()))
    with torch.no_grad():
        t, q = net(a, b)
        da, db = net.encode(a), net.encode(b)
        t2, q2 = net.regress(da, db)
    assert t.shape == (3, 3) and q.shape == (3, 4)
    torch.testing.assert_close(t, t2)  # forward == regress of the stored descriptors (map + query)
    torch.testing.assert_close(q, q2)
    # the head's input: database locations (channels) against query locations (grid), ReLU, unit norm
    maps = [d[:, 256:].view(3, 64, 8, 8) for d in (da, db)]
    expected = feature_l2_norm(F.relu(feature_correlation(maps[0], maps[1])))
    torch.testing.assert_close(seen[0], expected, atol=1e-5, rtol=1e-5)
    # the hidden layer sees the convolved volume, then both pooled descriptors (database first)
    trunk_in = _capture_trunk_input(net)
    with torch.no_grad():
        net.regress(da, db)
        conv = net.correlation_net(expected).flatten(1)
    torch.testing.assert_close(trunk_in[0], torch.cat([conv, da[:, :256], db[:, :256]], 1), atol=1e-5, rtol=1e-5)


def test_correlation_head_survives_save_and_load(tmp_path) -> None:
    from visloc.models import load_model, save_model

    net = _net(head="correlation", hidden=16, correlation_stride=16, correlation_grid=(4, 4)).eval()
    assert net.local_channels == 128
    path = save_model(tmp_path / "m.pt", net, net.config)
    loaded = load_model(path)
    assert loaded.config.head == "correlation" and loaded.config.correlation_grid == (4, 4)
    # the encoder's split parts share its modules: nothing is stored twice
    n_encoder = sum(1 for k in net.state_dict() if k.startswith("encoder."))
    assert n_encoder == len(net.encoder.state_dict())
    assert not any(k.startswith("_encoder_parts") for k in net.state_dict())
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(loaded(x, x.flip(-1))[0], net(x, x.flip(-1))[0])
    with pytest.raises(ConfigError, match="correlation_grid"):
        RelPoseConfig(correlation_grid=(3,))
    with pytest.raises(ConfigError, match="no cut at stride"):
        RelPoseNet(RelPoseConfig(backbone=TINY, head="correlation", correlation_stride=64))


def test_mutual_matches_hand_computed() -> None:
    from visloc.models.relpose import mutual_matches

    eye = torch.eye(4)
    query = eye[:, [0, 1, 2]].view(1, 4, 1, 3)  # locations e0, e1, e2
    db = eye[:, [1, 0, 3]].view(1, 4, 1, 3)  # locations e1, e0, e3
    # e0 <-> e0 and e1 <-> e1 are mutual; e2 has no partner (its best, by argmax of zeros, is db[0] = e1,
    # whose best query location is e1, not e2)
    assert mutual_matches(query, db).tolist() == [2]
    assert mutual_matches(query, query).tolist() == [3]
    both = mutual_matches(torch.cat([query, query]), torch.cat([db, query]))
    assert both.tolist() == [2, 3]


def test_feature_maps_need_the_correlation_head() -> None:
    net = _net(head="correlation", hidden=16, correlation_grid=(4, 4)).eval()
    with torch.no_grad():
        desc = net.encode(torch.randn(2, 3, 64, 64))
    assert net.feature_maps(desc).shape == (2, 64, 4, 4)
    with pytest.raises(ConfigError, match="no feature maps"):
        _net(hidden=16).feature_maps(desc)
