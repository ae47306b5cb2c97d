"""The synthetic world: layout in one frame, camera paths, coverage, nuisances, textures."""

from __future__ import annotations

import itertools

import cv2
import numpy as np
import pytest

from visloc.datasets.synthetic import (
    PHOTO_SOURCES,
    WALL_THICKNESS,
    Photometric,
    WorldConfig,
    build_world,
    photo,
    render,
)
from visloc.errors import ConfigError
from visloc.geometry.rotation import rotation_angle_deg

# Trajectories and layout do not depend on the texel density: a coarse one keeps these tests fast.
FAST = {"texel_density": 60.0, "width": 160, "height": 120, "focal": 131.25}


@pytest.fixture(scope="module")
def default_layout():
    """The default world's geometry and paths (coarse textures; the layout is the same)."""
    return build_world(WorldConfig(texel_density=60.0))


def test_texture_density_does_not_change_layout_or_paths(default_layout):
    fine = build_world(WorldConfig(num_scenes=1))
    coarse = default_layout.scenes[0]
    assert fine.scenes[0].size == coarse.size
    assert fine.scenes[0].boxes == coarse.boxes
    for t_fine, t_coarse in zip(fine.scenes[0].traversals, coarse.traversals, strict=True):
        for p, q in zip(t_fine.poses, t_coarse.poses, strict=True):
            np.testing.assert_array_equal(p.matrix, q.matrix)


def test_rooms_share_one_frame_side_by_side(default_layout):
    scenes = default_layout.scenes
    assert [s.name for s in scenes] == ["office", "kitchen", "meeting", "conference"]
    for a, b in itertools.pairwise(scenes):
        assert b.bounds[0][0] == pytest.approx(a.bounds[1][0] + WALL_THICKNESS)
    for s in scenes:
        w, d, h = s.size
        assert 4.0 <= w <= 6.0 and 4.0 <= d <= 6.0 and 2.6 <= h <= 3.0
        assert 3 <= len(s.boxes) <= 6
        # Every quad lies inside (or on the boundary of) its own room.
        lo, hi = s.bounds
        for q in s.quads:
            assert q.scene == s.index
            assert np.all(q.corners >= lo - 1e-9) and np.all(q.corners <= hi + 1e-9)
    # scene_of_point: room centres, the wall gap between rooms, outside.
    centres = np.array([(s.bounds[0] + s.bounds[1]) / 2 for s in scenes])
    np.testing.assert_array_equal(default_layout.scene_of_point(centres), [0, 1, 2, 3])
    gap = np.array([[scenes[0].bounds[1][0] + WALL_THICKNESS / 2, 1.0, 1.0], [-1.0, 1.0, 1.0]])
    np.testing.assert_array_equal(default_layout.scene_of_point(gap), [-1, -1])


def _box_distance(box, points: np.ndarray) -> np.ndarray:
    """Distance from points to an upright box, computed from its corners (independent of Box.distance)."""
    corners = box.corners_xy()
    ex = (corners[1] - corners[0]) / np.linalg.norm(corners[1] - corners[0])
    ey = (corners[3] - corners[0]) / np.linalg.norm(corners[3] - corners[0])
    d = points[:, :2] - corners[0]
    lx, ly = np.linalg.norm(corners[1] - corners[0]), np.linalg.norm(corners[3] - corners[0])
    px, py = d @ ex, d @ ey
    dx = np.maximum(np.maximum(-px, px - lx), 0)
    dy = np.maximum(np.maximum(-py, py - ly), 0)
    dz = np.maximum(points[:, 2] - box.height, 0)
    return np.sqrt(dx**2 + dy**2 + dz**2)


def test_cameras_keep_clear_of_walls_and_boxes_and_look_at_the_room(default_layout):
    for scene in default_layout.scenes:
        lo, hi = scene.bounds
        poses = [p for t in scene.traversals for p in t.poses]
        centres = np.array([p.center for p in poses])
        assert np.all(default_layout.scene_of_point(centres) == scene.index)
        assert np.all((centres[:, 2] >= 1.2) & (centres[:, 2] <= 1.8))
        wall_distance = np.minimum(centres[:, :2] - lo[:2], hi[:2] - centres[:, :2]).min(axis=1)
        assert wall_distance.min() > 0.5
        for box in scene.boxes:
            assert _box_distance(box, centres).min() > 0.5
        # Optical axes: nearly horizontal (pitch within 25 deg), image rows nearly level (roll < 8 deg).
        for p in poses:
            forward, right = p.R[2], p.R[0]  # camera z and x axes in world coordinates
            assert abs(np.degrees(np.arcsin(forward[2]))) < 25
            assert abs(np.degrees(np.arcsin(right[2]))) < 8
        # Smooth paths: consecutive frames of a traversal are close (a loop of 25-30 frames).
        for t in scene.traversals:
            steps = np.linalg.norm(np.diff([p.center for p in t.poses], axis=0), axis=1)
            assert steps.max() < 0.6


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_every_test_view_has_a_training_view_within_30cm_and_20deg(seed):
    world = build_world(WorldConfig(seed=seed, texel_density=60.0))
    for scene in world.scenes:
        assert len(scene.train_traversals) == 3 and len(scene.test_traversals) == 1
        train = [p for t in scene.train_traversals for p in t.poses]
        centres = np.array([p.center for p in train])
        rotations = np.array([p.R for p in train])
        test = scene.test_traversals[0].poses
        assert len(test) == 25 and all(len(t) == 30 for t in scene.train_traversals)
        for p in test:
            dist = np.linalg.norm(centres - p.center, axis=1)
            angle = rotation_angle_deg(rotations @ p.R.T)
            assert np.any((dist < 0.3) & (angle < 20.0))
            # ... but the test traversal is not a copy of a training one.
            assert dist.min() > 1e-3


