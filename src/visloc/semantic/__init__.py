"""Semantic matching (thesis chapter 2, Publications I and II): the matchers, their data, their predictions.

* :mod:`~visloc.semantic.models` -- matcher configs by transform kind (:func:`matcher_config`,
  :func:`tiny_matcher_config`), :func:`build_matcher`, a matcher's output as a
  :class:`~visloc.geometry.warps.Warp` (:func:`as_warp`).
* :mod:`~visloc.semantic.data` -- :class:`SyntheticWarpPairs` (CNNGeometric's synthetic supervision) and
  :class:`KeypointPairs` (real keypoint-annotated pairs at the network size).
* :mod:`~visloc.semantic.predict` -- :func:`load_matcher`, :func:`predict_warps` and
  :func:`transfer_target_keypoints`.

Training is :mod:`visloc.training.semantic`; PCK evaluation is :mod:`visloc.evaluation.semantic_model`.
"""

from .data import KeypointPairs, KeypointPairsConfig, SyntheticWarpConfig, SyntheticWarpPairs
from .models import (
    TRANSFORMS,
    MatcherConfig,
    as_warp,
    build_matcher,
    matcher_config,
    model_config_of,
    tiny_matcher_config,
    transform_of,
)
from .predict import IDENTITY, SHIPPED, SHIPPED_MODEL, load_matcher, predict_warps, transfer_target_keypoints

__all__ = [
    "IDENTITY",
    "SHIPPED",
    "SHIPPED_MODEL",
    "TRANSFORMS",
    "KeypointPairs",
    "KeypointPairsConfig",
    "MatcherConfig",
    "SyntheticWarpConfig",
    "SyntheticWarpPairs",
    "as_warp",
    "build_matcher",
    "load_matcher",
    "matcher_config",
    "model_config_of",
    "predict_warps",
    "tiny_matcher_config",
    "transfer_target_keypoints",
    "transform_of",
]
