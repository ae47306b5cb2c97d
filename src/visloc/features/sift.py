"""OpenCV SIFT with RootSIFT descriptors (Arandjelovic & Zisserman 2012)."""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from .base import LocalFeatures, rescale_keypoints, resize_for_extraction
from .registry import extractors


@dataclass(frozen=True)
class SIFTConfig:
    """Attributes:
    max_keypoints: keep the strongest N (OpenCV ``nfeatures``); 0 keeps all.
    root_sift: L1-normalise then square-root the descriptors (Hellinger kernel), then L2-normalise.
    contrast_threshold / edge_threshold / n_octave_layers / sigma: OpenCV's detector settings.
    resize_max: downscale images whose longer side exceeds this before detection (``None``: never).
    precise_upscale: OpenCV's exact 2x upsampling of the first octave (``enable_precise_upscale``,
        OpenCV >= 4.8); without it keypoints are biased by +0.25 px.
    """

    max_keypoints: int = 2048
    root_sift: bool = True
    contrast_threshold: float = 0.02
    edge_threshold: float = 10.0
    n_octave_layers: int = 3
    sigma: float = 1.6
    resize_max: int | None = None
    precise_upscale: bool = True


def root_sift(descriptors: np.ndarray, eps: float = 1e-8) -> np.ndarray:
    """RootSIFT of ``(N, 128)`` SIFT descriptors; rows come back L2-normalised."""
    d = descriptors.astype(np.float32)
    d /= np.abs(d).sum(axis=1, keepdims=True) + eps
    return np.sqrt(d)  # sqrt of an L1-normalised non-negative vector has unit L2 norm


@extractors.register("sift", SIFTConfig)
class SIFT:
    """Callable extractor: ``SIFT(config)(rgb_uint8) -> LocalFeatures``."""

    descriptor_kind = "rootsift"

    def __init__(self, config: SIFTConfig = SIFTConfig()) -> None:
        self.config = config
        self.descriptor_kind = "rootsift" if config.root_sift else "sift"
        self._sift = cv2.SIFT_create(
            nfeatures=config.max_keypoints,
            nOctaveLayers=config.n_octave_layers,
            contrastThreshold=config.contrast_threshold,
            edgeThreshold=config.edge_threshold,
            sigma=config.sigma,
            enable_precise_upscale=config.precise_upscale,
        )

    def __call__(self, image: np.ndarray) -> LocalFeatures:
        grey = image if image.ndim == 2 else cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
        small, factor = resize_for_extraction(grey, self.config.resize_max)
        kps, desc = self._sift.detectAndCompute(small, None)
        if desc is None or len(kps) == 0:
            desc = np.zeros((0, 128), np.float32)
            kps = []
        # OpenCV may return more than nfeatures on ties; keep the strongest.
        responses = np.array([k.response for k in kps], dtype=np.float32)
        order = np.argsort(-responses, kind="stable")
        if self.config.max_keypoints > 0:
            order = order[: self.config.max_keypoints]
        xy = np.array([kps[i].pt for i in order], dtype=np.float32).reshape(-1, 2)
        desc = desc[order]
        if self.config.root_sift:
            desc = root_sift(desc)
        else:
            desc = desc / (np.linalg.norm(desc, axis=1, keepdims=True) + 1e-8)
        h, w = grey.shape[:2]
        return LocalFeatures(
            keypoints=rescale_keypoints(xy, factor).astype(np.float32),
            descriptors=np.ascontiguousarray(desc, dtype=np.float32),
            scores=responses[order],
            image_size=(w, h),
        )
