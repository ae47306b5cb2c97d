"""Dense matching against a map: the trained dense network (:mod:`visloc.matching.dense`) anchored on the map's
keypoints, for ``visloc localize --matcher dense`` and ``visloc match PAIRS --matcher dense``.

A database image has keypoints (and 3D points) in the map; the query has none of its own. For each retrieved
database image the network maps **every database pixel to its query pixel** (database = target, query =
source); the map is read bilinearly at the database keypoints (only those with a 3D point when the estimator
needs points), and each keypoint whose query position lies inside the query image, whose confidence reaches
``min_confidence`` and (with ``cyclic_tolerance_px``) whose forward-backward round trip closes becomes a
match. The query's keypoints are these query positions, concatenated over its database images (hloc's dense
matchers likewise invent keypoints per image), so the query's ``features.h5`` entry and its ``matches0``
arrays are consistent with each other; the query keypoints have no descriptors (``(D=0, N)``).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from ..datasets.base import Frame, FrameSet, Skipped
from ..errors import ConfigError, InputError
from ..features import LocalFeatures
from ..geometry.flow import cyclic_consistency, in_bounds, pixel_to_normalized
from ..io.h5 import ShardedH5Writer, match_arrays, names_to_pair
from ..io.images import read_image
from ..io.pairs import read_pairs
from ..matching.dense_baselines import DenseCorrespondence
from .map import Map
from .queries import query_frames

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class DenseMatchConfig:
    """Attributes:
    model: ``model.pt`` of ``visloc train dense`` (default: the shipped ``dense_tiny_world.pt``).
    image_size: longer side the network sees; ``0``: its training size.
    min_confidence: keep matches whose matchability is at least this.
    cyclic_tolerance_px: keep only matches whose round trip (database -> query -> database) returns within
        this many database pixels; ``None``: no check (one network pass per pair instead of two).
    device: torch device.
    """

    model: str | None = None
    image_size: int | None = 0
    min_confidence: float = 0.0
    cyclic_tolerance_px: float | None = None
    device: str = "cpu"

    def __post_init__(self) -> None:
        if not 0.0 <= self.min_confidence <= 1.0:
            raise ConfigError(f"min_confidence must be in [0, 1], got {self.min_confidence}")
        if self.cyclic_tolerance_px is not None and self.cyclic_tolerance_px <= 0:
            raise ConfigError(f"cyclic_tolerance_px must be > 0, got {self.cyclic_tolerance_px}")

    def model_path(self) -> Path:
        from ..settings import shipped_model

        path = Path(self.model) if self.model else shipped_model("dense_tiny_world.pt")
        if not path.is_file():
            raise InputError(path, "dense model not found (train one with `visloc train dense`)")
        return path


def sample_at_keypoints(
    dense: DenseCorrespondence, keypoints: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """The map and the confidence of a dense answer read bilinearly at target keypoints.

    Args:
        dense: ``map (2, Ht, Wt)`` (target pixel -> source pixel) and optional ``confidence (1, Ht, Wt)``.
        keypoints: ``(N, 2)`` target pixels ``(x, y)`` (OpenCV convention, as :class:`LocalFeatures`).

    Returns:
        ``(N, 2)`` float32 source pixels and ``(N,)`` float32 confidences (1 without a confidence).
    """
    _, ht, wt = dense.map.shape
    kp = torch.as_tensor(np.asarray(keypoints, np.float32)).reshape(-1, 2)
    grid = pixel_to_normalized(kp.T.reshape(1, 2, 1, -1), (ht, wt)).permute(0, 2, 3, 1)
    xy = F.grid_sample(dense.map[None].float(), grid, mode="bilinear", padding_mode="border",
                       align_corners=False)[0, :, 0].T
    if dense.confidence is None:
        conf = torch.ones(len(kp))
    else:
        conf = F.grid_sample(dense.confidence[None].float(), grid, mode="bilinear", padding_mode="border",
                             align_corners=False)[0, 0, 0]
    return xy.numpy().astype(np.float32), conf.numpy().astype(np.float32)


def anchored_matches(
    matcher: Any,
    query: np.ndarray,
    database: np.ndarray,
    db_keypoints: np.ndarray,
    min_confidence: float = 0.0,
    cyclic_tolerance_px: float | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Query positions of database keypoints through a dense matcher.

    Args:
        matcher: ``matcher(source, target) -> DenseCorrespondence`` on ``(H, W, 3)`` uint8 images.
        query, database: the two images.
        db_keypoints: ``(N, 2)`` database keypoints to carry into the query.
        min_confidence, cyclic_tolerance_px: as :class:`DenseMatchConfig`.

    Returns:
        ``query_xy (M, 2)`` float32, ``db_index (M,)`` int64 (rows of ``db_keypoints``) and ``scores (M,)``.
    """
    dense = matcher(query, database)
    xy, conf = sample_at_keypoints(dense, db_keypoints)
    q_hw = tuple(query.shape[:2])
    keep = in_bounds(torch.from_numpy(xy).T.reshape(1, 2, 1, -1), q_hw)[0, 0, 0].numpy()
    keep &= conf >= min_confidence
    if cyclic_tolerance_px is not None and len(xy):
        backward = matcher(database, query)
        consistent = cyclic_consistency(dense.map[None], backward.map[None], cyclic_tolerance_px)[0, 0]
        _, ht, wt = dense.map.shape
        cols = np.clip(np.round(db_keypoints[:, 0]).astype(int), 0, wt - 1)
        rows = np.clip(np.round(db_keypoints[:, 1]).astype(int), 0, ht - 1)
        keep &= consistent.numpy()[rows, cols]
    index = np.flatnonzero(keep)
    return xy[index], index.astype(np.int64), conf[index]


