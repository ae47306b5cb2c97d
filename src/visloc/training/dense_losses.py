"""Losses of the dense correspondence network (DGC-Net / DGCM-Net, thesis Publication IV).

Conventions (visloc's dense-matching contract):

* a **map** ``(B, 2, H, W)`` holds, for every pixel of the TARGET image, the ``(x, y)`` pixel of its match
  in the SOURCE image (OpenCV pixel centres), with a validity mask ``(B, 1, H, W)``;
* a **grid** is the same in normalised source coordinates for ``grid_sample(..., align_corners=False)``:
  ``x_n = (2 x + 1) / Ws - 1``, ``y_n = (2 y + 1) / Hs - 1`` (:func:`grid_from_map`). The network predicts
  one grid per pyramid level, coarse to fine.

Ground truth per level (:func:`gt_grids_for_levels`; DGC-Net resizes the GT grid to every level):

* the map is **bilinearly sampled at the level's pixel centres** (``F.interpolate(mode="bilinear",
  align_corners=False)``: level pixel ``i`` sits at full-resolution coordinate ``(i + 0.5) H / h - 0.5``),
  which is exact for affine maps (the identity included) at any level size;
* a level pixel is **valid only if every full-resolution pixel it covers is valid** (a min-pool over the
  windows of ``adaptive_max_pool2d``: rows ``floor(i H / h)`` to ``ceil((i + 1) H / h) - 1``; for a
  power-of-two pyramid, the ``H / h`` x ``W / w`` block). When downsampling, the bilinear footprint of a
  level pixel lies inside that block, so invalid full-resolution values never reach a valid level pixel.

:func:`multilevel_l1_loss` is DGC-Net's (``utils/loss.py``): per level, the sum of ``|pred - gt|`` over the
valid pixels of the whole batch and both coordinates, divided by the number of valid pixels; level weights
1; the total is the weighted sum. :func:`matchability_loss` is DGCM-Net's BCE-with-logits against the
full-resolution validity mask.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F


def _check_map(map_: torch.Tensor, mask: torch.Tensor | None = None) -> None:
    if map_.ndim != 4 or map_.shape[1] != 2:
        raise ValueError(f"a correspondence map must have shape (B, 2, H, W), got {tuple(map_.shape)}")
    if mask is not None and (mask.ndim != 4 or mask.shape[1] != 1 or mask.shape[0] != map_.shape[0]
                             or mask.shape[2:] != map_.shape[2:]):
        raise ValueError(f"mask must have shape (B, 1, H, W) = {(map_.shape[0], 1, *map_.shape[2:])}, "
                         f"got {tuple(mask.shape)}")


def grid_from_map(map: torch.Tensor, source_hw: tuple[int, int]) -> torch.Tensor:
    """Source pixels -> normalised coordinates for ``grid_sample(align_corners=False)``.

    Args:
        map: ``(B, 2, H, W)`` source ``(x, y)`` pixels (OpenCV centres).
        source_hw: source image ``(Hs, Ws)``.

    Returns:
        ``(B, 2, H, W)``: ``x_n = (2 x + 1) / Ws - 1``, ``y_n = (2 y + 1) / Hs - 1``.
    """
    _check_map(map)
    hs, ws = source_hw
    size = map.new_tensor([ws, hs]).view(1, 2, 1, 1)
    return (2.0 * map + 1.0) / size - 1.0


def map_from_grid(grid: torch.Tensor, source_hw: tuple[int, int]) -> torch.Tensor:
    """Inverse of :func:`grid_from_map`: ``x = ((x_n + 1) Ws - 1) / 2``.

    Args:
        grid: ``(B, 2, H, W)`` normalised source coordinates (``align_corners=False``).
        source_hw: source image ``(Hs, Ws)``.

    Returns:
        ``(B, 2, H, W)`` source pixels.
    """
    _check_map(grid)
    hs, ws = source_hw
    size = grid.new_tensor([ws, hs]).view(1, 2, 1, 1)
    return ((grid + 1.0) * size - 1.0) / 2.0


def gt_grids_for_levels(
    map: torch.Tensor,
    mask: torch.Tensor,
    sizes: Sequence[tuple[int, int]],
    source_hw: tuple[int, int],
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Ground-truth grid and validity of every pyramid level (subsampling rules in the module docstring).

    Args:
        map: ``(B, 2, H, W)`` ground-truth source pixels of every target pixel.
        mask: ``(B, 1, H, W)`` validity (bool or 0/1 float).
        sizes: ``(h, w)`` of each level, any order (DGC-Net: coarse to fine); each at most ``(H, W)``.
        source_hw: source image ``(Hs, Ws)`` (normalisation of the grid values).

    Returns:
        One ``(grid (B, 2, h, w), mask (B, 1, h, w) bool)`` per entry of ``sizes``, in that order.
    """
    _check_map(map, mask)
    h_full, w_full = map.shape[-2:]
    valid = mask.to(torch.bool)
    values = map if map.is_floating_point() else map.float()
    out = []
    for size in sizes:
        h, w = (int(s) for s in size)
        if not (1 <= h <= h_full and 1 <= w <= w_full):
            raise ValueError(f"level size {(h, w)} must be between (1, 1) and the map's {(h_full, w_full)}")
        if (h, w) == (h_full, w_full):
            level_map, level_mask = values, valid
        else:
            level_map = F.interpolate(values, size=(h, w), mode="bilinear", align_corners=False)
            invalid = F.adaptive_max_pool2d((~valid).to(values.dtype), (h, w))
            level_mask = invalid == 0
        out.append((grid_from_map(level_map, source_hw), level_mask))
    return out


