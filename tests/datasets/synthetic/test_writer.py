"""The synthetic world on disk: 7-Scenes layout, pose / depth encodings, determinism and resume."""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path

import numpy as np
import pytest

from visloc.datasets.synthetic import WorldConfig, build_world, make_world, render
from visloc.errors import ConfigError
from visloc.geometry import Pose
from visloc.io.images import read_depth, read_image

TINY = WorldConfig(num_scenes=2, train_traversals=2, frames_per_train_traversal=3, frames_per_test_traversal=2,
                   width=160, height=120, focal=131.25, texel_density=100.0)


def all_files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def tiny_root(tmp_path_factory) -> Path:
    return make_world(tmp_path_factory.mktemp("world"), TINY, progress=False, workers=1)


@pytest.fixture(scope="module")
def clean_root(tmp_path_factory) -> Path:
    config = dataclasses.replace(TINY, exposure=0.0, white_balance=0.0, noise_sigma=0.0)
    return make_world(tmp_path_factory.mktemp("clean"), config, progress=False, workers=1)


def test_layout_is_7scenes(tiny_root):
    files = all_files(tiny_root)
    for scene in ("office", "kitchen"):
        assert files[f"{scene}/TrainSplit.txt"] == b"sequence1\nsequence2\n"
        assert files[f"{scene}/TestSplit.txt"] == b"sequence3\n"
        for seq, n in (("seq-01", 3), ("seq-02", 3), ("seq-03", 2)):
            for i in range(n):
                for suffix in ("color.png", "depth.png", "pose.txt"):
                    assert f"{scene}/{seq}/frame-{i:06d}.{suffix}" in files
    assert not any(name.endswith(".tmp") or "/." in name or name.startswith(".") for name in files)
    meta = json.loads(files["dataset.json"])
    assert meta["format"] == "7scenes"
    assert meta["camera"] == "PINHOLE 160 120 131.25 131.25 80 60"
    assert meta["depth_registered"] is True and meta["depth_scale"] == 1000
    assert meta["generator"] == "visloc.datasets.synthetic" and meta["version"]
    assert WorldConfig.from_dict(meta["world"]) == TINY
    assert read_image(tiny_root / "office/seq-01/frame-000000.color.png").shape == (120, 160, 3)


def test_pose_files_are_camera_to_world_and_match_the_rendered_pose(tiny_root):
    world = build_world(TINY)
    for scene in world.scenes:
        for traversal in scene.traversals:
            for i, pose in enumerate(traversal.poses):
                path = tiny_root / scene.name / traversal.name / f"frame-{i:06d}.pose.txt"
                T = np.loadtxt(path)
                assert T.shape == (4, 4)
                np.testing.assert_allclose(T[3], [0, 0, 0, 1])
                # camera-to-world: its translation is the camera centre, and it inverts to the pose.
                np.testing.assert_allclose(T[:3, 3], pose.center, atol=1e-9)
                np.testing.assert_allclose(np.linalg.inv(T), pose.matrix, atol=1e-9)
                # and it maps the camera's optical axis to the world viewing direction
                np.testing.assert_allclose(T[:3, 2], pose.R[2], atol=1e-9)


def test_depth_and_colour_files_round_trip_the_render(clean_root):
    config = WorldConfig.from_dict(json.loads((clean_root / "dataset.json").read_text())["world"])
    world = build_world(config)
    for scene in world.scenes:
        for traversal in (scene.traversals[0], scene.traversals[-1]):
            pose = traversal.poses[1]
            rgb, depth = render(world, world.camera, pose)
            stem = clean_root / scene.name / traversal.name / "frame-000001"
            stored = read_depth(Path(f"{stem}.depth.png"))
            assert np.isfinite(stored).all()
            assert np.abs(stored - depth).max() <= 0.0005 + 1e-6  # millimetres, rounded
            # Without nuisances the colour file is exactly the rendered image.
            np.testing.assert_array_equal(read_image(Path(f"{stem}.color.png")), rgb)
            # Depth is the camera-frame z: back-projecting a pixel and mapping it to the world lands
            # inside this scene's room.
            K_inv = np.linalg.inv(world.camera.K)
            for u, v in ((5, 7), (80, 60), (150, 110)):
                x_cam = stored[v, u] * (K_inv @ np.array([u, v, 1.0]))
                X = pose.inverse().transform(x_cam[None])
                lo, hi = scene.bounds
                assert np.all(X >= lo - 0.01) and np.all(X <= hi + 0.01)


