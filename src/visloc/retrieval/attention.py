"""Publication III's query attention and saliency-weighted R-MAC, as pure functions on feature maps.

The reference is ``SA.py`` of ``AaltoVision/Object-Retrieval`` (Caffe, Gordo et al.'s ResNet-101 R-MAC
network), summarised in ``research/publications.md`` §3.2–3.4. On a
:class:`~visloc.models.retrieval_net.RetrievalNet` the map at ``config.attention_tap`` (ReLU'd) plays
``res4b15`` and the network's last map (ReLU'd) plays ``res5c``. :mod:`visloc.retrieval.cnn` strings the
functions together; the steps of a query with a box are:

1. ``F`` = the tap map (ReLU'd), ``s = saliency(F)``: channel sum divided by its maximum, computed on ``F``
   itself (not on the last map).
2. ``g = lambda1 + lambda2 * s**phi`` (:func:`modulation`); ``F' = F * g`` outside the ROI and ``F' = F``
   inside it (:func:`attend`). The ROI in tap cells is ``round(round(box * ratio) / stride)``, ``ratio`` the
   resize factor of the image and ``stride`` the tap's total stride, the slice half-open
   (``F[..., y0:y1, x0:x1]``) as in SA.py. A box that rounds to no cell keeps no cell unmodulated (SA.py's
   empty slice).
3. Second partial pass: ``last' = features_from_tap(F')``.
4. Region weights: ``M = saliency(last')``; ``w_r`` = the max of ``M`` inside R-MAC region ``r``
   (:func:`region_weights`; SA.py feeds ``M`` through the ROI max-pooling).
5. Region vectors ``v_r`` of ``last'`` (the per-region, L2-normalised, whitened vectors of the network's head),
   descriptor ``l2n(sum_r w_r v_r)`` (:func:`weighted_sum`).

Reading of the ambiguous step 6 of §3.2 ("feed the *real* res5c through the normal head"): in SA.py the
``res5c`` blob is overwritten by the replicated saliency ``M`` to get the weights, then restored to
``feat_relu``, the ReLU'd ``res5c`` **of the second (modulated) pass**. "Real" means "the activations, not
the saliency replica"; it does not mean the unmodulated first pass. So both the weights and the region
vectors come from the second pass, and the attention changes the region vectors as well as their weights
(with ``lambda1 = 1, lambda2 = 0`` the map is unchanged and the descriptor is the full query's weighted
R-MAC).

Database side (§3.3, :func:`saliency_boxes`): the saliency of the plain pass's last map, values above
``threshold`` (0.7) and of those the ``top_k`` (200) largest kept, resized to the tap's resolution with
OpenCV's bilinear ``cv2.resize`` (as SA.py), binarised (``> 0``), external contours (``RETR_EXTERNAL``,
``CHAIN_APPROX_SIMPLE``) and their bounding boxes, in tap cells; SA.py keeps a contour only when its area
is ``> 0`` (``MIN_CONTOUR_AREA = 0`` with a strict test), so a one-cell-wide blob gives no box. Each box is
then used directly (in tap cells) as the ROI of the attention above; the database descriptor is
``l2n(d0 + sum_k d_k)``.
"""

from __future__ import annotations

import numpy as np
import torch

from ..models.pooling import l2n, rmac_regions, saliency_map

__all__ = [
    "attend",
    "box_to_cells",
    "modulation",
    "region_weights",
    "saliency_boxes",
    "weighted_sum",
]

#: A box ``(x0, y0, x1, y1)``, half-open, in cells of a feature map.
Cells = tuple[int, int, int, int]


def modulation(saliency: torch.Tensor, lambda1: float = 0.5, lambda2: float = 0.4, phi: float = 4.0) -> torch.Tensor:
    """The attention gain ``g = lambda1 + lambda2 * s**phi``: ``(B, h, w) -> (B, h, w)``."""
    return lambda1 + lambda2 * saliency.pow(phi)


