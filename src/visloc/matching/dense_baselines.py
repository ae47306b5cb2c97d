"""Dense correspondence maps without a network: the baselines the dense matcher is compared with.

Every dense matcher of visloc answers the same question for a (source, target) image pair: for every
target pixel, where is it in the source? The answer is a correspondence map ``(2, Ht, Wt)`` of source pixel
coordinates ``(x, y)`` (OpenCV convention: the top-left pixel centre is ``(0, 0)``) and an optional
confidence ``(1, Ht, Wt)`` in ``[0, 1]``.

* :func:`identity_correspondence` -- "nothing moved": the target lattice scaled onto the source image;
* :func:`sift_homography_correspondence` -- SIFT + ratio test + RANSAC homography (OpenCV), the map that
  homography induces; the identity when fewer than 4 matches or RANSAC fail. Exact on planar scenes, the
  classical floor elsewhere.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
import torch

from ..features.sift import SIFT, SIFTConfig
from ..geometry.flow import homography_map
from .nearest_neighbor import NearestNeighborMatcher, NNConfig


@dataclass(frozen=True, eq=False)
class DenseCorrespondence:
    """A dense answer for one pair.

    Attributes:
        map: ``(2, Ht, Wt)`` float32, the source pixel of every target pixel.
        confidence: ``(1, Ht, Wt)`` float32 in ``[0, 1]``, or ``None`` when the method has none.
    """

    map: torch.Tensor
    confidence: torch.Tensor | None = None


def scaled_lattice(target_hw: tuple[int, int], source_hw: tuple[int, int]) -> torch.Tensor:
    """``(2, Ht, Wt)``: target pixel centres scaled onto the source image (``(x + 0.5) Ws / Wt - 0.5``)."""
    ht, wt = target_hw
    hs, ws = source_hw
    ys, xs = torch.meshgrid(torch.arange(ht, dtype=torch.float32), torch.arange(wt, dtype=torch.float32),
                            indexing="ij")
    return torch.stack([(xs + 0.5) * (ws / wt) - 0.5, (ys + 0.5) * (hs / ht) - 0.5])


def identity_correspondence(source: np.ndarray, target: np.ndarray) -> DenseCorrespondence:
    """The identity map between ``(Hs, Ws, 3)`` and ``(Ht, Wt, 3)`` images (scaled when the sizes differ)."""
    return DenseCorrespondence(scaled_lattice(target.shape[:2], source.shape[:2]))


@dataclass(frozen=True)
class SiftHomographyConfig:
    """Attributes:
    sift: the SIFT extractor's settings.
    ratio_threshold: Lowe's ratio test of the mutual nearest-neighbour matcher.
    ransac_threshold: RANSAC reprojection threshold (px, in the source image).
    """

    sift: SIFTConfig = SIFTConfig(max_keypoints=4096)
    ratio_threshold: float = 0.8
    ransac_threshold: float = 3.0


class SiftHomography:
    """``SiftHomography(config)(source, target) -> DenseCorrespondence`` for uint8 ``(H, W, 3)`` images."""

    def __init__(self, config: SiftHomographyConfig = SiftHomographyConfig()) -> None:
        self.config = config
        self.extractor = SIFT(config.sift)
        self.matcher = NearestNeighborMatcher(NNConfig(ratio_threshold=config.ratio_threshold, mutual=True))

    def homography(self, source: np.ndarray, target: np.ndarray) -> np.ndarray | None:
        """The 3x3 homography mapping target pixels to source pixels, or ``None``."""
        fs, ft = self.extractor(source), self.extractor(target)
        if len(fs.keypoints) < 4 or len(ft.keypoints) < 4:
            return None
        pairs = self.matcher(ft.descriptors, fs.descriptors).pairs()
        if len(pairs) < 4:
            return None
        H, _ = cv2.findHomography(ft.keypoints[pairs[:, 0]].astype(np.float64),
                                  fs.keypoints[pairs[:, 1]].astype(np.float64), cv2.RANSAC,
                                  self.config.ransac_threshold, maxIters=5000, confidence=0.9999)
        return None if H is None or not np.all(np.isfinite(H)) else H

    def __call__(self, source: np.ndarray, target: np.ndarray) -> DenseCorrespondence:
        H = self.homography(source, target)
        if H is None:
            return identity_correspondence(source, target)
        return DenseCorrespondence(homography_map(H, target.shape[:2], torch.float32))


def sift_homography_correspondence(source: np.ndarray, target: np.ndarray,
                                   config: SiftHomographyConfig = SiftHomographyConfig()) -> DenseCorrespondence:
    """:class:`SiftHomography` for one pair."""
    return SiftHomography(config)(source, target)
