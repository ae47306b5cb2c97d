"""Local features: the value type and the extractor protocol shared by all plug-ins."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np


@dataclass(frozen=True, eq=False)
class LocalFeatures:
    """Keypoints of one image with their descriptors.

    Attributes:
        keypoints: ``(N, 2)`` float32 pixel coordinates ``(x, y)``, OpenCV convention (centre of the
            top-left pixel at ``(0, 0)``), in the original image resolution.
        descriptors: ``(N, D)`` float32, L2-normalised rows.
        scores: ``(N,)`` float32 detection scores.
        image_size: ``(width, height)`` of the image they were detected in.
    """

    keypoints: np.ndarray
    descriptors: np.ndarray
    scores: np.ndarray
    image_size: tuple[int, int]

    def __post_init__(self) -> None:
        n = len(self.keypoints)
        if self.keypoints.shape != (n, 2) or len(self.descriptors) != n or self.scores.shape != (n,):
            raise ValueError(
                f"inconsistent feature shapes: keypoints {self.keypoints.shape}, "
                f"descriptors {self.descriptors.shape}, scores {self.scores.shape}"
            )

    def __len__(self) -> int:
        return len(self.keypoints)


class LocalFeatureExtractor(Protocol):
    """What every local-feature plug-in provides."""

    #: Descriptor family (matchers check that both sides share it).
    descriptor_kind: str

    def __call__(self, image: np.ndarray) -> LocalFeatures:
        """Extract features from an ``(H, W, 3)`` uint8 RGB image."""
        ...


def resize_for_extraction(image: np.ndarray, resize_max: int | None) -> tuple[np.ndarray, float]:
    """Downscale so the longer side is at most ``resize_max`` (``cv2.INTER_AREA``, as hloc).

    Returns:
        The (possibly) resized image and the scale factor ``original / resized`` for keypoints.
    """
    import cv2

    h, w = image.shape[:2]
    if resize_max is None or max(h, w) <= resize_max:
        return image, 1.0
    scale = resize_max / max(h, w)
    size = (round(w * scale), round(h * scale))
    resized = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
    return resized, max(h, w) / max(size)


def rescale_keypoints(keypoints: np.ndarray, factor: float) -> np.ndarray:
    """Map keypoints from a resized image back to the original (pixel-centre aware)."""
    if factor == 1.0:
        return keypoints
    return (keypoints + 0.5) * factor - 0.5
