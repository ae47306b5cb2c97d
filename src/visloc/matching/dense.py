"""The trained dense matcher (:class:`~visloc.models.dense.DenseMatcher`) on images of any size.

``DenseNetworkMatcher(model_path)(source, target)`` takes two ``(H, W, 3)`` uint8 RGB images and returns a
:class:`~visloc.matching.dense_baselines.DenseCorrespondence`: for every pixel of the target (at its original
size) the source pixel (original size), and the network's matchability as confidence. With ``image_size``
(default: what the model was trained at, stored in its checkpoint) both images are first resized so that
their longer side is ``image_size``; the map is computed there and brought back to the original sizes exactly
(:func:`~visloc.geometry.flow.resize_map`).

:func:`cyclic_mask` runs the matcher both ways and keeps the target pixels whose round trip returns within a
tolerance (Publication IV's cyclically consistent matches); :func:`sample_correspondences` turns a map into
point matches (highest confidence first, at most one per cell of a grid), as hloc's dense matchers do.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..errors import ConfigError, InputError
from ..geometry.flow import cyclic_consistency, in_bounds, resize_map
from ..models.checkpoint import load_model, model_from_checkpoint, read_checkpoint
from ..models.dense import with_decoder_of
from ..models.preprocess import long_side_uint8, normalize
from .dense_baselines import DenseCorrespondence


def _prepare(image: np.ndarray, size: int | None) -> torch.Tensor:
    """``(H, W, 3)`` uint8 -> ``(1, 3, H', W')`` ImageNet-normalised (longer side ``size`` when given)."""
    img = np.asarray(image)
    if img.ndim != 3 or img.shape[2] != 3:
        raise ValueError(f"expected an (H, W, 3) image, got shape {img.shape}")
    x = long_side_uint8(img, size) if size else torch.from_numpy(np.array(img, np.uint8)).permute(2, 0, 1)
    return normalize(x.float() / 255.0)[None]


@dataclass(frozen=True)
class PreparedImage:
    """An image as the network takes it: ``tensor (1, 3, h, w)`` (resized, normalised) and the original
    ``(H, W)``; ``shape`` is the original's ``(H, W, 3)``, so it stands in for the image wherever only its
    size is read. Prepare an image once (:meth:`DenseNetworkMatcher.prepare`) to match it many times."""

    tensor: torch.Tensor
    hw: tuple[int, int]

    @property
    def shape(self) -> tuple[int, int, int]:
        return (self.hw[0], self.hw[1], 3)


@dataclass(frozen=True)
class DenseMatcherSettings:
    """Attributes:
    image_size: longer side the images are resized to before matching; ``0`` uses the model's training
        size (from its checkpoint; the original size when it has none); ``None``: the original sizes.
    device: torch device.
    decoder_from: another ``model.pt`` (``ucmd``) whose decoder replaces this model's, run on this model's
        encoder without retraining (:func:`~visloc.models.dense.with_decoder_of`).
    """

    image_size: int | None = 0
    device: str = "cpu"
    decoder_from: str | None = None


class DenseNetworkMatcher:
    """A trained dense matcher as ``matcher(source, target) -> DenseCorrespondence``."""

    def __init__(self, model_path: str | Path, settings: DenseMatcherSettings = DenseMatcherSettings()) -> None:
        self.model_path = Path(model_path)
        checkpoint = read_checkpoint(self.model_path)
        self.model = model_from_checkpoint(checkpoint, self.model_path, settings.device)
        if settings.decoder_from:
            decoder = load_model(settings.decoder_from, settings.device)
            try:
                self.model = with_decoder_of(self.model, decoder).to(settings.device)
            except ConfigError as e:
                raise InputError(Path(settings.decoder_from), f"decoder does not fit {self.model_path}: {e}") from None
        self.device = torch.device(settings.device)
        size = settings.image_size
        if size == 0:
            size = checkpoint.get("metrics", {}).get("preprocess", {}).get("image_size")
        self.image_size = int(size) if size else None

    def __call__(self, source: np.ndarray, target: np.ndarray) -> DenseCorrespondence:
        return self.match_many([(source, target)])[0]

    @torch.inference_mode()
    def prepare(self, image: np.ndarray | PreparedImage) -> PreparedImage:
        """The network input of an ``(H, W, 3)`` uint8 image (a prepared image is returned as it is)."""
        if isinstance(image, PreparedImage):
            return image
        return PreparedImage(_prepare(image, self.image_size), (int(image.shape[0]), int(image.shape[1])))

    @torch.inference_mode()
    def match_many(self, pairs: Sequence[tuple[np.ndarray | PreparedImage, np.ndarray | PreparedImage]],
                   batch_size: int = 32, full_size: bool = True) -> list[DenseCorrespondence]:
        """``[self(source, target) for source, target in pairs]``, with the pairs whose network inputs have
        the same sizes run as batches of up to ``batch_size`` (several times faster on a CPU).

        ``full_size=False`` skips resampling the maps to the targets' full sizes: each map (and confidence)
        stays on the network's target lattice, values in full-size source pixels. It covers the same image,
        so it is read at full-size target pixels ``p`` at the same normalised position
        (``(p + 0.5) / W * 2 - 1``, ``align_corners=False``). Images may be given prepared (:meth:`prepare`)."""
        prepared = [tuple(self.prepare(im).tensor for im in pair) for pair in pairs]
        groups: dict[tuple, list[int]] = {}
        for i, (src, tgt) in enumerate(prepared):
            groups.setdefault((tuple(src.shape), tuple(tgt.shape)), []).append(i)
        answers: list[DenseCorrespondence | None] = [None] * len(pairs)
        for members in groups.values():
            for start in range(0, len(members), batch_size):
                chunk = members[start:start + batch_size]
                src = torch.cat([prepared[i][0] for i in chunk]).to(self.device)
                tgt = torch.cat([prepared[i][1] for i in chunk]).to(self.device)
                out = self.model(src, tgt)
                for j, i in enumerate(chunk):
                    source, target = pairs[i]
                    full_src, full_tgt = tuple(source.shape[:2]), tuple(target.shape[:2])
                    corr = out.correspondence[j:j + 1].float()
                    lattice = full_tgt if full_size else tuple(corr.shape[-2:])
                    corr = resize_map(corr, lattice, tuple(src.shape[-2:]), full_src)[0].cpu()
                    conf = None
                    if out.confidence is not None:
                        conf = out.confidence[j:j + 1].float()
                        if full_size:
                            conf = torch.nn.functional.interpolate(conf, size=full_tgt, mode="bilinear",
                                                                   align_corners=False)
                        conf = conf[0].cpu()
                    answers[i] = DenseCorrespondence(corr, conf)
        return answers  # type: ignore[return-value]


def cyclic_mask(matcher, source: np.ndarray, target: np.ndarray, tolerance_px: float
                ) -> tuple[DenseCorrespondence, DenseCorrespondence, torch.Tensor]:
    """Forward (target -> source) and backward (source -> target) answers of ``matcher`` and the ``(1, Ht,
    Wt)`` bool mask of target pixels whose round trip lands within ``tolerance_px`` of where it started
    (and inside the source image)."""
    forward = matcher(source, target)
    backward = matcher(target, source)
    return forward, backward, cyclic_consistency(forward.map[None], backward.map[None], tolerance_px)[0]


def sample_correspondences(dense: DenseCorrespondence, source_hw: tuple[int, int], max_matches: int = 2048,
                           cell: int = 4, min_confidence: float = 0.0, mask: torch.Tensor | None = None
                           ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Point matches from a dense answer.

    The target is divided into ``cell x cell`` pixel cells; each cell contributes its most confident pixel
    (the cell centre when there is no confidence), if its match lies inside the source image, its confidence
    is at least ``min_confidence`` and ``mask`` (``(1, Ht, Wt)`` bool, e.g. :func:`cyclic_mask`) allows it;
    the ``max_matches`` most confident are kept.

    Returns:
        ``target_xy (M, 2)``, ``source_xy (M, 2)`` float32 pixels and ``scores (M,)``, most confident first.
    """
    corr = dense.map
    _, ht, wt = corr.shape
    conf = dense.confidence[0] if dense.confidence is not None else torch.ones(ht, wt)
    valid = in_bounds(corr[None], source_hw)[0, 0] & (conf >= min_confidence)
    if mask is not None:
        valid &= mask[0].bool()
    score = torch.where(valid, conf, torch.full_like(conf, -1.0))
    if dense.confidence is None:  # prefer cell centres: a tiny bonus at the centre of each cell
        ys, xs = torch.meshgrid(torch.arange(ht), torch.arange(wt), indexing="ij")
        centre = ((ys % cell) == cell // 2) & ((xs % cell) == cell // 2)
        score = torch.where(valid & centre, score + 1e-3, score)
    hc, wc = -(-ht // cell), -(-wt // cell)
    padded = torch.full((hc * cell, wc * cell), -1.0)
    padded[:ht, :wt] = score
    blocks = padded.reshape(hc, cell, wc, cell).permute(0, 2, 1, 3).reshape(hc, wc, cell * cell)
    best, arg = blocks.max(dim=-1)
    y = (torch.arange(hc)[:, None] * cell + arg // cell).reshape(-1)
    x = (torch.arange(wc)[None, :] * cell + arg % cell).reshape(-1)
    best = best.reshape(-1)
    keep = best >= 0
    x, y, best = x[keep], y[keep], best[keep]
    order = torch.argsort(best, descending=True, stable=True)[:max_matches]
    x, y = x[order], y[order]
    target_xy = torch.stack([x, y], 1).float()
    source_xy = corr[:, y, x].T
    scores = conf[y, x]
    return target_xy.numpy(), source_xy.numpy().astype(np.float32), scores.numpy().astype(np.float32)


def export_pair(matcher, image0: np.ndarray, image1: np.ndarray, name0: str, name1: str, out_dir: str | Path,
                max_matches: int = 2048, cell: int = 4, min_confidence: float = 0.0,
                cyclic_tolerance_px: float | None = None) -> int:
    """Dense matches of one pair in hloc's layout: ``out_dir/features.h5`` (``keypoints (M, 2)``, ``scores``,
    ``image_size`` per image) and ``out_dir/matches.h5`` (``name0/name1``: ``matches0``, ``matching_scores0``).

    Image 0 is the target of the map (its keypoints are the sampled pixels, see
    :func:`sample_correspondences`), image 1 the source; keypoint ``i`` of image 0 matches keypoint ``i`` of
    image 1. With ``cyclic_tolerance_px`` only cyclically consistent pixels are kept (:func:`cyclic_mask`).
    Both files are written atomically (an existing one is replaced). Returns the number of matches.
    """
    from ..io.h5 import ShardedH5Writer, match_arrays, names_to_pair

    if cyclic_tolerance_px is None:
        dense, mask = matcher(image1, image0), None
    else:
        dense, _, mask = cyclic_mask(matcher, image1, image0, cyclic_tolerance_px)
    k0, k1, scores = sample_correspondences(dense, tuple(image1.shape[:2]), max_matches, cell, min_confidence, mask)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    for path in (out_dir / "features.h5", out_dir / "matches.h5"):
        path.unlink(missing_ok=True)
    features = ShardedH5Writer(out_dir / "features.h5")
    for name, kpts, image in ((name0, k0, image0), (name1, k1, image1)):
        features.add(name, {"keypoints": kpts.astype(np.float32), "scores": scores.astype(np.float32),
                            "image_size": np.array([image.shape[1], image.shape[0]])})
    features.finalize({"extractor": "dense"})
    matches = ShardedH5Writer(out_dir / "matches.h5")
    index = np.arange(len(k0))
    matches.add(names_to_pair(name0, name1), match_arrays(np.stack([index, index], 1), scores, len(k0)))
    matches.finalize({"matcher": "dense"})
    return int(len(k0))
