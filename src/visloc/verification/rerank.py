"""Re-ranking one query's retrieval shortlist by geometric verification (Publication IV).

First stage: every shortlisted database image is verified (:mod:`.dense` for dense maps, or any
``verify(query, database) -> PairVerification``) and the shortlist is sorted by ``S`` (or by the RANSAC
inlier count ``|I|``, the classical baseline). Second stage: the top ``second_stage`` of that list get the
fused score ``S_F`` from ``S``, the local similarity ``S_L`` (:func:`local_similarity`: mean cosine of the
retrieval network's local features at the consistent matches) and the global distance ``G``
(:func:`global_distance`) -- or, with ``fusion="learned"``, the logit of a logistic model on ``(|C|, |I|, S_L,
G)`` (:mod:`.learned`) -- and are sorted by it; the rest keep their first-stage order behind them.
Ties keep the retrieval order.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import ConfigError
from ..geometry.flow import pixel_to_normalized
from .learned import load_cached
from .scores import FUSIONS, PairVerification, fused_score

#: What the first stage sorts by.
STAGE1_SCORES = ("S", "inliers")


@dataclass(frozen=True)
class RerankConfig:
    """Attributes:
    shortlist: retrieved images verified per query (the rest keep their retrieval order behind them).
    first_stage: ``inliers`` (``|I|``, the classical inlier-count re-ranking; the default, the best measured in
        ``docs/results/verification.md``) or ``S`` (Publication IV, equation 3.3).
    second_stage: images of the first-stage list re-sorted by ``S_F`` (0, the default: no second stage;
        Publication IV: 5).
    fusion: ``monotone`` (default) or ``paper`` (:func:`~visloc.verification.scores.fused_score`), or
        ``learned`` (:class:`~visloc.verification.learned.FusionModel`).
    fusion_model: the ``learned`` fusion's JSON file (``None``: the shipped ``fusion_world.json``).
    """

    shortlist: int = 20
    first_stage: str = "inliers"
    second_stage: int = 0
    fusion: str = "monotone"
    fusion_model: str | None = None

    def __post_init__(self) -> None:
        if self.shortlist < 1 or self.second_stage < 0:
            raise ConfigError(f"shortlist must be >= 1 and second_stage >= 0, got {self.shortlist}, "
                              f"{self.second_stage}")
        if self.first_stage not in STAGE1_SCORES:
            raise ConfigError(f"unknown first stage {self.first_stage!r}; known: {', '.join(STAGE1_SCORES)}")
        if self.fusion not in FUSIONS:
            raise ConfigError(f"unknown fusion {self.fusion!r}; known: {', '.join(FUSIONS)}")


@dataclass
class Candidate:
    """One shortlisted database image and its scores (``None`` where not computed)."""

    name: str
    retrieval_score: float
    verification: PairVerification | None = None
    local_similarity: float | None = None
    fused: float | None = None
    retrieval_rank: int = -1
    first_stage_rank: int | None = None
    extra: dict = field(default_factory=dict)

    @property
    def global_distance(self) -> float:
        return global_distance(self.retrieval_score)

    def to_json(self) -> dict:
        v = self.verification
        return {"name": self.name, "retrieval_score": self.retrieval_score, "retrieval_rank": self.retrieval_rank,
                "first_stage_rank": self.first_stage_rank,
                "matches": None if v is None else v.num_matches,
                "inliers": None if v is None else v.num_inliers,
                "consistent": None if v is None else v.num_consistent,
                "S": None if v is None else v.score,
                "S_L": self.local_similarity, "G": self.global_distance,
                "S_F": None if self.fused is None or not math.isfinite(self.fused) else self.fused}


def global_distance(similarity: float) -> float:
    """Euclidean distance of two unit vectors from their inner product: ``sqrt(2 - 2 s)``."""
    return math.sqrt(max(0.0, 2.0 - 2.0 * float(similarity)))


def local_similarity(
    features0: torch.Tensor, features1: torch.Tensor, points0: np.ndarray, points1: np.ndarray,
    hw0: tuple[int, int], hw1: tuple[int, int],
) -> float:
    """Mean cosine similarity of two images' local features at matched points.

    Args:
        features0, features1: ``(C, h, w)`` feature maps covering the whole images (any stride).
        points0, points1: ``(M, 2)`` matched pixels ``(x, y)`` of the ``(H, W)`` images ``hw0`` / ``hw1``.

    Returns:
        The mean over the matches (0 without matches).
    """
    if len(points0) == 0:
        return 0.0

    def sample(features: torch.Tensor, points: np.ndarray, hw: tuple[int, int]) -> torch.Tensor:
        pts = torch.as_tensor(np.asarray(points, np.float32)).T.reshape(1, 2, 1, -1)
        grid = pixel_to_normalized(pts, hw).permute(0, 2, 3, 1)
        return F.grid_sample(features[None].float(), grid, mode="bilinear", padding_mode="border",
                             align_corners=False)[0, :, 0].T  # (M, C)

    a, b = sample(features0, points0, hw0), sample(features1, points1, hw1)
    return float(F.cosine_similarity(a, b, dim=1).mean())


def rerank(
    names: Sequence[str],
    retrieval_scores: Sequence[float],
    verify: Callable[[str], PairVerification],
    config: RerankConfig = RerankConfig(),
    similarity: Callable[[str, PairVerification], float] | None = None,
) -> list[Candidate]:
    """Re-rank one query's ranked retrieval list.

    Args:
        names, retrieval_scores: the retrieval list, best first, with inner-product similarities.
        verify: ``verify(db_name) -> PairVerification`` (called for the first ``shortlist`` names).
        config: lengths and scores.
        similarity: ``similarity(db_name, verification) -> S_L`` for the second stage (``None``: ``S_L = 1``,
            the fusion then uses ``S`` and ``G`` only).

    Returns:
        Every name once, in the new order, with the scores computed for it, its 0-based ``retrieval_rank`` and
        (shortlisted names) its ``first_stage_rank``.
    """
    if len(names) != len(retrieval_scores):
        raise ValueError(f"{len(names)} names but {len(retrieval_scores)} scores")
    everything = [Candidate(n, float(s), retrieval_rank=r)
                  for r, (n, s) in enumerate(zip(names, retrieval_scores, strict=True))]
    head, tail = everything[: config.shortlist], everything[config.shortlist:]
    for c in head:
        c.verification = verify(c.name)

    def stage1(c: Candidate) -> float:
        v = c.verification
        return float(v.num_inliers if config.first_stage == "inliers" else v.score)

    order = sorted(range(len(head)), key=lambda i: -stage1(head[i]))  # stable: ties keep retrieval order
    head = [head[i] for i in order]
    for rank, c in enumerate(head):
        c.first_stage_rank = rank
    top, rest = head[: config.second_stage], head[config.second_stage:]
    model = load_cached(config.fusion_model) if config.fusion == "learned" and top else None
    for c in top:
        v = c.verification
        c.local_similarity = 1.0 if similarity is None else float(similarity(c.name, v))
        c.fused = (fused_score(c.local_similarity, v.score, c.global_distance, config.fusion) if model is None else
                   model.score(v.num_consistent, v.num_inliers, c.local_similarity, c.global_distance))
    top = [top[i] for i in sorted(range(len(top)), key=lambda i: -top[i].fused)]
    return top + rest + tail


__all__ = ["STAGE1_SCORES", "Candidate", "RerankConfig", "global_distance", "local_similarity", "rerank"]
