"""The synthetic renderer against projective geometry computed independently in the tests.

Ground truth here is a hand-written ray caster (pixel ray = R^T K^-1 (u, v, 1) from the camera centre,
nearest front-facing rectangle hit) and hand-computed images, never the renderer's own code path.
"""

from __future__ import annotations

import dataclasses

import cv2
import numpy as np
import pytest

from visloc.datasets.synthetic import (
    Box,
    Quad,
    Texture,
    WorldConfig,
    build_world,
    look_rotation,
    render,
    render_layers,
    vertical_quad,
)
from visloc.geometry import Camera, Pose

SMALL = Camera.pinhole(100.0, 100.0, 79.5, 59.5, 160, 120)


def solid(colour: tuple[int, int, int], size: int = 32) -> Texture:
    return Texture(np.full((size, size, 3), colour, dtype=np.uint8))


def smooth_texture(rng: np.random.Generator, width_m: float, height_m: float) -> Texture:
    """A very smooth random colour texture, 48 texels per metre (mip filtering barely changes it)."""
    w, h = (max(32, int(round(48 * x / 32)) * 32) for x in (width_m, height_m))
    coarse = rng.uniform(60, 200, size=(3, 3, 3)).astype(np.float32)
    img = cv2.resize(coarse, (w, h), interpolation=cv2.INTER_LINEAR)
    return Texture(np.clip(np.rint(img), 0, 255).astype(np.uint8))


def bilinear(img: np.ndarray, s: float, t: float) -> np.ndarray:
    """Bilinear sample of ``img`` (H, W, C) at texel coordinates (s, t), centres at integers, clamped."""
    h, w = img.shape[:2]
    s, t = min(max(s, 0.0), w - 1.0), min(max(t, 0.0), h - 1.0)
    s0, t0 = min(int(np.floor(s)), w - 2), min(int(np.floor(t)), h - 2)
    fs, ft = s - s0, t - t0
    p = img[t0:t0 + 2, s0:s0 + 2].astype(np.float64)
    return (p[0, 0] * (1 - fs) * (1 - ft) + p[0, 1] * fs * (1 - ft) + p[1, 0] * (1 - fs) * ft
            + p[1, 1] * fs * ft)


def raycast(quads: list[Quad], camera: Camera, pose: Pose, u: float, v: float):
    """Independent reference: nearest front-facing quad hit by the ray through pixel centre (u, v).

    Returns:
        ``(quad index, camera z, world point)`` or ``(-1, nan, None)``.
    """
    centre = pose.center
    d_cam = np.linalg.solve(camera.K, np.array([u, v, 1.0]))  # z component 1
    d = pose.R.T @ d_cam
    best = (-1, np.nan, None)
    for i, q in enumerate(quads):
        n = np.cross(q.v, q.u)
        denom = n @ d
        if denom >= 0:  # parallel or seen from the back
            continue
        lam = n @ (q.origin - centre) / denom
        if lam <= 0:
            continue
        p = centre + lam * d
        a = (p - q.origin) @ q.u / (q.u @ q.u)
        b = (p - q.origin) @ q.v / (q.v @ q.v)
        if 0 <= a <= 1 and 0 <= b <= 1 and (best[0] < 0 or lam < best[1]):
            best = (i, lam, p)  # lam is the camera z because d_cam has z = 1
    return best


# --- hand-computed images ----------------------------------------------------------------------