def test_nuisances_change_colour_only(tiny_root, clean_root):
    for name in ("office/seq-01/frame-000002", "kitchen/seq-03/frame-000001"):
        noisy = read_image(tiny_root / f"{name}.color.png").astype(int)
        clean = read_image(clean_root / f"{name}.color.png").astype(int)
        assert (tiny_root / f"{name}.depth.png").read_bytes() == (clean_root / f"{name}.depth.png").read_bytes()
        assert (tiny_root / f"{name}.pose.txt").read_bytes() == (clean_root / f"{name}.pose.txt").read_bytes()
        diff = noisy - clean
        assert np.abs(diff).mean() > 1.0
        assert np.abs(diff).max() < 120
    # Exposure / white balance differ between traversals (same scene, different sequences).
    a = read_image(tiny_root / "office/seq-01/frame-000000.color.png").astype(float)
    a_clean = read_image(clean_root / "office/seq-01/frame-000000.color.png").astype(float)
    b = read_image(tiny_root / "office/seq-02/frame-000000.color.png").astype(float)
    b_clean = read_image(clean_root / "office/seq-02/frame-000000.color.png").astype(float)
    gain_a = (a.reshape(-1, 3).mean(0) / a_clean.reshape(-1, 3).mean(0))
    gain_b = (b.reshape(-1, 3).mean(0) / b_clean.reshape(-1, 3).mean(0))
    assert np.abs(gain_a - gain_b).max() > 0.02


def test_same_config_same_bytes_other_seed_other_bytes(tiny_root, tmp_path):
    again = make_world(tmp_path / "again", TINY, progress=False, workers=2)
    assert all_files(again) == all_files(tiny_root)
    other = make_world(tmp_path / "other", dataclasses.replace(TINY, seed=1), progress=False, workers=1)
    a, b = all_files(tiny_root), all_files(other)
    assert a.keys() == b.keys()
    differing = [k for k in a if a[k] != b[k]]
    assert any(k.endswith(".color.png") for k in differing)
    assert any(k.endswith(".pose.txt") for k in differing)


def test_rerun_skips_finished_work_and_resumes_interrupted_work(tmp_path):
    root = make_world(tmp_path / "w", TINY, progress=False, workers=1)
    before = {p: p.stat().st_mtime_ns for p in root.rglob("*") if p.is_file()}
    content = all_files(root)
    time.sleep(0.02)
    make_world(root, TINY, progress=False)
    assert {p: p.stat().st_mtime_ns for p in root.rglob("*") if p.is_file()} == before

    # Simulate an interruption: one frame file missing and no completion marker.
    lost = root / "kitchen/seq-02/frame-000001.color.png"
    lost.unlink()
    (root / "dataset.json").unlink()
    make_world(root, TINY, progress=False)
    after = {p: p.stat().st_mtime_ns for p in root.rglob("*") if p.is_file()}
    rewritten = {p for p in after if before.get(p) != after[p]}
    frame_files = {lost.with_name(lost.name.replace("color.png", s)) for s in ("color.png", "depth.png", "pose.txt")}
    assert rewritten <= frame_files | {root / "dataset.json"}
    assert lost in rewritten and (root / "dataset.json") in rewritten
    assert all_files(root) == content


def test_other_config_in_the_same_folder_is_refused(tiny_root):
    with pytest.raises(ConfigError):
        make_world(tiny_root, dataclasses.replace(TINY, seed=3), progress=False)


def test_the_7scenes_reader_reads_the_world(clean_root):
    sevenscenes = pytest.importorskip("visloc.datasets.sevenscenes")
    world = build_world(TINY)
    train = sevenscenes.read_7scenes(clean_root, split="train")
    test = sevenscenes.read_7scenes(clean_root, split="test")
    assert len(train.frames) == 2 * 2 * 3 and len(test.frames) == 2 * 2 and not train.skipped
    frame = next(f for f in test.frames if f.name == "kitchen/seq-03/frame-000001.color.png")
    truth: Pose = world.scene("kitchen").traversals[2].poses[1]
    np.testing.assert_allclose(frame.pose.matrix, truth.matrix, atol=1e-9)
    assert frame.camera.to_colmap_string() == world.camera.to_colmap_string()
    assert frame.depth_path is not None and frame.depth_path.is_file()


@pytest.mark.slow
def test_default_world_is_made_in_seconds(tmp_path):
    start = time.perf_counter()
    root = make_world(tmp_path / "default", progress=False)
    seconds = time.perf_counter() - start
    assert len(list(root.rglob("*.color.png"))) == 4 * (3 * 30 + 25)
    assert seconds < 60, f"default world took {seconds:.1f} s (about 22 s on 2 idle cores)"
