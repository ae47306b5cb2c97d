"""Semantic-matching accuracy: PCK@alpha, the percentage of correctly transferred keypoints.

A keypoint is **correct** when its transferred position lies within ``alpha * L`` (inclusive, as
CNNGeometric's ``torch.le``) of the annotated position, in the original pixel coordinates of the image
where the comparison happens. Per pair, PCK is the fraction of correct keypoints.

**Direction.** CNNGeometric (``util/eval_util.py``, ``pck_metric``) maps the *target* keypoints into the
*source* with theta (target -> source, the sampling-grid direction) and compares them with the source
keypoints: the comparison happens in the **source** image. That is ``direction="target_to_source"``, the
default. ``"source_to_target"`` (SPair-71k-era protocols) compares in the target image.

**Reference length L** (``normalisation``), always taken from the image where the comparison happens:

* ``"bbox"`` -- ``max(w, h)`` of the bounding box of that image's annotated keypoints (PF-WILLOW; the
  CNNGeometric / WeakAlign ``pck_procedure='pf'``). CNNGeometric's ``PFDataset`` computes it from the
  keypoints of image A, the source, which is where its comparison happens; so with the default direction
  this is the **source**-keypoint box (publications.md section 6.1 is right; MANIFEST section 5's "in the
  target image" does not match the code).
* ``"image"`` -- ``max(H, W)`` of that image. This is the size-based convention in original pixels; it
  equals SCNet's procedure for square images only.
* ``"scnet"`` -- SCNet's procedure exactly, as WeakAlign / NC-Net evaluate PF-PASCAL
  (``pck_procedure='scnet'``): both point sets are rescaled anisotropically to a 224 x 224 image
  (``x * 224 / W``, ``y * 224 / H``) and ``L = 224``. Equivalently a point is correct when
  ``sqrt((dx / W)^2 + (dy / H)^2) <= alpha``; it differs from ``"image"`` for non-square images.
* ``"object_bbox"`` -- ``max(w, h)`` of the annotated object box (:attr:`KeypointImage.bbox_xyxy`, e.g.
  SPair-71k's ``*_bndbox``); only for data sets that have one.

**Aggregation.** Both are reported, by name:

* ``mean_over_pairs`` -- the mean of the per-pair PCK over all pairs (CNNGeometric / WeakAlign print this);
* ``mean_over_classes`` -- per-class means of the per-pair PCK (``per_class``), then their mean.

A pair with no keypoint to compare has PCK ``NaN`` (``null`` in JSON) and is left out of both means
(CNNGeometric filters NaN too); a NaN *prediction* counts as a wrong keypoint.

numpy only (no torch): ``predict_fn`` may use anything and return an array-like.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..datasets.semantic import KeypointImage, SemanticPair
from ..errors import ConfigError
from ..io.atomic import write_json

#: The alphas reported by default (0.1 is the headline number of CNNGeometric / WeakAlign / Pub I-II).
DEFAULT_ALPHAS = (0.05, 0.1, 0.15)
#: Side of SCNet's rescaled image (the ``"scnet"`` normalisation).
SCNET_SIZE = 224.0
#: What each normalisation means (written into the result JSON).
NORMALISATIONS = {
    "bbox": "L = max(w, h) of the keypoint bounding box in the image where the comparison happens "
            "(CNNGeometric pck_procedure='pf')",
    "image": "L = max(H, W) of the image where the comparison happens, original pixels",
    "scnet": "points rescaled to 224 x 224 (x * 224 / W, y * 224 / H), L = 224 (SCNet / WeakAlign 'scnet')",
    "object_bbox": "L = max(w, h) of the annotated object box in the image where the comparison happens",
}
DIRECTIONS = ("target_to_source", "source_to_target")

#: ``predict_fn(pair) -> (N, 2)``: see :func:`evaluate_pck`.
PredictFn = Callable[[SemanticPair], Any]


# --- the metric ---------------------------------------------------------------------------------------


def correct_keypoints(
    predicted: np.ndarray, reference: np.ndarray, alpha: float, L: float, mask: np.ndarray | None = None
) -> np.ndarray:
    """Which keypoints are within ``alpha * L`` of their reference (inclusive).

    Args:
        predicted: ``(N, 2)`` transferred points (pixels); NaN rows are wrong.
        reference: ``(N, 2)`` annotated points (pixels), same image and units.
        alpha: threshold as a fraction of ``L``.
        L: reference length (pixels).
        mask: optional ``(N,)`` bool: points to evaluate; others are ``False`` in the output.

    Returns:
        ``(N,)`` bool.
    """
    predicted = np.asarray(predicted, dtype=np.float64).reshape(-1, 2)
    reference = np.asarray(reference, dtype=np.float64).reshape(-1, 2)
    if predicted.shape != reference.shape:
        raise ValueError(f"predicted {predicted.shape} and reference {reference.shape} points differ in shape")
    dist = np.linalg.norm(predicted - reference, axis=1)
    with np.errstate(invalid="ignore"):
        ok = np.nan_to_num(dist, nan=np.inf) <= alpha * L
    if mask is not None:
        ok &= _mask(mask, len(ok))
    return ok


def _mask(mask: np.ndarray, n: int) -> np.ndarray:
    m = np.asarray(mask, dtype=bool).reshape(-1)
    if m.shape != (n,):
        raise ValueError(f"mask must have shape ({n},), got {m.shape}")
    return m


def pck(
    predicted: np.ndarray, reference: np.ndarray, alpha: float, L: float, mask: np.ndarray | None = None
) -> float:
    """PCK of one pair: the fraction of (masked-in) keypoints within ``alpha * L``.

    Args:
        predicted: ``(N, 2)`` transferred points in pixels (NaN rows count as wrong).
        reference: ``(N, 2)`` annotated points in pixels, in the same image.
        alpha: threshold as a fraction of ``L``.
        L: reference length in pixels (:func:`bbox_reference_length`, :func:`image_reference_length`).
        mask: optional ``(N,)`` bool selecting the keypoints that count (e.g. visible ones).

    Returns:
        A value in ``[0, 1]``; ``NaN`` when no keypoint counts.
    """
    n = np.asarray(reference).reshape(-1, 2).shape[0]
    valid = np.ones(n, dtype=bool) if mask is None else _mask(mask, n)
    if not valid.any():
        return math.nan
    ok = correct_keypoints(predicted, reference, alpha, L, valid)
    return float(ok.sum() / valid.sum())


def bbox_reference_length(keypoints: np.ndarray, mask: np.ndarray | None = None) -> float:
    """``max(w, h)`` of the bounding box of the (masked-in) keypoints, ``w = x_max - x_min``.

    Args:
        keypoints: ``(N, 2)`` pixels.
        mask: optional ``(N,)`` bool.

    Returns:
        The length in pixels; ``NaN`` without keypoints.
    """
    kps = np.asarray(keypoints, dtype=np.float64).reshape(-1, 2)
    if mask is not None:
        kps = kps[_mask(mask, len(kps))]
    if len(kps) == 0:
        return math.nan
    return float((kps.max(axis=0) - kps.min(axis=0)).max())


def image_reference_length(image_size_hw: tuple[int, int]) -> float:
    """``max(H, W)`` in pixels."""
    return float(max(image_size_hw))


def object_bbox_reference_length(bbox_xyxy: np.ndarray) -> float:
    """``max(x1 - x0, y1 - y0)`` of an object box ``(x0, y0, x1, y1)``."""
    x0, y0, x1, y1 = np.asarray(bbox_xyxy, dtype=np.float64).reshape(4)
    return float(max(x1 - x0, y1 - y0))


def _check_names(alphas: Sequence[float], normalisations: Sequence[str], direction: str) -> None:
    unknown = [n for n in normalisations if n not in NORMALISATIONS]
    if unknown:
        raise ConfigError(f"unknown PCK normalisation(s) {unknown}; known: {', '.join(NORMALISATIONS)}")
    if direction not in DIRECTIONS:
        raise ConfigError(f"unknown direction {direction!r}; known: {', '.join(DIRECTIONS)}")
    if not alphas or any(not (a > 0 and math.isfinite(a)) for a in alphas):
        raise ConfigError(f"alphas must be positive numbers, got {list(alphas)}")


def pair_pck(
    predicted: np.ndarray,
    reference: np.ndarray,
    image: KeypointImage,
    alphas: Sequence[float] = DEFAULT_ALPHAS,
    normalisations: Sequence[str] = ("bbox", "image"),
    mirrored: bool = False,
    mask: np.ndarray | None = None,
) -> tuple[dict[str, float], dict[str, dict[float, float]]]:
    """PCK of one pair under several normalisations and alphas.

    Args:
        predicted: ``(N, 2)`` transferred points, pixels of ``image`` as shown.
        reference: ``(N, 2)`` annotated points of ``image`` as shown.
        image: the image where the comparison happens (its size, and its box for ``object_bbox``).
        alphas: thresholds.
        normalisations: names in :data:`NORMALISATIONS`.
        mirrored: ``image`` is shown mirrored (only matters for its object box).
        mask: optional ``(N,)`` keypoints that count.

    Returns:
        ``L`` per normalisation (``scnet``: 224 in rescaled units), and ``pck[normalisation][alpha]``.
    """
    _check_names(alphas, normalisations, "target_to_source")
    predicted = np.asarray(predicted, dtype=np.float64).reshape(-1, 2)
    reference = np.asarray(reference, dtype=np.float64).reshape(-1, 2)
    lengths: dict[str, float] = {}
    values: dict[str, dict[float, float]] = {}
    for norm in normalisations:
        pred, ref = predicted, reference
        if norm == "bbox":
            L = bbox_reference_length(reference, mask)
        elif norm == "image":
            L = image_reference_length(image.image_size_hw)
        elif norm == "scnet":
            scale = np.array([SCNET_SIZE / image.width, SCNET_SIZE / image.height])
            pred, ref, L = predicted * scale, reference * scale, SCNET_SIZE
        else:
            box = image.bbox_in_frame(mirrored)
            if box is None:
                raise ConfigError(f"normalisation 'object_bbox' needs an object box; {image.path} has none")
            L = object_bbox_reference_length(box)
        lengths[norm] = L
        values[norm] = {float(a): pck(pred, ref, a, L, mask) for a in alphas}
    return lengths, values


# --- evaluation over a pair list ----------------------------------------------------------------------


def _alpha_key(alpha: float) -> str:
    return f"{alpha:g}"


def _json_number(x: float) -> float | None:
    return None if x is None or not math.isfinite(x) else float(x)


@dataclass(frozen=True)
class PairPCK:
    """The PCK of one pair.

    Attributes:
        index: position of the pair in the evaluated list.
        source: source image path; ``target``: target image path.
        category: the pair's class.
        flip / flip_source: the pair's mirroring flags.
        num_points: keypoints compared.
        reference_length: ``L`` per normalisation (pixels of the comparison image; ``scnet``: 224).
        pck: ``pck[normalisation][alpha]`` (``NaN`` with no keypoint).
    """

    index: int
    source: str
    target: str
    category: str
    flip: bool
    flip_source: bool
    num_points: int
    reference_length: dict[str, float]
    pck: dict[str, dict[float, float]]

    def to_dict(self) -> dict[str, Any]:
        return {
            "index": self.index,
            "source": self.source,
            "target": self.target,
            "category": self.category,
            "flip": self.flip,
            "flip_source": self.flip_source,
            "num_points": self.num_points,
            "reference_length": {k: _json_number(v) for k, v in self.reference_length.items()},
            "pck": {n: {_alpha_key(a): _json_number(v) for a, v in d.items()} for n, d in self.pck.items()},
        }


@dataclass(frozen=True)
class PCKResults:
    """Per-pair PCK and its aggregates.

    Attributes:
        rows: one :class:`PairPCK` per pair, in input order.
        alphas: the thresholds.
        normalisations: the reference lengths used.
        direction: ``target_to_source`` (compared in the source image) or ``source_to_target``.
    """

    rows: list[PairPCK]
    alphas: tuple[float, ...]
    normalisations: tuple[str, ...]
    direction: str = "target_to_source"

    def _values(self, normalisation: str, alpha: float) -> list[tuple[str, float]]:
        if normalisation not in self.normalisations:
            raise KeyError(f"normalisation {normalisation!r} not evaluated (have {list(self.normalisations)})")
        alpha = float(alpha)
        if alpha not in self.alphas:
            raise KeyError(f"alpha {alpha} not evaluated (have {list(self.alphas)})")
        values = [(r.category, r.pck[normalisation][alpha]) for r in self.rows]
        return [(c, v) for c, v in values if math.isfinite(v)]

    def num_valid(self, normalisation: str, alpha: float) -> int:
        """Pairs with at least one keypoint compared."""
        return len(self._values(normalisation, alpha))

    def mean_over_pairs(self, normalisation: str, alpha: float) -> float:
        """Mean per-pair PCK over all pairs (the CNNGeometric / WeakAlign number)."""
        vals = [v for _, v in self._values(normalisation, alpha)]
        return float(np.mean(vals)) if vals else math.nan

    def per_class(self, normalisation: str, alpha: float) -> dict[str, float]:
        """Mean per-pair PCK of each class (classes in sorted order)."""
        groups: dict[str, list[float]] = {}
        for cat, v in self._values(normalisation, alpha):
            groups.setdefault(cat, []).append(v)
        return {cat: float(np.mean(groups[cat])) for cat in sorted(groups)}

    def mean_over_classes(self, normalisation: str, alpha: float) -> float:
        """Mean of :meth:`per_class` (every class weighs the same)."""
        per = self.per_class(normalisation, alpha)
        return float(np.mean(list(per.values()))) if per else math.nan

    def summary(self) -> dict[str, dict[str, dict[str, Any]]]:
        """``summary[normalisation][alpha]`` = mean_over_pairs, mean_over_classes, per_class, num_pairs
        (pairs with keypoints), JSON-ready (``NaN`` -> ``None``)."""
        out: dict[str, dict[str, dict[str, Any]]] = {}
        for norm in self.normalisations:
            out[norm] = {}
            for a in self.alphas:
                out[norm][_alpha_key(a)] = {
                    "mean_over_pairs": _json_number(self.mean_over_pairs(norm, a)),
                    "mean_over_classes": _json_number(self.mean_over_classes(norm, a)),
                    "per_class": {c: _json_number(v) for c, v in self.per_class(norm, a).items()},
                    "num_pairs": self.num_valid(norm, a),
                }
        return out

    def to_dict(self) -> dict[str, Any]:
        """Protocol, summary and per-pair rows (the JSON written by :meth:`write_json`)."""
        return {
            "protocol": {
                "metric": "PCK: fraction of keypoints with |transferred - annotated| <= alpha * L",
                "direction": self.direction,
                "comparison_image": "source" if self.direction == "target_to_source" else "target",
                "alphas": [float(a) for a in self.alphas],
                "normalisations": {n: NORMALISATIONS[n] for n in self.normalisations},
                "aggregation": {
                    "mean_over_pairs": "mean of the per-pair PCK over all pairs with keypoints",
                    "mean_over_classes": "mean over classes of the per-class mean of the per-pair PCK",
                },
            },
            "num_pairs": len(self.rows),
            "summary": self.summary(),
            "pairs": [r.to_dict() for r in self.rows],
        }

    def write_json(self, path: str | Path) -> Path:
        """Write :meth:`to_dict` atomically (strict JSON: ``NaN`` is written as ``null``)."""
        write_json(path, self.to_dict())
        return Path(path)


def evaluate_pck(
    pairs: Iterable[SemanticPair],
    predict_fn: PredictFn,
    alphas: Sequence[float] = DEFAULT_ALPHAS,
    normalisations: Sequence[str] = ("bbox", "image"),
    direction: str = "target_to_source",
) -> PCKResults:
    """Evaluate keypoint transfer over pairs.

    Contract of ``predict_fn(pair) -> (N, 2)``, pixel coordinates (0-based) of the images as the pair
    shows them (mirrored when its flags say so; :attr:`SemanticPair.source_keypoints` /
    :attr:`SemanticPair.target_keypoints` are in those frames):

    * ``direction="target_to_source"`` (CNNGeometric): return where the pair's ``target_keypoints`` land
      in the **source** image; they are compared with ``source_keypoints``, L from the source.
    * ``direction="source_to_target"``: return where ``source_keypoints`` land in the **target**; compared
      with ``target_keypoints``, L from the target.

    Coordinates are those of the original image files, never of a resized or padded network input: a model
    working at 240 x 240 maps its normalised output back with the original size
    (:func:`visloc.geometry.warps.normalized_to_pixels`). Return NaN for a point that cannot be predicted
    (it counts as wrong).

    Args:
        pairs: pairs whose source and target keypoints correspond row by row.
        predict_fn: as above.
        alphas: thresholds (default 0.05, 0.1, 0.15).
        normalisations: names in :data:`NORMALISATIONS`.
        direction: ``"target_to_source"`` or ``"source_to_target"``.

    Raises:
        ConfigError: unknown normalisation / direction, bad alphas, ``object_bbox`` without a box.
        ValueError: a pair whose source and target have different keypoint counts, or a prediction of the
            wrong shape.
    """
    alphas = tuple(float(a) for a in alphas)
    normalisations = tuple(normalisations)
    _check_names(alphas, normalisations, direction)
    rows = []
    for i, pair in enumerate(pairs):
        src, tgt = pair.source_keypoints, pair.target_keypoints
        if len(src) != len(tgt):
            raise ValueError(f"pair {i} ({pair!r}) has {len(src)} source and {len(tgt)} target keypoints")
        if direction == "target_to_source":
            reference, image, mirrored = src, pair.source, pair.flip_source
        else:
            reference, image, mirrored = tgt, pair.target, pair.flip
        predicted = np.asarray(predict_fn(pair), dtype=np.float64)
        if predicted.shape != reference.shape:
            raise ValueError(f"pair {i} ({pair!r}): predict_fn returned shape {predicted.shape}, "
                             f"expected {reference.shape}")
        lengths, values = pair_pck(predicted, reference, image, alphas, normalisations, mirrored)
        rows.append(PairPCK(i, str(pair.source.path), str(pair.target.path), pair.category, pair.flip,
                            pair.flip_source, len(reference), lengths, values))
    return PCKResults(rows, alphas, normalisations, direction)


__all__ = [
    "DEFAULT_ALPHAS",
    "DIRECTIONS",
    "NORMALISATIONS",
    "SCNET_SIZE",
    "PCKResults",
    "PairPCK",
    "bbox_reference_length",
    "correct_keypoints",
    "evaluate_pck",
    "image_reference_length",
    "object_bbox_reference_length",
    "pair_pck",
    "pck",
]
