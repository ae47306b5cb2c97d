"""From a semantic matcher to PCK: predictions on image pairs, keypoint transfer, evaluation and figures.

A matcher (:class:`~visloc.models.cnngeometric.GeometricMatcher` / ``TwoStageMatcher``) sees each image
resized, whole, to ``image_size`` x ``image_size`` with ``align_corners=True`` resampling
(:class:`~visloc.training.semantic_data.KeypointPairs`), so its theta acts on normalised coordinates that
are the same for the network input and for the original image. The target keypoints (pixels of the target
as the pair shows it) are normalised with the target's size, mapped by theta (target -> source), and
converted to pixels with the source's size: no padding, no rescaling artefacts. PCK then compares them
with the source keypoints (:func:`~visloc.evaluation.semantic.evaluate_pck`, ``target_to_source``).

``model=None`` is the **identity** transform (the "no alignment" baseline): a target keypoint is predicted
at the same relative position in the source, ``x_s = x_t (W_s - 1) / (W_t - 1)``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader

from ..datasets.semantic import SemanticPair
from ..errors import InputError
from ..geometry.warps import Warp, identity_theta, normalized_to_pixels, pixels_to_normalized
from .semantic import DEFAULT_ALPHAS, PCKResults, bbox_reference_length, correct_keypoints, evaluate_pck

#: ``--model`` value of the identity baseline.
IDENTITY = "identity"
#: ``--model`` value of the model shipped in the package.
SHIPPED = "shipped"
#: File name of the shipped semantic matcher (``visloc/weights/``).
SHIPPED_MODEL = "semantic_tiny.pt"


def load_matcher(spec: str | Path, device: str | torch.device = "cpu") -> nn.Module | None:
    """``"identity"`` -> ``None``; ``"shipped"`` -> the packaged model; else a ``model.pt`` of
    ``visloc train semantic``.

    Raises:
        InputError: a missing file, or a checkpoint that is not a semantic matcher.
    """
    from ..models.cnngeometric import GeometricMatcher, TwoStageMatcher
    from ..models.weights import load_model
    from ..settings import shipped_model

    if str(spec) == IDENTITY:
        return None
    path = shipped_model(SHIPPED_MODEL) if str(spec) == SHIPPED else Path(spec).expanduser()
    model = load_model(path, device)
    if not isinstance(model, (GeometricMatcher, TwoStageMatcher)):
        raise InputError(path, f"holds a {type(model).__name__}, not a semantic matcher")
    return model


def _single(warp: Warp, i: int) -> Warp:
    def pick(t: torch.Tensor | None) -> torch.Tensor | None:
        return None if t is None else t[i : i + 1].detach().to("cpu", torch.float64)

    return Warp(affine=pick(warp.affine), tps=pick(warp.tps), reg_factor=warp.reg_factor)


@torch.inference_mode()
def predict_warps(
    model: nn.Module | None,
    pairs: Sequence[SemanticPair],
    batch_size: int = 16,
    device: str | torch.device = "cpu",
    num_workers: int = 0,
) -> list[Warp]:
    """The target -> source transform of every pair (batch 1 each, float64 on the CPU).

    Args:
        model: a trained matcher (eval mode is set here), or ``None`` for the identity.
        pairs: the pairs, images shown as their flags say.
        batch_size: pairs per forward pass.
        device: where the model runs.
        num_workers: DataLoader workers reading the images.

    Returns:
        One :class:`Warp` per pair, in normalised coordinates of the original images.
    """
    from ..training.semantic import as_warp
    from ..training.semantic_data import KeypointPairs, KeypointPairsConfig

    if model is None:
        return [Warp(affine=identity_theta("affine", 1, dtype=torch.float64)) for _ in pairs]
    model.eval()
    config = model.config
    size = (config.image_size, config.image_size)
    data = KeypointPairs(list(pairs), KeypointPairsConfig(output_size=size))
    loader = DataLoader(data, batch_size=batch_size, shuffle=False, num_workers=num_workers)
    dev = torch.device(device)
    model.to(dev)
    warps: list[Warp] = []
    for batch in loader:
        out = as_warp(model(batch["source"].to(dev), batch["target"].to(dev)), config)
        warps.extend(_single(out, i) for i in range(batch["source"].shape[0]))
    return warps


def transfer_target_keypoints(warp: Warp, pair: SemanticPair) -> np.ndarray:
    """Where the pair's target keypoints land in the source, in source pixels (images as shown).

    Args:
        warp: the pair's target -> source transform (batch 1), normalised coordinates of the images.
        pair: the pair.

    Returns:
        ``(N, 2)`` float64 pixels of the source.
    """
    kps = np.asarray(pair.target_keypoints, dtype=np.float64).reshape(-1, 2)
    if len(kps) == 0:
        return np.zeros((0, 2))
    pts = pixels_to_normalized(torch.from_numpy(kps).unsqueeze(0), pair.target.image_size_hw)
    with torch.no_grad():
        moved = warp.target_to_source(pts.to(torch.float64))
    return normalized_to_pixels(moved, pair.source.image_size_hw)[0].numpy()


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
        batch_size, device, num_workers: as :func:`predict_warps`.
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


def _shown(path: Path, mirrored: bool) -> np.ndarray:
    from ..io.images import read_image

    image = np.asarray(read_image(path))
    return np.ascontiguousarray(image[:, ::-1]) if mirrored else image


def write_alignment_figures(
    pairs: Sequence[SemanticPair],
    warps: Sequence[Warp],
    out_dir: str | Path,
    count: int = 8,
    alpha: float = 0.1,
    seed: int = 0,
) -> list[Path]:
    """PNG figures (:func:`~visloc.viz.semantic.plot_semantic_alignment`) of ``count`` pairs drawn with
    ``seed``: source, target, and the source warped onto the target with the transferred keypoints.

    The keypoint colours follow the evaluation: a source keypoint is drawn green when the corresponding
    target keypoint, mapped into the source, lies within ``alpha`` times the source keypoint box.

    Returns:
        The files written (``NNNN_<class>_<source>_<target>.png``).
    """
    from ..viz.semantic import plot_semantic_alignment

    out_dir = Path(out_dir)
    n = min(count, len(pairs))
    chosen = sorted(np.random.default_rng(seed).choice(len(pairs), size=n, replace=False).tolist()) if n else []
    written = []
    for i in chosen:
        pair, warp = pairs[i], warps[i]
        src, tgt = pair.source_keypoints, pair.target_keypoints
        ok = None
        if len(src) and len(src) == len(tgt):
            ok = correct_keypoints(transfer_target_keypoints(warp, pair), src, alpha, bbox_reference_length(src))
        name = f"{i:04d}_{pair.category}_{pair.source.path.stem}_{pair.target.path.stem}.png"
        name = "".join(c if c.isalnum() or c in "._-" else "_" for c in name)
        plot_semantic_alignment(
            _shown(pair.source.path, pair.flip_source), _shown(pair.target.path, pair.flip), warp,
            src if len(src) else None, tgt if len(tgt) else None, alpha=alpha, correct=ok,
            out_path=out_dir / name, title=f"{pair.category}: {pair.source.path.name} -> {pair.target.path.name}",
        )
        written.append(out_dir / name)
    return written


def results_summary(results: PCKResults, alpha: float = 0.1) -> dict[str, Any]:
    """``{normalisation: {"mean_over_classes", "mean_over_pairs", "per_class"}}`` at one alpha."""
    return {n: {"mean_over_classes": results.mean_over_classes(n, alpha),
                "mean_over_pairs": results.mean_over_pairs(n, alpha),
                "per_class": results.per_class(n, alpha)} for n in results.normalisations}


__all__ = [
    "IDENTITY",
    "SHIPPED",
    "SHIPPED_MODEL",
    "evaluate_matcher",
    "load_matcher",
    "predict_warps",
    "results_summary",
    "transfer_target_keypoints",
    "write_alignment_figures",
]
