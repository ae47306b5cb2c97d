"""Dense correspondences from depth against plane homographies, hand-made occluders and rendered views.

Ground truth here: the homography ``K_s (R + t n^T / d) K_t^-1`` induced by the plane ``n . X = d``, with
the source depth of the plane computed in closed form, hand-computed pixel shifts, and, for the embedded
world, the renderer's surface ids (no depth test) and the images themselves.
"""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from visloc.datasets.synthetic import WorldConfig, build_world, render_layers
from visloc.geometry import Camera, Pose
from visloc.geometry.depth_flow import (
    NO_CORRESPONDENCE,
    bilinear_sample,
    correspondence_from_depth,
    resize_depth,
)
from visloc.geometry.rotation import quat_to_matrix

#: 100 x 80 pixels, f = 50, principal point at the image centre (pixel centres at integers).
CAM = Camera.pinhole(50.0, 50.0, 49.5, 39.5, 100, 80)
WALL = np.full((80, 100), 2.0, dtype=np.float32)  # a fronto-parallel wall 2 m in front

#: A small world without photometric nuisances (rendered directly: lighting off).
WORLD = WorldConfig(num_scenes=1, train_traversals=1, frames_per_train_traversal=8, frames_per_test_traversal=1,
                    width=160, height=120, focal=131.25, seed=3, exposure=0.0, white_balance=0.0, noise_sigma=0.0)


def _rotation(axis: tuple[float, float, float], deg: float) -> np.ndarray:
    axis_v = np.asarray(axis, dtype=np.float64) / np.linalg.norm(axis)
    half = np.radians(deg) / 2
    return quat_to_matrix(np.r_[np.cos(half), np.sin(half) * axis_v])


def _pixels(camera: Camera) -> np.ndarray:
    """``(3, H*W)`` homogeneous pixel centres, row-major."""
    v, u = np.mgrid[0 : camera.height, 0 : camera.width].astype(np.float64)
    return np.stack([u.ravel(), v.ravel(), np.ones(u.size)])


def test_plane_seen_by_two_cameras_gives_the_plane_homography() -> None:
    target_cam = Camera.pinhole(60.0, 55.0, 39.5, 29.5, 80, 60)
    source_cam = Camera.pinhole(70.0, 66.0, 44.0, 35.0, 90, 72)
    depth = 3.0  # plane z = 3 in the target frame: n = (0, 0, 1), d = 3
    # source_from_target: 25 degrees about a tilted axis (the plane is slanted in the source), a baseline
    R = _rotation((0.2, 1.0, 0.1), 25.0)
    t = np.array([0.6, -0.15, 0.3])
    source_from_target = Pose(R, t)
    target_pose = Pose(_rotation((1.0, -0.5, 0.3), 70.0), np.array([0.4, 1.2, -2.0]))  # any world frame
    source_pose = source_from_target @ target_pose

    n = np.array([0.0, 0.0, 1.0])
    H = source_cam.K @ (R + np.outer(t, n) / depth) @ np.linalg.inv(target_cam.K)
    expected = H @ _pixels(target_cam)
    expected = (expected[:2] / expected[2]).reshape(2, target_cam.height, target_cam.width)
    # the plane in the source frame: (R n) . X = d + (R n) . t, so z(p) = d_s / ((R n) . K_s^-1 p)
    n_s = R @ n
    rays = np.linalg.inv(source_cam.K) @ _pixels(source_cam)
    source_depth = ((depth + n_s @ t) / (n_s @ rays)).reshape(source_cam.height, source_cam.width)

    target_depth = np.full((target_cam.height, target_cam.width), depth, dtype=np.float32)
    got, mask = correspondence_from_depth(target_depth, target_cam, target_pose, source_depth.astype(np.float32),
                                          source_cam, source_pose)
    assert got.shape == (2, 60, 80) and got.dtype == np.float32
    assert mask.shape == (1, 60, 80) and mask.dtype == bool
    np.testing.assert_allclose(got, expected, atol=2e-3)
    inside = (expected[0] >= -0.5) & (expected[0] <= 89.5) & (expected[1] >= -0.5) & (expected[1] <= 71.5)
    assert 0.3 < inside.mean() < 0.95, "the test needs a partly visible plane"
    np.testing.assert_array_equal(mask[0], inside)  # slanted in the source, yet every inside pixel is visible


