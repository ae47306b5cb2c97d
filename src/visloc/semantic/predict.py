"""Predictions of a semantic matcher on image pairs, and the keypoint transfer they imply.

A matcher (:class:`~visloc.models.cnngeometric.GeometricMatcher` / ``TwoStageMatcher``) sees each image
resized, whole, to ``image_size`` x ``image_size`` with ``align_corners=True`` resampling
(:class:`~visloc.semantic.data.KeypointPairs`), so its theta acts on normalised coordinates that are the
same for the network input and for the original image. The target keypoints (pixels of the target as the
pair shows it) are normalised with the target's size, mapped by theta (target -> source), and converted to
pixels with the source's size: no padding, no rescaling artefacts.

``model=None`` is the **identity** transform (the "no alignment" baseline): a target keypoint is predicted
at the same relative position in the source, ``x_s = x_t (W_s - 1) / (W_t - 1)``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader

from ..datasets.semantic import SemanticPair
from ..errors import InputError
from ..geometry.warps import Warp, identity_theta, normalized_to_pixels, pixels_to_normalized
from ..models.checkpoint import load_model
from ..models.cnngeometric import GeometricMatcher, TwoStageMatcher
from ..settings import shipped_model
from .data import KeypointPairs, KeypointPairsConfig
from .models import as_warp

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


__all__ = [
    "IDENTITY",
    "SHIPPED",
    "SHIPPED_MODEL",
    "load_matcher",
    "predict_warps",
    "transfer_target_keypoints",
]
