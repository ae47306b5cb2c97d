"""Figures: trajectory top views, two-view matches and retrieval rows, saved as PNG.

Figures are drawn on :class:`matplotlib.figure.Figure` objects attached to the non-interactive Agg
canvas explicitly, never through ``pyplot``: nothing opens a window, no global backend is switched
(a notebook user keeps theirs), and figures are freed as soon as they are saved. Every file is
written atomically.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.collections import LineCollection
from matplotlib.figure import Figure

from ..geometry.pose import Pose
from ..io.atomic import atomic_path
from ..io.images import read_image

logger = logging.getLogger(__name__)

ImageLike = np.ndarray | str | Path
_AXES = "xyz"
_INLIER, _OUTLIER, _UNVERIFIED = "#1fbf3f", "#e0302a", "#f2c200"


def _new_figure(width: float, height: float) -> Figure:
    fig = Figure(figsize=(width, height), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def save_figure(fig: Figure, out_path: str | Path, dpi: int = 100) -> Path:
    """Save ``fig`` as PNG atomically and return the path.

    Args:
        fig: a figure (made here or by the caller).
        out_path: destination; the format is PNG whatever the suffix.
        dpi: resolution.
    """
    out_path = Path(out_path)
    with atomic_path(out_path) as tmp:
        fig.savefig(tmp, format="png", dpi=dpi)
    logger.debug("saved figure %s", out_path)
    return out_path


def _as_image(image: ImageLike) -> np.ndarray:
    if isinstance(image, (str, Path)):
        return read_image(image)
    arr = np.asarray(image)
    if arr.ndim == 2:
        arr = np.repeat(arr[..., None], 3, axis=2)
    if arr.ndim != 3 or arr.shape[2] not in (3, 4):
        raise ValueError(f"expected an (H, W), (H, W, 3) or (H, W, 4) image, got shape {arr.shape}")
    if arr.dtype != np.uint8:
        arr = np.clip(arr.astype(np.float64) * (255.0 if arr.max(initial=0) <= 1.0 else 1.0), 0, 255)
        arr = arr.astype(np.uint8)
    return arr[..., :3]


# --- trajectories -----------------------------------------------------------------------------------
def topview_axes(centers: np.ndarray, up_axis: str = "auto") -> tuple[int, int]:
    """The two world axes of the ground plane, in increasing order.

    Args:
        centers: ``(N, 3)`` camera centres.
        up_axis: ``"x"``, ``"y"`` or ``"z"`` to drop that axis, or ``"auto"`` to drop the axis of
            least variance (the plane of largest spread is kept).

    Returns:
        Indices ``(i, j)`` of the kept axes, ``i < j``.
    """
    if up_axis == "auto":
        centers = np.asarray(centers, dtype=np.float64).reshape(-1, 3)
        drop = int(np.argmin(centers.var(axis=0))) if len(centers) else 2
    elif up_axis in _AXES:
        drop = _AXES.index(up_axis)
    else:
        raise ValueError(f"up_axis must be 'auto', 'x', 'y' or 'z', got {up_axis!r}")
    i, j = (k for k in range(3) if k != drop)
    return i, j


def _sequence_groups(names: Sequence[str]) -> list[list[str]]:
    """Sorted names split where the parent folder changes, so separate sequences are not joined."""
    groups: dict[str, list[str]] = {}
    for name in sorted(names):
        groups.setdefault(name.rsplit("/", 1)[0] if "/" in name else "", []).append(name)
    return list(groups.values())


def view_arrows(poses: Sequence[Pose], i: int, j: int, length: float) -> tuple[np.ndarray, np.ndarray]:
    """Where cameras look, seen from above: ``(N, 2)`` centres and ``(N, 2)`` arrows of the optical axis
    (the camera's +z in the world, ``R[2]``) projected on the axes ``(i, j)``, scaled to ``length``
    (shorter when the axis tilts out of the plane)."""
    if not len(poses):
        return np.zeros((0, 2)), np.zeros((0, 2))
    centers = np.array([p.center for p in poses])[:, [i, j]]
    axes = np.array([p.R[2] for p in poses])[:, [i, j]]
    return centers, axes * length


def plot_trajectories_topview(
    truth: Mapping[str, Pose],
    estimates: Mapping[str, Pose],
    database: Mapping[str, Pose] | None,
    out_path: str | Path,
    title: str,
    up_axis: str = "auto",
) -> Path:
    """Top view of the query trajectory, the estimates and the database cameras.

    The ground plane is chosen from the ground-truth and database centres only (a wild estimate
    must not tilt the view). Ground-truth centres are joined per sequence (names sorted, split by
    parent folder); each estimate is joined to its ground truth by a thin error segment; queries
    without an estimate are marked with a cross. Short arrows show where every camera looks.

    Args:
        truth: ``{name: Pose}`` ground-truth query poses.
        estimates: ``{name: Pose}`` estimated query poses (names absent from ``truth`` are skipped).
        database: optional ``{name: Pose}`` database (mapping) poses, drawn in light grey.
        out_path: PNG destination.
        title: figure title.
        up_axis: see :func:`topview_axes`.

    Returns:
        ``out_path`` as a :class:`~pathlib.Path`.
    """
    gt_c = {name: pose.center for name, pose in truth.items()}
    db_c = np.array([p.center for p in (database or {}).values()]).reshape(-1, 3)
    i, j = topview_axes(np.concatenate([np.array(list(gt_c.values())).reshape(-1, 3), db_c]), up_axis)

    fig = _new_figure(8, 7)
    ax = fig.subplots()
    if len(db_c):
        ax.scatter(db_c[:, i], db_c[:, j], s=6, c="0.8", label=f"database ({len(db_c)})", zorder=1)
    for k, group in enumerate(_sequence_groups(list(gt_c))):
        c = np.array([gt_c[n] for n in group])
        ax.plot(c[:, i], c[:, j], "-", color="tab:blue", lw=1.0, alpha=0.7, zorder=2)
        ax.scatter(c[:, i], c[:, j], s=10, color="tab:blue", zorder=3,
                   label=f"ground truth ({len(gt_c)})" if k == 0 else None)  # fmt: skip

    found = [n for n in sorted(gt_c) if n in estimates]
    missing = [n for n in sorted(gt_c) if n not in estimates]
    # viewing directions: database (grey), ground truth (blue) and estimates (orange)
    all_c = np.concatenate([np.array(list(gt_c.values())).reshape(-1, 3), db_c])[:, [i, j]]
    length = 0.04 * float(np.max(np.ptp(all_c, axis=0))) if len(all_c) > 1 else 0.1
    for poses, color in (((database or {}).values(), "0.6"), (truth.values(), "tab:blue"),
                         ([estimates[n] for n in found], "tab:orange")):
        xy, uv = view_arrows(list(poses), i, j, max(length, 1e-3))
        if len(xy):
            ax.quiver(xy[:, 0], xy[:, 1], uv[:, 0], uv[:, 1], color=color, angles="xy", scale_units="xy",
                      scale=1.0, width=0.002, zorder=4)
    if found:
        est = np.array([estimates[n].center for n in found])
        gt = np.array([gt_c[n] for n in found])
        segments = np.stack([gt[:, [i, j]], est[:, [i, j]]], axis=1)
        ax.add_collection(LineCollection(segments, colors="tab:orange", linewidths=0.6, zorder=4))
        ax.scatter(est[:, i], est[:, j], s=10, color="tab:orange", zorder=5,
                   label=f"estimates ({len(found)})")  # fmt: skip
    if missing:
        m = np.array([gt_c[n] for n in missing])
        ax.scatter(m[:, i], m[:, j], s=40, marker="x", color="tab:red", zorder=6,
                   label=f"not localized ({len(missing)})")  # fmt: skip

    ax.set_aspect("equal", adjustable="datalim")
    ax.set_xlabel(f"{_AXES[i]} [m]")
    ax.set_ylabel(f"{_AXES[j]} [m]")
    ax.set_title(title)
    ax.grid(True, lw=0.3, alpha=0.5)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(loc="best", fontsize="small")
    return save_figure(fig, out_path)


# --- matches ----------------------------------------------------------------------------------------
def plot_matches(
    image0: ImageLike,
    image1: ImageLike,
    keypoints0: np.ndarray,
    keypoints1: np.ndarray,
    inliers: np.ndarray | None,
    out_path: str | Path,
    title: str,
    max_lines: int = 200,
    seed: int = 0,
) -> Path:
    """Two images side by side with lines between matched points.

    Args:
        image0: first image (array ``(H, W[, 3|4])`` or a file path).
        image1: second image.
        keypoints0: ``(N, 2)`` pixel coordinates ``(x, y)`` in ``image0`` of the matches.
        keypoints1: ``(N, 2)`` corresponding coordinates in ``image1``.
        inliers: ``(N,)`` boolean mask (inliers green, outliers red), or ``None`` when unverified
            (all lines yellow).
        out_path: PNG destination.
        title: figure title (the counts are appended).
        max_lines: at most this many lines are drawn, a random subset (fixed ``seed``) keeping
            the inlier ratio.
        seed: seed of the subsampling.

    Returns:
        ``out_path`` as a :class:`~pathlib.Path`.
    """
    img0, img1 = _as_image(image0), _as_image(image1)
    k0 = np.asarray(keypoints0, dtype=np.float64).reshape(-1, 2)
    k1 = np.asarray(keypoints1, dtype=np.float64).reshape(-1, 2)
    if len(k0) != len(k1):
        raise ValueError(f"keypoints0 and keypoints1 must pair up, got {len(k0)} and {len(k1)}")
    mask = None if inliers is None else np.asarray(inliers, dtype=bool).reshape(-1)
    if mask is not None and len(mask) != len(k0):
        raise ValueError(f"inliers mask has {len(mask)} entries for {len(k0)} matches")

    gap = max(10, img0.shape[1] // 50)
    h = max(img0.shape[0], img1.shape[0])
    canvas = np.full((h, img0.shape[1] + gap + img1.shape[1], 3), 255, dtype=np.uint8)
    canvas[: img0.shape[0], : img0.shape[1]] = img0
    offset = img0.shape[1] + gap
    canvas[: img1.shape[0], offset:] = img1

    n = len(k0)
    shown = np.arange(n)
    if n > max_lines:
        shown = np.sort(np.random.default_rng(seed).choice(n, size=max_lines, replace=False))
    seg = np.stack([k0[shown], k1[shown] + [offset, 0]], axis=1)

    width = 12.0
    fig = _new_figure(width, width * h / canvas.shape[1] + 0.6)
    ax = fig.subplots()
    ax.imshow(canvas)
    if mask is None:
        colors = [_UNVERIFIED] * len(shown)
        summary = f"{n} matches"
    else:
        colors = [_INLIER if m else _OUTLIER for m in mask[shown]]
        summary = f"{int(mask.sum())}/{n} inliers"
        order = np.argsort(mask[shown], kind="stable")  # outliers first, inliers drawn on top
        seg, colors = seg[order], [colors[o] for o in order]
    if len(seg):
        ax.add_collection(LineCollection(seg, colors=colors, linewidths=0.8, alpha=0.8))
        ax.scatter(seg[:, :, 0].ravel(), seg[:, :, 1].ravel(), s=3, c=np.repeat(colors, 2), zorder=3)
    if len(shown) < n:
        summary += f", {len(shown)} drawn"
    ax.set_title(f"{title} ({summary})")
    ax.set_xlim(0, canvas.shape[1])
    ax.set_ylim(h, 0)
    ax.axis("off")
    return save_figure(fig, out_path)


# --- retrieval --------------------------------------------------------------------------------------
def plot_retrieval(
    query_image: ImageLike,
    db_images: Sequence[ImageLike],
    db_titles: Sequence[str],
    out_path: str | Path,
    title: str,
    correct: Sequence[bool] | None = None,
) -> Path:
    """The query and its retrieved database images in one row (ranked left to right).

    Args:
        query_image: the query (array or file path), drawn first with a blue frame.
        db_images: retrieved images, best first.
        db_titles: one caption per retrieved image (name, score, ...).
        out_path: PNG destination.
        title: figure title.
        correct: optional flags per retrieved image: frames in green (true positive) or red.

    Returns:
        ``out_path`` as a :class:`~pathlib.Path`.
    """
    if len(db_images) != len(db_titles):
        raise ValueError(f"{len(db_images)} database images but {len(db_titles)} titles")
    if correct is not None and len(correct) != len(db_images):
        raise ValueError(f"{len(db_images)} database images but {len(correct)} correctness flags")
    images = [_as_image(query_image), *(_as_image(im) for im in db_images)]
    captions = ["query", *db_titles]
    frames = ["tab:blue", *((_INLIER if c else _OUTLIER) for c in correct)] if correct else None

    fig = _new_figure(2.6 * len(images), 2.9)
    axes = np.atleast_1d(fig.subplots(1, len(images)))
    for k, (ax, im, cap) in enumerate(zip(axes, images, captions, strict=True)):
        ax.imshow(im)
        ax.set_title(cap, fontsize="small")
        ax.set_xticks([])
        ax.set_yticks([])
        color = frames[k] if frames else ("tab:blue" if k == 0 else None)
        if color:
            for spine in ax.spines.values():
                spine.set_edgecolor(color)
                spine.set_linewidth(3)
    fig.suptitle(title)
    return save_figure(fig, out_path)
