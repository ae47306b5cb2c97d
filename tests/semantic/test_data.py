"""Semantic-matching datasets: exact synthetic ground truth, seeding, parameter ranges, real-pair geometry."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from visloc.datasets.semantic import KeypointImage, SemanticPair
from visloc.errors import ConfigError, InputError
from visloc.geometry.warps import Warp, sampling_grid, tps_target_to_source, warp_source_to_target
from visloc.models.preprocess import normalize, sample_generator
from visloc.semantic.data import (
    KeypointPairs,
    KeypointPairsConfig,
    SyntheticWarpConfig,
    SyntheticWarpPairs,
    crop_normalized_to_pixels,
    sample_affine_theta,
    sample_tps_theta,
)

OUT = (16, 20)  # output (H, W): working size round(16 * 16 / 9) x round(20 * 16 / 9) = 28 x 36


def bilinear(img: np.ndarray, x: float, y: float) -> np.ndarray:
    """Hand-written bilinear lookup of a (C, H, W) array at pixel (x, y), zeros outside."""
    _, h, w = img.shape
    x0, y0 = math.floor(x), math.floor(y)
    out = np.zeros(img.shape[0])
    for dx in (0, 1):
        for dy in (0, 1):
            xi, yi = x0 + dx, y0 + dy
            wgt = (1 - abs(x - xi)) * (1 - abs(y - yi))
            if 0 <= xi < w and 0 <= yi < h and wgt > 0:
                out += wgt * img[:, yi, xi]
    return out


def synth(kind: str, images, **kw) -> SyntheticWarpPairs:
    return SyntheticWarpPairs(images, SyntheticWarpConfig(kind=kind, output_size=OUT, normalize=False), **kw)


def map_target_to_padded(ds: SyntheticWarpPairs, theta: torch.Tensor, g: np.ndarray) -> np.ndarray:
    """Independent ground truth: target normalised point -> theta (by hand for the affine) -> padded pixel."""
    kind = ds.config.kind
    th = theta.double()
    if kind in ("affine", "two_stage"):
        if kind == "two_stage":
            g = tps_target_to_source(th[6:].reshape(1, 18), torch.tensor(g).reshape(1, 1, 2))[0, 0].numpy()
        a = th[:6].numpy().reshape(2, 3)
        p = a[:, :2] @ g + a[:, 2]
    else:
        p = tps_target_to_source(th.reshape(1, 18), torch.tensor(g).reshape(1, 1, 2))[0, 0].numpy()
    padded, (sx, sy) = ds.padded_image(0)
    _, hp, wp = padded.shape
    return np.array([(sx * p[0] + 1) * (wp - 1) / 2, (sy * p[1] + 1) * (hp - 1) / 2])


@pytest.mark.parametrize("kind", ["affine", "tps", "two_stage"])
def test_target_pixels_follow_the_ground_truth_grid(kind):
    rng = np.random.default_rng(0)
    ds = synth(kind, [rng.uniform(0, 1, (28, 36, 3))], length=4, seed=5)
    padded, (sx, sy) = ds.padded_image(0)
    assert padded.shape == (3, 28 + 2 * 14, 36 + 2 * 18)
    assert (sx, sy) == pytest.approx((9 / 16 * 35 / 71, 9 / 16 * 27 / 55))
    item = ds[2]
    assert item["kind"] == kind and item["theta"].shape == ({"affine": 6, "tps": 18, "two_stage": 24}[kind],)
    torch.testing.assert_close(item["theta"], ds.sample_theta(2).float())
    pad = padded.numpy().astype(np.float64)
    h, w = OUT
    for i, j in [(0, 0), (3, 7), (8, 10), (15, 19), (11, 2)]:
        g = np.array([2 * j / (w - 1) - 1, 2 * i / (h - 1) - 1])
        x, y = map_target_to_padded(ds, item["theta"].double(), g)
        np.testing.assert_allclose(item["target"][:, i, j].numpy(), bilinear(pad, x, y), atol=2e-5)
        xs, ys = (sx * g[0] + 1) * (pad.shape[2] - 1) / 2, (sy * g[1] + 1) * (pad.shape[1] - 1) / 2
        np.testing.assert_allclose(item["source"][:, i, j].numpy(), bilinear(pad, xs, ys), atol=2e-5)


@pytest.mark.parametrize("kind", ["affine", "tps", "two_stage"])
def test_target_is_the_source_warped_by_theta(kind):
    """On a linear ramp, bilinear resampling is exact: warping the *returned* source with theta gives the
    returned target wherever theta lands inside the source crop."""
    yy, xx = np.mgrid[0:28, 0:36].astype(np.float32)
    ramp = np.stack([0.1 + 0.02 * xx, 0.05 + 0.03 * yy, 0.9 - 0.01 * xx - 0.01 * yy], axis=-1)
    ds = synth(kind, [ramp], length=3, seed=11)
    for index in range(3):
        item = ds[index]
        theta, source = item["theta"][None].double(), item["source"][None].double()
        if kind == "two_stage":  # T = A o TPS
            warp = Warp(affine=theta[:, :6], tps=theta[:, 6:])
            warped, grid = warp.warp_source_to_target(source, OUT), warp.sampling_grid(OUT)[0]
        else:
            warped, grid = warp_source_to_target(source, theta, kind, OUT), sampling_grid(theta, kind, OUT)[0]
        inside = (grid.abs() <= 1.0 - 1e-6).all(-1)
        assert inside.float().mean() > 0.2
        diff = (warped[0].float() - item["target"]).abs().amax(0)
        assert float(diff[inside].max()) < 1e-4


def test_determinism_by_seed_index_and_epoch():
    rng = np.random.default_rng(1)
    images = [rng.uniform(0, 1, (30, 30, 3)), (rng.uniform(0, 255, (25, 40)) + 0.5).astype(np.uint8)]
    a, b = synth("tps", images, length=6, seed=3), synth("tps", images, length=6, seed=3)
    first = a[4]
    for k in (0, 5, 1):  # other accesses in between do not matter
        a[k]
    again = a[4]
    fresh = b[4]
    for item in (again, fresh):
        torch.testing.assert_close(item["theta"], first["theta"])
        torch.testing.assert_close(item["target"], first["target"])
    assert not torch.equal(a[3]["theta"], first["theta"])
    assert not torch.equal(synth("tps", images, length=6, seed=4)[4]["theta"], first["theta"])
    a.set_epoch(1)
    assert not torch.equal(a[4]["theta"], first["theta"])
    assert a[1]["source"].shape == (3, *OUT)  # the grey uint8 image is used for odd indices


def test_sampled_parameter_ranges():
    cfg = SyntheticWarpConfig()
    aff = torch.stack([sample_affine_theta(sample_generator(0, 0, i), cfg) for i in range(1500)]).numpy()
    cos_min = math.cos(math.pi / 6)
    for k in (0, 4):  # (1 + s) cos(alpha): s in [-0.5, 0.5], |alpha| <= pi/6
        assert aff[:, k].min() >= 0.5 * cos_min - 1e-12 and aff[:, k].max() <= 1.5 + 1e-12
    for k in (1, 3):  # -(1 + s) sin(alpha), (1 + s) sin(alpha)
        assert np.abs(aff[:, k]).max() <= 1.5 * 0.5 + 1e-12 and np.abs(aff[:, k]).max() > 0.6
    assert np.all(np.sign(aff[:, 1]) == -np.sign(aff[:, 3]))  # one rotation angle for both entries
    for k in (2, 5):
        assert np.abs(aff[:, k]).max() <= 0.5 and np.abs(aff[:, k]).max() > 0.49
    # without scaling the matrix is a pure rotation by alpha ~ U(-pi/6, pi/6)
    rot = torch.stack([sample_affine_theta(sample_generator(0, 0, i), SyntheticWarpConfig(random_s=0.0))
                       for i in range(500)]).numpy()
    np.testing.assert_allclose(rot[:, 0], rot[:, 4])
    np.testing.assert_allclose(rot[:, 1], -rot[:, 3])
    alpha = np.arctan2(rot[:, 3], rot[:, 0])
    assert np.abs(alpha).max() <= math.pi / 6 + 1e-12 and np.abs(alpha).max() > math.pi / 6 - 0.01
    # without rotation the diagonal is 1 + U(-0.5, 0.5) and the off-diagonal 0
    scl = torch.stack([sample_affine_theta(sample_generator(0, 0, i), SyntheticWarpConfig(random_alpha=0.0))
                       for i in range(500)]).numpy()
    assert np.all(scl[:, [1, 3]] == 0.0)
    assert scl[:, [0, 4]].min() >= 0.5 and scl[:, [0, 4]].max() <= 1.5
    assert scl[:, [0, 4]].min() < 0.51 and scl[:, [0, 4]].max() > 1.49
    identity = np.array([-1, -1, -1, 0, 0, 0, 1, 1, 1, -1, 0, 1, -1, 0, 1, -1, 0, 1], dtype=float)
    tps = torch.stack([sample_tps_theta(sample_generator(0, 0, i), cfg) for i in range(1000)]).numpy()
    dev = tps - identity
    assert np.abs(dev).max() <= 0.4 and np.abs(dev).max() > 0.39
    assert abs(dev.mean()) < 0.02


def test_default_photographs_and_normalisation():
    cfg = SyntheticWarpConfig(kind="affine", output_size=(24, 24))
    ds = SyntheticWarpPairs(config=cfg, length=2)
    assert len(ds.images) >= 10 and len(ds) == 2
    item = ds[0]
    raw = SyntheticWarpPairs(config=SyntheticWarpConfig(kind="affine", output_size=(24, 24), normalize=False))[0]
    torch.testing.assert_close(item["source"], normalize(raw["source"]))
    with pytest.raises(ConfigError, match="unknown synthetic transform kind"):
        SyntheticWarpConfig(kind="homography")


# --- real keypoint pairs -------------------------------------------------------------------------------------
def dot_image(path: Path, w: int, h: int, dots: list[tuple[int, int]]) -> KeypointImage:
    arr = np.zeros((h, w, 3), np.uint8)
    for x, y in dots:
        arr[y, x] = 255
    Image.fromarray(arr).save(path)
    return KeypointImage(path, "thing", np.array(dots, float), (h, w))


def brightest(img: torch.Tensor) -> tuple[int, int]:
    flat = int(img.sum(0).argmax())
    return flat % img.shape[-1], flat // img.shape[-1]


def test_keypoint_pairs_resize_keeps_normalised_coordinates(tmp_path):
    src = dot_image(tmp_path / "s.png", 40, 30, [(10, 20), (39, 0)])
    tgt = dot_image(tmp_path / "t.png", 20, 10, [(5, 5)])
    ds = KeypointPairs([SemanticPair(src, tgt, "thing")], KeypointPairsConfig(output_size=(59, 79), max_keypoints=3,
                                                                               normalize=False))
    item = ds[0]
    assert item["source"].shape == (3, 59, 79) and item["source_points"].shape == (3, 2)
    # x_n = 2 x / (W - 1) - 1
    np.testing.assert_allclose(item["source_points"][:2].numpy(), [[2 * 10 / 39 - 1, 2 * 20 / 29 - 1], [1, -1]],
                               atol=1e-6)
    assert item["source_mask"].tolist() == [True, True, False] and item["target_mask"].tolist() == [True, False, False]
    assert item["source_points"][2].tolist() == [0.0, 0.0]
    assert brightest(item["source"][:, :, :70]) == (20, 40)  # the 2x - 1 resize maps pixel 10 to 20
    assert item["source_size"].tolist() == [30, 40] and item["target_size"].tolist() == [10, 20]
    assert item["source_crop"].tolist() == [0, 0, 40, 30]
    back = crop_normalized_to_pixels(item["source_points"][:2], item["source_crop"])
    np.testing.assert_allclose(back.numpy(), src.keypoints, atol=1e-4)
    normed = KeypointPairs([SemanticPair(src, tgt, "thing")], KeypointPairsConfig(output_size=(59, 79)))[0]
    torch.testing.assert_close(normed["source"], normalize(item["source"]))


def test_keypoint_pairs_flip_mirrors_image_and_points(tmp_path):
    img = dot_image(tmp_path / "a.png", 40, 30, [(10, 20)])
    ds = KeypointPairs([SemanticPair(img, img, "thing", flip=True)],
                       KeypointPairsConfig(output_size=(59, 79), normalize=False))
    item = ds[0]
    assert item["flip"] is True and item["flip_source"] is False
    np.testing.assert_allclose(item["target_points"][0, 0], -item["source_points"][0, 0], atol=1e-6)
    assert brightest(item["target"]) == (2 * (39 - 10), 40)
    torch.testing.assert_close(item["target"], item["source"].flip(-1))


def test_keypoint_pairs_random_crop(tmp_path):
    img = dot_image(tmp_path / "a.png", 64, 48, [(2, 2), (32, 24), (60, 45)])
    ds = KeypointPairs([SemanticPair(img, img, "thing")] * 3,
                       KeypointPairsConfig(output_size=(24, 32), random_crop=True, normalize=False), seed=2)
    crops = set()
    for index in range(3):
        item = ds[index]
        for side in ("source", "target"):
            x0, y0, x1, y1 = item[f"{side}_crop"].tolist()
            assert 0 <= x0 < 16 and 0 <= y0 < 12 and 48 <= x1 < 64 and 36 <= y1 < 48
            crops.add((x0, y0, x1, y1))
            mask = item[f"{side}_mask"]
            assert mask.tolist() == [x0 <= 2 and y0 <= 2, True, x1 > 60 and y1 > 45]
            back = crop_normalized_to_pixels(item[f"{side}_points"], item[f"{side}_crop"])
            np.testing.assert_allclose(back[mask].numpy(), img.keypoints[mask.numpy()], atol=1e-4)
    assert len(crops) > 1  # each image draws its own crop
    epoch0 = [ds[i]["source_crop"].tolist() for i in range(3)]
    assert epoch0 == [ds[i]["source_crop"].tolist() for i in range(3)]
    ds.set_epoch(3)
    assert epoch0 != [ds[i]["source_crop"].tolist() for i in range(3)]


def test_keypoint_pairs_errors(tmp_path):
    img = dot_image(tmp_path / "a.png", 40, 30, [(1, 1), (2, 2)])
    with pytest.raises(ConfigError, match="more than max_keypoints=1"):
        KeypointPairs([SemanticPair(img, img, "thing")], KeypointPairsConfig(max_keypoints=1))
    wrong = KeypointImage(img.path, "thing", img.keypoints, (40, 30))
    with pytest.raises(InputError, match="annotation says"):
        KeypointPairs([SemanticPair(wrong, wrong, "thing")])[0]