def test_test_traversal_differs_from_training_traversals(default_layout):
    scene = default_layout.scenes[0]
    test = scene.test_traversals[0]
    assert test.reverse and not any(t.reverse for t in scene.train_traversals)
    train_centres = np.array([p.center for t in scene.train_traversals for p in t.poses])
    test_centres = np.array([p.center for p in test.poses])
    nearest = np.linalg.norm(test_centres[:, None] - train_centres[None], axis=2).min(axis=1)
    assert np.median(nearest) > 0.01


def test_repeated_textures_appear_in_two_scenes():
    def shared_pairs(world):
        pairs = set()
        for i, a in enumerate(world.scenes):
            for b in world.scenes[i + 1:]:
                for qa in a.quads:
                    for qb in b.quads:
                        if qa.texture.image.shape == qb.texture.image.shape and np.array_equal(
                                qa.texture.image, qb.texture.image):
                            pairs.add((a.index, b.index))
        return pairs

    config = WorldConfig(num_scenes=3, **FAST)
    assert shared_pairs(build_world(config)) == {(0, 1), (1, 2)}
    assert shared_pairs(build_world(WorldConfig(num_scenes=3, repeated_textures=False, **FAST))) == set()


def test_low_texture_surfaces():
    def ceiling_and_plain(config):
        world = build_world(config)
        ceiling = next(q for q in world.scenes[0].quads if q.kind == "ceiling")
        grey = cv2.cvtColor(ceiling.texture.image, cv2.COLOR_RGB2GRAY).astype(float)
        return cv2.Laplacian(grey, cv2.CV_64F).std(), world.scenes[0].plain_wall

    flat, plain = ceiling_and_plain(WorldConfig(num_scenes=1, **FAST))
    assert flat < 1.0 and plain is not None
    wall = plain[0]
    start, end = plain[1], plain[2]
    assert end - start >= 1.0
    textured, none = ceiling_and_plain(WorldConfig(num_scenes=1, low_texture=False, **FAST))
    assert textured > 5.0 and none is None
    # The plain wall section really is plain: low gradient energy in its texels.
    world = build_world(WorldConfig(num_scenes=1, **FAST))
    quad = next(q for q in world.scenes[0].quads if q.name.endswith(f"wall-{wall}"))
    tex = quad.texture.image
    cols = slice(int(start / quad.width * tex.shape[1]) + 2, int(end / quad.width * tex.shape[1]) - 2)
    rows = slice(2, int(tex.shape[0] * 0.8))
    grey = cv2.cvtColor(tex, cv2.COLOR_RGB2GRAY).astype(float)
    assert cv2.Laplacian(grey, cv2.CV_64F)[rows, cols].std() < 1.0


def test_walls_are_textured_enough_for_sift():
    world = build_world(WorldConfig(num_scenes=1, low_texture=False, repeated_textures=False))
    sift = cv2.SIFT_create()
    scene = world.scenes[0]
    counts = []
    for pose in scene.traversals[0].poses[::10]:
        rgb, _ = render(world, world.camera, pose)
        counts.append(len(sift.detect(cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY), None)))
    assert min(counts) > 500, counts


def test_photos_are_the_offline_scikit_image_set():
    for name in PHOTO_SOURCES:
        img = photo(name)
        assert img.dtype == np.uint8 and img.ndim == 3 and img.shape[2] == 3 and min(img.shape[:2]) >= 150
    assert not set(PHOTO_SOURCES) & {"lily", "kidney", "cells3d", "skin", "eagle", "human_mitosis"}


def test_photometric_response():
    rgb = np.tile(np.arange(256, dtype=np.uint8)[:, None, None], (1, 4, 3))
    rng = np.random.default_rng(0)
    assert np.array_equal(Photometric().apply(rgb, rng), rgb)
    darker = Photometric(gain=0.5).apply(rgb, rng)
    np.testing.assert_allclose(darker[:, 0, 0], np.rint(np.arange(256) * 0.5), atol=0.5)
    warm = Photometric(channel_gains=(1.1, 1.0, 0.9)).apply(rgb, rng).astype(float)
    assert warm[128, 0, 0] > 128 + 10 and warm[128, 0, 2] < 128 - 10 and warm[128, 0, 1] == 128
    flat = np.full((200, 200, 3), 128, dtype=np.uint8)
    noisy = Photometric(noise_sigma=2.0).apply(flat, rng).astype(float) - 128
    assert abs(noisy.mean()) < 0.05 and 1.9 < noisy.std() < 2.15
    # Normal tails: |round(2 Z)| >= 5 iff |Z| >= 2.25, probability 2 (1 - Phi(2.25)) = 2.44 %.
    assert 0.021 < np.mean(np.abs(noisy) >= 4.5) < 0.028


def test_world_config_validation():
    with pytest.raises(ConfigError):
        WorldConfig(num_scenes=0)
    with pytest.raises(ConfigError):
        WorldConfig(noise_sigma=-1.0)
    with pytest.raises(ConfigError):
        WorldConfig.from_dict({"num_scenes": 2, "colour": "red"})
    config = WorldConfig(num_scenes=2, seed=5)
    assert WorldConfig.from_dict(config.to_dict()) == config
    assert config.camera.to_colmap_string() == "PINHOLE 640 480 525 525 320 240"
