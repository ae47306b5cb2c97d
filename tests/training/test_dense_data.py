"""Dense-matching training pairs: synthetic warps against OpenCV and hand-applied transforms, world pairs
against views rendered at the output size and hand projection."""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from torch.utils.data import DataLoader

from visloc.datasets.synthetic import PHOTO_SOURCES, WorldConfig, build_world, make_world, render_layers
from visloc.errors import ConfigError, InputError
from visloc.geometry import Camera
from visloc.training.dense_data import (
    SyntheticWarpPairs,
    WarpPairConfig,
    WorldPairConfig,
    WorldViewPairs,
)
from visloc.training.pairs import PairSamplingConfig

SIZE = (33, 41)  # odd sides: the centre of the image is a pixel (the middle TPS control points)

#: Two small rooms without photometric nuisances (written images = renderings, lighting off).
WORLD = WorldConfig(num_scenes=2, train_traversals=1, frames_per_train_traversal=8, frames_per_test_traversal=2,
                    width=160, height=120, focal=131.25, seed=3, exposure=0.0, white_balance=0.0, noise_sigma=0.0)
WORLD_PAIRS = WorldPairConfig(output_size=(60, 80), split="all",
                              sampling=PairSamplingConfig(min_overlap=0.3, max_overlap=0.9, max_pairs_per_scene=4, seed=1))


def _synthetic(kind: str, seed: int = 0, **kw) -> SyntheticWarpPairs:
    return SyntheticWarpPairs(config=WarpPairConfig(output_size=SIZE, kinds=(kind,), kind_probabilities=(1.0,),
                                                    seed=seed, **kw), length=6)


def _pixel_lattice(h: int, w: int) -> np.ndarray:
    v, u = np.mgrid[0:h, 0:w].astype(np.float64)
    return np.stack([u, v])


# --- synthetic pairs ----------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["homography", "affine", "tps"])
def test_target_is_the_source_warped_by_the_map(kind: str) -> None:
    ds = _synthetic(kind)
    h, w = SIZE
    for i in range(3):
        item = ds[i]
        assert item["kind"] == kind
        assert item["source"].shape == item["target"].shape == (3, h, w)
        assert item["map"].shape == (2, h, w) and item["map"].dtype == torch.float32
        assert item["mask"].shape == (1, h, w) and item["mask"].dtype == torch.bool
        src = item["source"].permute(1, 2, 0).numpy()
        map_ = item["map"].numpy()
        warped = cv2.remap(src, map_[0], map_[1], cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0)
        # where the bilinear footprint lies inside the source, the target is the warped source
        inner = (map_[0] >= 0) & (map_[0] <= w - 1) & (map_[1] >= 0) & (map_[1] <= h - 1)
        assert inner.mean() > 0.2
        diff = np.abs(warped - item["target"].permute(1, 2, 0).numpy())[inner]
        assert diff.max() < 1e-3
        # the mask is "inside the source" in the normalised form: |x_n| <= 1 with x_n = (2x + 1) / W - 1
        xn, yn = (2 * map_[0] + 1) / w - 1, (2 * map_[1] + 1) / h - 1
        np.testing.assert_array_equal(item["mask"][0].numpy(), (np.abs(xn) <= 1) & (np.abs(yn) <= 1))
        assert 0.0 <= item["target"].min() and item["target"].max() <= 1.0


def test_homography_map_is_the_inverse_homography_of_the_target_pixels() -> None:
    ds = _synthetic("homography")
    h, w = SIZE
    rng = np.random.default_rng(0)
    for i in range(4):
        sample = ds.sample_warp(i)
        H = sample.homography
        # the target's corners are the source's corners moved by at most homography_shift of the sides
        corners = np.array([[0, 0], [w - 1, 0], [w - 1, h - 1], [0, h - 1]], dtype=np.float64).reshape(-1, 1, 2)
        moved = cv2.perspectiveTransform(corners, H).reshape(-1, 2) - corners.reshape(-1, 2)
        assert np.all(np.abs(moved) <= 0.25 * np.array([w, h]) + 1e-3)
        assert np.abs(moved).max() > 0.5
        pts = np.stack([rng.integers(0, w, 50), rng.integers(0, h, 50)], axis=1).astype(np.float64)
        expected = cv2.perspectiveTransform(pts.reshape(-1, 1, 2), np.linalg.inv(H)).reshape(-1, 2)
        got = ds[i]["map"].numpy()[:, pts[:, 1].astype(int), pts[:, 0].astype(int)].T
        np.testing.assert_allclose(got, expected, atol=1e-3)


