"""Dense-matching and relative-pose metrics: hand-computed cases, OpenCV as the reference for the pixel
conventions, synthetic two-view geometry, and the real ScanNet / EVD ground truth."""

from __future__ import annotations

import math
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy.spatial.transform import Rotation

from visloc.datasets import read_scannet_pairs
from visloc.datasets.homography import read_evd
from visloc.evaluation.matching import (
    DGCNET_PCK_ALPHAS,
    aepe,
    component_errors,
    dgcnet_pck,
    endpoint_errors,
    estimate_relative_pose,
    homography_correspondence,
    pck,
    pose_auc,
    pose_errors,
    scale_homography,
)

# --- pose AUC ----------------------------------------------------------------------------------------------


def test_pose_auc_by_hand() -> None:
    # SuperGlue's own example: curve (0,0) (1,.2) (2,.4), flat to 3: area .1 + .3 + .4 = .8
    assert pose_auc([1, 2, 3, 4, 5], [3]) == pytest.approx({3.0: 0.8 / 3})
    # unsorted, with a failure; sorted 0.5, 2, 4, inf with recall .25 .5 .75 1
    aucs = pose_auc([0.5, 4.0, math.inf, 2.0], (1, 5, 10))
    # t=1: (0,0)-(0.5,.25): .0625; flat .25 to 1: .125
    assert aucs[1.0] == pytest.approx(0.1875)
    # t=5: .0625 + 1.5 * (.25 + .5) / 2 + 2 * (.5 + .75) / 2 + 1 * .75 = 2.625
    assert aucs[5.0] == pytest.approx(2.625 / 5)
    assert aucs[10.0] == pytest.approx((0.0625 + 0.5625 + 1.25 + 6 * 0.75) / 10)
    # ties make a vertical step: (0,0) (2,.5) (2,1) then flat: 0.5 + 3 = 3.5
    assert pose_auc([2.0, 2.0], [5])[5.0] == pytest.approx(0.7)
    # an error equal to the threshold is not counted (searchsorted left, as SuperGlue)
    assert pose_auc([5.0], [5])[5.0] == 0.0
    assert pose_auc([0.0, 0.0], [5])[5.0] == pytest.approx(1.0)
    assert pose_auc([math.inf, math.nan], [5])[5.0] == 0.0  # NaN counts as a failure
    assert pose_auc(np.array([1.0, math.nan]), [5]) == pose_auc([1.0, math.inf], [5])
    assert math.isnan(pose_auc([], [5])[5.0])
    with pytest.raises(ValueError):
        pose_auc([1.0], [0])
    with pytest.raises(ValueError):
        pose_auc([-1.0], [5])


# --- pose errors -------------------------------------------------------------------------------------------


def _rot(axis: str, deg: float) -> np.ndarray:
    return Rotation.from_euler(axis, deg, degrees=True).as_matrix()


def test_pose_errors_known_rotations_and_translations() -> None:
    R_gt, t_gt = _rot("y", 20.0), np.array([1.0, 0.0, 0.0])
    R_err, t_err = pose_errors(_rot("z", 30.0) @ R_gt, 5.0 * t_gt, R_gt, t_gt)
    assert R_err == pytest.approx(30.0) and t_err == pytest.approx(0.0, abs=1e-9)
    # translation rotated by 30 degrees about z: 30; scale does not matter
    _, t_err = pose_errors(R_gt, 0.1 * _rot("z", 30.0) @ t_gt, R_gt, t_gt)
    assert t_err == pytest.approx(30.0)
    # sign flip: SuperGlue's min(e, 180 - e) makes -t perfect, 150 degrees count as 30
    assert pose_errors(R_gt, -t_gt, R_gt, t_gt) == pytest.approx((0.0, 0.0), abs=1e-9)
    assert pose_errors(R_gt, _rot("z", 150.0) @ t_gt, R_gt, t_gt)[1] == pytest.approx(30.0)
    assert pose_errors(R_gt, -t_gt, R_gt, t_gt, sign_agnostic=False)[1] == pytest.approx(180.0)
    # rotation error 170 degrees (no sign ambiguity on rotations)
    assert pose_errors(_rot("x", 170.0) @ R_gt, t_gt, R_gt, t_gt)[0] == pytest.approx(170.0)
    # tiny angles stay accurate (arccos would lose them)
    assert pose_errors(_rot("x", 1e-5) @ R_gt, t_gt, R_gt, t_gt)[0] == pytest.approx(1e-5, rel=1e-3)
    # failures
    assert pose_errors(None, None, R_gt, t_gt) == (math.inf, math.inf)
    assert pose_errors(R_gt, np.zeros(3), R_gt, t_gt) == (math.inf, math.inf)
    assert pose_errors(np.full((3, 3), np.nan), t_gt, R_gt, t_gt) == (math.inf, math.inf)
    with pytest.raises(ValueError):
        pose_errors(R_gt, t_gt, R_gt, np.zeros(3))


