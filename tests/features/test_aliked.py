"""ALIKED through kornia with local weights: loading, descriptor properties, repeatability under a
known homography, resizing, and clear errors for missing or unusable checkpoints."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from scipy.spatial import cKDTree
from skimage.data import astronaut

from visloc.errors import InputError
from visloc.features import extractors
from visloc.features.aliked import ALIKED, ALIKEDConfig
from visloc.settings import DATA_ENV

SIZE = 320
H = np.array([[0.95 * np.cos(0.15), -0.95 * np.sin(0.15), 30.0],
              [0.95 * np.sin(0.15), 0.95 * np.cos(0.15), -5.0],
              [3e-5, 2e-5, 1.0]])


@pytest.fixture(scope="module")
def n16_path(weights_root: Path) -> Path:
    path = weights_root / "aliked" / "aliked-n16.pth"
    if not path.is_file():
        pytest.skip(f"ALIKED weights not found at {path}")
    return path


@pytest.fixture(scope="module")
def aliked(n16_path: Path) -> ALIKED:
    return ALIKED(ALIKEDConfig(weights_path=str(n16_path), max_keypoints=512))


@pytest.fixture(scope="module")
def image() -> np.ndarray:
    return cv2.resize(astronaut(), (SIZE, SIZE), interpolation=cv2.INTER_AREA)


@pytest.fixture(scope="module")
def feats(aliked: ALIKED, image: np.ndarray):
    return aliked(image)


def _warp(points: np.ndarray, H: np.ndarray) -> np.ndarray:
    return cv2.perspectiveTransform(points.reshape(-1, 1, 2).astype(np.float64), H).reshape(-1, 2)


def repeatability(kp_a: np.ndarray, kp_b: np.ndarray, H: np.ndarray, size: int, tol: float = 1.5) -> float:
    p = _warp(kp_a, H)
    inside = (p >= 0).all(1) & (p <= size - 1).all(1)
    d, _ = cKDTree(kp_b).query(p[inside])
    return float((d < tol).mean())


@pytest.mark.real_data
def test_loads_from_the_data_folder_by_default(n16_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # $VISLOC_DATA/weights/aliked/aliked-n16.pth
    monkeypatch.setenv(DATA_ENV, str(n16_path.parents[2]))
    model = ALIKED()
    assert model.config.model_name == "aliked-n16"
    # the loaded parameters are the checkpoint's, not a random initialisation
    state = torch.load(n16_path, map_location="cpu", weights_only=True)
    own = model.model.state_dict()
    key = next(k for k in state if k.endswith("weight") and state[k].ndim == 4)
    torch.testing.assert_close(own[key], state[key])
    assert isinstance(extractors.create("aliked", weights_path=str(n16_path)), ALIKED)


@pytest.mark.real_data
def test_descriptors_are_unit_norm_128d(feats, image: np.ndarray) -> None:
    assert 100 < len(feats) <= 512
    assert feats.descriptors.shape == (len(feats), 128) and feats.descriptors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(feats.descriptors, axis=1), 1.0, atol=1e-5)
    assert feats.keypoints.dtype == np.float32 and feats.scores.shape == (len(feats),)
    assert feats.image_size == (SIZE, SIZE)
    # pixel coordinates (not kornia's normalised [-1, 1]) spread over the image
    assert (feats.keypoints >= -0.5).all() and (feats.keypoints <= SIZE - 0.5).all()
    assert np.ptp(feats.keypoints, axis=0).min() > SIZE / 2
    assert np.isfinite(feats.scores).all() and (feats.scores > 0).all()


@pytest.mark.real_data
def test_keypoints_follow_a_known_homography(aliked: ALIKED, feats, image: np.ndarray) -> None:
    warped = aliked(cv2.warpPerspective(image, H, (SIZE, SIZE)))
    assert repeatability(feats.keypoints, warped.keypoints, H, SIZE) > 0.6
    assert repeatability(feats.keypoints, warped.keypoints, np.eye(3), SIZE) < 0.15
    # mutual nearest-neighbour descriptor matches agree with the homography
    sim = feats.descriptors @ warped.descriptors.T
    j = sim.argmax(1)
    mutual = sim.argmax(0)[j] == np.arange(len(j))
    err = np.linalg.norm(_warp(feats.keypoints[mutual], H) - warped.keypoints[j[mutual]], axis=1)
    assert mutual.sum() > 100 and (err < 3.0).mean() > 0.7


@pytest.mark.real_data
def test_resize_max_returns_original_resolution_coordinates(n16_path: Path, feats, image: np.ndarray) -> None:
    small = ALIKED(ALIKEDConfig(weights_path=str(n16_path), max_keypoints=512, resize_max=SIZE // 2))(image)
    assert small.image_size == (SIZE, SIZE)
    assert small.keypoints.max() > 0.75 * SIZE
    d, idx = cKDTree(feats.keypoints).query(small.keypoints)
    close = d < 2.0
    assert close.mean() > 0.5
    assert np.abs((small.keypoints[close] - feats.keypoints[idx[close]]).mean(axis=0)).max() < 0.4


@pytest.mark.real_data
def test_grey_input(aliked: ALIKED, feats, image: np.ndarray) -> None:
    grey = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
    a, b = aliked(grey), aliked(np.repeat(grey[..., None], 3, axis=2))
    np.testing.assert_array_equal(a.keypoints, b.keypoints)
    assert len(a) > 100


def test_missing_weights_name_the_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    missing = tmp_path / "nowhere" / "aliked-n16.pth"
    with pytest.raises(InputError, match="weights not found") as err:
        ALIKED(ALIKEDConfig(weights_path=str(missing)))
    assert err.value.path == missing
    assert str(missing) in str(err.value)
    # default location under $VISLOC_DATA
    monkeypatch.setenv(DATA_ENV, str(tmp_path))
    with pytest.raises(InputError) as err:
        ALIKED(ALIKEDConfig(model_name="aliked-t16"))
    assert err.value.path == tmp_path / "weights" / "aliked" / "aliked-t16.pth"


def test_checkpoint_with_foreign_keys_is_an_input_error(tmp_path: Path) -> None:
    path = tmp_path / "other.pth"
    torch.save({"foo.weight": torch.zeros(3)}, path)
    with pytest.raises(InputError, match="does not fit") as err:
        ALIKED(ALIKEDConfig(weights_path=str(path)))
    assert err.value.path == path


@pytest.mark.real_data
def test_checkpoint_of_another_variant_is_an_input_error(weights_root: Path) -> None:
    t16 = weights_root / "aliked" / "aliked-t16.pth"
    if not t16.is_file():
        pytest.skip(f"{t16} not found")
    with pytest.raises(InputError) as err:
        ALIKED(ALIKEDConfig(model_name="aliked-n16", weights_path=str(t16)))
    assert err.value.path == t16


def test_corrupt_checkpoint_is_an_input_error(tmp_path: Path) -> None:
    path = tmp_path / "aliked-n16.pth"
    path.write_bytes(b"this is not a checkpoint")
    with pytest.raises(InputError) as err:
        ALIKED(ALIKEDConfig(weights_path=str(path)))
    assert err.value.path == path
