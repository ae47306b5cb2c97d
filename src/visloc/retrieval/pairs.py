"""Image pairs for matching: from retrieval (query -> database) or from known poses (database <-> database)."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from ..geometry.pose import Pose
from .index import GlobalIndex


def pairs_from_retrieval(
    query_names: list[str], query_descriptors: np.ndarray, index: GlobalIndex, k: int,
    exclude_self: bool = False,
) -> list[tuple[str, str, float]]:
    """Top-``k`` database images of every query as ranked ``(query, db, score)`` triples."""
    scores, idx = index.search(query_descriptors, k + int(exclude_self))
    out = []
    for qi, q in enumerate(query_names):
        kept = [(index.names[j], float(s)) for j, s in zip(idx[qi], scores[qi], strict=True) if j >= 0]
        if exclude_self:
            kept = [(d, s) for d, s in kept if d != q]
        out.extend((q, d, s) for d, s in kept[:k])
    return out


def pairs_from_poses(
    poses: Mapping[str, Pose], num_neighbors: int, max_angle_deg: float = 60.0, max_distance: float | None = None
) -> list[tuple[str, str]]:
    """Each image with its nearest other images by camera centre whose viewing directions differ by
    less than ``max_angle_deg`` (hloc's ``pairs_from_poses``). Pairs are unique and unordered.

    The nearest centres come from a k-d tree (:class:`scipy.spatial.cKDTree`), ``4 * num_neighbors`` at a time
    and more for an image whose candidates the angle filter removed: memory and time grow as ``N log N``
    instead of the ``N x N`` distance matrix (80 GB at 100,000 images)."""
    from scipy.spatial import cKDTree

    names = list(poses)
    n = len(names)
    if n < 2 or num_neighbors < 1:
        return []
    centres = np.stack([poses[name].center for name in names])
    axes = np.stack([poses[name].R[2] for name in names])  # optical axis in world coordinates
    tree = cKDTree(centres)
    chosen: list[np.ndarray | None] = [None] * n
    todo = np.arange(n)
    k = min(n, 4 * num_neighbors + 1)
    while todo.size:
        dist, idx = tree.query(centres[todo], k=k)
        dist, idx = dist.reshape(len(todo), k), idx.reshape(len(todo), k)
        again = []
        for row, i in enumerate(todo):
            other = idx[row] != i
            j, d = idx[row][other], dist[row][other]
            cos = np.clip(axes[j] @ axes[i], -1.0, 1.0)
            good = np.degrees(np.arccos(cos)) <= max_angle_deg
            if max_distance is not None:
                good &= d <= max_distance
            found = j[good][:num_neighbors]
            beyond = max_distance is not None and d.size > 0 and d[-1] > max_distance
            if len(found) < num_neighbors and k < n and not beyond:
                again.append(i)  # the filters removed too many of these candidates: look further
            else:
                chosen[i] = found
        todo = np.asarray(again, dtype=np.int64)
        k = min(n, 2 * k)
    pairs = {tuple(sorted((names[i], names[int(j)]))) for i, found in enumerate(chosen) for j in found}
    return sorted(pairs)