class DenseQueryMatcher:
    """Match a query image to database images of a map with the dense network (load once, call per query)."""

    def __init__(self, map_: Map, config: DenseMatchConfig = DenseMatchConfig(), network: Any = None) -> None:
        """``network``: any ``matcher(source, target) -> DenseCorrespondence`` instead of ``config.model``."""
        from ..matching.dense import DenseMatcherSettings, DenseNetworkMatcher

        self.map = map_
        self.config = config
        self.network = network if network is not None else DenseNetworkMatcher(
            config.model_path(), DenseMatcherSettings(config.image_size, config.device))
        self._db_images: dict[str, np.ndarray] = {}

    def database_image(self, name: str) -> np.ndarray:
        if name not in self._db_images:
            if len(self._db_images) >= 64:
                self._db_images.pop(next(iter(self._db_images)))
            self._db_images[name] = read_image(self.map.image_paths[name])
        return self._db_images[name]

    def _anchors(self, db: str, points_only: bool) -> np.ndarray:
        kp = self.map.local_features(db).keypoints
        if not points_only:
            return np.arange(len(kp))
        pts = self.map.points3D(db)
        return np.zeros(0, np.int64) if pts is None else np.flatnonzero(np.all(np.isfinite(pts), axis=1))

    def __call__(
        self, image: np.ndarray, db_names: Sequence[str], points_only: bool = True
    ) -> tuple[LocalFeatures, dict[str, tuple[np.ndarray, np.ndarray]]]:
        """The query's invented keypoints and ``{db: ((M, 2) (query keypoint, db keypoint), (M,) scores)}``.

        Raises:
            InputError: a database image cannot be read.
        """
        keypoints: list[np.ndarray] = []
        scores: list[np.ndarray] = []
        matches: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        offset = 0
        for db in db_names:
            anchors = self._anchors(db, points_only)
            kp = self.map.local_features(db).keypoints[anchors]
            xy, rows, s = anchored_matches(self.network, image, self.database_image(db), kp,
                                           self.config.min_confidence, self.config.cyclic_tolerance_px)
            pairs = np.stack([offset + np.arange(len(rows)), anchors[rows]], 1).astype(np.int64)
            matches[db] = (pairs.reshape(-1, 2), s)
            keypoints.append(xy)
            scores.append(s)
            offset += len(rows)
        kp_all = np.concatenate(keypoints) if keypoints else np.zeros((0, 2), np.float32)
        sc_all = np.concatenate(scores) if scores else np.zeros(0, np.float32)
        features = LocalFeatures(kp_all.astype(np.float32), np.zeros((len(kp_all), 0), np.float32),
                                 sc_all.astype(np.float32), (int(image.shape[1]), int(image.shape[0])))
        return features, matches


