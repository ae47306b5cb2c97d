"""PCK of a semantic matcher on keypoint-annotated pairs.

The matcher's transforms (:func:`~visloc.semantic.predict.predict_warps`) move the target keypoints into
the source (:func:`~visloc.semantic.predict.transfer_target_keypoints`); PCK then compares them with the
source keypoints (:func:`~visloc.evaluation.semantic.evaluate_pck`, ``target_to_source``). ``model=None``
is the identity transform (the "no alignment" baseline).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from ..datasets.semantic import SemanticPair
from ..geometry.warps import Warp
from ..semantic.predict import predict_warps, transfer_target_keypoints
from .semantic import DEFAULT_ALPHAS, PCKResults, evaluate_pck


def evaluate_matcher(
    model: nn.Module | None,
    pairs: Sequence[SemanticPair],
    alphas: Sequence[float] = DEFAULT_ALPHAS,
    normalisations: Sequence[str] = ("bbox", "image"),
    batch_size: int = 16,
    device: str | torch.device = "cpu",
    num_workers: int = 0,
    warps: Sequence[Warp] | None = None,
) -> tuple[PCKResults, list[Warp]]:
    """PCK of a matcher (or the identity) on keypoint-annotated pairs, compared in the source image.

    Args:
        model: a trained matcher or ``None`` (identity).
        pairs: pairs whose keypoints correspond row by row.
        alphas: PCK thresholds.
        normalisations: ``bbox`` (PF-WILLOW), ``image`` (size-based), ``scnet``, ``object_bbox``
            (:data:`~visloc.evaluation.semantic.NORMALISATIONS`).
        batch_size, device, num_workers: as :func:`~visloc.semantic.predict.predict_warps`.
        warps: precomputed transforms (one per pair); ``model`` is then not run.

    Returns:
        The results and the transforms.
    """
    pairs = list(pairs)
    warps = list(warps) if warps is not None else predict_warps(model, pairs, batch_size, device, num_workers)
    if len(warps) != len(pairs):
        raise ValueError(f"{len(warps)} transforms for {len(pairs)} pairs")
    lookup = {id(p): w for p, w in zip(pairs, warps, strict=True)}
    results = evaluate_pck(pairs, lambda p: transfer_target_keypoints(lookup[id(p)], p), alphas, normalisations)
    return results, warps


def results_summary(results: PCKResults, alpha: float = 0.1) -> dict[str, Any]:
    """``{normalisation: {"mean_over_classes", "mean_over_pairs", "per_class"}}`` at one alpha."""
    return {n: {"mean_over_classes": results.mean_over_classes(n, alpha),
                "mean_over_pairs": results.mean_over_pairs(n, alpha),
                "per_class": results.per_class(n, alpha)} for n in results.normalisations}


__all__ = ["evaluate_matcher", "results_summary"]