# --- relative pose estimation ------------------------------------------------------------------------------


def _two_views(R: np.ndarray, t: np.ndarray, K0: np.ndarray, K1: np.ndarray, size: tuple[int, int],
               n: int, rng: np.random.Generator, depth: tuple[float, float] = (2.0, 6.0)
               ) -> tuple[np.ndarray, np.ndarray]:
    """Pixels of random 3-D points seen by camera 0 (identity) and camera 1 (``X1 = R X0 + t``), both
    inside ``size`` (width, height)."""
    w, h = size
    m = 100 * n  # candidates; wide-baseline pairs see a few percent of them in both views
    uv = rng.uniform([0, 0], [w - 1, h - 1], (m, 2))
    z = rng.uniform(*depth, (m, 1))
    X0 = np.c_[(uv - K0[:2, 2]) / np.diag(K0)[:2], np.ones(m)] * z
    X1 = X0 @ R.T + t
    x0 = X0 @ K0.T
    x1 = X1 @ K1.T
    p0, p1 = x0[:, :2] / x0[:, 2:], x1[:, :2] / x1[:, 2:]
    ok = (X1[:, 2] > 0.1) & np.all((p1 >= 0) & (p1 <= [w - 1, h - 1]), axis=1)
    assert ok.sum() >= n
    return p0[ok][:n], p1[ok][:n]


def test_estimate_relative_pose_recovers_synthetic_geometry() -> None:
    rng = np.random.default_rng(0)
    K0 = np.array([[500.0, 0, 319.5], [0, 510.0, 239.5], [0, 0, 1]])
    K1 = np.array([[620.0, 0, 300.0], [0, 615.0, 250.0], [0, 0, 1]])
    R = Rotation.from_rotvec(np.radians(12.0) * np.array([0.2, 1.0, -0.1]) / np.linalg.norm([0.2, 1.0, -0.1])).as_matrix()
    t = np.array([-0.8, 0.1, 0.2])
    p0, p1 = _two_views(R, t, K0, K1, (640, 480), 300, rng)
    p0 = p0 + rng.normal(0, 0.3, p0.shape)
    p1 = p1 + rng.normal(0, 0.3, p1.shape)
    outliers = rng.random(len(p1)) < 0.2
    p1[outliers] = rng.uniform([0, 0], [639, 479], (outliers.sum(), 2))

    result = estimate_relative_pose(p0, p1, K0, K1)
    assert result is not None
    R_est, t_est, inliers = result
    err_R, err_t = pose_errors(R_est, t_est, R, t, sign_agnostic=False)
    assert err_R < 0.1 and err_t < 0.1, (err_R, err_t)
    assert np.linalg.norm(t_est) == pytest.approx(1.0)
    assert inliers.shape == (300,) and inliers.dtype == bool
    assert inliers[~outliers].mean() > 0.95 and inliers[outliers].mean() < 0.05

    assert estimate_relative_pose(p0[:4], p1[:4], K0, K1) is None
    with pytest.raises(ValueError):
        estimate_relative_pose(p0, p1, np.array([[500.0, 1.0, 320], [0, 500, 240], [0, 0, 1]]), K1)
    with pytest.raises(ValueError):
        estimate_relative_pose(p0, p1[:-1], K0, K1)