def _dense_feature_arrays(features: LocalFeatures) -> dict[str, np.ndarray]:
    return {"keypoints": features.keypoints, "descriptors": np.zeros((0, len(features)), np.float16),
            "scores": features.scores, "image_size": np.array(features.image_size)}


def match_pairs_dense(
    the_map: Map,
    pairs: str | Path,
    queries: str | Path | FrameSet | Iterable[Frame] | None,
    features: str | Path,
    matches: str | Path,
    config: DenseMatchConfig,
    split: str | None = None,
    flush_every: int = 16,
    **dataset_options: Any,
) -> tuple[int, int, list[Skipped]]:
    """Every pair ``query database`` of a pairs file matched densely (see the module docstring).

    The first image of a pair is a query (read from ``queries``), the second a map image. A query is
    matched with all its database images at once and its keypoints and pairs are written together, so a
    rerun redoes exactly the queries with a missing pair (features are flushed before matches).

    Returns:
        ``(pairs in the file, pairs matched now, skipped items)``.
    """
    pair_list = read_pairs(pairs)
    in_map = set(the_map.names)
    skipped: list[Skipped] = []
    by_query: dict[str, list[str]] = {}
    for a, b in pair_list:
        if a in in_map or b not in in_map:
            skipped.append(Skipped(f"{a} {b}", Path(pairs), "dense matching needs a query (not a map image) "
                                   "first and a map image second"))
            continue
        by_query.setdefault(a, []).append(b)
    frames: dict[str, Frame] = {}
    if queries is not None:
        found, bad = query_frames(queries, split, dataset_options, the_map)
        frames = {f.name: f for f in found}
        skipped += bad
    big = 1 << 30  # flushed explicitly: features always before matches
    feature_writer = ShardedH5Writer(features, flush_every=big)
    match_writer = ShardedH5Writer(matches, flush_every=big)
    done = match_writer.done()
    todo = {q: dbs for q, dbs in by_query.items() if any(names_to_pair(q, b) not in done for b in dbs)}
    matcher = DenseQueryMatcher(the_map, config) if todo else None
    matched = 0
    try:
        for i, (q, dbs) in enumerate(tqdm(todo.items(), desc="dense match", unit="query")):
            if q not in frames:
                skipped.append(Skipped(q, Path(q), "not among the queries"))
                continue
            try:
                feats, pair_matches = matcher(read_image(frames[q].image_path), dbs, points_only=False)
            except InputError as e:
                skipped.append(Skipped(q, e.path, e.problem))
                continue
            feature_writer.add(q, _dense_feature_arrays(feats))
            for db, (m, s) in pair_matches.items():
                match_writer.add(names_to_pair(q, db), match_arrays(m, s, len(feats)))
                matched += 1
            if (i + 1) % flush_every == 0:
                feature_writer.flush()
                match_writer.flush()
    finally:
        feature_writer.flush()
        match_writer.flush()
    feature_writer.finalize(file_attrs={"extractor": "dense"})
    match_writer.finalize(file_attrs={"matcher": "dense"})
    return len(pair_list), matched, skipped


__all__ = [
    "DenseMatchConfig",
    "DenseQueryMatcher",
    "anchored_matches",
    "match_pairs_dense",
    "sample_at_keypoints",
]