def test_sideways_baseline_shifts_by_focal_times_baseline_over_depth() -> None:
    # The source is 1 m to the right: a wall point at column u of the target is at column u - 25 of the
    # source (50 px/m * 1 m / 2 m), same row.
    target, source = Pose.identity(), Pose.from_world_from_cam(np.eye(3), np.array([1.0, 0.0, 0.0]))
    got, mask = correspondence_from_depth(WALL, CAM, target, WALL, CAM, source)
    v, u = np.mgrid[0:80, 0:100].astype(np.float64)
    np.testing.assert_allclose(got[0], u - 25.0, atol=1e-4)
    np.testing.assert_allclose(got[1], v, atol=1e-4)
    np.testing.assert_array_equal(mask[0], u >= 25)  # x = u - 25 >= -0.5


def test_a_nearer_plane_in_the_source_hides_part_of_the_target_view() -> None:
    target, source = Pose.identity(), Pose.from_world_from_cam(np.eye(3), np.array([1.0, 0.0, 0.0]))
    occluded = WALL.copy()
    occluded[:, :50] = 1.0  # a board 1 m in front of the source over its columns 0..49
    _, mask = correspondence_from_depth(WALL, CAM, target, occluded, CAM, source)
    u = np.mgrid[0:80, 0:100][1]
    # target columns 25..74 land on source columns 0..49 (hidden); 75..99 on 50..74 (seen)
    np.testing.assert_array_equal(mask[0], u >= 75)
    # a tolerance wider than the depth gap accepts the board as the same surface
    _, loose = correspondence_from_depth(WALL, CAM, target, occluded, CAM, source, occlusion_tolerance=0.6)
    np.testing.assert_array_equal(loose[0], u >= 25)


def test_missing_depth_on_either_side_and_points_behind_the_source_are_invalid() -> None:
    target, source = Pose.identity(), Pose.from_world_from_cam(np.eye(3), np.array([1.0, 0.0, 0.0]))
    holes = WALL.copy()
    holes[10:20, 60:70] = np.nan
    holes[30, :] = 0.0
    got, mask = correspondence_from_depth(holes, CAM, target, WALL, CAM, source)
    expected = (np.mgrid[0:80, 0:100][1] >= 25) & np.isfinite(holes) & (holes > 0)
    np.testing.assert_array_equal(mask[0], expected)
    np.testing.assert_array_equal(got[:, 30, :], NO_CORRESPONDENCE)  # no 3D point: the fill value

    # A hole in the SOURCE depth at column 60 invalidates the target pixels whose bilinear footprint
    # touches it: target column 85 lands on x = 60; columns 84 and 86 land on x = 59 and 61 up to round-off
    # (either way), the others are two pixels away or more.
    source_holes = WALL.copy()
    source_holes[:, 60] = np.nan
    _, mask = correspondence_from_depth(WALL, CAM, target, source_holes, CAM, source)
    u = np.mgrid[0:80, 0:100][1]
    assert not mask[0][:, 85].any()
    clear = (u != 84) & (u != 85) & (u != 86)
    np.testing.assert_array_equal(mask[0][clear], (u >= 25)[clear])

    # A camera looking the other way sees nothing of the wall.
    backwards = Pose(_rotation((0.0, 1.0, 0.0), 180.0), np.zeros(3))
    got, mask = correspondence_from_depth(WALL, CAM, target, WALL, CAM, backwards)
    assert not mask.any()
    np.testing.assert_array_equal(got, NO_CORRESPONDENCE)


def test_bad_shapes_and_tolerance_are_errors() -> None:
    with pytest.raises(ValueError, match="camera is 100x80"):
        correspondence_from_depth(WALL[:, :90], CAM, Pose.identity(), WALL, CAM, Pose.identity())
    with pytest.raises(ValueError, match="source"):
        correspondence_from_depth(WALL, CAM, Pose.identity(), WALL[:70], CAM, Pose.identity())
    with pytest.raises(ValueError, match="occlusion_tolerance"):
        correspondence_from_depth(WALL, CAM, Pose.identity(), WALL, CAM, Pose.identity(), occlusion_tolerance=0.0)