def box_to_cells(box: tuple[float, float, float, float] | np.ndarray, ratio: float, stride: int,
                 shape: tuple[int, int]) -> Cells:
    """A box ``(x0, y0, x1, y1)`` in pixels of the original image -> half-open cells of a map of stride
    ``stride`` of the image resized by ``ratio``: ``round(round(box * ratio) / stride)`` (SA.py rounds the
    box into the resized image, then onto the map; numpy's round-half-to-even), clipped to
    ``shape = (h, w)``. May be empty (``x1 <= x0`` or ``y1 <= y0``)."""
    resized = np.round(np.asarray(box, dtype=np.float64) * ratio).astype(np.int64)
    x0, y0, x1, y1 = (int(v) for v in np.round(resized / float(stride)).astype(np.int64))
    h, w = shape
    return (min(max(x0, 0), w), min(max(y0, 0), h), min(max(x1, 0), w), min(max(y1, 0), h))


def attend(tap_map: torch.Tensor, roi: Cells, lambda1: float = 0.5, lambda2: float = 0.4,
           phi: float = 4.0) -> torch.Tensor:
    """Publication III's spatial attention on the tap map: ``(B, C, h, w) -> (B, C, h, w)``.

    ``F = ReLU(tap_map)``, ``g = modulation(saliency_map(F))``; returns ``F * g`` with the cells of
    ``roi = (x0, y0, x1, y1)`` (half-open, tap cells) replaced by ``F``.
    """
    f = tap_map.clamp(min=0)
    g = modulation(saliency_map(f), lambda1, lambda2, phi).unsqueeze(1)
    out = f * g
    x0, y0, x1, y1 = roi
    if x1 > x0 and y1 > y0:
        out[..., y0:y1, x0:x1] = f[..., y0:y1, x0:x1]
    return out


def region_weights(fmap: torch.Tensor, levels: int = 3, overlap: float = 0.4) -> torch.Tensor:
    """Weights of the R-MAC regions of ``fmap``: ``(B, C, h, w) -> (B, R)``, the max of
    :func:`~visloc.models.pooling.saliency_map` of ``fmap`` inside each region of
    :func:`~visloc.models.pooling.rmac_regions` (in that order)."""
    sal = saliency_map(fmap)
    boxes = rmac_regions(fmap.shape[-2], fmap.shape[-1], levels, overlap).tolist()
    return torch.stack([sal[:, y0:y1, x0:x1].amax(dim=(-2, -1)) for x0, y0, x1, y1 in boxes], dim=1)


def weighted_sum(vectors: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """``l2n(sum_r w_r v_r)``: region vectors ``(B, R, D)`` and weights ``(B, R)`` -> ``(B, D)``."""
    return l2n((weights.unsqueeze(-1).to(vectors.dtype) * vectors).sum(dim=1))


def saliency_boxes(saliency: np.ndarray | torch.Tensor, out_shape: tuple[int, int], threshold: float = 0.7,
                   top_k: int = 200) -> list[Cells]:
    """Salient blobs of a last-map saliency ``(h, w)`` as boxes in cells of a map of ``out_shape = (H, W)``.

    Values ``> threshold`` are kept and of those the ``top_k`` largest (ties: the later in row-major
    order, numpy's stable argsort); the result is resized to ``(H, W)`` with ``cv2.resize`` (bilinear) and
    binarised (``> 0``); each external contour of area ``> 0`` gives its bounding box
    ``(x, y, x + w, y + h)`` (half-open), in OpenCV's contour order.
    """
    import cv2

    sal = saliency.detach().cpu().numpy() if isinstance(saliency, torch.Tensor) else np.asarray(saliency)
    sal = sal.astype(np.float32)
    if sal.ndim != 2:
        raise ValueError(f"expected a saliency map (h, w), got shape {sal.shape}")
    kept = np.where(sal > threshold, sal, np.float32(0))
    flat = kept.ravel()
    top = np.argsort(flat, kind="stable")[-min(int(top_k), flat.size):]
    selected = np.zeros_like(flat)
    selected[top] = flat[top]
    height, width = int(out_shape[0]), int(out_shape[1])
    resized = cv2.resize(selected.reshape(sal.shape), (width, height))
    binary = (resized > 0).astype(np.uint8)
    contours, _ = cv2.findContours(binary, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    boxes: list[Cells] = []
    for contour in contours:
        if cv2.contourArea(contour) > 0:
            x, y, w, h = cv2.boundingRect(contour)
            boxes.append((int(x), int(y), int(x + w), int(y + h)))
    return boxes
