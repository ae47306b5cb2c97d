"""Camera intrinsics: validation, COLMAP strings, K, and pixel-centre-aware rescaling."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from visloc.geometry import CAMERA_MODELS, Camera, InvalidCameraError

TUM = "FULL_OPENCV 640 480 520.90862 521.007327 325.141442 249.701764 0.231222 -0.784899 -0.003257 -0.000105 0.917205 0 0 0"

N_PARAMS = {
    "SIMPLE_PINHOLE": 3,
    "PINHOLE": 4,
    "SIMPLE_RADIAL": 4,
    "RADIAL": 5,
    "OPENCV": 8,
    "FULL_OPENCV": 12,
    "OPENCV_FISHEYE": 8,
}


def test_known_models_and_parameter_counts() -> None:
    assert {m: len(p) for m, p in CAMERA_MODELS.items()} == N_PARAMS


@pytest.mark.parametrize("model", sorted(N_PARAMS))
def test_parameter_count_is_validated(model: str) -> None:
    n = N_PARAMS[model]
    params = (100.0, 100.0, 50.0, 40.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0)
    cam = Camera(model, 100, 80, params[:n])
    assert len(cam.params) == n
    for wrong in (n - 1, n + 1):
        with pytest.raises(InvalidCameraError, match=f"takes {n} parameters"):
            Camera(model, 100, 80, params[:wrong] if wrong <= len(params) else (*params, 0.0))


@pytest.mark.parametrize(
    ("model", "w", "h", "params"),
    [
        pytest.param("PINHOLE_X", 10, 10, (1, 1, 5, 5), id="unknown-model"),
        pytest.param("PINHOLE", 0, 10, (1, 1, 5, 5), id="zero-width"),
        pytest.param("PINHOLE", 10, -1, (1, 1, 5, 5), id="negative-height"),
        pytest.param("PINHOLE", 10, 10, (0, 1, 5, 5), id="zero-focal"),
        pytest.param("SIMPLE_PINHOLE", 10, 10, (-3, 5, 5), id="negative-focal"),
        pytest.param("PINHOLE", 10, 10, (1, np.nan, 5, 5), id="nan"),
        pytest.param("OPENCV", 10, 10, (1, 1, 5, 5, np.inf, 0, 0, 0), id="inf-distortion"),
    ],
)
def test_invalid_camera_raises(model: str, w: int, h: int, params: tuple) -> None:
    with pytest.raises(InvalidCameraError):
        Camera(model, w, h, params)


def test_colmap_string_round_trip() -> None:
    cam = Camera.from_colmap_string(TUM)
    assert cam.model == "FULL_OPENCV" and (cam.width, cam.height) == (640, 480)
    assert cam.params[:4] == (520.90862, 521.007327, 325.141442, 249.701764)
    assert cam.params[4:] == (0.231222, -0.784899, -0.003257, -0.000105, 0.917205, 0.0, 0.0, 0.0)
    again = Camera.from_colmap_string(cam.to_colmap_string())
    assert again == cam
    # an irrational-looking value survives with 10 significant digits
    cam = Camera("SIMPLE_RADIAL", 1, 1, (1 / 3, 0.5, 0.5, -1e-7))
    again = Camera.from_colmap_string(cam.to_colmap_string())
    np.testing.assert_allclose(again.params, cam.params, rtol=1e-9)
    assert cam.to_colmap_string().split()[:3] == ["SIMPLE_RADIAL", "1", "1"]


@pytest.mark.parametrize("text", ["PINHOLE 640 480", "PINHOLE six 480 1 1 1 1", "PINHOLE 640 480 1 1 x 1"])
def test_from_colmap_string_rejects_garbage(text: str) -> None:
    with pytest.raises(InvalidCameraError):
        Camera.from_colmap_string(text)


def test_K_and_focal_principal_point() -> None:
    cam = Camera.pinhole(500.0, 510.0, 320.0, 240.0, 640, 480)
    np.testing.assert_array_equal(cam.K, [[500, 0, 320], [0, 510, 240], [0, 0, 1]])
    simple = Camera("SIMPLE_RADIAL", 640, 480, (500.0, 319.5, 239.5, 0.1))
    np.testing.assert_array_equal(simple.K, [[500, 0, 319.5], [0, 500, 239.5], [0, 0, 1]])
    assert simple.focal == (500.0, 500.0) and simple.principal_point == (319.5, 239.5)
    tum = Camera.from_colmap_string(TUM)
    np.testing.assert_allclose(tum.K, [[520.90862, 0, 325.141442], [0, 521.007327, 249.701764], [0, 0, 1]])


@pytest.mark.parametrize(
    ("text", "distorted"),
    [
        ("PINHOLE 640 480 500 500 320 240", False),
        ("SIMPLE_PINHOLE 640 480 500 320 240", False),
        ("SIMPLE_RADIAL 640 480 500 320 240 0", False),
        ("SIMPLE_RADIAL 640 480 500 320 240 0.01", True),
        ("RADIAL 640 480 500 320 240 0 -0.01", True),
        ("OPENCV 640 480 500 500 320 240 0 0 0 0", False),
        ("OPENCV 640 480 500 500 320 240 0 0 0 1e-6", True),
        (TUM, True),
    ],
)
def test_is_distorted(text: str, distorted: bool) -> None:
    assert Camera.from_colmap_string(text).is_distorted is distorted


def test_pinhole_part_drops_distortion_only() -> None:
    part = Camera.from_colmap_string(TUM).pinhole_part()
    assert part == Camera("PINHOLE", 640, 480, (520.90862, 521.007327, 325.141442, 249.701764))
    part = Camera("SIMPLE_RADIAL", 64, 48, (50.0, 31.5, 23.5, 0.2)).pinhole_part()
    assert part == Camera("PINHOLE", 64, 48, (50.0, 50.0, 31.5, 23.5))
    assert not part.is_distorted


def test_project_pinhole_by_hand() -> None:
    cam = Camera.pinhole(100.0, 200.0, 50.0, 40.0, 100, 80)
    pts = np.array([[0.0, 0.0, 2.0], [0.2, -0.1, 1.0], [1.0, 1.0, 4.0]])
    # u = fx x/z + cx, v = fy y/z + cy
    expected = np.array([[50.0, 40.0], [70.0, 20.0], [75.0, 90.0]])
    np.testing.assert_allclose(cam.project_pinhole(pts), expected)


def test_scaled_by_two_by_hand() -> None:
    cam = Camera.pinhole(100.0, 100.0, 50.0, 40.0, 100, 80)
    big = cam.scaled(2.0)
    assert (big.width, big.height) == (200, 160)
    # OpenCV pixel centres: original pixel 50 covers [49.5, 50.5] -> [99, 101] -> centre 100.5 = 2*cx + 0.5
    assert big.params == (200.0, 200.0, 100.5, 80.5)
    # a point at x/z = 0.2 projects to u = 70 (covering [69.5, 70.5]); in the 2x image that pixel spans
    # [139, 141], so the projection must be 140.5 (and v: y/z = -0.1 -> 30 -> [59, 61] -> 60.5)
    np.testing.assert_allclose(big.project_pinhole(np.array([[0.2, -0.1, 1.0]])), [[140.5, 60.5]])


def test_scaled_anisotropic_and_simple_models() -> None:
    cam = Camera("SIMPLE_RADIAL", 640, 480, (500.0, 319.5, 239.5, 0.1))
    half = cam.scaled(0.5)
    # with pixel centres at integers, the exact image centre 319.5 maps to 159.5 in a 320-wide image
    assert half.params == (250.0, 159.5, 119.5, 0.1)
    assert (half.width, half.height) == (320, 240)
    pin = Camera.pinhole(100.0, 100.0, 10.0, 20.0, 100, 100).scaled(2.0, 0.5)
    assert pin.params == (200.0, 50.0, 20.5, 9.75)
    assert (pin.width, pin.height) == (200, 50)
    # distortion terms are not pixel quantities and must not change
    tum = Camera.from_colmap_string(TUM)
    assert tum.scaled(0.5).params[4:] == tum.params[4:]


def _blob(shape: tuple[int, int], center: tuple[float, float], sigma: float) -> np.ndarray:
    h, w = shape
    y, x = np.mgrid[0:h, 0:w].astype(np.float64)
    return np.exp(-((x - center[0]) ** 2 + (y - center[1]) ** 2) / (2 * sigma**2))


def _centroid(img: np.ndarray) -> np.ndarray:
    y, x = np.mgrid[0 : img.shape[0], 0 : img.shape[1]]
    return np.array([(img * x).sum(), (img * y).sum()]) / img.sum()


@pytest.mark.parametrize(("scale", "interp"), [(2.0, cv2.INTER_LINEAR), (0.5, cv2.INTER_AREA), (0.25, cv2.INTER_AREA)])
def test_scaled_matches_a_real_resize(scale: float, interp: int) -> None:
    # Independent reference: render a blob where the camera projects a point, resize the image with
    # OpenCV, and find the blob again; the scaled camera must project the point there.
    cam = Camera.pinhole(300.0, 280.0, 62.3, 47.8, 128, 96)
    X = np.array([[0.05, -0.03, 1.0]])
    uv = cam.project_pinhole(X)[0]
    img = _blob((cam.height, cam.width), tuple(uv), sigma=6.0)
    small = cam.scaled(scale)
    resized = cv2.resize(img, (small.width, small.height), interpolation=interp)
    found = _centroid(resized)
    np.testing.assert_allclose(small.project_pinhole(X)[0], found, atol=0.02)
    # the naive scaling (cx * s) would be off by (s - 1) / 2 pixels, i.e. clearly distinguishable
    naive = Camera.pinhole(300 * scale, 280 * scale, 62.3 * scale, 47.8 * scale, small.width, small.height)
    assert np.abs(naive.project_pinhole(X)[0] - found).min() > 0.1
