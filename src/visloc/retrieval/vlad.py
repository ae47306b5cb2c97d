"""VLAD aggregation of local descriptors (Jegou et al. 2010; Arandjelovic & Zisserman 2013 "All about VLAD").

The codebook is learned on the map's own descriptors with FAISS k-means, so no downloaded weights are
needed. Per-cluster residual sums are intra-normalised, power-normalised (signed square root) and
L2-normalised; the inner product of two VLADs is then their similarity.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import faiss
import numpy as np

from ..features.base import LocalFeatures
from .registry import global_descriptors


@dataclass(frozen=True)
class VLADConfig:
    """Attributes:
    num_clusters: codebook size K (descriptor dimension is ``K * D``).
    max_training_descriptors: descriptors sampled from the map to learn the codebook.
    kmeans_iterations: FAISS k-means iterations.
    power: exponent of the power normalisation (0.5 = signed square root).
    seed: sampling and k-means seed.
    """

    num_clusters: int = 64
    max_training_descriptors: int = 200_000
    kmeans_iterations: int = 20
    power: float = 0.5
    seed: int = 0


@global_descriptors.register("vlad", VLADConfig)
class VLAD:
    """``VLAD(config)``; :meth:`fit` on the map's local descriptors, then ``vlad(image, features)``."""

    needs_fit = True
    #: Whether ``descriptor(image, features)`` needs the local features (aggregates the image's local descriptors).
    needs_local_features = True

    def __init__(self, config: VLADConfig = VLADConfig()) -> None:
        self.config = config
        self.centroids: np.ndarray | None = None  # (K, D)

    @property
    def dim(self) -> int:
        if self.centroids is None:
            raise RuntimeError("VLAD codebook is not fitted")
        return int(self.centroids.size)

    def fit(self, descriptor_sets: Iterable[np.ndarray]) -> VLAD:
        """Learn the codebook from local descriptors ``[(N_i, D), ...]`` (sampled uniformly)."""
        sets = [d for d in descriptor_sets if len(d)]
        total = sum(len(d) for d in sets)
        if total == 0:
            raise ValueError("no local descriptors to learn a VLAD codebook from")
        rng = np.random.default_rng(self.config.seed)
        keep = min(1.0, self.config.max_training_descriptors / total)
        sample = np.concatenate([d[rng.random(len(d)) < keep] for d in sets]).astype(np.float32)
        k = min(self.config.num_clusters, len(sample))
        kmeans = faiss.Kmeans(sample.shape[1], k, niter=self.config.kmeans_iterations, seed=self.config.seed)
        kmeans.train(np.ascontiguousarray(sample))
        self.centroids = np.asarray(kmeans.centroids, dtype=np.float32).reshape(k, -1)
        return self

    def load_state(self, centroids: np.ndarray) -> VLAD:
        self.centroids = np.asarray(centroids, dtype=np.float32)
        return self

    def state(self) -> dict[str, np.ndarray]:
        return {"centroids": self.centroids}

    def __call__(self, image: np.ndarray | None, features: LocalFeatures) -> np.ndarray:
        """VLAD of one image's local descriptors -> ``(K * D,)`` float32, unit norm (all zeros for an
        image without features)."""
        if self.centroids is None:
            raise RuntimeError("VLAD codebook is not fitted")
        c = self.centroids
        out = np.zeros_like(c)
        if len(features):
            x = np.ascontiguousarray(features.descriptors, dtype=np.float32)
            # nearest centroid by L2 distance: argmin |c|^2 - 2 x.c (|x|^2 is the same for every c)
            assign = np.argmin((c * c).sum(axis=1)[None] - 2.0 * (x @ c.T), axis=1)
            onehot = np.zeros((len(x), len(c)), np.float32)
            onehot[np.arange(len(x)), assign] = 1.0
            out = onehot.T @ x - onehot.sum(axis=0)[:, None] * c  # sum of residuals per centroid
        out = out / np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-12)  # intra-normalisation
        out = np.sign(out) * np.abs(out) ** self.config.power
        v = out.reshape(-1)
        return (v / max(float(np.linalg.norm(v)), 1e-12)).astype(np.float32)