@pytest.mark.real_data
def test_scannet_ground_truth_through_the_pose_protocol(scannet_root: Path) -> None:
    """The real ScanNet pairs load, and their ``T_0to1`` / ``K`` conventions are those of
    :func:`estimate_relative_pose`: points synthesised with the real cameras and pose give the pose back."""
    pairs = read_scannet_pairs(scannet_root)
    assert len(pairs) == 15
    rng = np.random.default_rng(1)
    errors, inverse_errors = [], []
    for pair in pairs:
        T = pair.cam1_from_cam0
        p0, p1 = _two_views(T.R, T.t, pair.camera0.K, pair.camera1.K,
                            (pair.camera1.width, pair.camera1.height), 100, rng, depth=(0.5, 10.0))
        result = estimate_relative_pose(p0, p1, pair.camera0.K, pair.camera1.K)
        assert result is not None
        errors.append(max(pose_errors(result[0], result[1], T.R, T.t)))
        inv = T.inverse()
        inverse_errors.append(max(pose_errors(result[0], result[1], inv.R, inv.t)))
    assert max(errors) < 0.1, errors
    assert pose_auc(errors) == pytest.approx({5.0: 1.0, 10.0: 1.0, 20.0: 1.0}, abs=0.01)
    assert np.median(inverse_errors) > 5.0  # the wrong direction is clearly worse


# --- dense errors ------------------------------------------------------------------------------------------


def _tiny_maps() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    gt = torch.tensor([[[10.0, 20.0, 30.0], [40.0, 50.0, 60.0]],
                       [[1.0, 2.0, 3.0], [4.0, 5.0, math.nan]]])  # (2, 2, 3)
    d = torch.tensor([[[0.0, 3.0, 1.0], [0.0, 6.0, 7.0]],
                      [[0.0, 4.0, 0.0], [2.0, 8.0, 7.0]]])
    mask = torch.tensor([[[True, True, True], [True, True, False]]])
    return gt + d, gt, mask


def test_endpoint_errors_aepe_pck_by_hand() -> None:
    pred, gt, mask = _tiny_maps()
    # errors in row-major order: 0, 5, 1, 2, 10 (the last pixel is masked out, its gt is NaN)
    err = endpoint_errors(pred, gt, mask)
    torch.testing.assert_close(err, torch.tensor([0.0, 5.0, 1.0, 2.0, 10.0]))
    assert aepe(pred, gt, mask) == pytest.approx(18.0 / 5)
    # inclusive thresholds: <=1: {0, 1}; <=3: {0, 1, 2}; <=5: {0, 5, 1, 2}
    assert pck(err) == pytest.approx({1.0: 2 / 5, 3.0: 3 / 5, 5.0: 4 / 5})
    assert pck(err.numpy(), [0.5, 10]) == pytest.approx({0.5: 1 / 5, 10.0: 1.0})
    # float masks, batched maps, a batch of 1 ground truth broadcasts
    torch.testing.assert_close(endpoint_errors(pred[None].repeat(2, 1, 1, 1), gt[None], mask.float()[None]),
                               torch.tensor([0.0, 5.0, 1.0, 2.0, 10.0] * 2))
    # |dx| of the valid pixels, then |dy|
    torch.testing.assert_close(component_errors(pred, gt, mask),
                               torch.tensor([0.0, 3.0, 1.0, 0.0, 6.0, 0.0, 4.0, 0.0, 2.0, 8.0]))
    # a NaN estimate is an infinite error: wrong at every threshold, AEPE infinite
    bad = pred.clone()
    bad[0, 0, 0] = math.nan
    assert endpoint_errors(bad, gt, mask)[0] == math.inf
    assert pck(endpoint_errors(bad, gt, mask), [100])[100.0] == pytest.approx(4 / 5)
    assert aepe(bad, gt, mask) == math.inf
    # no valid pixel: NaN, not an error
    assert math.isnan(aepe(pred, gt, torch.zeros_like(mask)))
    assert math.isnan(pck(torch.zeros(0), [1])[1.0])
    with pytest.raises(ValueError, match="not finite"):
        endpoint_errors(pred, gt)  # the NaN ground truth would be used
    with pytest.raises(ValueError):
        endpoint_errors(pred[:, :, :2], gt, mask)


def test_dgcnet_pck_thresholds_and_pooling() -> None:
    assert len(DGCNET_PCK_ALPHAS) == 200
    rng = np.random.default_rng(0)
    per_pair = [torch.from_numpy(rng.exponential(5.0, n)) for n in (50, 7, 300)]
    curve = dgcnet_pck(per_pair)
    thresholds = list(curve)
    assert len(thresholds) == 200
    assert thresholds[0] == pytest.approx(1.2) and thresholds[-1] == pytest.approx(24.0)
    assert thresholds[1] - thresholds[0] == pytest.approx(0.095 * 240 / 199)
    pooled = np.concatenate([e.numpy() for e in per_pair])
    for t in thresholds[::37]:  # pooled over pixels: one count over all 357 errors
        assert curve[t] == pytest.approx(sum(1 for e in pooled if e <= t) / 357)
    assert dgcnet_pck(per_pair, image_size=120)[thresholds[5] / 2] == pytest.approx(
        np.mean(pooled <= thresholds[5] / 2))


