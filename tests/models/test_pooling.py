"""Global pooling: hand-computed MAC/SPoC/GeM, the exact R-MAC grid, saliency weighting, NetVLAD init."""

from __future__ import annotations

import math

import pytest
import torch

from visloc.errors import ConfigError
from visloc.models.pooling import (
    GeM,
    NetVLAD,
    gem,
    l2n,
    mac,
    rmac,
    rmac_region_vectors,
    rmac_regions,
    saliency_map,
    spoc,
    weighted_rmac,
)


@pytest.fixture
def small() -> torch.Tensor:
    # one image, one channel, 2x2 map with values 1, 2, 3, 4
    return torch.tensor([[[[1.0, 2.0], [3.0, 4.0]]]])


def test_mac_spoc_gem_hand_computed(small: torch.Tensor) -> None:
    assert mac(small).tolist() == [[4.0]]
    assert spoc(small).tolist() == [[2.5]]
    assert gem(small, p=1.0).item() == pytest.approx(2.5)
    # p = 2: sqrt((1 + 4 + 9 + 16) / 4) = sqrt(7.5)
    assert gem(small, p=2.0).item() == pytest.approx(math.sqrt(7.5))
    # p = 3 (GeM default): cbrt((1 + 8 + 27 + 64) / 4) = cbrt(25)
    assert GeM()(small).item() == pytest.approx(25 ** (1 / 3), rel=1e-6)
    # p -> large approaches the max from below: (4^p / 4)^(1/p) = 4 * 4^(-1/p)
    assert gem(small.double(), p=200.0).item() == pytest.approx(4 * 4 ** (-1 / 200))
    assert 3.9 < gem(small.double(), p=200.0).item() < 4.0


def test_pooling_shapes_and_negative_activations() -> None:
    x = torch.randn(3, 5, 7, 9)
    for f in (mac, spoc, gem, rmac):
        assert f(x).shape == (3, 5)
    # GeM clamps to eps: an all-negative channel pools to eps, never NaN
    out = gem(-torch.ones(1, 1, 2, 2), p=3.0, eps=1e-6)
    assert torch.isfinite(out).all() and out.item() == pytest.approx(1e-6)
    with pytest.raises(ValueError):
        mac(torch.ones(2, 3))


def test_gem_module_learnable_p_and_gradcheck() -> None:
    pool = GeM()
    assert isinstance(pool.p, torch.nn.Parameter) and pool.p.item() == 3.0
    x = torch.rand(2, 4, 3, 3, dtype=torch.float64) + 0.1
    p = torch.tensor([3.0], dtype=torch.float64, requires_grad=True)
    xr = x.clone().requires_grad_(True)
    assert torch.autograd.gradcheck(lambda a, b: gem(a, p=b), (xr, p))
    out = pool(x.float()).sum()
    out.backward()
    assert pool.p.grad is not None and torch.isfinite(pool.p.grad).all()


def test_rmac_regions_30x40_by_hand() -> None:
    # H = 30, W = 40: w = min = 30. Long-side count n in 2..7 with b = (40 - 30) / (n - 1) = 10, 5, 3.33,
    # 2.5, 2, 1.67 gives overlaps 1 - b/30 = 0.667, 0.833, 0.889, ...; closest to 0.4 is n = 2 -> extra = 1.
    # level 1: side floor(60/2) = 30; 1 + 1 = 2 columns, starts 0 and (40-30)/1 = 10; 1 row at 0.
    l1 = [(0, 0, 30, 30), (10, 0, 40, 30)]
    # level 2: side floor(60/3) = 20; 3 columns, step (40-20)/2 = 10 -> 0, 10, 20; 2 rows, step 10 -> 0, 10.
    l2 = [(x, y, x + 20, y + 20) for y in (0, 10) for x in (0, 10, 20)]
    # level 3: side floor(60/4) = 15; 4 columns, step 25/3 -> floor(0, 8.33, 16.67, 25) = 0, 8, 16, 25;
    # 3 rows, step 15/2 = 7.5 -> floor(0, 7.5, 15) = 0, 7, 15.
    l3 = [(x, y, x + 15, y + 15) for y in (0, 7, 15) for x in (0, 8, 16, 25)]
    assert [tuple(b) for b in rmac_regions(30, 40, levels=1).tolist()] == l1
    assert [tuple(b) for b in rmac_regions(30, 40, levels=2).tolist()] == l1 + l2
    boxes = rmac_regions(30, 40, levels=3)
    assert boxes.dtype == torch.int64 and boxes.shape == (20, 4)
    assert [tuple(b) for b in boxes.tolist()] == l1 + l2 + l3
    # transposed map: the extra regions go along the (now long) height
    tboxes = rmac_regions(40, 30, levels=3).tolist()
    assert sorted(tboxes) == sorted([y0, x0, y1, x1] for x0, y0, x1, y1 in boxes.tolist())


def test_rmac_regions_square_and_inside() -> None:
    # square 10x10: no extra regions; level l has l x l squares of side floor(20 / (l + 1)).
    assert rmac_regions(10, 10, levels=1).tolist() == [[0, 0, 10, 10]]
    assert rmac_regions(10, 10, levels=2).shape == (1 + 4, 4)
    for h, w in [(7, 23), (37, 50), (1, 5), (64, 48)]:
        b = rmac_regions(h, w, levels=3)
        assert (b[:, 0] >= 0).all() and (b[:, 1] >= 0).all()
        assert (b[:, 2] <= w).all() and (b[:, 3] <= h).all()
        assert (b[:, 2] - b[:, 0] == b[:, 3] - b[:, 1]).all()