def test_affine_map_agrees_with_the_affine_matrix_by_hand() -> None:
    ds = _synthetic("affine")
    h, w = SIZE
    u, v = _pixel_lattice(h, w)
    for i in range(3):
        a11, a12, tx, a21, a22, ty = ds.sample_warp(i).theta.tolist()
        xn, yn = 2 * u / (w - 1) - 1, 2 * v / (h - 1) - 1  # align_corners=True normalisation of the warps
        xs, ys = a11 * xn + a12 * yn + tx, a21 * xn + a22 * yn + ty
        expected = np.stack([(xs + 1) * (w - 1) / 2, (ys + 1) * (h - 1) / 2])
        np.testing.assert_allclose(ds[i]["map"].numpy(), expected, atol=1e-4)


def test_tps_map_takes_the_control_points_to_theta() -> None:
    ds = _synthetic("tps")
    h, w = SIZE
    cols, rows = [0, (w - 1) // 2, w - 1], [0, (h - 1) // 2, h - 1]  # normalised -1, 0, 1
    for i in range(3):
        theta = ds.sample_warp(i).theta.numpy()
        map_ = ds[i]["map"].numpy()
        k = 0
        for c in cols:  # control points: x slowest, as the warps' theta
            for r in rows:
                expected = ((theta[k] + 1) * (w - 1) / 2, (theta[9 + k] + 1) * (h - 1) / 2)
                np.testing.assert_allclose(map_[:, r, c], expected, atol=1e-4)
                k += 1


def test_items_are_deterministic_per_seed_epoch_and_index() -> None:
    cfg = WarpPairConfig(output_size=SIZE, seed=4)
    a, b = SyntheticWarpPairs(config=cfg, length=8), SyntheticWarpPairs(config=cfg, length=8)
    for i in (0, 5):
        x, y = a[i], b[i]
        assert x["kind"] == y["kind"]
        for key in ("source", "target", "map", "mask"):
            assert torch.equal(x[key], y[key])
    maps0 = [a[i]["map"] for i in range(4)]
    a.set_epoch(1)
    assert all(not torch.equal(m, a[i]["map"]) for i, m in enumerate(maps0))
    a.set_epoch(0)
    assert all(torch.equal(m, a[i]["map"]) for i, m in enumerate(maps0))
    other = SyntheticWarpPairs(config=dataclasses.replace(cfg, seed=5), length=8)
    assert not torch.equal(other[0]["map"], maps0[0])


def test_kinds_follow_their_probabilities() -> None:
    ds = SyntheticWarpPairs(config=WarpPairConfig(output_size=(8, 8), kinds=("affine", "homography"),
                                                  kind_probabilities=(3.0, 1.0)), length=400)
    kinds = [ds.sample_warp(i).kind for i in range(400)]
    assert set(kinds) == {"affine", "homography"}
    assert 0.68 < kinds.count("affine") / 400 < 0.82


def test_photometric_jitter_changes_the_images_but_not_the_map() -> None:
    plain, jittered = _synthetic("affine"), _synthetic("affine", jitter=0.4)
    x, y = plain[1], jittered[1]
    assert torch.equal(x["map"], y["map"]) and torch.equal(x["mask"], y["mask"])
    assert not torch.allclose(x["target"], y["target"], atol=1e-3)
    assert 0.0 <= y["target"].min() and y["target"].max() <= 1.0


def test_default_photographs_and_a_user_folder(tmp_path: Path) -> None:
    ds = SyntheticWarpPairs(config=WarpPairConfig(output_size=SIZE), length=3)
    assert list(ds.images) == list(PHOTO_SOURCES)
    rng = np.random.default_rng(0)
    for name in ("a.png", "b.jpg"):
        Image.fromarray(rng.integers(0, 255, (50, 70, 3), dtype=np.uint8)).save(tmp_path / name)
    mine = SyntheticWarpPairs(tmp_path, WarpPairConfig(output_size=SIZE), length=4)
    assert [Path(p).name for p in mine.images] == ["a.png", "b.jpg"]
    item = mine[1]
    assert item["source"].shape == (3, *SIZE)
    with pytest.raises(InputError, match="does not exist"):
        SyntheticWarpPairs([tmp_path / "missing.png"])
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError):
        SyntheticWarpPairs(tmp_path / "empty")
    (tmp_path / "broken.png").write_bytes(b"not an image")
    with pytest.raises(InputError, match=r"broken\.png"):
        SyntheticWarpPairs([tmp_path / "broken.png"], WarpPairConfig(output_size=SIZE))[0]


