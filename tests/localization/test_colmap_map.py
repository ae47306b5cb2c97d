"""Maps built from a COLMAP model (``visloc map build IMAGES --colmap MODEL``): the same localization as a map
built from the same poses given as hloc files, and ``points="colmap"`` maps whose 3D points come from the
model's observations.

Truth: the tiny embedded world's exact poses, intrinsics and registered depth."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import cv2
import h5py
import numpy as np
import pytest
from typer.testing import CliRunner

from visloc.cli import app
from visloc.datasets import FrameSet, load_frames
from visloc.errors import ConfigError
from visloc.geometry import pose_error
from visloc.io.cameras import write_cameras
from visloc.io.images import read_image
from visloc.io.poses import read_poses, write_poses
from visloc.localization import LocalizeConfig, MapConfig, build_map, localize
from visloc.localization.build import COLMAP_RADIUS_PX, points_from_depth, points_from_observations

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def train(tiny_world: Path) -> FrameSet:
    return load_frames(tiny_world, split="train")


def test_points_from_observations_takes_the_nearest_within_the_radius() -> None:
    obs = np.array([[10.0, 10.0], [11.0, 10.0], [50.0, 50.0]])
    xyz = np.array([[1.0, 0, 0], [2.0, 0, 0], [3.0, 0, 0]])
    kps = np.array([[10.2, 10.0], [10.9, 10.1], [50.0, 51.4], [50.0, 51.6], [0.0, 0.0], [10.2, 10.0]])
    got = points_from_observations(kps, obs, xyz, radius_px=1.5)
    assert got.shape == (6, 3) and got.dtype == np.float32
    np.testing.assert_array_equal(got[:, 0], [1, 2, 3, np.nan, np.nan, 1])
    assert np.isnan(points_from_observations(kps, np.zeros((0, 2)), np.zeros((0, 3)))).all()


def test_map_from_a_colmap_model_localizes_like_one_from_the_same_hloc_poses(colmap_writer,
    tiny_world: Path, train: FrameSet, tiny_map_config: MapConfig, tmp_path: Path
) -> None:
    """The done-when of issue 10: the same images, poses and intrinsics as a COLMAP model and as an hloc
    pose file + camera file over the same folder give the same maps and the same query poses (one room of
    the world, to keep it fast)."""
    db = [f for f in train.frames if f.scene == "kitchen"]
    queries = [f for f in load_frames(tiny_world, split="test").frames if f.scene == "kitchen"]
    write_poses(tmp_path / "poses.txt", {f.name: f.pose for f in db})
    write_cameras(tmp_path / "cameras.txt", {f.name: f.camera for f in db})
    # the model holds the poses of the pose file, as read back, so both maps start from the same numbers
    hloc_poses = read_poses(tmp_path / "poses.txt")
    model = colmap_writer(tmp_path / "sparse", [replace(f, pose=hloc_poses[f.name]) for f in db], binary=True)
    config = MapConfig(extractor_options=tiny_map_config.extractor_options, points="triangulate")
    from_colmap = build_map(tiny_world, tmp_path / "map_colmap", config, model_dir=model)
    from_hloc = build_map(tiny_world, tmp_path / "map_hloc", config, format="folder",
                          poses=tmp_path / "poses.txt", camera=tmp_path / "cameras.txt")
    assert from_colmap.num_images == from_hloc.num_images == len(db)
    for name in ("cameras.txt", "poses.txt"):  # the half pixel removed at the reader; poses untouched
        assert (tmp_path / "map_colmap" / name).read_text() == (tmp_path / "map_hloc" / name).read_text()
    assert json.loads((tmp_path / "map_colmap" / "map.json").read_text())["source"]["format"] == "colmap"

    for kind in ("colmap", "hloc"):
        localize(tmp_path / f"map_{kind}", queries, tmp_path / f"{kind}.txt", LocalizeConfig("pnp"))
    a, b = read_poses(tmp_path / "colmap.txt"), read_poses(tmp_path / "hloc.txt")
    assert set(a) == set(b) and len(a) >= 0.8 * len(queries)
    for name in a:
        t_err, r_err = pose_error(a[name], b[name])
        assert t_err < 1e-6 and r_err < 1e-4
    truth = {f.name: f.pose for f in queries}
    assert np.median([pose_error(a[n], truth[n])[0] for n in a]) < 0.02


def _observations(frames: list, per_image: int = 400) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """What a COLMAP model triangulated from SIFT would hold, from the world's exact geometry: OpenCV's own
    SIFT keypoints (its default contrast threshold and count, not visloc's; exact upsampling, without which
    OpenCV's keypoints sit 0.25 px off) with a 3D point from the registered depth."""
    sift = cv2.SIFT_create(nfeatures=per_image, enable_precise_upscale=True)
    out = {}
    for f in frames:
        kps = sift.detect(cv2.cvtColor(read_image(f.image_path), cv2.COLOR_RGB2GRAY), None)
        xy = np.unique(np.array([k.pt for k in kps], np.float64).reshape(-1, 2), axis=0)
        xyz = points_from_depth(f, xy)
        ok = np.isfinite(xyz).all(axis=1)
        out[f.name] = (xy[ok], xyz[ok].astype(np.float64))
    return out


def test_points_from_the_colmap_model_localize_the_queries(colmap_writer,
    tiny_world: Path, train: FrameSet, tiny_map_config: MapConfig, tmp_path: Path
) -> None:
    observations = _observations(train.frames)
    model = colmap_writer(tmp_path / "sparse", train.frames, binary=False, observations=observations)
    max_keypoints = tiny_map_config.extractor_options["max_keypoints"]
    result = CliRunner().invoke(app, ["map", "build", str(tiny_world), "--colmap", str(model), "--points", "colmap",
                                      "--out", str(tmp_path / "map"), "--extractor-set", f"max_keypoints={max_keypoints}"])
    assert result.exit_code == 0, result.output + repr(result.exception)
    manifest = json.loads((tmp_path / "map" / "map.json").read_text())
    assert manifest["points"] == "colmap" and manifest["source"]["format"] == "colmap"
    assert sorted(manifest["names"]) == sorted(train.names)
    # a keypoint takes the point of an observation within the radius (its point projects onto the
    # observation), and the others have no observation within it; a half-pixel slip of the convention
    # breaks both at the edge of the radius (taken at up to 1.5 + 0.7 px, left at 1.5 - 0.7 px)
    with h5py.File(tmp_path / "map" / "local_features.h5") as fk, h5py.File(tmp_path / "map" / "points3D.h5") as fp:
        residuals, taken = [], 0
        for f in train.frames:
            kps, pts = fk[f.name]["keypoints"][()], fp[f.name]["points3D"][()]
            has = np.isfinite(pts).all(axis=1)
            taken += has.sum()
            residuals.append(np.linalg.norm(f.camera.project_pinhole(f.pose.transform(pts[has])) - kps[has], axis=1))
            obs = observations[f.name][0]
            nearest = np.min(np.linalg.norm(kps[~has][:, None] - obs[None], axis=2), axis=1)
            assert np.all(nearest > COLMAP_RADIUS_PX - 1e-4)
    residuals = np.concatenate(residuals)
    # the SIFT keypoints of both detectors coincide (median ~1e-5 px)
    assert taken > 100 * len(train.frames) and np.median(residuals) < 0.01
    assert residuals.max() < COLMAP_RADIUS_PX + 1e-3
    run = localize(tmp_path / "map", tiny_world, tmp_path / "poses.txt", LocalizeConfig("pnp"), split="test")
    queries = load_frames(tiny_world, split="test").frames
    est = read_poses(tmp_path / "poses.txt")
    assert run.num_localized >= 0.9 * len(queries)
    errors = np.array([pose_error(est[f.name], f.pose) for f in queries if f.name in est])
    assert np.median(errors[:, 0]) < 0.02 and np.median(errors[:, 1]) < 0.5


def test_colmap_option_excludes_poses_and_camera(tiny_world: Path, tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["map", "build", str(tiny_world), "--colmap", str(tmp_path), "--poses",
                                      str(tmp_path / "poses.txt"), "--out", str(tmp_path / "map")])
    assert result.exit_code == 2 and "--colmap gives the poses and intrinsics" in result.output


def test_points_colmap_needs_a_colmap_model_and_unknown_modes_are_refused(tiny_world: Path, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"points=colmap.*read as 7scenes.*--colmap"):
        build_map(tiny_world, tmp_path / "m1", MapConfig(points="colmap"), split="train")
    with pytest.raises(ConfigError, match="unknown points mode 'sfm'"):
        build_map(tiny_world, tmp_path / "m2", MapConfig(points="sfm"), split="train")
    assert not (tmp_path / "m1" / "local_features.h5").exists()  # refused before any work
