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
    less than ``max_angle_deg`` (hloc's ``pairs_from_poses``). Pairs are unique and unordered."""
    names = list(poses)
    if len(names) < 2:
        return []
    C = np.stack([poses[n].center for n in names])
    V = np.stack([poses[n].R[2] for n in names])  # optical axis in world coordinates
    dist = np.linalg.norm(C[:, None] - C[None], axis=-1)
    cos = np.clip(V @ V.T, -1.0, 1.0)
    bad = np.degrees(np.arccos(cos)) > max_angle_deg
    if max_distance is not None:
        bad |= dist > max_distance
    dist = np.where(bad, np.inf, dist)
    np.fill_diagonal(dist, np.inf)
    pairs: set[tuple[str, str]] = set()
    for i in range(len(names)):
        for j in np.argsort(dist[i])[:num_neighbors]:
            if np.isfinite(dist[i, j]):
                a, b = sorted((names[i], names[int(j)]))
                pairs.add((a, b))
    return sorted(pairs)
