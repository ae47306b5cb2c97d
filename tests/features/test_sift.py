"""OpenCV SIFT / RootSIFT extractor: repeatability under a known homography, descriptor algebra,
limits, resizing, and the keypoint pixel convention checked on blobs at known positions."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from scipy.spatial import cKDTree
from skimage.data import astronaut

from visloc.features import extractors
from visloc.features.sift import SIFT, SIFTConfig, root_sift

# rotation by ~8.6 degrees, scale 0.95, shift, mild perspective
H = np.array([[0.95 * np.cos(0.15), -0.95 * np.sin(0.15), 40.0],
              [0.95 * np.sin(0.15), 0.95 * np.cos(0.15), -10.0],
              [2e-5, 1e-5, 1.0]])


@pytest.fixture(scope="module")
def image() -> np.ndarray:
    return astronaut()


@pytest.fixture(scope="module")
def full(image: np.ndarray):
    return SIFT(SIFTConfig(max_keypoints=0))(image)


def _warp(points: np.ndarray, H: np.ndarray) -> np.ndarray:
    return cv2.perspectiveTransform(points.reshape(-1, 1, 2).astype(np.float64), H).reshape(-1, 2)


def repeatability(kp_a: np.ndarray, kp_b: np.ndarray, H: np.ndarray, size: tuple[int, int], tol: float = 1.5) -> float:
    """Share of A's keypoints that land inside B and lie within ``tol`` px of one of B's keypoints."""
    p = _warp(kp_a, H)
    inside = (p >= 0).all(1) & (p[:, 0] <= size[0] - 1) & (p[:, 1] <= size[1] - 1)
    d, _ = cKDTree(kp_b).query(p[inside])
    return float((d < tol).mean())


def test_keypoints_follow_a_known_homography(image: np.ndarray) -> None:
    warped = cv2.warpPerspective(image, H, (512, 512))
    sift = SIFT(SIFTConfig(max_keypoints=2000))
    a, b = sift(image), sift(warped)
    assert len(a) > 500 and len(b) > 500
    assert repeatability(a.keypoints, b.keypoints, H, (512, 512)) > 0.5
    # the check is discriminative: keypoints do not coincide without the warp
    assert repeatability(a.keypoints, b.keypoints, np.eye(3), (512, 512)) < 0.15
    # and descriptors match across the warp: nearest neighbours of A's descriptors in B are mostly
    # the keypoints the homography predicts
    _, j = cKDTree(b.descriptors).query(a.descriptors)
    err = np.linalg.norm(_warp(a.keypoints, H) - b.keypoints[j], axis=1)
    assert (err < 2.0).mean() > 0.4


def test_output_types_and_shapes(image: np.ndarray, full) -> None:
    assert full.keypoints.dtype == np.float32 and full.keypoints.shape == (len(full), 2)
    assert full.descriptors.dtype == np.float32 and full.descriptors.shape == (len(full), 128)
    assert full.scores.dtype == np.float32 and full.scores.shape == (len(full),)
    assert full.image_size == (512, 512)
    assert (full.keypoints >= -0.5).all() and (full.keypoints <= 511.5).all()
    # scores are sorted, strongest first
    assert (np.diff(full.scores) <= 0).all()
    # non-square image: image_size is (width, height)
    feats = SIFT()(image[:300, :200])
    assert feats.image_size == (200, 300)
    assert (feats.keypoints[:, 0] < 200).all() and (feats.keypoints[:, 1] < 300).all()


def test_rootsift_is_sqrt_of_l1_normalised_sift(image: np.ndarray) -> None:
    crop = image[100:356, 150:406]
    plain = SIFT(SIFTConfig(root_sift=False))(crop)
    root = SIFT(SIFTConfig(root_sift=True))(crop)
    np.testing.assert_array_equal(plain.keypoints, root.keypoints)
    np.testing.assert_allclose(np.linalg.norm(plain.descriptors, axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(root.descriptors, axis=1), 1.0, atol=1e-5)
    assert (root.descriptors >= 0).all()
    # Hellinger: sqrt of the L1-normalised SIFT vector (L1-normalising undoes plain's L2 normalisation)
    expected = np.sqrt(plain.descriptors / plain.descriptors.sum(axis=1, keepdims=True))
    np.testing.assert_allclose(root.descriptors, expected, atol=1e-5)
    # the inner product of RootSIFTs is the Bhattacharyya coefficient of the L1-normalised SIFTs
    l1 = plain.descriptors / plain.descriptors.sum(axis=1, keepdims=True)
    np.testing.assert_allclose(root.descriptors[:5] @ root.descriptors[5:10].T, np.sqrt(l1[:5, None] * l1[None, 5:10]).sum(-1),
                               atol=1e-5)
    assert SIFT(SIFTConfig(root_sift=False)).descriptor_kind == "sift"
    assert SIFT().descriptor_kind == "rootsift"


def test_root_sift_function_by_hand() -> None:
    d = np.array([[1.0, 3.0, 0.0, 0.0], [0.0, 0.0, 2.0, 2.0]], dtype=np.float32)
    np.testing.assert_allclose(root_sift(d), [[0.5, np.sqrt(0.75), 0, 0], [0, 0, np.sqrt(0.5), np.sqrt(0.5)]], atol=1e-6)


@pytest.mark.parametrize("k", [1, 100, 500])
def test_max_keypoints_keeps_the_strongest(image: np.ndarray, full, k: int) -> None:
    feats = SIFT(SIFTConfig(max_keypoints=k))(image)
    assert len(feats) == k
    # the same keypoints the unlimited run ranks top-k
    np.testing.assert_allclose(np.sort(feats.scores), np.sort(full.scores)[-k:], rtol=1e-6)
    d, _ = cKDTree(full.keypoints).query(feats.keypoints)
    assert d.max() < 1e-3


def test_resize_max_returns_original_resolution_coordinates(image: np.ndarray, full) -> None:
    small = SIFT(SIFTConfig(max_keypoints=0, resize_max=256))(image)
    assert small.image_size == (512, 512)
    assert 0.5 * len(full) > len(small) > 100
    assert small.keypoints.max() > 400  # not left in the 256-px frame
    d, idx = cKDTree(full.keypoints).query(small.keypoints)
    assert (d < 1.5).mean() > 0.7
    close = d < 1.5
    # no gross systematic offset (a forgotten half-pixel term at factor 2 is 0.5 px)
    assert np.abs((small.keypoints[close] - full.keypoints[idx[close]]).mean(axis=0)).max() < 0.4
    # a downscaled image gives the same keypoints as extracting on a hand-resized image, mapped back
    # with the pixel-centre rule of an exact 2x INTER_AREA reduction: x_big = 2 x_small + 0.5
    grey = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
    by_hand = SIFT(SIFTConfig(max_keypoints=0))(cv2.resize(grey, (256, 256), interpolation=cv2.INTER_AREA))
    assert len(by_hand) == len(small)
    d, _ = cKDTree(2 * by_hand.keypoints + 0.5).query(small.keypoints)
    assert d.max() < 1e-3


def test_grey_and_rgb_input_agree(image: np.ndarray) -> None:
    grey = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
    a, b = SIFT()(image), SIFT()(grey)
    np.testing.assert_array_equal(a.keypoints, b.keypoints)
    np.testing.assert_array_equal(a.descriptors, b.descriptors)


@pytest.mark.parametrize("shape", [(100, 120, 3), (64, 64), (16, 16, 3)])
def test_textureless_image_gives_no_keypoints(shape: tuple[int, ...]) -> None:
    feats = SIFT()(np.full(shape, 128, np.uint8))
    assert len(feats) == 0
    assert feats.keypoints.shape == (0, 2) and feats.descriptors.shape == (0, 128) and feats.scores.shape == (0,)
    assert feats.image_size == (shape[1], shape[0])


def test_registry_builds_sift_with_overrides() -> None:
    sift = extractors.create("sift", max_keypoints=7)
    assert isinstance(sift, SIFT) and sift.config.max_keypoints == 7
    assert len(sift(astronaut())) == 7


def _blob_image(sigma: float = 4.0):
    """Gaussian blobs at known sub-pixel centres (pixel centres at integer coordinates)."""
    rng = np.random.default_rng(0)
    y, x = np.mgrid[0:400, 0:400].astype(np.float64)
    img = np.zeros((400, 400))
    centres = []
    for cy in range(40, 400, 80):
        for cx in range(40, 400, 80):
            c = (cx + rng.uniform(-0.5, 0.5), cy + rng.uniform(-0.5, 0.5))
            centres.append(c)
            img += np.exp(-((x - c[0]) ** 2 + (y - c[1]) ** 2) / (2 * sigma**2))
    return np.clip(img * 200 + 20, 0, 255).astype(np.uint8), np.array(centres)


def _blob_offsets(feats, centres: np.ndarray) -> np.ndarray:
    d = np.linalg.norm(feats.keypoints[:, None] - centres[None], axis=-1)
    close = d.min(axis=1) < 3.0
    assert close.sum() >= 20
    return feats.keypoints[close] - centres[d.argmin(axis=1)[close]]


def test_blob_centres_are_found_precisely() -> None:
    img, centres = _blob_image()
    off = _blob_offsets(SIFT(SIFTConfig(max_keypoints=0))(img), centres)
    assert off.std(axis=0).max() < 0.1
    assert np.abs(off.mean(axis=0)).max() < 0.5


@pytest.mark.parametrize("resize_max", [None, 200])
def test_keypoints_are_unbiased_at_blob_centres(resize_max: int | None) -> None:
    img, centres = _blob_image()
    off = _blob_offsets(SIFT(SIFTConfig(max_keypoints=0, resize_max=resize_max))(img), centres)
    assert np.abs(off.mean(axis=0)).max() < 0.1
