"""scikit-image's stereo_motorcycle pair: the ground-truth map by hand and on the real photographs."""

from __future__ import annotations

import math

import cv2
import numpy as np
import pytest
import skimage.data

from visloc.datasets.stereo import StereoPair, disparity_correspondence, stereo_motorcycle_pair


@pytest.fixture(scope="module")
def pair() -> StereoPair:
    return stereo_motorcycle_pair()


def test_disparity_correspondence_by_hand() -> None:
    d = np.array([[0.5, 1.0, np.nan, 0.0], [2.0, 0.0, 4.0, np.inf]], dtype=np.float32)
    corr, mask = disparity_correspondence(d, source_width=3)
    assert corr.shape == (2, 2, 4) and corr.dtype == np.float32 and mask.shape == (1, 2, 4)
    np.testing.assert_array_equal(corr[0], [[-0.5, 0.0, np.nan, 3.0], [-2.0, 1.0, -2.0, np.nan]])
    np.testing.assert_array_equal(corr[1], [[0, 0, 0, 0], [1, 1, 1, 1]])
    # inside [0, source_width - 1 = 2] and known
    assert mask[0].tolist() == [[False, True, False, False], [False, True, False, False]]
    with pytest.raises(ValueError):
        disparity_correspondence(d[0], 3)


def test_pair_holds_the_skimage_arrays(pair: StereoPair) -> None:
    left, right, disp = skimage.data.stereo_motorcycle()
    assert pair.left.dtype == pair.right.dtype == np.uint8
    np.testing.assert_array_equal(pair.left, left)
    np.testing.assert_array_equal(pair.right, right)
    assert pair.target is pair.left and pair.source is pair.right
    h, w = disp.shape
    assert pair.disparity.shape == (h, w) and pair.correspondence.shape == (2, h, w) and pair.mask.shape == (1, h, w)
    known = np.isfinite(disp)
    assert (~known).sum() > 0  # scikit-image marks unknown pixels (inf in 0.26)
    assert np.array_equal(np.isnan(pair.disparity), ~known)
    np.testing.assert_array_equal(pair.disparity[known], disp[known])


def test_map_and_mask_by_explicit_loop(pair: StereoPair) -> None:
    _, _, disp = skimage.data.stereo_motorcycle()
    h, w = disp.shape
    for y in (0, 123, 250, h - 1):
        for x in range(0, w, 7):
            d = float(disp[y, x])
            valid = math.isfinite(d) and 0 <= x - d <= w - 1
            assert bool(pair.mask[0, y, x]) == valid, (y, x, d)
            if math.isfinite(d):
                assert pair.correspondence[0, y, x] == pytest.approx(x - d, abs=1e-4)
            assert pair.correspondence[1, y, x] == y
    assert 0.85 < pair.mask.mean() < 0.95  # measured 0.896


def _mad(warped: np.ndarray, target: np.ndarray, valid: np.ndarray) -> float:
    return float(np.abs(warped.astype(np.float64) - target.astype(np.float64)).mean(-1)[valid].mean())


def test_ground_truth_warps_right_onto_left(pair: StereoPair) -> None:
    """Sampling the right image at the ground-truth map reproduces the left image: mean absolute
    difference over the valid pixels 7.7 grey levels, against 39.5 for the identity map (measured) and
    9.0 / 9.5 for the map moved by -0.5 / +0.5 px, so the map is exact to well under half a pixel."""
    mx, my = pair.correspondence
    valid = pair.mask[0]

    def warp(dx: float) -> np.ndarray:
        return cv2.remap(pair.right, np.nan_to_num(mx + dx, nan=-1e4), my, cv2.INTER_LINEAR)

    gt = _mad(warp(0.0), pair.left, valid)
    identity = _mad(pair.right, pair.left, valid)
    assert gt * 4 < identity, (gt, identity)
    shifted = [_mad(warp(dx), pair.left, valid) for dx in (-0.5, 0.5)]
    assert gt + 0.5 < min(shifted), (gt, shifted)
    # the opposite sign of the disparity (x + d) is far off
    opposite = cv2.remap(pair.right, np.nan_to_num(2 * np.arange(mx.shape[1], dtype=np.float32) - mx, nan=-1e4),
                         my, cv2.INTER_LINEAR)
    assert _mad(opposite, pair.left, valid) > 3 * gt