def test_fronto_parallel_quad_is_the_expected_rectangle():
    # Quad at z = 2 in front of an identity camera: x in [-0.5, 0.5], y in [-0.26, 0.24].
    # u = 79.5 + 100 x / 2 -> [54.5, 104.5] -> columns 55..104; v = 59.5 + 100 y / 2 -> [46.5, 71.5]
    # -> rows 47..71. Left half of the texture red, right half blue; top half green 200, bottom 0.
    tex = np.zeros((64, 64, 3), dtype=np.uint8)
    tex[:, :32, 0] = 255
    tex[:, 32:, 2] = 255
    tex[:32, :, 1] = 200
    quad = Quad([-0.5, -0.26, 2.0], [1.0, 0, 0], [0, 0.5, 0], Texture(tex))
    rgb, depth = render([quad], SMALL, Pose.identity())

    expected = np.zeros((120, 160), dtype=bool)
    expected[47:72, 55:105] = True
    np.testing.assert_array_equal(np.isfinite(depth), expected)
    np.testing.assert_array_equal(depth[expected], np.float32(2.0))
    assert not rgb[~expected].any()
    # Away from the colour seams (image column 79.5 and row 59.5) the colour is exact.
    np.testing.assert_array_equal(rgb[48:56, 56:75], np.broadcast_to([255, 200, 0], (8, 19, 3)))
    np.testing.assert_array_equal(rgb[48:56, 85:104], np.broadcast_to([0, 200, 255], (8, 19, 3)))
    np.testing.assert_array_equal(rgb[64:71, 56:75], np.broadcast_to([255, 0, 0], (7, 19, 3)))
    np.testing.assert_array_equal(rgb[64:71, 85:104], np.broadcast_to([0, 0, 255], (7, 19, 3)))


def test_magnified_texture_is_a_bilinear_lookup_without_offset():
    # A random 32x32 texture on a 1 m quad at z = 1 m (100 px across: 3.1 px per texel, no mip level
    # above 0). Pixel (u, v) sees rectangle coordinate a = (u - 29.5) / 100, texel s = 32 a - 0.5.
    # A half-texel error in the texture mapping would give errors of tens of grey levels here.
    rng = np.random.default_rng(3)
    img = rng.integers(0, 256, size=(32, 32, 3), dtype=np.uint8)
    quad = Quad([-0.5, -0.5, 1.0], [1.0, 0, 0], [0, 1.0, 0], Texture(img))
    rgb, _ = render([quad], SMALL, Pose.identity())
    errors = []
    for v in range(12, 108, 3):
        for u in range(32, 128, 3):
            s, t = 32 * (u - 29.5) / 100 - 0.5, 32 * (v - 9.5) / 100 - 0.5
            errors.append(np.abs(rgb[v, u] - bilinear(img, s, t)))
    errors = np.array(errors)
    assert errors.max() <= 5  # OpenCV's bilinear weights are quantised to 1/32 texel
    assert errors.mean() < 1.0


def test_depth_is_exact_on_a_slanted_plane():
    # Plane z = 3 + 0.5 x (camera frame), seen by an identity camera: the ray through (u, v) has
    # x = z (u - cx) / f, so z = 3 / (1 - 0.5 (u - cx) / f) exactly.
    quad = Quad([-4.0, -4.0, 1.0], [10.0, 0, 5.0], [0, 8.0, 0], solid((90, 90, 90)))  # x in [-4, 6]
    _, depth = render([quad], SMALL, Pose.identity())
    u = np.arange(160)
    expected = 3.0 / (1.0 - 0.5 * (u - 79.5) / 100.0)
    np.testing.assert_allclose(depth, np.broadcast_to(expected, (120, 160)), rtol=1e-6)


# --- random points on the quads of a real scene ------------------------------------------------

@pytest.fixture(scope="module")
def scene_world():
    config = WorldConfig(num_scenes=1, train_traversals=1, frames_per_train_traversal=4,
                         frames_per_test_traversal=3, width=160, height=120, focal=131.25,
                         texel_density=100.0).without_nuisances()
    return build_world(config)


