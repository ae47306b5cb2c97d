"""Mutual nearest-neighbour matching with Lowe's ratio test, for L2-normalised descriptors."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from .registry import matchers


@dataclass(frozen=True)
class NNConfig:
    """Attributes:
    ratio_threshold: keep a match when ``d1 / d2 < ratio`` (distances to the first and second
        nearest neighbour); ``None`` disables the test.
    mutual: keep only matches that are each other's nearest neighbour.
    distance_threshold: maximum L2 distance of a match (``None``: no limit).
    """

    ratio_threshold: float | None = 0.85
    mutual: bool = True
    distance_threshold: float | None = None


@dataclass(frozen=True, eq=False)
class Matches:
    """Matches from image 0 to image 1 (hloc layout).

    Attributes:
        matches0: ``(N0,)`` int index into image 1's keypoints, ``-1`` when unmatched.
        scores0: ``(N0,)`` float similarity of the match (0 when unmatched).
    """

    matches0: np.ndarray
    scores0: np.ndarray

    def pairs(self) -> np.ndarray:
        """``(M, 2)`` index pairs ``(i0, i1)`` of the valid matches."""
        i0 = np.flatnonzero(self.matches0 >= 0)
        return np.stack([i0, self.matches0[i0]], axis=1)

    def __len__(self) -> int:
        return int((self.matches0 >= 0).sum())


def _to_tensor(d: np.ndarray | torch.Tensor) -> torch.Tensor:
    return d if isinstance(d, torch.Tensor) else torch.from_numpy(np.ascontiguousarray(d, dtype=np.float32))


@matchers.register("nn", NNConfig)
class NearestNeighborMatcher:
    """``matcher(desc0 (N0, D), desc1 (N1, D)) -> Matches``; descriptors must be L2-normalised."""

    def __init__(self, config: NNConfig = NNConfig()) -> None:
        self.config = config

    @torch.inference_mode()
    def __call__(self, desc0: np.ndarray | torch.Tensor, desc1: np.ndarray | torch.Tensor) -> Matches:
        d0, d1 = _to_tensor(desc0), _to_tensor(desc1)
        n0 = len(d0)
        if n0 == 0 or len(d1) < (2 if self.config.ratio_threshold else 1):
            return Matches(np.full(n0, -1, np.int64), np.zeros(n0, np.float32))
        sim = d0 @ d1.T
        k = 2 if self.config.ratio_threshold is not None else 1
        top_sim, top_idx = sim.topk(k, dim=1)
        dist = torch.sqrt(torch.clamp(2.0 - 2.0 * top_sim, min=0.0))
        nn01 = top_idx[:, 0]
        valid = torch.ones(n0, dtype=torch.bool)
        if self.config.ratio_threshold is not None:
            valid &= dist[:, 0] < self.config.ratio_threshold * dist[:, 1]
        if self.config.distance_threshold is not None:
            valid &= dist[:, 0] < self.config.distance_threshold
        if self.config.mutual:
            # i -> j is mutual when sim[i, j] is also the maximum of column j (amax is much faster
            # than argmax along dim 0; exact ties between two rows are kept, which is harmless)
            valid &= top_sim[:, 0] >= sim.amax(dim=0)[nn01]
        matches0 = torch.where(valid, nn01, torch.full_like(nn01, -1))
        scores0 = torch.where(valid, top_sim[:, 0], torch.zeros_like(top_sim[:, 0]))
        return Matches(matches0.numpy().astype(np.int64), scores0.numpy().astype(np.float32))
