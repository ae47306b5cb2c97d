"""Pair sampling by view overlap and Publication V pair files."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest

from visloc.datasets import Frame, load_frames
from visloc.datasets.synthetic import build_world, render_layers
from visloc.errors import ConfigError, InputError
from visloc.geometry import Camera, Pose
from visloc.geometry.relative_pose import relative_pose_label
from visloc.io.images import read_depth
from visloc.training.pairs import (
    PairSamplingConfig,
    frame_overlap,
    pair_sidecar,
    pose_overlap,
    read_pair_file,
    sample_pairs,
    view_overlap,
    write_pair_file,
)

#: A small pinhole camera: 100 x 80 pixels, f = 50, principal point at the image centre (pixel centres
#: at integer coordinates, so the centre is (49.5, 39.5)).
CAM = Camera.pinhole(50.0, 50.0, 49.5, 39.5, 100, 80)
WALL = np.full((80, 100), 2.0, dtype=np.float32)  # a fronto-parallel wall 2 m in front


def _rot_y(deg: float) -> np.ndarray:
    a = np.radians(deg)
    return np.array([[np.cos(a), 0, np.sin(a)], [0, 1, 0], [-np.sin(a), 0, np.cos(a)]])


@pytest.fixture(scope="module")
def train_frames(tiny_world: Path):
    return load_frames(tiny_world, split="train")


@pytest.fixture(scope="module")
def small_sampling() -> PairSamplingConfig:
    return PairSamplingConfig(max_pairs_per_scene=20, seed=5)


# --- overlap ------------------------------------------------------------------------------------------
def test_overlap_of_a_frame_with_itself_is_one(train_frames) -> None:
    frame = train_frames.frames[3]
    assert frame.depth_path is not None
    assert frame_overlap(frame, frame) == 1.0
    depth = read_depth(frame.depth_path, frame.depth_scale)
    assert view_overlap(depth, frame.camera, frame.pose, depth, frame.camera, frame.pose, grid_step=1) == 1.0


def test_opposite_view_directions_have_zero_overlap() -> None:
    a = Pose.identity()
    b = Pose(_rot_y(180.0), np.zeros(3))  # same centre, looking backwards
    assert view_overlap(WALL, CAM, a, WALL, CAM, b, grid_step=1) == 0.0
    assert view_overlap(WALL, CAM, b, WALL, CAM, a, grid_step=1) == 0.0
    assert pose_overlap(a, b) == 0.0
    assert pose_overlap(a, a) == 1.0


def test_sideways_shift_over_a_wall_gives_the_hand_computed_overlap() -> None:
    # B is 1 m to the right of A. A wall point seen at column u of A is seen at column u - 25 of B
    # (50 px/m focal * 1 m / 2 m depth), so the columns u >= 25 of A (75 of 100) are inside B.
    a = Pose.identity()
    b = Pose.from_world_from_cam(np.eye(3), np.array([1.0, 0.0, 0.0]))
    assert view_overlap(WALL, CAM, a, WALL, CAM, b, grid_step=1) == pytest.approx(0.75)
    assert view_overlap(WALL, CAM, b, WALL, CAM, a, grid_step=1) == pytest.approx(0.75)
    # Grid step 5 samples columns 2, 7, ..., 97: the 15 of 20 columns >= 25.
    assert view_overlap(WALL, CAM, a, WALL, CAM, b, grid_step=5) == pytest.approx(0.75)
    # An occluder 1 m in front of B over its left 50 columns hides the A points that land there
    # (B columns 0-49 = A columns 25-74): only A columns 75-99 stay visible.
    occluded = WALL.copy()
    occluded[:, :50] = 1.0
    assert view_overlap(WALL, CAM, a, occluded, CAM, b, grid_step=1) == pytest.approx(0.25)
    # Invalid depth in A does not count in the denominator.
    holes = WALL.copy()
    holes[:, :25] = np.nan
    assert view_overlap(holes, CAM, a, WALL, CAM, b, grid_step=1) == pytest.approx(1.0)


def test_overlap_agrees_with_a_brute_force_visibility_check(tiny_world_config, train_frames) -> None:
    """Independent check: render both views, and call a pixel of A seen by B when it projects inside B
    onto the same surface (renderer quad id) -- no depth test involved."""
    world = build_world(tiny_world_config)
    scene = train_frames.frames[0].scene
    frames = [f for f in train_frames.frames if f.scene == scene]
    a, b = frames[1], frames[2]
    la, lb = (render_layers(world, f.camera, f.pose) for f in (a, b))
    H, W = la.depth.shape
    v, u = np.mgrid[0:H, 0:W]
    valid = np.isfinite(la.depth)
    z = la.depth[valid].astype(np.float64)
    K = a.camera.K
    rays = np.stack([(u[valid] - K[0, 2]) / K[0, 0], (v[valid] - K[1, 2]) / K[1, 1], np.ones(z.size)], 1)
    world_pts = a.pose.inverse().transform(rays * z[:, None])
    pb = b.pose.transform(world_pts)
    front = pb[:, 2] > 1e-6
    uv = np.full((z.size, 2), -1)
    uv[front] = np.rint(b.camera.project_pinhole(pb[front])).astype(int)
    inside = front & (uv[:, 0] >= 0) & (uv[:, 0] < W) & (uv[:, 1] >= 0) & (uv[:, 1] < H)
    same_surface = np.zeros(z.size, dtype=bool)
    same_surface[inside] = lb.quad_index[uv[inside, 1], uv[inside, 0]] == la.quad_index[valid][inside]
    brute = same_surface.mean()
    assert 0.2 < brute < 0.95, "pick a pair with partial overlap"

    da, db = read_depth(a.depth_path, a.depth_scale), read_depth(b.depth_path, b.depth_scale)
    full = view_overlap(da, a.camera, a.pose, db, b.camera, b.pose, grid_step=1)
    assert full == pytest.approx(brute, abs=0.02)
    sub = view_overlap(da, a.camera, a.pose, db, b.camera, b.pose, grid_step=8)
    assert sub == pytest.approx(brute, abs=0.04)


def test_depth_of_the_wrong_size_is_an_error() -> None:
    with pytest.raises(ValueError, match="depth of A"):
        view_overlap(WALL[:10], CAM, Pose.identity(), WALL, CAM, Pose.identity())


# --- sampling -----------------------------------------------------------------------------------------
def test_pairs_stay_within_scenes_and_the_band(train_frames, small_sampling) -> None:
    pairs = sample_pairs(train_frames, small_sampling)
    scene_of = {f.name: f.scene for f in train_frames.frames}
    ids = {s: i for i, s in enumerate(train_frames.scenes)}
    assert {p.scene_id for p in pairs} == set(ids.values()), "pairs come from every scene"
    for p in pairs:
        assert scene_of[p.db] == scene_of[p.query], "no cross-scene pairs"
        assert ids[scene_of[p.db]] == p.scene_id
        assert p.db != p.query
        assert small_sampling.min_overlap <= p.overlap <= small_sampling.max_overlap
    for scene_id in ids.values():
        assert sum(p.scene_id == scene_id for p in pairs) <= small_sampling.max_pairs_per_scene
    assert len({(p.db, p.query) for p in pairs}) == len(pairs)


def test_labels_are_the_relative_pose_of_the_pair(train_frames, small_sampling) -> None:
    poses = train_frames.poses()
    for frame in ("camera", "world"):
        for p in sample_pairs(train_frames, small_sampling, translation_frame=frame)[:10]:
            t, q = relative_pose_label(poses[p.db], poses[p.query], frame)
            np.testing.assert_allclose(p.t, t, atol=1e-12)
            np.testing.assert_allclose(p.q, q, atol=1e-12)


def test_excluded_scene_is_left_out_and_ids_stay_stable(train_frames, small_sampling) -> None:
    first, second = train_frames.scenes[:2]
    pairs = sample_pairs(train_frames, small_sampling, exclude_scenes=[first])
    assert pairs
    scene_of = {f.name: f.scene for f in train_frames.frames}
    assert all(scene_of[p.db] == second for p in pairs)
    assert {p.scene_id for p in pairs} == {1}, "the remaining scene keeps its id"
    with pytest.raises(ConfigError, match="unknown scene"):
        sample_pairs(train_frames, small_sampling, exclude_scenes=["attic"])
    with pytest.raises(ConfigError, match="every scene"):
        sample_pairs(train_frames, small_sampling, exclude_scenes=train_frames.scenes)


def test_sampling_is_deterministic_by_seed(train_frames, small_sampling) -> None:
    a = sample_pairs(train_frames, small_sampling)
    b = sample_pairs(train_frames, small_sampling)
    c = sample_pairs(train_frames, dataclasses.replace(small_sampling, seed=6))
    assert a == b
    assert [(p.db, p.query) for p in a] != [(p.db, p.query) for p in c]


def test_pose_fallback_without_depth(train_frames) -> None:
    no_depth = [dataclasses.replace(f, depth_path=None) for f in train_frames.frames]
    config = PairSamplingConfig(max_pairs_per_scene=10, min_overlap=0.2, max_overlap=0.9)
    pairs = sample_pairs(no_depth, config)
    assert pairs
    poses = train_frames.poses()
    for p in pairs:
        assert p.overlap == pytest.approx(pose_overlap(poses[p.db], poses[p.query]))


def test_validation_pairs_join_database_and_query_splits(tiny_world: Path, train_frames, small_sampling) -> None:
    test_frames = load_frames(tiny_world, split="test")
    pairs = sample_pairs(train_frames, small_sampling, queries=test_frames)
    assert pairs
    train_names, test_names = set(train_frames.names), set(test_frames.names)
    scene_of = {f.name: f.scene for f in [*train_frames.frames, *test_frames.frames]}
    for p in pairs:
        assert p.db in train_names and p.query in test_names
        assert scene_of[p.db] == scene_of[p.query]


# --- files --------------------------------------------------------------------------------------------
def test_pair_file_round_trip(tmp_path: Path, train_frames, small_sampling) -> None:
    pairs = sample_pairs(train_frames, small_sampling)
    path = tmp_path / "pairs.txt"
    write_pair_file(path, pairs, {"translation_frame": "camera"})
    first = path.read_text().splitlines()[0].split()
    assert len(first) == 10 and first[0] == pairs[0].db and int(first[2]) == pairs[0].scene_id
    back = read_pair_file(path, translation_frame="camera")
    assert [(p.db, p.query, p.scene_id) for p in back] == [(p.db, p.query, p.scene_id) for p in pairs]
    np.testing.assert_allclose([p.t + p.q for p in back], [p.t + p.q for p in pairs], rtol=1e-8, atol=1e-9)
    assert json.loads(pair_sidecar(path).read_text())["num_pairs"] == len(pairs)
    with pytest.raises(InputError, match="translation_frame"):
        read_pair_file(path, translation_frame="world")
    assert not list(tmp_path.glob(".*.tmp")), "atomic writes leave no temporary file"


def test_reads_the_original_format_and_rejects_bad_lines(tmp_path: Path) -> None:
    path = tmp_path / "db_all_med_hard_train.txt"
    path.write_text("/seq-03/frame-000204.color.png /seq-03/frame-000210.color.png 0 0.1 -0.2 0.3 0.99 0.1 0 0\n")
    (p,) = read_pair_file(path, translation_frame="world")  # no sidecar: nothing to contradict
    assert p.scene_id == 0 and p.t == (0.1, -0.2, 0.3) and p.q == (0.99, 0.1, 0.0, 0.0)
    path.write_text("a b 0 1 2 3\n")
    with pytest.raises(InputError, match="expected 10 fields"):
        read_pair_file(path)


def test_frame_without_pose_is_rejected() -> None:
    f = Frame("x.png", Path("x.png"), CAM)
    with pytest.raises(ValueError, match="poses"):
        frame_overlap(f, f)


def test_bad_sampling_configs() -> None:
    with pytest.raises(ConfigError):
        PairSamplingConfig(min_overlap=0.8, max_overlap=0.5)
    with pytest.raises(ConfigError):
        PairSamplingConfig(grid_step=0)