# --- homography ground truth -------------------------------------------------------------------------------


def test_homography_correspondence_pure_translation_by_hand() -> None:
    # source -> target: x_t = x_s + 1, y_t = y_s - 0.5; target 3x4, source 2x5 (H x W)
    H = np.array([[1.0, 0.0, 1.0], [0.0, 1.0, -0.5], [0.0, 0.0, 1.0]])
    corr, mask = homography_correspondence(H, (3, 4), (2, 5))
    assert corr.shape == (2, 3, 4) and mask.shape == (1, 3, 4) and mask.dtype == torch.bool
    expected_x = torch.tensor([[-1.0, 0.0, 1.0, 2.0]] * 3, dtype=torch.float64)
    expected_y = torch.tensor([[0.5] * 4, [1.5] * 4, [2.5] * 4], dtype=torch.float64)
    torch.testing.assert_close(corr, torch.stack([expected_x, expected_y]))
    # inside [0, 4] x [0, 1]: only row 0 (y = 0.5), columns with x >= 0
    assert mask[0].tolist() == [[False, True, True, True], [False] * 4, [False] * 4]


def _perspective_h() -> np.ndarray:
    return np.array([[0.9, 0.1, 5.0], [-0.05, 1.1, -3.0], [4e-4, -3e-4, 1.0]])


def test_homography_correspondence_matches_opencv() -> None:
    H = _perspective_h()
    (ht, wt), (hs, ws) = (50, 70), (60, 80)
    corr, mask = homography_correspondence(torch.from_numpy(H), (ht, wt), (hs, ws))
    # forward check with OpenCV: H maps every source point of the map back onto its target pixel
    src = corr.permute(1, 2, 0).reshape(-1, 1, 2).numpy()
    back = cv2.perspectiveTransform(src, H).reshape(ht, wt, 2)
    ys, xs = np.mgrid[0:ht, 0:wt]
    np.testing.assert_allclose(back, np.stack([xs, ys], -1), atol=1e-9)
    # the mask by an explicit loop over sampled pixels
    for y, x in [(0, 0), (10, 3), (49, 69), (25, 35), (0, 69), (49, 0), (7, 66)]:
        sx, sy = corr[:, y, x].tolist()
        assert bool(mask[0, y, x]) == (0 <= sx <= ws - 1 and 0 <= sy <= hs - 1)
    assert 0.5 < mask.float().mean() < 1.0

    # the map samples the source exactly as cv2.warpPerspective warps it, and its normalised form
    # (2x + 1) / W - 1 does the same with grid_sample(align_corners=False)
    rng = np.random.default_rng(0)
    image = cv2.GaussianBlur(rng.uniform(0, 255, (hs, ws)).astype(np.float32), (0, 0), 2.0)
    warped = cv2.warpPerspective(image, H, (wt, ht), flags=cv2.INTER_LINEAR)
    remapped = cv2.remap(image, corr[0].numpy().astype(np.float32), corr[1].numpy().astype(np.float32),
                         cv2.INTER_LINEAR)
    grid = torch.stack([(2 * corr[0] + 1) / ws - 1, (2 * corr[1] + 1) / hs - 1], -1)[None].float()
    sampled = F.grid_sample(torch.from_numpy(image)[None, None], grid, align_corners=False)[0, 0].numpy()
    valid = mask[0].numpy()
    assert np.abs(remapped - warped)[valid].max() < 1e-2
    assert np.abs(sampled - warped)[valid].max() < 1e-2
    # the wrong direction is far off
    wrong, _ = homography_correspondence(np.linalg.inv(H), (ht, wt), (hs, ws))
    assert (wrong - corr)[:, valid].abs().max() > 5