def test_random_surface_points_project_to_their_depth_and_texture(scene_world):
    rng = np.random.default_rng(7)
    scene = scene_world.scenes[0]
    camera = scene_world.camera
    quads = [dataclasses.replace(q, texture=smooth_texture(rng, q.width, q.height)) for q in scene.quads]
    checked = visible = colour_checked = 0
    for pose in [*scene.traversals[0].poses, *scene.traversals[1].poses]:
        result = render_layers(quads, camera, pose)
        for _ in range(250):
            k = int(rng.integers(len(quads)))
            q = quads[k]
            ab = rng.uniform(0.02, 0.98, size=2)
            X = q.point(ab)[0]
            x_cam = pose.transform(X[None])[0]
            if x_cam[2] < 0.05 or (pose.center - X) @ q.normal <= 0:
                continue
            uv = camera.project_pinhole(x_cam[None])[0]
            col, row = int(round(uv[0])), int(round(uv[1]))
            if not (0 <= col < camera.width and 0 <= row < camera.height):
                continue
            checked += 1
            # Independent truth for the pixel centre the point falls on.
            hit, z_hit, p_hit = raycast(quads, camera, pose, col, row)
            assert hit >= 0
            assert result.quad_index[row, col] == hit
            assert result.depth[row, col] == pytest.approx(z_hit, rel=1e-5)
            tex = quads[hit].texture.image
            st = quads[hit].texel_coords(p_hit[None])[0]
            # Texels per pixel from the hits of the neighbouring pixel centres: where the texture is
            # not strongly minified, the rendered colour is the texture's at the hit point.
            footprint = []
            for du, dv in ((1, 0), (0, 1)):
                hit2, _, p2 = raycast(quads, camera, pose, col + du, row + dv)
                footprint.append(np.linalg.norm(quads[hit].texel_coords(p2[None])[0] - st) if hit2 == hit else np.inf)
            if max(footprint) < 2.0:  # at most one mip level above 0: filtering changes little
                colour_checked += 1
                np.testing.assert_allclose(result.rgb[row, col], bilinear(tex, *st),
                                           atol=2.5 if max(footprint) < 1.0 else 5.0)
            if hit != k:
                continue  # the point itself is hidden behind another surface
            visible += 1
            # The point lies within half a pixel of that centre: same depth and texture up to the
            # change across half a pixel (surfaces not seen at grazing angles).
            view_cos = abs(q.normal @ (pose.center - X)) / np.linalg.norm(pose.center - X)
            if view_cos > 0.3:
                assert result.depth[row, col] == pytest.approx(x_cam[2], rel=0.02)
                if max(footprint) < 2.0:
                    # Allow for the texture's change between the point and the pixel centre.
                    st_point = q.texel_coords(X[None])[0]
                    offset = np.linalg.norm(st_point - st)
                    slope = max(np.abs(bilinear(tex, *(st_point + e)) - bilinear(tex, *(st_point - e))).max() / 2
                                for e in (np.array([1.0, 0]), np.array([0, 1.0])))
                    np.testing.assert_allclose(result.rgb[row, col], bilinear(tex, *st_point),
                                               atol=5.0 + 1.5 * slope * offset)
    assert checked > 150 and visible > 80 and colour_checked > 50


def test_world_views_have_no_holes_and_only_their_own_room(scene_world):
    scene = scene_world.scenes[0]
    lo, hi = scene.bounds
    for traversal in scene.traversals:
        for pose in traversal.poses:
            result = render_layers(scene_world, scene_world.camera, pose)
            assert np.isfinite(result.depth).all()
            assert (result.quad_index >= 0).all()
            assert result.depth.min() > 0.3
            assert result.depth.max() < np.linalg.norm(hi - lo)


# --- occlusion, clipping, culling ----------------------------------------------------------------