@pytest.mark.parametrize("bad", [
    {"kinds": ("rotation",), "kind_probabilities": (1.0,)},
    {"kinds": ("affine", "affine"), "kind_probabilities": (1.0, 1.0)},
    {"kind_probabilities": (1.0, 1.0)},
    {"kind_probabilities": (0.0, 0.0, 0.0)},
    {"kind_probabilities": (1.0, -1.0, 1.0)},
    {"output_size": (1, 240)},
    {"homography_shift": 0.5},
    {"crop_factor": 0.0},
    {"jitter": 1.0},
    {"seed": -1},
])
def test_bad_synthetic_configs_are_rejected(bad: dict) -> None:
    with pytest.raises(ConfigError):
        WarpPairConfig(**bad)


def test_synthetic_items_collate_with_the_default_loader() -> None:
    ds = SyntheticWarpPairs(config=WarpPairConfig(output_size=SIZE), length=4)
    batch = next(iter(DataLoader(ds, batch_size=4)))
    assert batch["source"].shape == batch["target"].shape == (4, 3, *SIZE)
    assert batch["map"].shape == (4, 2, *SIZE) and batch["mask"].shape == (4, 1, *SIZE)
    assert len(batch["kind"]) == 4


# --- world pairs --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_world(tmp_path_factory.mktemp("dense") / "world", WORLD, progress=False)


@pytest.fixture(scope="module")
def world_pairs(world: Path) -> WorldViewPairs:
    return WorldViewPairs(world, WORLD_PAIRS)


def test_world_pairs_warp_the_source_onto_the_target(world_pairs: WorldViewPairs) -> None:
    assert len(world_pairs) == 8  # 4 per scene
    for i in range(len(world_pairs)):
        item = world_pairs[i]
        assert item["source"].shape == item["target"].shape == (3, 60, 80)
        assert item["map"].shape == (2, 60, 80) and item["mask"].shape == (1, 60, 80)
        mask = item["mask"][0]
        assert mask.float().mean() > 0.2
        grid = (2 * item["map"] + 1) / torch.tensor([80.0, 60.0]).view(2, 1, 1) - 1
        warped = F.grid_sample(item["source"][None], grid.permute(1, 2, 0)[None], align_corners=False,
                               padding_mode="border")[0]
        error = (warped - item["target"]).abs().mean(0)[mask].mean()
        identity_error = (item["source"] - item["target"]).abs().mean(0)[mask].mean()
        assert error < 0.04 and error < 0.2 * identity_error