def test_rmac_matches_manual_sum() -> None:
    torch.manual_seed(0)
    x = torch.rand(2, 6, 30, 40)
    expected = torch.zeros(2, 6)
    for x0, y0, x1, y1 in rmac_regions(30, 40, 3).tolist():
        expected += l2n(x[..., y0:y1, x0:x1].amax(dim=(-2, -1)))
    out = rmac(x, levels=3)
    torch.testing.assert_close(out, l2n(expected))
    torch.testing.assert_close(out.norm(dim=1), torch.ones(2))
    # cirtorch's variant adds the whole-map MAC
    torch.testing.assert_close(rmac(x, include_global=True), l2n(expected + l2n(mac(x))))
    assert rmac_region_vectors(x, 3).shape == (2, 20, 6)


def test_weighted_rmac_uniform_equals_rmac_and_weights_by_max() -> None:
    torch.manual_seed(1)
    x = torch.rand(2, 5, 12, 16)
    uniform = torch.full((2, 12, 16), 0.3)
    for weighting in ("max", "mean"):
        torch.testing.assert_close(
            weighted_rmac(x, uniform, levels=2, weighting=weighting), rmac(x, levels=2)
        )
    # a saliency that is 1 in a single pixel only weights the regions containing it
    sal = torch.zeros(2, 12, 16)
    sal[:, 0, 0] = 1.0
    boxes = rmac_regions(12, 16, 2).tolist()
    vecs = rmac_region_vectors(x, 2)
    inside = torch.tensor([x0 <= 0 < x1 and y0 <= 0 < y1 for x0, y0, x1, y1 in boxes])
    torch.testing.assert_close(weighted_rmac(x, sal, levels=2), l2n(vecs[:, inside].sum(1)))
    with pytest.raises(ValueError):
        weighted_rmac(x, sal[0], levels=2)
    with pytest.raises(ConfigError):
        weighted_rmac(x, sal, levels=2, weighting="median")


def test_saliency_map() -> None:
    x = torch.tensor([[[[1.0, -2.0], [0.0, 3.0]], [[1.0, 1.0], [0.0, 1.0]]]])
    # ReLU then channel sum: [[2, 1], [0, 4]] / 4
    torch.testing.assert_close(saliency_map(x), torch.tensor([[[0.5, 0.25], [0.0, 1.0]]]))
    assert saliency_map(torch.zeros(1, 2, 3, 3)).abs().sum() == 0


def _two_cluster_map(n: int = 64) -> tuple[torch.Tensor, torch.Tensor]:
    """Descriptors around two orthogonal directions in R^8; returns (N, 8) and the label per row."""
    gen = torch.Generator().manual_seed(0)
    centres = torch.zeros(2, 8)
    centres[0, 0] = 1.0
    centres[1, 1] = 1.0
    labels = torch.arange(n) % 2
    desc = centres[labels] + 0.05 * torch.randn(n, 8, generator=gen)
    return desc, labels


def test_netvlad_init_from_separable_clusters() -> None:
    desc, labels = _two_cluster_map()
    vlad = NetVLAD(num_clusters=2, dim=8).init_from(desc)
    assert vlad.alpha > 0
    fmap = desc.T.reshape(1, 8, 8, 8)  # the descriptors as an 8x8 map
    a = vlad.soft_assign(fmap).reshape(2, -1)  # (K, N)
    torch.testing.assert_close(a.sum(0), torch.ones(64))
    assert (a.max(0).values > 0.97).all()  # near one-hot
    # alpha = -log(0.01) / mean(d1 - d2) makes the mean log-ratio nearest/second exactly log(100)
    top2 = a.topk(2, dim=0).values
    assert torch.log(top2[0] / top2[1]).mean().item() == pytest.approx(math.log(100.0), rel=1e-4)
    # and consistent with the true clusters (up to the cluster permutation)
    hard = a.argmax(0)
    assert torch.equal(hard, labels) or torch.equal(hard, 1 - labels)
    out = vlad(fmap)
    assert out.shape == (1, 16) and vlad.output_dim == 16
    torch.testing.assert_close(out.norm(dim=1), torch.ones(1))


def test_netvlad_matches_explicit_formula() -> None:
    torch.manual_seed(2)
    vlad = NetVLAD(num_clusters=3, dim=4)
    vlad.init_from(torch.randn(50, 4), seed=1)
    x = torch.randn(2, 4, 3, 5)
    xn = torch.nn.functional.normalize(x, dim=1).flatten(2)  # (B, C, N)
    a = vlad.soft_assign(x).flatten(2)  # (B, K, N)
    rows = []
    for b in range(2):
        v = torch.stack([(a[b, k] * (xn[b] - vlad.centroids[k, :, None])).sum(1) for k in range(3)])
        v = torch.nn.functional.normalize(v, dim=1).flatten()
        rows.append(torch.nn.functional.normalize(v, dim=0))
    torch.testing.assert_close(vlad(x), torch.stack(rows), rtol=1e-5, atol=1e-6)
    # gradients reach the assignment weights and the centroids
    vlad(x).sum().backward()
    assert vlad.conv.weight.grad is not None and vlad.centroids.grad is not None


def test_netvlad_given_centroids_and_errors() -> None:
    desc, _ = _two_cluster_map()
    c = torch.eye(8)[:2]
    vlad = NetVLAD(2, 8).init_from(desc, centroids=c)
    torch.testing.assert_close(vlad.centroids.data, c)
    # conv weights are alpha * c_k / ||c_k||
    torch.testing.assert_close(vlad.conv.weight.data.view(2, 8), vlad.alpha * c)
    with pytest.raises(ValueError):
        vlad.init_from(torch.randn(10, 7))
    with pytest.raises(ValueError):
        vlad.init_from(desc, centroids=torch.eye(8)[:3])
    with pytest.raises(ValueError):
        vlad(torch.randn(1, 7, 2, 2))
