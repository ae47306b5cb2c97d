"""Semantic-alignment figure: source, target, and the source warped onto the target with keypoint transfer;
:func:`write_alignment_figures` draws it for a sample of evaluated pairs.

Drawn like :mod:`visloc.viz.plots`: a :class:`~matplotlib.figure.Figure` on the Agg canvas (no pyplot, no
global backend change), saved atomically as PNG.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from matplotlib.collections import LineCollection
from matplotlib.figure import Figure

from ..datasets.semantic import SemanticPair
from ..evaluation.semantic import bbox_reference_length, correct_keypoints
from ..geometry.warps import Warp, normalized_to_pixels, pixels_to_normalized
from ..io.images import read_image
from ..semantic.predict import transfer_target_keypoints
from .plots import _INLIER, _OUTLIER, ImageLike, _as_image, _new_figure, save_figure

_TARGET_COLOR = "#2a7fff"


def _as_warp(warp: Warp | torch.Tensor, kind: str | None) -> Warp:
    if isinstance(warp, Warp):
        return warp
    if kind is None:
        raise ValueError("give the transform kind ('affine' or 'tps') with a theta tensor, or pass a Warp")
    theta = torch.as_tensor(warp, dtype=torch.float64).reshape(1, -1)
    return Warp.from_theta(theta, kind)


def transfer_source_keypoints(
    warp: Warp, source_keypoints: np.ndarray, source_size_hw: tuple[int, int], target_size_hw: tuple[int, int]
) -> np.ndarray:
    """Where source keypoints appear in the warped source (i.e. in the target): ``T^-1`` in pixels.

    Args:
        warp: target -> source transform of one pair (batch 1), in the normalised coordinates of the
            original images.
        source_keypoints: ``(N, 2)`` pixels of the source.
        source_size_hw: source ``(H, W)``.
        target_size_hw: target ``(H, W)``.

    Returns:
        ``(N, 2)`` target pixels (the TPS inverse is numerical, see
        :func:`visloc.geometry.warps.tps_source_to_target`).
    """
    kps = torch.as_tensor(np.asarray(source_keypoints, dtype=np.float64).reshape(1, -1, 2))
    if kps.shape[1] == 0:
        return np.zeros((0, 2))
    with torch.no_grad():
        moved = warp.source_to_target(pixels_to_normalized(kps, source_size_hw))
        return normalized_to_pixels(moved, target_size_hw)[0].numpy()


def plot_semantic_alignment(
    source: ImageLike,
    target: ImageLike,
    warp: Warp | torch.Tensor,
    source_keypoints: np.ndarray | None = None,
    target_keypoints: np.ndarray | None = None,
    kind: str | None = None,
    alpha: float = 0.1,
    reference_length: float | None = None,
    correct: np.ndarray | None = None,
    out_path: str | Path | None = None,
    title: str | None = None,
    panel_size: float = 3.0,
    dpi: int = 100,
) -> Figure:
    """Three panels: the source, the target, and the source warped onto the target.

    The warped panel shows the target keypoints (blue rings) and the source keypoints transferred into the
    target (:func:`transfer_source_keypoints`), green when correct and red when wrong, each joined to its
    target keypoint. A transferred keypoint is correct when it lies within ``alpha * L`` of its target
    keypoint, ``L`` = ``reference_length`` or, by default, ``max(w, h)`` of the target keypoints' bounding
    box (the comparison happens in the target here). Pass ``correct`` to colour by another criterion
    (e.g. the rows of :func:`visloc.evaluation.semantic.evaluate_pck`, which by default compares in the
    source).

    Args:
        source: ``(H, W[, 3])`` image or file.
        target: image or file.
        warp: the pair's target -> source transform (:class:`~visloc.geometry.warps.Warp`, batch 1), or a
            theta tensor ``(6,)`` / ``(18,)`` with ``kind``; normalised coordinates of the original images.
        source_keypoints: ``(N, 2)`` source pixels, or ``None``.
        target_keypoints: ``(N, 2)`` target pixels corresponding row by row, or ``None``.
        kind: ``"affine"`` / ``"tps"`` when ``warp`` is a tensor.
        alpha: PCK threshold for the colours.
        reference_length: ``L`` in target pixels (default: the target keypoint box).
        correct: ``(N,)`` bool overriding the computed correctness.
        out_path: if given, the PNG is written there (atomically).
        title: figure title.
        panel_size: inches per panel side; the PNG is ``3 * panel_size * dpi`` x ``panel_size * dpi``
            pixels (plus a title row of ``0.3`` inch when ``title`` is given).
        dpi: resolution.

    Returns:
        The figure.
    """
    src, tgt = _as_image(source), _as_image(target)
    w = _as_warp(warp, kind)
    if w.batch_size != 1:
        raise ValueError(f"expected the transform of one pair, got a batch of {w.batch_size}")
    src_t = torch.from_numpy(src.astype(np.float64) / 255.0).permute(2, 0, 1).unsqueeze(0)
    with torch.no_grad():
        warped = w.warp_source_to_target(src_t, tgt.shape[:2])[0].permute(1, 2, 0).clamp(0, 1).numpy()

    fig = _new_figure(3 * panel_size, panel_size + (0.3 if title else 0.0))
    axes = fig.subplots(1, 3)
    for ax, img, name in zip(axes, (src, tgt, warped), ("source", "target", "source warped onto target"), strict=True):
        ax.imshow(img)
        ax.set_title(name, fontsize=8)
        ax.axis("off")
    if title:
        fig.suptitle(title, fontsize=9)

    summary = ""
    if source_keypoints is not None:
        sk = np.asarray(source_keypoints, dtype=np.float64).reshape(-1, 2)
        axes[0].scatter(sk[:, 0], sk[:, 1], s=14, c="yellow", edgecolors="black", linewidths=0.5, zorder=3)
    if target_keypoints is not None:
        tk = np.asarray(target_keypoints, dtype=np.float64).reshape(-1, 2)
        for ax in axes[1:]:
            ax.scatter(tk[:, 0], tk[:, 1], s=30, facecolors="none", edgecolors=_TARGET_COLOR, linewidths=1.2,
                       zorder=3)
    if source_keypoints is not None and target_keypoints is not None:
        if len(sk) != len(tk):
            raise ValueError(f"source and target keypoints must pair up, got {len(sk)} and {len(tk)}")
        moved = transfer_source_keypoints(w, sk, src.shape[:2], tgt.shape[:2])
        if correct is None:
            L = bbox_reference_length(tk) if reference_length is None else float(reference_length)
            ok = correct_keypoints(moved, tk, alpha, L)
        else:
            ok = np.asarray(correct, dtype=bool).reshape(-1)
            if len(ok) != len(tk):
                raise ValueError(f"correct has {len(ok)} entries for {len(tk)} keypoints")
        colors = [_INLIER if c else _OUTLIER for c in ok]
        axes[2].add_collection(LineCollection(np.stack([moved, tk], axis=1), colors=colors, linewidths=1.0))
        axes[2].scatter(moved[:, 0], moved[:, 1], s=16, c=colors, edgecolors="white", linewidths=0.4, zorder=4)
        count = f"{int(ok.sum())}/{len(ok)}"
        summary = f"PCK@{alpha:g}: {count}" if correct is None else f"{count} correct"
        axes[2].set_title(f"source warped onto target ({summary})", fontsize=8)
    for ax, img in zip(axes, (src, tgt, warped), strict=True):
        ax.set_xlim(-0.5, img.shape[1] - 0.5)
        ax.set_ylim(img.shape[0] - 0.5, -0.5)
    transferred = source_keypoints is not None and target_keypoints is not None
    good = (f"source keypoint moved by the warp: within {alpha:g} L of its target" if correct is None
            else "source keypoint moved by the warp: correct")
    legend = _legend(source_keypoints is not None, target_keypoints is not None, ok if transferred else None, good)
    if legend:
        fig.legend(handles=legend, loc="lower center", ncol=len(legend), fontsize=7, frameon=False)
    if out_path is not None:
        save_figure(fig, out_path, dpi=dpi)
    return fig


def _legend(source: bool, target: bool, ok: np.ndarray | None, good: str) -> list:
    """Legend entries for the marks that are drawn: what the dots, circles and lines mean."""
    from matplotlib.lines import Line2D

    entries = []
    if source:
        entries.append(Line2D([], [], ls="", marker="o", mfc="yellow", mec="black", label="source keypoints"))
    if target:
        entries.append(Line2D([], [], ls="", marker="o", mfc="none", mec=_TARGET_COLOR,
                              label="target keypoints (truth)"))
    if ok is not None and ok.any():
        entries.append(Line2D([], [], color=_INLIER, marker="o", label=good))
    if ok is not None and not ok.all():
        entries.append(Line2D([], [], color=_OUTLIER, marker="o", label="wrong" if "correct" in good else "farther"))
    return entries


def _shown(path: Path, mirrored: bool) -> np.ndarray:
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
    """PNG figures (:func:`plot_semantic_alignment`) of ``count`` pairs drawn with ``seed``: source, target,
    and the source warped onto the target with the transferred keypoints.

    The keypoint colours follow the evaluation (:mod:`visloc.evaluation.semantic_model`): a source keypoint
    is drawn green when the corresponding target keypoint, mapped into the source
    (:func:`~visloc.semantic.predict.transfer_target_keypoints`), lies within ``alpha`` times the source
    keypoint box.

    Args:
        pairs: the evaluated pairs.
        warps: their target -> source transforms (one per pair, batch 1 each).
        out_dir: output folder.
        count: number of pairs drawn (all when there are fewer).
        alpha: PCK threshold of the colours.
        seed: seed of the draw.

    Returns:
        The files written (``NNNN_<class>_<source>_<target>.png``).
    """
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


__all__ = ["plot_semantic_alignment", "transfer_source_keypoints", "write_alignment_figures"]
