"""Database triangulation on a synthetic scene with known poses, points, matches and wrong matches."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.optimize import least_squares

from visloc.geometry import Camera, Pose
from visloc.geometry.backends import img_from_cam
from visloc.localization.triangulation import (
    TriangulationConfig,
    refine_points,
    triangulate_database,
    triangulate_dlt,
)

CAMERA = Camera("OPENCV", 640, 480, (500.0, 500.0, 319.5, 239.5, -0.05, 0.01, 0.0005, -0.0003))
NOISE_PX = 0.5


def _look_at(center: np.ndarray, target: np.ndarray) -> Pose:
    z = target - center
    z /= np.linalg.norm(z)
    x = np.cross([0.0, -1.0, 0.0], z)  # world -y is "up", camera y points down
    x /= np.linalg.norm(x)
    y = np.cross(z, x)
    return Pose.from_world_from_cam(np.stack([x, y, z], axis=1), center)


def _cameras(n: int = 5) -> dict[str, Pose]:
    # cameras on a 2 m wide arc, all looking at the origin from about 5 m
    angles = np.linspace(-12.0, 12.0, n)
    centers = [5.0 * np.array([np.sin(np.radians(a)), 0.1 * i - 0.2, -np.cos(np.radians(a))]) for i, a in enumerate(angles)]
    return {f"db/{i}.jpg": _look_at(c, np.zeros(3)) for i, c in enumerate(centers)}


class Scene:
    """Keypoints of every image: projections of known points (shuffled per image), with noise."""

    def __init__(self, points: np.ndarray, poses: dict[str, Pose], seed: int = 0, noise_px: float = NOISE_PX):
        rng = np.random.default_rng(seed)
        self.points, self.poses = points, poses
        self.cameras = {n: CAMERA for n in poses}
        self.keypoints: dict[str, np.ndarray] = {}
        self.point_of: dict[str, np.ndarray] = {}  # keypoint index -> point index
        for name, pose in poses.items():
            x_cam = pose.transform(points)
            uv = img_from_cam(CAMERA, x_cam)
            inside = (x_cam[:, 2] > 0) & (uv >= 0).all(1) & (uv[:, 0] < CAMERA.width) & (uv[:, 1] < CAMERA.height)
            ids = rng.permutation(np.flatnonzero(inside))
            self.point_of[name] = ids
            self.keypoints[name] = uv[ids] + rng.normal(0.0, noise_px, (len(ids), 2))

    def index_of(self, name: str, point: int) -> int:
        return int(np.flatnonzero(self.point_of[name] == point)[0])

    def true_matches(self, a: str, b: str, points: np.ndarray | None = None) -> np.ndarray:
        common = np.intersect1d(self.point_of[a], self.point_of[b])
        if points is not None:
            common = np.intersect1d(common, points)
        return np.array([[self.index_of(a, p), self.index_of(b, p)] for p in common], dtype=np.int64).reshape(-1, 2)


def _points(rng: np.random.Generator, n: int) -> np.ndarray:
    return rng.uniform([-1.5, -1.0, -1.0], [1.5, 1.0, 1.0], (n, 3))


def _all_pairs(names: list[str]) -> list[tuple[str, str]]:
    return [(a, b) for i, a in enumerate(names) for b in names[i + 1 :]]


def test_points_are_recovered_within_the_noise() -> None:
    rng = np.random.default_rng(0)
    scene = Scene(_points(rng, 150), _cameras(5))
    names = list(scene.poses)
    matches = {(a, b): scene.true_matches(a, b) for a, b in _all_pairs(names)}
    out = triangulate_database(scene.keypoints, scene.cameras, scene.poses, matches)
    assert set(out) == set(names)
    # expected error: 0.5 px at f = 500 and 5 m is 5 mm laterally, x (depth / baseline ~ 2.5) in depth
    for name in names:
        X = out[name]
        assert X.dtype == np.float32 and X.shape == (len(scene.keypoints[name]), 3)
        assert np.isfinite(X).all()
        err = np.linalg.norm(X - scene.points[scene.point_of[name]], axis=1)
        assert np.median(err) < 0.01
        assert err.max() < 0.05


def test_noise_free_points_are_exact() -> None:
    rng = np.random.default_rng(1)
    scene = Scene(_points(rng, 50), _cameras(4), noise_px=0.0)
    names = list(scene.poses)
    matches = {(a, b): scene.true_matches(a, b) for a, b in _all_pairs(names)}
    out = triangulate_database(scene.keypoints, scene.cameras, scene.poses, matches)
    for name in names:
        np.testing.assert_allclose(out[name], scene.points[scene.point_of[name]], atol=1e-5)


def _far_from_epipolar_line(scene: Scene, a: str, b: str, ia: int, ib: int) -> float:
    """Pixel distance in image b of keypoint ib from the epipolar line of keypoint ia (true geometry)."""
    pa, pb = scene.poses[a], scene.poses[b]
    Xa = scene.points[scene.point_of[a][ia]]
    ray = Xa - pa.center
    samples = pa.center + ray[None] * np.linspace(0.3, 3.0, 400)[:, None]
    line = img_from_cam(CAMERA, pb.transform(samples))
    return float(np.linalg.norm(line - scene.keypoints[b][ib], axis=1).min())


def test_wrong_matches_and_unmatched_keypoints_give_nan() -> None:
    rng = np.random.default_rng(2)
    scene = Scene(_points(rng, 120), _cameras(4))
    names = list(scene.poses)
    a, b = names[0], names[1]
    # points 0..29 are matched only in the pair (a, b), and wrongly: each a-keypoint is paired with
    # a b-keypoint of another point that lies far (> 15 px) from its true epipolar line
    lonely = np.arange(30)
    good_points = np.arange(30, 120)
    matches = {(x, y): scene.true_matches(x, y, good_points) for x, y in _all_pairs(names)}
    wrong = []
    for p in lonely:
        if p not in scene.point_of[a] or p not in scene.point_of[b]:
            continue
        ia = scene.index_of(a, p)
        for q in rng.permutation(lonely):
            if q != p and q in scene.point_of[b]:
                ib = scene.index_of(b, q)
                if _far_from_epipolar_line(scene, a, b, ia, ib) > 15.0:
                    wrong.append((ia, ib))
                    break
    assert len(wrong) >= 20
    wrong = np.array(wrong)
    matches[(a, b)] = np.concatenate([matches[(a, b)], wrong])
    out = triangulate_database(scene.keypoints, scene.cameras, scene.poses, matches)
    assert np.isnan(out[a][wrong[:, 0]]).all()
    assert np.isnan(out[b][wrong[:, 1]]).all()
    # keypoints of the lonely points that have no match at all in the other images
    for name in names[2:]:
        unmatched = np.isin(scene.point_of[name], lonely)
        assert unmatched.any() and np.isnan(out[name][unmatched]).all()
    # the correctly matched points are unaffected
    for name in names:
        ok = np.isin(scene.point_of[name], good_points)
        err = np.linalg.norm(out[name][ok] - scene.points[scene.point_of[name][ok]], axis=1)
        assert np.isfinite(err).all() and np.median(err) < 0.01


def _one_wrong_observation():
    """Scene with 5 views; for 10 keypoints of the first image the match into the last image is
    replaced by a keypoint > 30 px from the true epipolar line. Returns the output, the reference
    image name, its corrupted keypoint rows and the scene."""
    rng = np.random.default_rng(3)
    scene = Scene(_points(rng, 80), _cameras(5))
    names = list(scene.poses)
    ref, other = names[0], names[4]
    matches = {(x, y): scene.true_matches(x, y) for x, y in _all_pairs(names)}
    m = matches[(ref, other)].copy()
    victims = []
    for k in range(len(m)):
        j = (k + 17) % len(m)
        if _far_from_epipolar_line(scene, ref, other, m[k, 0], m[j, 1]) > 30.0:
            victims.append((k, m[j, 1]))
        if len(victims) == 10:
            break
    assert len(victims) == 10
    for k, ib in victims:
        m[k, 1] = ib
    matches[(ref, other)] = m
    out = triangulate_database(scene.keypoints, scene.cameras, scene.poses, matches)
    rows = np.array([m[k, 0] for k, _ in victims])
    return out, ref, rows, scene


def test_a_wrong_observation_never_gives_a_wrong_point() -> None:
    out, ref, rows, scene = _one_wrong_observation()
    err = np.linalg.norm(out[ref][rows] - scene.points[scene.point_of[ref][rows]], axis=1)
    # either rejected (NaN) or still right; never pulled to a wrong place
    assert (np.isnan(err) | (err < 0.05)).all()


def test_a_wrong_observation_among_good_ones_is_dropped() -> None:
    out, ref, rows, scene = _one_wrong_observation()
    err = np.linalg.norm(out[ref][rows] - scene.points[scene.point_of[ref][rows]], axis=1)
    # four correct observations remain (the reference and three other images): the point is still right
    assert np.isfinite(err).all()
    assert err.max() < 0.05


def test_too_little_parallax_gives_nan() -> None:
    rng = np.random.default_rng(4)
    near = _points(rng, 40)
    # far points straight ahead: all rays within ~0.5 degrees of each other (below min_angle_deg = 1.5)
    far = np.c_[rng.uniform(-30, 30, (40, 2)), np.full(40, 150.0)]
    poses = _cameras(4)
    scene = Scene(np.vstack([near, far]), poses)
    names = list(poses)
    for name in names:
        assert np.isin(np.arange(40, 80), scene.point_of[name]).sum() > 20  # far points are visible
    matches = {(a, b): scene.true_matches(a, b) for a, b in _all_pairs(names)}
    out = triangulate_database(scene.keypoints, scene.cameras, scene.poses, matches)
    for name in names:
        is_far = scene.point_of[name] >= 40
        assert np.isnan(out[name][is_far]).all()
        assert np.isfinite(out[name][~is_far]).all()
    # with the parallax check off, the same far points are triangulated (roughly, given the noise)
    loose = TriangulationConfig(min_angle_deg=0.0, max_reprojection_px=10.0)
    out = triangulate_database(scene.keypoints, scene.cameras, scene.poses, matches, loose)
    assert np.isfinite(out[names[0]][scene.point_of[names[0]] >= 40]).mean() > 0.9


def test_min_views() -> None:
    rng = np.random.default_rng(5)
    scene = Scene(_points(rng, 60), _cameras(4))
    names = list(scene.poses)
    # only one pair: every point has exactly 2 views
    matches = {(names[0], names[1]): scene.true_matches(names[0], names[1])}
    two = triangulate_database(scene.keypoints, scene.cameras, scene.poses, matches)
    three = triangulate_database(scene.keypoints, scene.cameras, scene.poses, matches, TriangulationConfig(min_views=3))
    rows = matches[(names[0], names[1])][:, 0]
    assert np.isfinite(two[names[0]][rows]).all()
    assert np.isnan(three[names[0]]).all()
    assert np.isnan(two[names[2]]).all()  # never matched


def _scene_with_a_twin(seed: int, twin_noise_px: float) -> tuple[Scene, str, str]:
    """Four cameras plus ``db/twin.jpg``: the pose of ``db/0.jpg`` and its keypoints moved by a little
    noise (a second, near-identical photo from the same place)."""
    rng = np.random.default_rng(seed)
    poses = _cameras(4)
    poses["db/twin.jpg"] = poses["db/0.jpg"]
    scene = Scene(_points(rng, 100), poses, seed=seed)
    scene.keypoints["db/twin.jpg"] = scene.keypoints["db/0.jpg"] + rng.normal(0.0, twin_noise_px, (len(scene.keypoints["db/0.jpg"]), 2))
    scene.point_of["db/twin.jpg"] = scene.point_of["db/0.jpg"].copy()
    return scene, "db/0.jpg", "db/twin.jpg"


@pytest.mark.parametrize("twin_noise_px", [1e-3, 0.3])
def test_two_views_from_one_centre_give_nan_not_an_error(twin_noise_px: float) -> None:
    # the twins matched only with each other: every ray leaves the same centre, so no depth is defined
    # (this raised LinAlgError: Singular matrix)
    scene, a, b = _scene_with_a_twin(10, twin_noise_px)
    out = triangulate_database(scene.keypoints, scene.cameras, scene.poses, {(a, b): scene.true_matches(a, b)})
    assert np.isnan(out[a]).all() and np.isnan(out[b]).all()
    # with the other images matched too, the twins' points come from the views with parallax (four
    # distinct centres, not five as in the first test: a slightly looser bound)
    names = list(scene.poses)
    matches = {(x, y): scene.true_matches(x, y) for x, y in _all_pairs(names)}
    out = triangulate_database(scene.keypoints, scene.cameras, scene.poses, matches)
    for name in names:
        err = np.linalg.norm(out[name] - scene.points[scene.point_of[name]], axis=1)
        assert np.isfinite(err).all() and np.median(err) < 0.02, name


# --- the building blocks -----------------------------------------------------------------------


def _observations(rng: np.random.Generator, n: int, noise: float):
    poses = list(_cameras(4).values())
    X = _points(rng, n)
    P = np.stack([np.hstack([p.R, p.t[:, None]]) for p in poses])  # (V, 3, 4)
    x_cam = np.einsum("vij,nj->nvi", P[..., :3], X) + P[:, :, 3]
    rays = x_cam[..., :2] / x_cam[..., 2:] + rng.normal(0.0, noise, (n, len(poses), 2))
    return X, np.broadcast_to(P, (n, *P.shape)).copy(), rays


def test_triangulate_dlt_exact_without_noise() -> None:
    rng = np.random.default_rng(6)
    X, P, rays = _observations(rng, 30, noise=0.0)
    mask = np.ones(rays.shape[:2], dtype=bool)
    np.testing.assert_allclose(triangulate_dlt(rays, P, mask), X, atol=1e-9)
    # masked-out observations do not count, whatever they hold
    rays[:, 2] = 1e3
    mask[:, 2] = False
    np.testing.assert_allclose(triangulate_dlt(rays, P, mask), X, atol=1e-9)
    # two views suffice
    mask[:, 3] = False
    np.testing.assert_allclose(triangulate_dlt(rays, P, mask), X, atol=1e-9)


def _reprojection(X: np.ndarray, P: np.ndarray, rays: np.ndarray) -> np.ndarray:
    x_cam = np.einsum("nvij,nj->nvi", P[..., :3], X) + P[..., 3]
    return np.linalg.norm(x_cam[..., :2] / x_cam[..., 2:] - rays, axis=-1)


def test_refine_points_reaches_the_least_squares_optimum() -> None:
    rng = np.random.default_rng(7)
    X_true, P, rays = _observations(rng, 20, noise=2e-3)  # ~1 px at f = 500
    mask = np.ones(rays.shape[:2], dtype=bool)
    X0 = triangulate_dlt(rays, P, mask) + rng.normal(0.0, 0.02, (20, 3))  # start a bit off
    X = refine_points(X0, rays, P, mask, iterations=5)
    before = (_reprojection(X0, P, rays) ** 2).sum(axis=1)
    after = (_reprojection(X, P, rays) ** 2).sum(axis=1)
    assert (after < before).all()
    # independent optimum from scipy
    for i in range(len(X)):

        def residual(x: np.ndarray, i: int = i) -> np.ndarray:
            x_cam = P[i, :, :, :3] @ x + P[i, :, :, 3]
            return (x_cam[:, :2] / x_cam[:, 2:] - rays[i]).ravel()

        ref = least_squares(residual, X0[i], xtol=1e-14, ftol=1e-14, gtol=1e-14).x
        np.testing.assert_allclose(X[i], ref, atol=1e-6)
    assert np.median(np.linalg.norm(X - X_true, axis=1)) < 0.03


def test_refine_points_ignores_masked_observations() -> None:
    rng = np.random.default_rng(8)
    X_true, P, rays = _observations(rng, 10, noise=0.0)
    rays[:, 0] += 0.5  # garbage in view 0, masked out
    mask = np.ones(rays.shape[:2], dtype=bool)
    mask[:, 0] = False
    X = refine_points(X_true + 0.05, rays, P, mask, iterations=5)
    np.testing.assert_allclose(X, X_true, atol=1e-8)


@pytest.mark.parametrize("iterations", [0])
def test_refine_points_zero_iterations_is_identity(iterations: int) -> None:
    rng = np.random.default_rng(9)
    X, P, rays = _observations(rng, 5, noise=1e-3)
    np.testing.assert_array_equal(refine_points(X, rays, P, np.ones((5, 4), bool), iterations), X)


def test_refine_points_drops_points_without_depth_and_refines_the_rest() -> None:
    rng = np.random.default_rng(11)
    X_true, P, rays = _observations(rng, 6, noise=1e-3)
    mask = np.ones(rays.shape[:2], dtype=bool)
    X0 = X_true + 0.02
    alone = refine_points(X0, rays, P, mask, iterations=3)
    # points 0 and 1: two observations from one camera (the same P, slightly different rays); point 2:
    # a single observation; point 3: not finite. Their depth is undetermined: NaN, not an exception.
    P2, rays2, mask2, X2 = P.copy(), rays.copy(), mask.copy(), X0.copy()
    for i in (0, 1):
        P2[i, 1] = P2[i, 0]
        rays2[i, 1] = rays2[i, 0] + 1e-4
        mask2[i, 2:] = False
    mask2[2, 1:] = False
    X2[3] = np.nan
    out = refine_points(X2, rays2, P2, mask2, iterations=3)
    assert np.isnan(out[:4]).all()
    # the others are refined exactly as they are on their own
    np.testing.assert_allclose(out[4:], alone[4:], rtol=0, atol=1e-12)
    assert np.linalg.norm(out[4:] - X_true[4:], axis=1).max() < 0.02
