"""Matching stage: pairs of images -> hloc ``features.h5`` + ``matches.h5`` (``visloc match``).

Database images take their local features from the map; every other image named in the pairs file (a
query) is read and described with the map's extractor, and its features are written to ``features.h5``
(hloc layout: ``keypoints (N, 2)``, ``descriptors (D, N)``, ``scores``, ``image_size``). Each pair is
written to ``matches.h5`` under hloc's key ``name0/name1`` (``/`` inside names replaced by ``-``) with
``matches0`` ``(N0,)`` (keypoint of name1 for each keypoint of name0, -1 when unmatched) and
``matching_scores0`` ``(N0,)``, so hloc's ``get_matches`` reads it. Both files are written through
sharded, atomic writers: a rerun skips the images and pairs already stored.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from ..datasets.base import Frame, FrameSet, Skipped
from ..errors import ConfigError, InputError
from ..features import LocalFeatures
from ..io.h5 import H5Reader, ShardedH5Writer, match_arrays, names_to_pair
from ..io.images import read_image
from ..io.pairs import read_pairs
from ..matching import matchers
from .dense_match import DenseMatchConfig, match_pairs_dense
from .map import Map, read_local_features
from .queries import query_frames

logger = logging.getLogger(__name__)

#: ``MatchConfig.matcher`` of the dense network.
DENSE = "dense"


@dataclass(frozen=True)
class MatchConfig:
    """Attributes:
    matcher / matcher_options: descriptor matcher plug-in (``visloc models`` lists them) and its options, or
        ``"dense"``: the dense network anchored on the map's keypoints
        (:mod:`visloc.localization.dense_match`).
    dense: the dense network's settings (``matcher="dense"``; ``None``: the shipped model's defaults).
    """

    matcher: str = "nn"
    matcher_options: dict[str, Any] = field(default_factory=dict)
    dense: DenseMatchConfig | None = None

    @property
    def is_dense(self) -> bool:
        return self.matcher == DENSE

    def dense_config(self) -> DenseMatchConfig:
        return self.dense or DenseMatchConfig()


def feature_arrays(features: LocalFeatures) -> dict[str, np.ndarray]:
    """hloc's feature datasets of one image (descriptors stored ``(D, N)`` float16)."""
    return {"keypoints": features.keypoints, "descriptors": features.descriptors.T.astype(np.float16),
            "scores": features.scores, "image_size": np.array(features.image_size)}


