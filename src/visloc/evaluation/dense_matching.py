"""Dense matchers against exact ground truth: AEPE / PCK on maps, pose AUC on ScanNet pairs.

A *dense matcher* is any callable ``matcher(source, target) -> DenseCorrespondence`` on ``(H, W, 3)`` uint8
images (:mod:`visloc.matching.dense`, :mod:`visloc.matching.dense_baselines`). A *flow pair* is a
:class:`FlowPair`: two images and the exact map of the target (every target pixel's source pixel) with its
validity mask; the readers below make them from homography data sets (HPatches layout, EVD), from the
``stereo_motorcycle`` disparity, and the command line / benchmark make them from embedded-world views.

* :func:`evaluate_flow_pairs` -- per pair AEPE (mean end-point error over valid pixels, px at the size
  evaluated) and PCK@1/3/5 px; summary: mean AEPE over pairs and PCK pooled over all valid pixels
  (DGC-Net's pooling).
* :func:`homography_flow_pairs` -- DGC-Net's HPatches protocol: both images resized to ``size x size``
  (240), the homography rescaled exactly (:func:`~visloc.evaluation.matching.scale_homography`), the map
  of every target pixel whose match is inside the source.
* :func:`evaluate_pose_pairs` -- SuperGlue's relative-pose protocol on point matches (essential matrix,
  error = max(rotation, translation direction), AUC@5/10/20 deg), for a dense matcher (matches sampled by
  confidence, :func:`~visloc.matching.dense.sample_correspondences`) or any point matcher.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

import cv2
import numpy as np
import torch

from ..datasets.homography import HomographyPair
from ..datasets.scannet import PairWithGT
from ..datasets.stereo import StereoPair
from ..errors import InputError
from ..io.images import read_image
from ..matching.dense import cyclic_mask, sample_correspondences
from .matching import (
    endpoint_errors,
    estimate_relative_pose,
    homography_correspondence,
    pck,
    pose_auc,
    pose_errors,
    scale_homography,
)

PCK_THRESHOLDS = (1.0, 3.0, 5.0)
AUC_THRESHOLDS = (5.0, 10.0, 20.0)


@dataclass(frozen=True, eq=False)
class FlowPair:
    """Two images and the exact map of the target.

    Attributes:
        name: the pair's name.
        source, target: ``(H, W, 3)`` uint8 RGB.
        map: ``(2, Ht, Wt)`` float: every target pixel's source pixel.
        mask: ``(1, Ht, Wt)`` bool: where ``map`` is valid (visible, inside the source).
        info: extra numbers (e.g. ``view_angle_deg`` for binning).
    """

    name: str
    source: np.ndarray
    target: np.ndarray
    map: torch.Tensor
    mask: torch.Tensor
    info: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class FlowRow:
    name: str
    aepe: float
    pck: dict[float, float]
    valid_pixels: int
    seconds: float
    info: dict[str, float]


@dataclass(frozen=True)
class FlowResults:
    """Per-pair rows and the pooled summary of :func:`evaluate_flow_pairs`."""

    rows: list[FlowRow]
    pooled_pck: dict[float, float]

    @property
    def mean_aepe(self) -> float:
        values = [r.aepe for r in self.rows if np.isfinite(r.aepe)]
        return float(np.mean(values)) if values else float("nan")

    @property
    def mean_seconds(self) -> float:
        return float(np.mean([r.seconds for r in self.rows])) if self.rows else float("nan")

    def subset(self, keep: Callable[[FlowRow], bool], errors: dict[str, torch.Tensor] | None = None) -> FlowResults:
        """The rows ``keep`` accepts (pooled PCK recomputed from ``errors`` by name when given, else the
        mean of the rows' PCK)."""
        rows = [r for r in self.rows if keep(r)]
        if errors is not None:
            pooled = pck([errors[r.name] for r in rows], PCK_THRESHOLDS) if rows else {}
        else:
            pooled = {t: float(np.mean([r.pck[t] for r in rows])) for t in PCK_THRESHOLDS} if rows else {}
        return FlowResults(rows, pooled)

    def to_json(self) -> dict:
        return {"mean_aepe": self.mean_aepe, "pooled_pck": {str(k): v for k, v in self.pooled_pck.items()},
                "mean_seconds": self.mean_seconds,
                "rows": [{"name": r.name, "aepe": r.aepe, "pck": {str(k): v for k, v in r.pck.items()},
                          "valid_pixels": r.valid_pixels, "seconds": r.seconds, **r.info} for r in self.rows]}


def evaluate_flow_pairs(matcher, pairs: Iterable[FlowPair], thresholds: Sequence[float] = PCK_THRESHOLDS
                        ) -> tuple[FlowResults, dict[str, torch.Tensor]]:
    """AEPE and PCK of ``matcher`` on every pair (see the module docstring).

    Returns:
        The results, and every pair's per-pixel errors by name (for pooling subsets).
    """
    rows, errors = [], {}
    for pair in pairs:
        t = time.perf_counter()
        dense = matcher(pair.source, pair.target)
        seconds = time.perf_counter() - t
        err = endpoint_errors(dense.map.double(), pair.map.double(), pair.mask)
        errors[pair.name] = err
        finite = err[torch.isfinite(err)]
        rows.append(FlowRow(pair.name, float(finite.mean()) if len(finite) == len(err) and len(err) else float("nan"),
                            pck(err, thresholds), int(len(err)), seconds, dict(pair.info)))
    return FlowResults(rows, pck(list(errors.values()), thresholds) if errors else {}), errors


def homography_flow_pairs(pairs: Iterable[HomographyPair], size: int | None = 240) -> Iterable[FlowPair]:
    """Flow pairs of homography data (DGC-Net's protocol with ``size``; original sizes with ``None``)."""
    for p in pairs:
        source, target = read_image(p.source_path), read_image(p.target_path)
        H = np.asarray(p.H, np.float64)
        if size:
            (hs, ws), (ht, wt) = source.shape[:2], target.shape[:2]
            H = scale_homography(H, (size / ws, size / hs), (size / wt, size / ht))
            source = cv2.resize(source, (size, size), interpolation=cv2.INTER_AREA)
            target = cv2.resize(target, (size, size), interpolation=cv2.INTER_AREA)
        gt, mask = homography_correspondence(H, target.shape[:2], source.shape[:2])
        yield FlowPair(p.name, source, target, gt, mask)


def stereo_flow_pair(pair: StereoPair, name: str = "stereo_motorcycle") -> FlowPair:
    """The flow pair of a rectified stereo pair (target = left image, source = right)."""
    gt = torch.from_numpy(np.nan_to_num(pair.correspondence, nan=-1e6))
    return FlowPair(name, pair.source, pair.target, gt, torch.from_numpy(pair.mask))


@dataclass(frozen=True)
class PoseResults:
    """Per-pair pose errors (max of rotation and translation direction, degrees; inf when failed) and AUC."""

    names: list[str]
    errors_deg: list[float]
    matches: list[int]
    inliers: list[int]
    auc: dict[float, float]
    seconds: float

    def to_json(self) -> dict:
        return {"auc": {str(k): v for k, v in self.auc.items()}, "seconds_per_pair": self.seconds,
                "pairs": [{"name": n, "error_deg": e, "matches": m, "inliers": i}
                          for n, e, m, i in zip(self.names, self.errors_deg, self.matches, self.inliers, strict=True)]}


#: ``point_matcher(image0, image1) -> (kpts0 (M, 2), kpts1 (M, 2))`` in the images' pixels.
PointMatcher = Callable[[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]


def dense_point_matcher(matcher, max_matches: int = 2048, cell: int = 4, min_confidence: float = 0.0,
                        cyclic_tolerance_px: float | None = None) -> PointMatcher:
    """A :data:`PointMatcher` from a dense matcher: image 1 is the target, its pixels sampled by confidence
    (with ``cyclic_tolerance_px``: only the cyclically consistent ones, :func:`~visloc.matching.dense.cyclic_mask`)."""

    def match(image0: np.ndarray, image1: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        if cyclic_tolerance_px is None:
            dense, mask = matcher(image0, image1), None
        else:
            dense, _, mask = cyclic_mask(matcher, image0, image1, cyclic_tolerance_px)
        k1, k0, _ = sample_correspondences(dense, tuple(image0.shape[:2]), max_matches, cell, min_confidence, mask)
        return k0, k1

    return match


def sift_point_matcher(max_keypoints: int = 4096, ratio_threshold: float = 0.8) -> PointMatcher:
    """The classical :data:`PointMatcher`: RootSIFT + mutual nearest neighbours with Lowe's ratio test."""
    from ..features.sift import SIFT, SIFTConfig
    from ..matching.nearest_neighbor import NearestNeighborMatcher, NNConfig

    extractor = SIFT(SIFTConfig(max_keypoints=max_keypoints))
    nn = NearestNeighborMatcher(NNConfig(ratio_threshold=ratio_threshold, mutual=True))

    def match(image0: np.ndarray, image1: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        f0, f1 = extractor(image0), extractor(image1)
        pairs = nn(f0.descriptors, f1.descriptors).pairs()
        return f0.keypoints[pairs[:, 0]], f1.keypoints[pairs[:, 1]]

    return match


def evaluate_pose_pairs(point_matcher: PointMatcher, pairs: Sequence[PairWithGT],
                        thresholds: Sequence[float] = AUC_THRESHOLDS) -> PoseResults:
    """SuperGlue's relative-pose evaluation of ``point_matcher`` on ScanNet-style pairs."""
    names, errs, n_matches, n_inliers, seconds = [], [], [], [], []
    for p in pairs:
        if p.rot0 or p.rot1:
            raise InputError(p.path0, f"pair {p.name0} {p.name1} has EXIF rotation codes {p.rot0}, {p.rot1}; "
                                      "only unrotated pairs (codes 0) are supported")
        im0, im1 = read_image(p.path0), read_image(p.path1)
        t = time.perf_counter()
        k0, k1 = point_matcher(im0, im1)
        seconds.append(time.perf_counter() - t)
        K0, K1 = p.camera0.K, p.camera1.K
        est = estimate_relative_pose(np.asarray(k0, np.float64), np.asarray(k1, np.float64), K0, K1) if len(k0) >= 5 else None
        R_gt, t_gt = p.cam1_from_cam0.R, p.cam1_from_cam0.t
        if est is None:
            err_R, err_t, inl = np.inf, np.inf, 0
        else:
            R, tvec, inliers = est
            err_R, err_t = pose_errors(R, tvec, R_gt, t_gt)
            inl = int(np.count_nonzero(inliers))
        names.append(f"{p.name0} {p.name1}")
        errs.append(float(max(err_R, err_t)))
        n_matches.append(int(len(k0)))
        n_inliers.append(inl)
    return PoseResults(names, errs, n_matches, n_inliers, pose_auc(errs, thresholds),
                       float(np.mean(seconds)) if seconds else float("nan"))


__all__ = ["AUC_THRESHOLDS", "PCK_THRESHOLDS", "FlowPair", "FlowResults", "FlowRow", "PoseResults",
           "dense_point_matcher", "evaluate_flow_pairs", "evaluate_pose_pairs", "homography_flow_pairs",
           "sift_point_matcher", "stereo_flow_pair"]