def test_world_pair_map_matches_a_rendering_at_the_output_size(world_pairs: WorldViewPairs) -> None:
    """Independent truth: render the target at 80 x 60 with the scaled camera (exact depth on the output
    lattice), back-project, project into the full-size source by hand, scale to the output size. Exact
    where the 2 x 2 full-resolution pixels an output pixel comes from see one quad (one plane); a fraction
    of a pixel off across creases."""
    scene_world = build_world(WORLD)
    for index in (0, 5):
        item = world_pairs[index]
        src, tgt = world_pairs.frames[item["source_name"]], world_pairs.frames[item["target_name"]]
        cam = tgt.camera
        small = Camera(cam.model, 80, 60, cam.scaled(80 / cam.width, 60 / cam.height).params)
        depth = render_layers(scene_world, small, tgt.pose).depth.astype(np.float64)
        mask = item["mask"][0].numpy()
        assert np.isfinite(depth[mask]).all()
        v, u = np.nonzero(mask)
        z = depth[v, u]
        rays = np.stack([(u - small.K[0, 2]) / small.K[0, 0], (v - small.K[1, 2]) / small.K[1, 1], np.ones(z.size)])
        world_pts = tgt.pose.R.T @ (rays * z - tgt.pose.t[:, None])
        in_src = src.pose.R @ world_pts + src.pose.t[:, None]
        pix = src.camera.K @ in_src
        x, y = pix[0] / pix[2], pix[1] / pix[2]
        expected = np.stack([(x + 0.5) * 80 / src.camera.width - 0.5, (y + 0.5) * 60 / src.camera.height - 0.5])
        error = np.abs(item["map"].numpy()[:, v, u] - expected).max(axis=0)
        quads = render_layers(scene_world, cam, tgt.pose).quad_index  # full resolution: output pixel = 2 x 2 block
        blocks = np.stack([quads[2 * v + dv, 2 * u + du] for dv in (0, 1) for du in (0, 1)])
        one_plane = (blocks == blocks[0]).all(axis=0)
        assert one_plane.mean() > 0.9
        assert error[one_plane].max() < 0.02
        assert error.max() < 0.5


def test_world_pairs_report_overlap_view_angle_and_names(world_pairs: WorldViewPairs) -> None:
    for i in range(len(world_pairs)):
        item = world_pairs[i]
        pair = world_pairs.pairs[i]
        assert (item["source_name"], item["target_name"]) == (pair.db, pair.query)
        assert item["scene"] == item["source_name"].split("/")[0] == item["target_name"].split("/")[0]
        assert 0.3 <= item["overlap"].item() <= 0.9
        a, b = world_pairs.frames[pair.db].pose, world_pairs.frames[pair.query].pose
        cos = float(np.clip(a.R[2] @ b.R[2], -1, 1))  # optical axes: third rows of cam_from_world
        assert item["view_angle_deg"].item() == pytest.approx(np.degrees(np.arccos(cos)), abs=1e-3)
        assert item["kind"] == "world"
    batch = next(iter(DataLoader(world_pairs, batch_size=3)))
    assert batch["map"].shape == (3, 2, 60, 80) and batch["overlap"].shape == (3,)
    assert len(batch["source_name"]) == 3


def test_world_pairs_filter_scenes(world: Path, world_pairs: WorldViewPairs) -> None:
    names = sorted({world_pairs[i]["scene"] for i in range(len(world_pairs))})
    assert len(names) == 2
    only = WorldViewPairs(world, dataclasses.replace(WORLD_PAIRS, scenes=(names[0],)))
    assert {p.db.split("/")[0] for p in only.pairs} == {names[0]}
    without = WorldViewPairs(world, dataclasses.replace(WORLD_PAIRS, exclude_scenes=(names[0],)))
    assert {p.db.split("/")[0] for p in without.pairs} == {names[1]}
    with pytest.raises(ConfigError, match="unknown scene"):
        WorldViewPairs(world, dataclasses.replace(WORLD_PAIRS, scenes=("nowhere",)))
    with pytest.raises(ConfigError, match="excluded"):
        WorldViewPairs(world, dataclasses.replace(WORLD_PAIRS, exclude_scenes=tuple(names)))
    with pytest.raises(ConfigError):
        dataclasses.replace(WORLD_PAIRS, scenes=(names[0],), exclude_scenes=(names[0],))
    narrow = dataclasses.replace(WORLD_PAIRS, sampling=PairSamplingConfig(min_overlap=0.999, max_overlap=1.0))
    with pytest.raises(ConfigError, match="no pair"):
        WorldViewPairs(world, narrow)


def test_world_without_registered_depth_is_an_input_error(world: Path, tmp_path: Path) -> None:
    copy = tmp_path / "no_depth"
    shutil.copytree(world, copy)
    (copy / "dataset.json").unlink()  # 7-Scenes default: depth not registered to the colour images
    with pytest.raises(InputError, match="registered depth"):
        WorldViewPairs(copy, WORLD_PAIRS)
