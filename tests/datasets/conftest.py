"""Helpers for the dataset tests: SIFT matches and an independent epipolar (Sampson) check.

The epipolar test is the ground truth for pose *conventions*: correct matches between two real photos
lie on the epipolar lines of the true relative pose ``cam1_from_cam0`` and not on those of a pose
built with a wrong convention (not inverted, quaternion order swapped, inverse relative pose).
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
import pytest

from visloc.geometry import Camera, Pose
from visloc.geometry.backends import cam_from_img
from visloc.io.images import read_image


def skew(v: np.ndarray) -> np.ndarray:
    return np.array([[0.0, -v[2], v[1]], [v[2], 0.0, -v[0]], [-v[1], v[0], 0.0]])


@dataclass(frozen=True)
class Matches:
    """Ratio-test SIFT matches between two images, in pixels of the stored images."""

    pts0: np.ndarray
    pts1: np.ndarray

    def __len__(self) -> int:
        return len(self.pts0)


class Epipolar:
    """SIFT matching (OpenCV) and Sampson distances (hand-written, independent of visloc)."""

    def __init__(self) -> None:
        self._sift = cv2.SIFT_create()

    def _features(self, path, scale: float) -> tuple[np.ndarray, np.ndarray]:
        grey = read_image(path, grayscale=True)
        if scale != 1.0:
            grey = cv2.resize(grey, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
        kps, desc = self._sift.detectAndCompute(grey, None)
        pts = np.array([k.pt for k in kps], dtype=np.float64).reshape(-1, 2)
        return (pts + 0.5) / scale - 0.5, desc  # back to full-resolution pixels (centre convention)

    def match(self, path0, path1, ratio: float = 0.8, scale: float = 1.0) -> Matches:
        p0, d0 = self._features(path0, scale)
        p1, d1 = self._features(path1, scale)
        knn = cv2.BFMatcher(cv2.NORM_L2).knnMatch(d0, d1, k=2)
        idx = np.array(
            [(m.queryIdx, m.trainIdx) for m, n in knn if m.distance < ratio * n.distance], dtype=int
        ).reshape(-1, 2)
        return Matches(p0[idx[:, 0]], p1[idx[:, 1]])

    @staticmethod
    def sampson_px(
        cam1_from_cam0: Pose, matches: Matches, camera0: Camera, camera1: Camera
    ) -> np.ndarray:
        """Sampson distance of each match to ``E = [t]x R``, in (approximate) pixels.

        Points are undistorted and normalised with the cameras, the residual is computed in normalised
        coordinates and scaled by the mean focal length.
        """
        x0 = np.c_[cam_from_img(camera0, matches.pts0), np.ones(len(matches))]
        x1 = np.c_[cam_from_img(camera1, matches.pts1), np.ones(len(matches))]
        E = skew(cam1_from_cam0.t) @ cam1_from_cam0.R
        Ex0 = x0 @ E.T
        Etx1 = x1 @ E
        num = np.abs(np.sum(x1 * Ex0, axis=1))
        den = np.sqrt(Ex0[:, 0] ** 2 + Ex0[:, 1] ** 2 + Etx1[:, 0] ** 2 + Etx1[:, 1] ** 2)
        focal = (np.mean(camera0.focal) + np.mean(camera1.focal)) / 2
        return num / den * focal

    def count(
        self, cam1_from_cam0: Pose, matches: Matches, camera0: Camera, camera1: Camera, px: float = 2.0
    ) -> int:
        """Matches within ``px`` (Sampson) of the epipolar geometry of ``cam1_from_cam0``."""
        return int((self.sampson_px(cam1_from_cam0, matches, camera0, camera1) < px).sum())


@pytest.fixture(scope="session")
def epipolar() -> Epipolar:
    return Epipolar()
