"""A real image pair with exact dense ground truth: scikit-image's rectified ``stereo_motorcycle``.

``skimage.data.stereo_motorcycle()`` (shipped inside scikit-image, no download) returns the Middlebury
2014 "Motorcycle" pair, down-sampled 4x (500 x 741), and the ground-truth disparity of the **left**
image: for a left pixel ``(x, y)`` the same scene point is at ``(x - d(x, y), y)`` in the right image
(rectified: same row). The pixels without ground truth hold ``inf`` in scikit-image 0.26 (its docstring
says ``NaN``); both are read as "unknown".

**Source and target.** The correspondence-map contract gives, for every pixel of the TARGET, its match
in the SOURCE. The disparity is defined on the left image's pixel lattice, so the exact map exists for
the left image: **target = left, source = right**, ``x_source = x_left - d``, ``y_source = y_left``.
The other direction would need forward-warping with occlusion handling and would not be exact.

A pixel is valid when its disparity is known and its match lies inside the right image,
``0 <= x - d <= W - 1`` (the hull of the pixel centres, the same rule as
:func:`visloc.evaluation.matching.homography_correspondence`).

Arrays are numpy, in the contract's layout: ``torch.from_numpy(pair.correspondence)[None]`` is the
``(1, 2, H, W)`` map and ``torch.from_numpy(pair.mask)[None]`` its ``(1, 1, H, W)`` mask.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True, eq=False)
class StereoPair:
    """A rectified stereo pair and the dense ground truth of its left image.

    Attributes:
        left: ``(H, W, 3)`` uint8 RGB, the TARGET image.
        right: ``(H, W, 3)`` uint8 RGB, the SOURCE image.
        disparity: ``(H, W)`` float32 disparity of the left image (pixels), ``NaN`` where unknown.
        correspondence: ``(2, H, W)`` float32: for every left pixel ``(x, y)`` its match
            ``(x - disparity, y)`` in the right image (x first); ``NaN`` where the disparity is unknown.
        mask: ``(1, H, W)`` bool: disparity known and match inside the right image.
    """

    left: np.ndarray
    right: np.ndarray
    disparity: np.ndarray
    correspondence: np.ndarray
    mask: np.ndarray

    @property
    def source(self) -> np.ndarray:
        """The source image of the correspondence map (the right image)."""
        return self.right

    @property
    def target(self) -> np.ndarray:
        """The target image of the correspondence map (the left image)."""
        return self.left


def disparity_correspondence(disparity: np.ndarray, source_width: int) -> tuple[np.ndarray, np.ndarray]:
    """Correspondence map of a left-image disparity map: ``(x, y) -> (x - d, y)`` in the right image.

    Args:
        disparity: ``(H, W)`` disparity of the left (target) image; non-finite values mark unknown pixels.
        source_width: width of the right (source) image.

    Returns:
        ``(2, H, W)`` float32 map (``NaN`` where unknown) and ``(1, H, W)`` bool mask (known and
        ``0 <= x - d <= source_width - 1``).
    """
    d = np.asarray(disparity, dtype=np.float32)
    if d.ndim != 2:
        raise ValueError(f"disparity must have shape (H, W), got {d.shape}")
    h, w = d.shape
    known = np.isfinite(d)
    d = np.where(known, d, np.float32(np.nan))
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
    x_source = xs - d
    with np.errstate(invalid="ignore"):
        inside = known & (x_source >= 0) & (x_source <= source_width - 1)
    return np.stack([x_source, ys]), inside[None]


def stereo_motorcycle_pair() -> StereoPair:
    """scikit-image's ``stereo_motorcycle`` pair with the exact ground-truth map of its left image.

    Returns:
        The pair; see the module docstring for the conventions (target = left, source = right).
    """
    import skimage.data

    left, right, disparity = skimage.data.stereo_motorcycle()
    disparity = np.asarray(disparity, dtype=np.float32)
    disparity = np.where(np.isfinite(disparity), disparity, np.float32(np.nan))
    correspondence, mask = disparity_correspondence(disparity, right.shape[1])
    return StereoPair(np.ascontiguousarray(left, dtype=np.uint8), np.ascontiguousarray(right, dtype=np.uint8),
                      disparity, correspondence, mask)