def masked_l1(pred: torch.Tensor, gt: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``sum over valid pixels and both coordinates of |pred - gt|``, divided by the number of valid pixels.

    Invalid pixels are ignored entirely (``gt`` may hold anything there, NaN included, without a NaN
    gradient); no valid pixel gives 0.

    Args:
        pred: ``(B, 2, h, w)``.
        gt: ``(B, 2, h, w)``.
        mask: ``(B, 1, h, w)`` bool.

    Returns:
        Scalar.
    """
    if pred.shape != gt.shape:
        raise ValueError(f"prediction {tuple(pred.shape)} and ground truth {tuple(gt.shape)} differ in shape")
    _check_map(pred, mask)
    valid = mask.to(device=pred.device, dtype=torch.bool)
    diff = torch.where(valid, pred - gt.to(pred), torch.zeros_like(pred))
    return diff.abs().sum() / valid.sum().clamp(min=1).to(pred.dtype)


def multilevel_l1_loss(
    pred_grids: Sequence[torch.Tensor],
    gt_levels: Sequence[tuple[torch.Tensor, torch.Tensor]],
    weights: Sequence[float] | None = None,
) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """DGC-Net's multi-level masked L1 loss on normalised grids.

    Args:
        pred_grids: the network's grids, one ``(B, 2, h_l, w_l)`` per level (coarse to fine).
        gt_levels: ``(grid, mask)`` of the same levels in the same order (:func:`gt_grids_for_levels`).
        weights: one weight per level; default 1 each (DGC-Net).

    Returns:
        ``total = sum_l weights[l] * L_l`` and the unweighted per-level losses ``[L_l]``
        (:func:`masked_l1`).
    """
    if len(pred_grids) != len(gt_levels):
        raise ValueError(f"{len(pred_grids)} predicted levels but {len(gt_levels)} ground-truth levels")
    if not pred_grids:
        raise ValueError("no level to compute a loss on")
    weights = [1.0] * len(pred_grids) if weights is None else [float(x) for x in weights]
    if len(weights) != len(pred_grids):
        raise ValueError(f"{len(weights)} weights for {len(pred_grids)} levels")
    per_level = [masked_l1(pred, gt, mask) for pred, (gt, mask) in zip(pred_grids, gt_levels, strict=True)]
    total = sum((w * loss for w, loss in zip(weights, per_level, strict=True)), torch.zeros_like(per_level[0]))
    return total, per_level


def matchability_loss(logits: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """DGCM-Net's matchability loss: BCE with logits against the ground-truth validity, mean over pixels.

    Args:
        logits: ``(B, 1, H, W)`` matchability logits.
        mask: ``(B, 1, H, W)`` ground-truth validity at full resolution (bool or 0/1).

    Returns:
        Scalar.
    """
    if logits.shape != mask.shape or logits.ndim != 4 or logits.shape[1] != 1:
        raise ValueError(f"logits and mask must both be (B, 1, H, W), got {tuple(logits.shape)} and "
                         f"{tuple(mask.shape)}")
    return F.binary_cross_entropy_with_logits(logits, mask.to(device=logits.device, dtype=logits.dtype))


__all__ = [
    "grid_from_map",
    "gt_grids_for_levels",
    "map_from_grid",
    "masked_l1",
    "matchability_loss",
    "multilevel_l1_loss",
]