def test_homography_correspondence_device_dtype_and_errors() -> None:
    corr, mask = homography_correspondence(torch.eye(3, dtype=torch.float64), (5, 6), (5, 6), dtype=torch.float32)
    assert corr.dtype == torch.float32 and corr.device.type == "cpu" and mask.dtype == torch.bool
    ys, xs = torch.meshgrid(torch.arange(5.0), torch.arange(6.0), indexing="ij")
    torch.testing.assert_close(corr, torch.stack([xs, ys]))  # identity: every pixel maps to itself
    assert bool(mask.all())
    with pytest.raises(ValueError):
        homography_correspondence(np.zeros((3, 3)), (5, 6), (5, 6))
    with pytest.raises(ValueError):
        homography_correspondence(np.eye(2), (5, 6), (5, 6))


def test_scale_homography_pixel_centres_follow_cv2_resize() -> None:
    """With ``H = I`` and the source left at full size, the result is the resize map of the target: the
    centroid of a blob resized by ``cv2.resize`` lands where it maps the full-resolution centroid."""
    h, w, x0, y0 = 480, 640, 301.3, 207.8
    ys, xs = np.mgrid[0:h, 0:w]
    blob = np.exp(-((xs - x0) ** 2 + (ys - y0) ** 2) / (2 * 6.0**2))
    for new_w, new_h in [(240, 240), (1000, 700)]:
        S = scale_homography(np.eye(3), (1.0, 1.0), (new_w / w, new_h / h))
        expected = cv2.perspectiveTransform(np.array([[[x0, y0]]]), S)[0, 0]
        for interpolation in (cv2.INTER_AREA, cv2.INTER_LINEAR):
            small = cv2.resize(blob, (new_w, new_h), interpolation=interpolation)
            yy, xx = np.mgrid[0:new_h, 0:new_w]
            centroid = np.array([(small * xx).sum(), (small * yy).sum()]) / small.sum()
            np.testing.assert_allclose(centroid, expected, atol=1e-3)
        # DGC-Net's corner convention diag(s) would be off by (s - 1) / 2 px
        assert np.abs(expected - [x0 * new_w / w, y0 * new_h / h]).min() > 0.2


def test_scale_homography_maps_the_resized_lattice_consistently() -> None:
    H = _perspective_h()
    s_src, s_tgt = (240 / 800, 240 / 640), (240 / 1000, 240 / 750)
    H_small = scale_homography(H, s_src, s_tgt)
    rng = np.random.default_rng(0)
    x_src = rng.uniform([0, 0], [799, 639], (50, 1, 2))
    x_tgt = cv2.perspectiveTransform(x_src, H)

    def resized(p: np.ndarray, s: tuple[float, float]) -> np.ndarray:  # pixel centres of the resized image
        return (p + 0.5) * np.asarray(s) - 0.5

    np.testing.assert_allclose(cv2.perspectiveTransform(resized(x_src, s_src), H_small), resized(x_tgt, s_tgt),
                               atol=1e-9)
    # scaling there and back is the identity; unit scales change nothing
    np.testing.assert_allclose(scale_homography(H_small, (1 / s_src[0], 1 / s_src[1]), (1 / s_tgt[0], 1 / s_tgt[1])),
                               H, atol=1e-12)
    np.testing.assert_allclose(scale_homography(H, (1, 1), (1, 1)), H)
    with pytest.raises(ValueError):
        scale_homography(H, (0.0, 1.0), (1.0, 1.0))


@pytest.mark.real_data
def test_real_evd_map_warps_like_opencv(real_data: Path) -> None:
    """On real EVD pairs whose two images differ in size and orientation, the ground-truth map of the
    reader's ``H`` resamples the source exactly as ``cv2.warpPerspective`` does."""
    root = real_data / "evd_homography"
    if not root.is_dir():
        pytest.skip(f"evd_homography not found under {real_data}")
    pairs = {p.name: p for p in read_evd(root)}
    for name in ("dum", "graf"):
        pair = pairs[name]
        source = cv2.imread(str(pair.source_path), cv2.IMREAD_GRAYSCALE).astype(np.float32)
        corr, mask = homography_correspondence(pair.H, pair.target_shape, pair.source_shape)
        assert corr.shape[1:] == pair.target_shape
        warped = cv2.warpPerspective(source, pair.H, pair.target_size, flags=cv2.INTER_LINEAR)
        remapped = cv2.remap(source, corr[0].numpy().astype(np.float32), corr[1].numpy().astype(np.float32),
                             cv2.INTER_LINEAR)
        valid = mask[0].numpy()
        assert valid.mean() > 0.2
        assert np.abs(remapped - warped)[valid].max() < 0.05