class PairMatcher:
    """Match a query's local features to a map image's (load once, call per pair)."""

    def __init__(self, map_: Map, config: MatchConfig = MatchConfig()) -> None:
        self.map = map_
        if config.is_dense:
            raise ConfigError("the dense matcher is not a descriptor matcher: use DenseQueryMatcher")
        self.matcher = matchers.create(config.matcher, **config.matcher_options)

    def __call__(self, features: LocalFeatures, db: str, points_only: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """``(M, 2)`` matches (query keypoint, database keypoint) and their ``(M,)`` scores.

        With ``points_only`` the database side is restricted to keypoints with a 3D point (the ratio test
        then compares only candidates PnP can use); indices still refer to all database keypoints.
        """
        return match_features(self.matcher, features, self.map.local_features(db),
                              self._with_points(db) if points_only else None)

    def _with_points(self, db: str) -> np.ndarray:
        pts = self.map.points3D(db)
        if pts is None:
            return np.zeros(0, int)
        return np.flatnonzero(np.all(np.isfinite(pts), axis=1))


def match_features(
    matcher: Any, features0: LocalFeatures, features1: LocalFeatures, subset1: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Match two images' descriptors; ``subset1`` restricts image 1 to these keypoints.

    Returns:
        ``(M, 2)`` int (keypoint of image 0, keypoint of image 1) and ``(M,)`` float32 scores.
    """
    if subset1 is None:
        m = matcher(features0.descriptors, features1.descriptors)
        pairs = m.pairs()
        return pairs, m.scores0[pairs[:, 0]]
    if len(subset1) < 2:
        return np.zeros((0, 2), np.int64), np.zeros(0, np.float32)
    m = matcher(features0.descriptors, features1.descriptors[subset1])
    pairs = m.pairs()
    scores = m.scores0[pairs[:, 0]]
    pairs[:, 1] = subset1[pairs[:, 1]]
    return pairs, scores


def match_images(
    image0: np.ndarray, image1: np.ndarray, extractor: Any, matcher: Any
) -> tuple[LocalFeatures, LocalFeatures, np.ndarray, np.ndarray]:
    """Features of two ``(H, W, 3)`` uint8 images and their matches ``(M, 2)`` with scores ``(M,)``."""
    f0, f1 = extractor(image0), extractor(image1)
    pairs, scores = match_features(matcher, f0, f1)
    return f0, f1, pairs, scores


@dataclass(frozen=True)
class MatchSummary:
    features_path: Path
    matches_path: Path
    num_pairs: int
    num_matched: int
    skipped: list[Skipped]


def match_pairs(
    map_dir: str | Path | Map,
    pairs: str | Path,
    queries: str | Path | FrameSet | Iterable[Frame] | None,
    features: str | Path,
    matches: str | Path,
    config: MatchConfig = MatchConfig(),
    split: str | None = None,
    flush_every: int = 64,
    **dataset_options: Any,
) -> MatchSummary:
    """Match every pair of a pairs file (see the module docstring for the files).

    Args:
        map_dir: the map whose database images the pairs name.
        pairs: an hloc pairs file (``name0 name1`` per line).
        queries: where images that are not in the map are read from (a data set folder, a frame set or
            frames); ``None`` when every name is a map image or already in ``features``.
        features: ``features.h5`` of the non-map images (read when it holds the image, else extended).
        matches: ``matches.h5`` to write (pairs already in it are skipped).

    Returns:
        A summary; pairs with an image that cannot be read or found are skipped and listed.
    """
    the_map = map_dir if isinstance(map_dir, Map) else Map(map_dir)
    if config.is_dense:
        total, matched, skipped = match_pairs_dense(the_map, pairs, queries, features, matches,
                                                    config.dense_config(), split, **dataset_options)
        for s in skipped:
            logger.warning("skipped %s", s)
        return MatchSummary(Path(features), Path(matches), total, matched, skipped)
    pair_list = read_pairs(pairs)
    in_map = set(the_map.names)
    frames: dict[str, Frame] = {}
    skipped: list[Skipped] = []
    if queries is not None:
        found, skipped = query_frames(queries, split, dataset_options, the_map)
        frames = {f.name: f for f in found}
    feature_writer = ShardedH5Writer(features, flush_every=flush_every)
    match_writer = ShardedH5Writer(matches, flush_every=flush_every)
    matcher = PairMatcher(the_map, config)
    done_pairs = match_writer.done()
    todo = [(a, b) for a, b in pair_list if names_to_pair(a, b) not in done_pairs]
    cache: dict[str, LocalFeatures | None] = {}
    stored = feature_writer.done()
    reader = H5Reader(features) if Path(features).is_file() else None

    def local(name: str) -> LocalFeatures | None:
        if name in in_map:
            return the_map.local_features(name)
        if name not in cache:
            if reader is not None and name in stored and name in reader:
                cache[name] = read_local_features(reader, name)
            elif name in frames:
                try:
                    cache[name] = the_map.extractor(read_image(frames[name].image_path))
                    feature_writer.add(name, feature_arrays(cache[name]))
                except InputError as e:
                    skipped.append(Skipped(name, frames[name].image_path, e.problem))
                    cache[name] = None
            else:
                skipped.append(Skipped(name, Path(name), f"not in the map, in {features} or among the queries"))
                cache[name] = None
        return cache[name]

    matched = 0
    try:
        for a, b in tqdm(todo, desc="match", unit="pair"):
            fa, fb = local(a), local(b)
            if fa is None or fb is None:
                continue
            m, s = match_features(matcher.matcher, fa, fb)
            match_writer.add(names_to_pair(a, b), match_arrays(m, s, len(fa)))
            matched += 1
    finally:
        if reader is not None:
            reader.close()
        feature_writer.flush()
        match_writer.flush()
    feature_writer.finalize(file_attrs={"extractor": the_map.config.extractor})
    match_writer.finalize(file_attrs={"matcher": config.matcher})
    for s in skipped:
        logger.warning("skipped %s", s)
    logger.info("matched %d of %d pairs (%d already done) -> %s", matched, len(pair_list),
                len(pair_list) - len(todo), matches)
    return MatchSummary(Path(features), Path(matches), len(pair_list), matched, skipped)