def test_bilinear_sample_uses_only_pixels_with_a_weight() -> None:
    values = np.array([[1.0, 2.0, np.nan], [3.0, 4.0, 5.0]])
    valid = np.isfinite(values)
    out, ok = bilinear_sample(values, valid, np.array([0.5, 1.0, 1.5, -3.0, 0.25]), np.array([0.5, 0.0, 0.5, 0.0, 1.0]))
    np.testing.assert_array_equal(ok, [True, True, False, True, True])
    np.testing.assert_allclose(out, [2.5, 2.0, 0.0, 1.0, 3.25])


def test_resize_depth_is_exact_on_a_slanted_plane() -> None:
    # Plane n . X = d seen by CAM; its depth is z(p) = d / (n . K^-1 p) at any pixel p.
    n, d = np.array([0.3, -0.2, 1.0]), 2.5
    depth = (d / (n @ (np.linalg.inv(CAM.K) @ _pixels(CAM)))).reshape(80, 100)
    small = Camera(CAM.model, 40, 30, CAM.scaled(40 / 100, 30 / 80).params)
    expected = (d / (n @ (np.linalg.inv(small.K) @ _pixels(small)))).reshape(30, 40)
    np.testing.assert_allclose(resize_depth(depth, (30, 40)), expected, rtol=1e-6)
    holes = depth.copy()
    holes[0, 0] = np.nan
    out = resize_depth(holes, (40, 50))  # output pixel (0, 0) sits at (0.5, 0.5): it needs input (0, 0)
    assert np.isnan(out[0, 0]) and np.isfinite(out).sum() == out.size - 1


def test_resize_depth_leaves_depth_edges_out() -> None:
    # A step between columns 50 and 51 (2 m | 2.08 m, 4 %); halving the width puts output column u at input
    # 2u + 0.5, so output column 25 (input 50.5) straddles the step: interpolated only while the step is
    # within the tolerance.
    depth = np.full((80, 100), 2.0)
    depth[:, 51:] = 2.08
    strict = resize_depth(depth, (80, 50), edge_tolerance=0.03)
    assert np.isnan(strict[:, 25]).all() and np.isfinite(np.delete(strict, 25, axis=1)).all()
    np.testing.assert_allclose(strict[:, :25], 2.0, rtol=1e-6)
    np.testing.assert_allclose(strict[:, 26:], 2.08, rtol=1e-6)
    loose = resize_depth(depth, (80, 50), edge_tolerance=0.05)
    np.testing.assert_allclose(loose[:, 25], 2.0 / (0.5 + 0.5 * 2.0 / 2.08), rtol=1e-6)  # inverse-depth mean
    assert np.isfinite(resize_depth(depth, (80, 50), edge_tolerance=None)).all()


@pytest.fixture(scope="module")
def rendered_views():
    world = build_world(WORLD)
    poses = world.scenes[0].traversals[0].poses
    return world.camera, [(p, render_layers(world, world.camera, p)) for p in poses[:2]]


def test_rendered_world_pair_source_warped_by_the_map_reproduces_the_target(rendered_views) -> None:
    cam, [(pose_t, tgt), (pose_s, src)] = rendered_views
    got, mask = correspondence_from_depth(tgt.depth, cam, pose_t, src.depth, cam, pose_s)
    mask = mask[0]
    assert 0.3 < mask.mean() < 0.9, "pick a pair with partial overlap"
    warped = cv2.remap(src.rgb.astype(np.float32), got[0], got[1], cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    error = np.abs(warped - tgt.rgb).mean(-1)[mask].mean()
    identity_error = np.abs(src.rgb.astype(np.float32) - tgt.rgb).mean(-1)[mask].mean()
    assert error < 5.0  # grey levels (texture filtering differs between the views)
    assert error < 0.1 * identity_error

    # Visibility against the renderer's surface ids (no depth test): the point's nearest source pixel shows
    # the same quad. Masks agree except along silhouettes and seams.
    valid = np.isfinite(tgt.depth)
    x, y = np.rint(got[0]).astype(int), np.rint(got[1]).astype(int)
    inside = valid & (x >= 0) & (x < cam.width) & (y >= 0) & (y < cam.height)
    same = np.zeros_like(valid)
    same[inside] = src.quad_index[y[inside], x[inside]] == tgt.quad_index[inside]
    assert (mask & ~same).sum() < 0.02 * mask.sum()
    assert (same & ~mask).sum() < 0.01 * same.sum()
