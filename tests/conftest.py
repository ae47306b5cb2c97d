"""Shared fixtures. Real data sets live under ``$VISLOC_DATA`` (default ``../shared/data``); tests that
need one skip with the reason when it is absent."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pycolmap
import pytest

from visloc.datasets import FrameSet
from visloc.datasets.synthetic import WorldConfig, make_world
from visloc.geometry import Camera, Pose
from visloc.localization import MapConfig, build_map
from visloc.settings import DATA_ENV, data_dir

#: Two rooms at 320x240: enough texture for SIFT, small enough for seconds of work.
TINY_WORLD = WorldConfig(
    num_scenes=2, train_traversals=2, frames_per_train_traversal=12, frames_per_test_traversal=6,
    width=320, height=240, focal=262.5, seed=3,
)
TINY_MAP = MapConfig(extractor_options={"max_keypoints": 1024})


def _require(sub: str) -> Path:
    path = data_dir() / sub
    if not path.exists():
        pytest.skip(f"real data set {sub!r} not found under {data_dir()} (set {DATA_ENV})")
    return path


@pytest.fixture(scope="session")
def real_data() -> Path:
    return _require("")


@pytest.fixture(scope="session")
def stairs_root() -> Path:
    return _require("7scenes_stairs_mini")


@pytest.fixture(scope="session")
def tum_root() -> Path:
    return _require("tum_fr2_desk")


@pytest.fixture(scope="session")
def scannet_root() -> Path:
    return _require("scannet_pairs")


@pytest.fixture(scope="session")
def weights_root() -> Path:
    return _require("weights")


@pytest.fixture(scope="session")
def tiny_world_config() -> WorldConfig:
    return TINY_WORLD


@pytest.fixture(scope="session")
def tiny_map_config() -> MapConfig:
    return TINY_MAP


@pytest.fixture(scope="session")
def tiny_world(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small embedded world (7-Scenes layout), made once per session."""
    return make_world(tmp_path_factory.mktemp("world") / "world", TINY_WORLD, progress=False)


@pytest.fixture(scope="session")
def tiny_map(tiny_world: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The map of the tiny world's training traversals."""
    out = tmp_path_factory.mktemp("map") / "map"
    build_map(tiny_world, out, TINY_MAP, split="train")
    return out


def make_pf_willow(root: Path, classes: tuple[str, ...], per_class: int = 3, seed: int = 0,
                   base_hw: tuple[int, int] = (24, 30), step_hw: tuple[int, int] = (1, 2)) -> Path:
    """A PF-WILLOW-layout folder: random PNGs (image ``i`` is ``base_hw + i * step_hw`` pixels), 10
    keypoints each in 1-based ``.mat`` files."""
    import scipy.io
    from PIL import Image

    rng = np.random.default_rng(seed)
    for c in classes:
        folder = root / c
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            h, w = base_hw[0] + step_hw[0] * i, base_hw[1] + step_hw[1] * i
            Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).save(folder / f"im{i}.png")
            pts = np.stack([rng.uniform(1, w, 10), rng.uniform(1, h, 10)])
            scipy.io.savemat(folder / f"im{i}.mat", {"pts_coord": pts})
    return root


@pytest.fixture(scope="session")
def pf_willow_factory() -> Callable[..., Path]:
    """:func:`make_pf_willow`, for the semantic-matching tests."""
    return make_pf_willow


def write_colmap_model(out: Path, frames: FrameSet | list, binary: bool,
                       observations: dict[str, tuple[np.ndarray, np.ndarray]] | None = None,
                       extra: dict[str, Pose] | None = None) -> Path:
    """A COLMAP model of ``frames`` (PINHOLE cameras, visloc convention) written by pycolmap, in COLMAP's
    pixel convention: principal points and observations ``+ 0.5``. ``observations``: ``{name: (xy in
    visloc pixels (N, 2), world points (N, 3))}``, one 3D point each. ``extra``: more registered images
    (sharing the first frame's camera) that need not exist on disk."""
    frames = list(getattr(frames, "frames", frames))
    rec = pycolmap.Reconstruction()
    camera_ids: dict[Camera, int] = {}
    observations = observations or {}
    entries = [(f.name, f.camera, f.pose) for f in frames] + [(n, frames[0].camera, p) for n, p in (extra or {}).items()]
    for image_id, (name, cam, pose) in enumerate(entries, start=1):
        if cam not in camera_ids:
            assert cam.model == "PINHOLE"
            fx, fy, cx, cy = cam.params
            camera_ids[cam] = len(camera_ids) + 1
            rec.add_camera_with_trivial_rig(pycolmap.Camera(
                model="PINHOLE", width=cam.width, height=cam.height, params=[fx, fy, cx + 0.5, cy + 0.5],
                camera_id=camera_ids[cam]))
        xy, xyz = observations.get(name, (np.zeros((0, 2)), np.zeros((0, 3))))
        image = pycolmap.Image(name=name, keypoints=np.asarray(xy, np.float64) + 0.5, camera_id=camera_ids[cam],
                               image_id=image_id)
        rec.add_image_with_trivial_frame(image, pycolmap.Rigid3d(pycolmap.Rotation3d(pose.R), pose.t))
        for j, X in enumerate(xyz):
            track = pycolmap.Track()
            track.add_element(image_id, j)
            rec.add_point3D(np.asarray(X, np.float64), track)
    out.mkdir(parents=True, exist_ok=True)
    (rec.write_binary if binary else rec.write_text)(str(out))
    return out


@pytest.fixture(scope="session")
def colmap_writer() -> Callable[..., Path]:
    """:func:`write_colmap_model`, for the COLMAP reader and map tests."""
    return write_colmap_model
