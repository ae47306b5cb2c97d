"""Retrieval stage: query images -> ranked database images of a map (``visloc retrieve``).

Writes hloc's pairs file (``query db`` per line, best first for each query) and a
``<pairs>.scores.json`` sidecar with the similarity of each pair. The pairs file is what the
matching stage (:mod:`.match`) and ``visloc localize --pairs`` read, and what hloc's
``match_features`` reads. A retrieval-only map (built from images without poses) can be searched.

Query boxes (``--boxes FILE``, lines ``name x0 y0 x1 y1`` in pixels of the query image; :func:`read_boxes`)
select the object of interest of a query for the ``cnn`` global descriptor (Publication III's query
representations, :mod:`visloc.retrieval.cnn`); other descriptors describe whole images and refuse boxes.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from ..datasets.base import Frame, FrameSet, Skipped
from ..errors import ConfigError, InputError
from ..features import LocalFeatures
from ..io.images import read_image
from ..io.pairs import write_pairs
from ..retrieval.expansion import aqe
from ..retrieval.pairs import pairs_from_retrieval
from .map import Map, index_vectors
from .queries import query_frames, split_unwritable_names

logger = logging.getLogger(__name__)

#: A query box ``(x0, y0, x1, y1)`` in pixels of the query image.
Box = tuple[float, float, float, float]


@dataclass(frozen=True)
class RetrievalConfig:
    """Attributes:
    num_retrieved: database images kept per query.
    rerank: maps whose global descriptor carries feature maps (a correlation-head relpose model): retrieve
        this many images, re-rank them by the mutual nearest neighbours between the query's and each image's
        stored feature maps (a dense check of the shortlist, as the thesis re-ranks retrieval with dense
        matching) and keep the best ``num_retrieved``; 0 keeps the global-descriptor ranking. Other
        descriptors always keep the global ranking.
    exclude_self: drop database images with the query's own name (searching a map with its own images).
    query_expansion: average query expansion (:func:`~visloc.retrieval.expansion.aqe`): the query descriptor
        is replaced by the mean of itself and its top ``query_expansion`` database vectors (as indexed), and
        the search repeated (0: off).
    qe_alpha: ``0`` for AQE, ``> 0`` for alpha-QE (neighbour weight ``similarity ** alpha``).
    """

    num_retrieved: int = 5
    rerank: int = 30
    exclude_self: bool = False
    query_expansion: int = 0
    qe_alpha: float = 0.0

    def __post_init__(self) -> None:
        if self.num_retrieved < 1:
            raise ConfigError(f"num_retrieved must be at least 1, got {self.num_retrieved}")
        if self.rerank < 0:
            raise ConfigError(f"rerank must be >= 0, got {self.rerank}")
        if self.query_expansion < 0 or self.qe_alpha < 0:
            raise ConfigError(f"query_expansion and qe_alpha must be >= 0, got {self.query_expansion}, {self.qe_alpha}")


class Retriever:
    """Global-descriptor search of one map (load once, call per query)."""

    def __init__(self, map_: Map, config: RetrievalConfig = RetrievalConfig()) -> None:
        self.map = map_
        self.config = config
        self.descriptor = map_.descriptor
        self._rows: dict[str, int] | None = None

    @property
    def needs_local_features(self) -> bool:
        return bool(getattr(self.descriptor, "needs_local_features", True))

    @property
    def takes_boxes(self) -> bool:
        """Whether the map's global descriptor describes a query's box (``describe_query``: ``cnn``)."""
        return callable(getattr(self.descriptor, "describe_query", None))

    def describe(self, image: np.ndarray, features: LocalFeatures | None = None,
                 box: Box | None = None) -> np.ndarray:
        """The raw ``(D,)`` global descriptor of an ``(H, W, 3)`` uint8 query image.

        Args:
            features: its local features, needed when :attr:`needs_local_features`.
            box: ``(x0, y0, x1, y1)`` in pixels of the image: the object of interest (descriptors with
                :attr:`takes_boxes` only: ``cnn``).

        Raises:
            ConfigError: a box with a descriptor that does not take boxes.
            ValueError: a malformed box or one outside the image.
        """
        if self.takes_boxes:
            return self.descriptor.describe_query(image, box)
        if box is not None:
            raise ConfigError(
                f"query boxes need the cnn global descriptor; the map {self.map.root} uses "
                f"{self.map.config.global_descriptor!r}, which describes whole images (rebuild the map with "
                "--global-descriptor cnn, or leave out the boxes)")
        if features is None and self.needs_local_features:
            features = self.map.extractor(image)
        return self.descriptor(image, features)

    def rows_of(self, names: Iterable[str]) -> np.ndarray:
        """The index rows of database ``names`` (names not in the map are left out), sorted."""
        if self._rows is None:
            self._rows = {n: i for i, n in enumerate(self.map.index.names)}
        return np.array(sorted({self._rows[n] for n in names if n in self._rows}), dtype=np.int64)

    def __call__(self, descriptor: np.ndarray, name: str | None = None,
                 within: Collection[str] | None = None) -> tuple[list[str], list[float]]:
        """Ranked database names and their scores for one raw ``(D,)`` query descriptor.

        Args:
            within: search only these database images (a position prior,
                :func:`~visloc.localization.prior.names_within_radius`); ``None``: all of them. The
                neighbours of query expansion come from them too; empty: nothing is retrieved.
        """
        cfg = self.config
        dense = bool(getattr(self.descriptor, "has_feature_maps", False)) and cfg.rerank > 0
        k = max(cfg.num_retrieved, cfg.rerank if dense else 0)
        rows = None if within is None else self.rows_of(within)
        if rows is not None and not len(rows):
            return [], []
        query = index_vectors(self.descriptor, descriptor[None])
        if cfg.query_expansion:
            index = self.map.index
            _, idx = index.search(query, cfg.query_expansion + int(cfg.exclude_self), rows=rows)
            rows_qe = [int(j) for j in idx[0] if j >= 0 and not (cfg.exclude_self and index.names[j] == name)]
            rows_qe = rows_qe[: cfg.query_expansion]
            if rows_qe:
                query = aqe(query, self.map.index.vectors(rows_qe), np.arange(len(rows_qe))[None], len(rows_qe),
                            cfg.qe_alpha)
        if rows is None:
            ranked = [(db, s) for _, db, s in pairs_from_retrieval(
                [name or ""], query, self.map.index, k, cfg.exclude_self)]
        else:
            scores, idx = self.map.index.search(query, k + int(cfg.exclude_self), rows=rows)
            ranked = [(self.map.index.names[j], float(s)) for j, s in zip(idx[0], scores[0], strict=True) if j >= 0]
            ranked = [(db, s) for db, s in ranked if not (cfg.exclude_self and db == name)][:k]
        if dense and ranked:
            names = [db for db, _ in ranked]
            counts = self.descriptor.rerank_scores(np.stack([self.map.global_descriptor(db) for db in names]),
                                                   descriptor)
            order = np.argsort(-counts, kind="stable")
            ranked = [(names[i], float(counts[i])) for i in order]
        ranked = ranked[: cfg.num_retrieved]
        return [db for db, _ in ranked], [s for _, s in ranked]


def read_boxes(path: str | Path) -> dict[str, Box]:
    """Query boxes from a text file: one ``name x0 y0 x1 y1`` per line (pixels of the query image,
    ``x1 > x0``, ``y1 > y0``); blank lines and lines starting with ``#`` are skipped.

    Raises:
        InputError: the file is missing or unreadable, or a line is malformed or repeats a name (the
            message names the file and the line).
    """
    path = Path(path)
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as e:
        raise InputError(path, f"cannot read the boxes file ({e})") from None
    boxes: dict[str, Box] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        parts = line.split()
        if len(parts) != 5:
            raise InputError(path, f"line {number}: expected 'name x0 y0 x1 y1', got {line.strip()!r}")
        try:
            x0, y0, x1, y1 = (float(v) for v in parts[1:])
        except ValueError:
            raise InputError(path, f"line {number}: box coordinates must be numbers, got {line.strip()!r}") from None
        if not all(math.isfinite(v) for v in (x0, y0, x1, y1)) or x1 <= x0 or y1 <= y0:
            raise InputError(path, f"line {number}: a box needs finite x0 < x1 and y0 < y1, got {line.strip()!r}")
        if parts[0] in boxes:
            raise InputError(path, f"line {number}: a second box for {parts[0]!r}")
        boxes[parts[0]] = (x0, y0, x1, y1)
    return boxes


@dataclass(frozen=True)
class RetrieveSummary:
    pairs_path: Path
    num_queries: int
    num_pairs: int
    skipped: list[Skipped]


def retrieve(
    map_dir: str | Path | Map,
    queries: str | Path | FrameSet | Iterable[Frame],
    out: str | Path,
    config: RetrievalConfig = RetrievalConfig(),
    split: str | None = None,
    boxes: str | Path | Mapping[str, Box] | None = None,
    **dataset_options: Any,
) -> RetrieveSummary:
    """Retrieve the ``config.num_retrieved`` best database images of every query and write them as a ranked
    hloc pairs file ``out`` (with ``out.scores.json``). Unreadable images are skipped and listed.

    Args:
        map_dir: a map folder (or an opened :class:`Map`); a retrieval-only map works.
        queries: a data set folder (its ``split`` frames), a :class:`FrameSet`, or frames.
        out: the pairs file to write.
        boxes: query boxes, a file (:func:`read_boxes`) or ``{name: (x0, y0, x1, y1)}``; queries without
            one are described whole. Only a map of the ``cnn`` global descriptor takes boxes.

    Raises:
        ConfigError: boxes with a map whose global descriptor does not take them.
        InputError: a bad boxes file, or a box outside its query image.
    """
    the_map = map_dir if isinstance(map_dir, Map) else Map(map_dir)
    boxes_path = Path(boxes) if isinstance(boxes, (str, Path)) else Path("<boxes>")
    query_boxes = read_boxes(boxes) if isinstance(boxes, (str, Path)) else dict(boxes or {})
    retriever = Retriever(the_map, config)
    if query_boxes and not retriever.takes_boxes:
        raise ConfigError(
            f"{boxes_path}: query boxes need the cnn global descriptor; the map {the_map.root} uses "
            f"{the_map.config.global_descriptor!r}, which describes whole images")
    frames, skipped = query_frames(queries, split, dataset_options, the_map)
    frames, unnamed = split_unwritable_names(frames)
    skipped += unnamed
    unused = sorted(set(query_boxes) - {f.name for f in frames})
    if unused:
        logger.warning("%d box(es) of %s name no query image, e.g. %s", len(unused), boxes_path, unused[0])
    pairs: list[tuple[str, str]] = []
    scores: list[float] = []
    for frame in tqdm(frames, desc="retrieve", unit="img"):
        try:
            image = read_image(frame.image_path)
        except InputError as e:
            skipped.append(Skipped(frame.name, frame.image_path, e.problem))
            continue
        box = query_boxes.get(frame.name)
        try:
            descriptor = retriever.describe(image, box=box)
        except ValueError as e:
            if box is None:
                raise
            raise InputError(boxes_path, f"box of {frame.name}: {e}") from None
        names, sims = retriever(descriptor, frame.name)
        pairs += [(frame.name, db) for db in names]
        scores += sims
    write_pairs(out, pairs, scores)
    for s in skipped:
        logger.warning("skipped %s", s)
    logger.info("%d pairs of %d queries -> %s", len(pairs), len(frames) - len(skipped), out)
    return RetrieveSummary(Path(out), len({q for q, _ in pairs}), len(pairs), skipped)