def test_box_in_front_of_wall_wins_the_z_buffer():
    # z-up world; camera at (0, 0, 1) looking along +y; wall at y = 3 facing -y; a box whose front
    # face (y = 1.3, x in [-0.2, 0.2], z in [0, 2]) stands between them.
    camera = Camera.pinhole(100.0, 100.0, 79.5, 59.5, 160, 120)
    pose = Pose.from_world_from_cam(look_rotation(90.0, 0.0, 0.0), np.array([0.0, 0.0, 1.0]))
    wall = vertical_quad([0, 3.0, -3.0], [0, -1.0, 0], 8.0, 8.0, solid((0, 0, 255)))
    box = Box((0.0, 1.5), (0.2, 0.2), 2.0)
    box_quads = box.quads([solid((255, 0, 0))] * 5, "box", 0)
    for quads in ([wall, *box_quads], [*box_quads, wall]):  # order must not matter
        rgb, depth = render(quads, camera, pose)
        half = 100.0 * 0.2 / 1.3  # box half-width in pixels
        cols = np.arange(160)
        inside = np.abs(cols - 79.5) < half - 0.5
        outside = np.abs(cols - 79.5) > half + 0.5
        np.testing.assert_allclose(depth[:, inside], 1.3, rtol=1e-6)
        np.testing.assert_array_equal(rgb[:, inside], np.broadcast_to([255, 0, 0], (120, inside.sum(), 3)))
        np.testing.assert_allclose(depth[:, outside], 3.0, rtol=1e-6)
        np.testing.assert_array_equal(rgb[:, outside], np.broadcast_to([0, 0, 255], (120, outside.sum(), 3)))


def test_nothing_behind_the_camera_is_drawn():
    # A floor plane y = 0.5 (camera frame, below the optical axis) facing the camera, crossing the
    # camera plane. Points behind the camera would project (flipped) into the upper image half.
    camera = SMALL
    floor_tex = solid((200, 100, 50))

    def floor(z_from: float, z_to: float) -> Quad:
        # u along +x, v along -z: front normal cross(v, u) points to -y, towards the camera.
        return Quad([-10.0, 0.5, z_to], [20.0, 0, 0], [0, 0, z_from - z_to], floor_tex)

    # Mostly behind the camera (z in [-10, 0.3]): its visible part would be below the image.
    rgb, depth = render([floor(-10.0, 0.3)], camera, Pose.identity())
    assert np.isnan(depth).all() and not rgb.any()

    # Crossing the camera plane, z in [-10, 5]: only rows with v - cy >= 100 * 0.5 / 5 = 10 are hit.
    _, depth = render([floor(-10.0, 5.0)], camera, Pose.identity())
    rows = np.arange(120)
    drawn = rows >= 69.5
    assert np.isnan(depth[~drawn]).all()
    expected = 100.0 * 0.5 / (rows[drawn] - 59.5)
    np.testing.assert_allclose(depth[drawn], np.broadcast_to(expected[:, None], (drawn.sum(), 160)), rtol=1e-6)

    # The same quad with the camera turned around (looking along -z) shows the part at z < 0 only.
    turned = Pose(np.diag([-1.0, 1.0, -1.0]), np.zeros(3))
    _, depth = render([floor(-10.0, 5.0)], camera, turned)
    expected = np.where(rows >= 59.5 + 100 * 0.5 / 10, 100.0 * 0.5 / np.maximum(rows - 59.5, 1e-9), np.nan)
    np.testing.assert_allclose(depth, np.broadcast_to(expected[:, None], (120, 160)), rtol=1e-6)


def test_back_faces_are_culled():
    quad = Quad([-0.5, -0.5, 2.0], [0, 1.0, 0], [1.0, 0, 0], solid((255, 255, 255)))  # faces +z
    rgb, depth = render([quad], SMALL, Pose.identity())
    assert np.isnan(depth).all() and not rgb.any()


def test_minified_checkerboard_does_not_alias():
    # A 1-texel checkerboard seen at about 15 texels per pixel (1024 texels over 1 m, which spans
    # 66.7 pixels at 1.5 m) must render close to its mean grey, as a camera would see it; a
    # point-sampled renderer gives a pattern of black and white pixels.
    size = 1024
    checker = ((np.indices((size, size)).sum(axis=0) % 2) * 255).astype(np.uint8)
    tex = Texture(np.repeat(checker[..., None], 3, axis=2))
    quad = Quad([-0.5, -0.5, 1.5], [1.0, 0, 0], [0, 1.0, 0], tex)
    rgb, _ = render([quad], SMALL, Pose.identity())
    inner = rgb[30:90, 50:110].astype(float)
    assert abs(inner.mean() - 127.5) < 4
    assert inner.std() < 4
