"""Geometric verification scores of one image pair (Publication IV, equations 3.3 and 3.4).

Given the point matches of a (query, database) pair and which of them are *cyclically consistent* (dense
matches: the forward-backward round trip closes, :func:`visloc.matching.dense.cyclic_mask`; sparse matches:
mutual nearest neighbours), :func:`verify_matches` fits a two-view model by RANSAC
(:func:`~visloc.geometry.backends.estimate_two_view_model`, homography or fundamental matrix: a setting) and
returns

* ``I`` -- the RANSAC inliers,
* ``C`` -- the inliers that are also cyclically consistent,
* ``S = |C| / |I| * exp(-beta / |C|)`` (:func:`consistency_score`; ``beta`` is the pixel count of the
  matching resolution, 240 x 240 = 57,600 in the thesis, so that few consistent matches are penalised
  strongly; 0 when ``C`` is empty).

:func:`fused_score` is the second stage's ``S_F`` from the local similarity ``S_L`` and the global
distance ``G``; see its docstring for the sign problem of the formula as printed and what the code does.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ..errors import ConfigError
from ..geometry.backends import TWO_VIEW_MIN_POINTS, RansacConfig, estimate_two_view_model, two_view_errors

#: The thesis's ``beta``: the pixel count of a 240 x 240 correspondence map.
PAPER_BETA = 240.0 * 240.0
#: Second-stage fusions: ``learned`` is the logistic model of :mod:`.learned` (it needs ``|C|`` and ``|I|``,
#: so :func:`~visloc.verification.rerank.rerank` scores it, not :func:`fused_score`).
FUSIONS = ("paper", "monotone", "learned")


@dataclass(frozen=True)
class VerificationConfig:
    """Attributes:
    model: ``homography`` or ``fundamental`` (the thesis does not say which; a setting).
    ransac: RANSAC options (threshold in pixels of the matched images).
    beta: ``beta`` of :func:`consistency_score`.
    max_ransac_points: RANSAC fits on at most this many matches (an even subsample; 0: all) and ``I`` is then
        every match within the threshold of the fitted model. Dense lattices give ~20k matches a pair, for
        which LO-RANSAC costs ~0.4 s; 256 matches and at most 1000 iterations cost ~9 ms and change ``|I|`` by
        about 3 % (measured on the embedded world).
    """

    model: str = "fundamental"
    ransac: RansacConfig = RansacConfig(max_error_px=3.0, max_iterations=1000)
    beta: float = PAPER_BETA
    max_ransac_points: int = 256

    def __post_init__(self) -> None:
        if self.model not in TWO_VIEW_MIN_POINTS:
            raise ConfigError(f"unknown verification model {self.model!r}; known: {', '.join(TWO_VIEW_MIN_POINTS)}")
        if not (isinstance(self.beta, (int, float)) and math.isfinite(self.beta) and self.beta >= 0):
            raise ConfigError(f"beta must be a finite number >= 0, got {self.beta!r}")
        if self.max_ransac_points != 0 and self.max_ransac_points < 2 * TWO_VIEW_MIN_POINTS[self.model]:
            raise ConfigError(f"max_ransac_points must be 0 (all) or >= {2 * TWO_VIEW_MIN_POINTS[self.model]}, "
                              f"got {self.max_ransac_points}")


@dataclass(frozen=True)
class PairVerification:
    """The verification of one pair.

    Attributes:
        num_matches: matches given.
        inliers: ``(M,)`` bool, ``I`` (all ``False`` when no model was found).
        consistent: ``(M,)`` bool, ``C`` (inliers that are cyclically consistent).
        score: ``S``.
    """

    num_matches: int
    inliers: np.ndarray
    consistent: np.ndarray
    score: float

    @property
    def num_inliers(self) -> int:
        return int(self.inliers.sum())

    @property
    def num_consistent(self) -> int:
        return int(self.consistent.sum())


def consistency_score(num_consistent: int, num_inliers: int, beta: float = PAPER_BETA) -> float:
    """``S = |C| / |I| * exp(-beta / |C|)``; 0 when ``|C| = 0``.

    Example:
        >>> round(consistency_score(100, 200, 57600.0), 6)  # 0.5 * exp(-576)
        0.0
        >>> round(consistency_score(57600, 57600, 57600.0), 6)  # exp(-1)
        0.367879
    """
    if num_consistent < 0 or num_inliers < num_consistent:
        raise ValueError(f"need 0 <= |C| <= |I|, got |C| = {num_consistent}, |I| = {num_inliers}")
    if num_consistent == 0:
        return 0.0
    return num_consistent / num_inliers * math.exp(-beta / num_consistent)


def verify_matches(
    points0: np.ndarray, points1: np.ndarray, cyclic: np.ndarray | None, config: VerificationConfig = VerificationConfig()
) -> PairVerification:
    """``I``, ``C`` and ``S`` of one pair's matches.

    Args:
        points0, points1: ``(M, 2)`` matched pixels in image 0 and image 1.
        cyclic: ``(M,)`` bool, the cyclically consistent matches (``None``: all of them).
        config: the model, RANSAC options and ``beta``.
    """
    p0, p1 = np.asarray(points0, np.float64).reshape(-1, 2), np.asarray(points1, np.float64).reshape(-1, 2)
    if len(p0) != len(p1):
        raise ValueError(f"{len(p0)} points in image 0 but {len(p1)} in image 1")
    m = len(p0)
    ok = np.ones(m, bool) if cyclic is None else np.asarray(cyclic, bool).reshape(-1)
    if len(ok) != m:
        raise ValueError(f"{len(ok)} consistency flags for {m} matches")
    sample = (np.linspace(0, m - 1, config.max_ransac_points).round().astype(int)
              if 0 < config.max_ransac_points < m else None)
    if sample is None:
        fit = estimate_two_view_model(p0, p1, config.model, config.ransac)
        inliers = np.zeros(m, bool) if fit is None else fit.inliers
    else:
        fit = estimate_two_view_model(p0[sample], p1[sample], config.model, config.ransac)
        inliers = (np.zeros(m, bool) if fit is None else
                   two_view_errors(fit.matrix, config.model, p0, p1) <= config.ransac.max_error_px)
    consistent = inliers & ok
    score = consistency_score(int(consistent.sum()), int(inliers.sum()), config.beta) if inliers.any() else 0.0
    return PairVerification(m, inliers, consistent, score)


def fused_score(local_similarity: float, score: float, global_distance: float, fusion: str = "monotone") -> float:
    """The second stage's fused score of a pair (higher is better).

    ``paper``: ``S_F = log10(S_L * S) * 10^(-G)`` as printed (equation 3.4). ``S_L * S`` lies in ``(0, 1]``,
    so its logarithm is <= 0, and multiplying a negative number by the factor ``10^(-G)``, which *shrinks*
    as the global distance ``G`` grows, moves it towards 0, i.e. *up*: as printed, a worse (more distant)
    global match raises the score. Read literally, the formula rewards global dissimilarity.

    ``monotone`` (the default): ``S_F = log10(S_L * S) * 10^(+G)``, the same magnitudes with the factor that
    keeps the score increasing in ``S_L`` and ``S`` and decreasing in ``G``, which is what the text says the
    fusion is for. Both are ``-inf`` when ``S_L * S <= 0``.

    ``learned`` is not computed here (:class:`~visloc.verification.learned.FusionModel` also needs ``|C|`` and
    ``|I|``); asking for it raises :class:`~visloc.errors.ConfigError`.

    Example:
        >>> fused_score(0.8, 0.5, 0.2) > fused_score(0.8, 0.5, 0.6)          # closer globally: better
        True
        >>> fused_score(0.8, 0.5, 0.2, "paper") > fused_score(0.8, 0.5, 0.6, "paper")
        False
    """
    if fusion not in FUSIONS:
        raise ConfigError(f"unknown fusion {fusion!r}; known: {', '.join(FUSIONS)}")
    if fusion == "learned":
        raise ConfigError("the learned fusion needs |C| and |I|: see visloc.verification.learned")
    product = local_similarity * score
    if not product > 0:
        return -math.inf
    sign = -1.0 if fusion == "paper" else 1.0
    return math.log10(product) * 10.0 ** (sign * global_distance)


__all__ = [
    "FUSIONS",
    "PAPER_BETA",
    "PairVerification",
    "VerificationConfig",
    "consistency_score",
    "fused_score",
    "verify_matches",
]
