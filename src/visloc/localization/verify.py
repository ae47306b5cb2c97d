"""Verification stage: a ranked pairs file -> the same pairs re-ranked by geometric verification
(``visloc verify``; Publication IV).

For every query of the pairs file, its first ``shortlist`` database images (map images) are verified and the
list re-sorted (:func:`visloc.verification.rerank.rerank`). Two recipes (:data:`VERIFY_PRESETS`):

* ``classical`` (the default, the best measured in ``docs/results/verification.md``): the query's local
  features (the map's extractor) matched to each map image's by mutual nearest neighbours, a fundamental
  matrix by RANSAC, the list sorted by the inlier count ``|I|``;
* ``paper`` (Publication IV): the dense network's matches (:mod:`visloc.verification.dense`: lattice matches,
  RANSAC inliers ``I``, cyclically consistent inliers ``C``, ``S``), then the top ``second_stage`` re-sorted by
  ``S_F`` with ``S_L`` from the retrieval network's local features (the ``cnn`` descriptor's network, the
  shipped one by default) and ``G`` from the retrieval scores (the pairs file's ``.scores.json`` sidecar; 0
  similarity without one).

The pair matches are computed once (dense: every shortlisted pair's forward and backward maps in batches) and
stored in ``OUT.matches.h5`` (:mod:`visloc.verification.cache`, hloc pair keys), so that a rerun or another
re-ranking of the same pairs (``matches_cache=``) only repeats RANSAC and the scores.

Outputs: ``OUT`` (ranked pairs, the new order), ``OUT.scores.json`` (the final score per pair: ``S_F`` for the
second stage, then ``S`` / ``|I|``), ``OUT.verification.json`` (every candidate's ``|M|, |I|, |C|, S, S_L, G,
S_F`` and the config). Resumable: finished queries are checkpointed to ``OUT.partial.json``.
"""

from __future__ import annotations

import dataclasses
import logging
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from ..datasets.base import Frame, FrameSet, Skipped
from ..errors import ConfigError, InputError
from ..io.atomic import write_json
from ..io.images import read_image
from ..io.lock import run_lock
from ..io.pairs import read_pair_scores, read_ranked_pairs, scores_sidecar, write_pairs
from ..verification.cache import PairMatchCache
from ..verification.dense import DenseVerificationConfig, PairMatches, dense_matches_many, query_lattice
from ..verification.rerank import Candidate, RerankConfig, local_similarity, rerank
from ..verification.scores import verify_matches
from .map import Map
from .queries import query_frames

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class VerifyConfig:
    """The defaults are the ``classical`` preset (:data:`VERIFY_PRESETS`): the map's local features, RANSAC inlier
    count; Publication IV's dense ``S`` + ``S_F`` is the ``paper`` preset.

    Attributes:
    rerank: shortlist and stage lengths, first-stage score, fusion.
    dense: the lattice, cyclic tolerance and RANSAC model of the dense verification (``matches="sparse"``
        uses its RANSAC model and ``beta`` = the lattice size too).
    matches: ``sparse`` (default: the map's local features: the query's extracted
        with the map's extractor, mutual nearest neighbours, so every match is "consistent" and ``S`` reduces
        to ``exp(-beta / |I|)``; the classical re-ranking, with ``first_stage="inliers"``) or ``dense`` (the
        network's maps, Publication IV).
    model: the dense network (``None``: the shipped ``dense_tiny_world.pt``).
    image_size: longer side the dense network sees (0: its training size).
    retrieval_model: the retrieval network whose local features give ``S_L`` (``None``: the shipped one).
    """

    rerank: RerankConfig = RerankConfig()
    dense: DenseVerificationConfig = DenseVerificationConfig()
    matches: str = "sparse"
    model: str | None = None
    image_size: int = 0
    retrieval_model: str | None = None

    def __post_init__(self) -> None:
        if self.matches not in ("dense", "sparse"):
            raise ConfigError(f"matches must be dense or sparse, got {self.matches!r}")


#: Named verification recipes (``visloc verify --preset``, ``--verify-preset``). ``classical`` is the default (the
#: best measured: ``docs/results/verification.md``); ``paper`` is Publication IV (dense matches, ``S``, then ``S_F``
#: on the top 5); ``paper-printed`` is the same with equation 3.4 as printed.
VERIFY_PRESETS: dict[str, VerifyConfig] = {
    "classical": VerifyConfig(),
    "paper": VerifyConfig(rerank=RerankConfig(first_stage="S", second_stage=5), matches="dense"),
    "paper-printed": VerifyConfig(rerank=RerankConfig(first_stage="S", second_stage=5, fusion="paper"),
                                  matches="dense"),
}


def verify_preset(name: str, shortlist: int | None = None, **rerank: Any) -> VerifyConfig:
    """The preset ``name`` with its shortlist and any :class:`RerankConfig` field given (``None`` keeps the
    preset's).

    Raises:
        ConfigError: an unknown preset or a bad value.
    """
    if name not in VERIFY_PRESETS:
        raise ConfigError(f"unknown verification preset {name!r}; known: {', '.join(VERIFY_PRESETS)}")
    config = VERIFY_PRESETS[name]
    changes = {k: v for k, v in rerank.items() if v is not None}
    if shortlist is not None:
        changes["shortlist"] = shortlist
    return dataclasses.replace(config, rerank=dataclasses.replace(config.rerank, **changes))


@dataclass(frozen=True)
class VerifySummary:
    out: Path
    num_queries: int
    skipped: list[Skipped]


class PairVerifier:
    """Verify and re-rank one query's shortlist against a map (load once, call per query)."""

    def __init__(self, the_map: Map, config: VerifyConfig = VerifyConfig(), matcher: Any = None) -> None:
        """``matcher``: any ``matcher(source, target) -> DenseCorrespondence`` instead of ``config.model``."""
        from ..matching.dense import DenseMatcherSettings, DenseNetworkMatcher
        from ..retrieval.cnn import CNNDescriptor, CNNDescriptorConfig
        from .dense_match import DenseMatchConfig

        self.map = the_map
        self.config = config
        self.matcher = None
        self.nn = None
        if config.matches == "sparse":
            from ..matching import matchers

            self.nn = matchers.create("nn")
        else:
            self.matcher = matcher if matcher is not None else DenseNetworkMatcher(
                DenseMatchConfig(model=config.model).model_path(),
                DenseMatcherSettings(image_size=config.image_size))
        self.features = CNNDescriptor(CNNDescriptorConfig(model=config.retrieval_model)) \
            if config.rerank.second_stage > 0 else None
        self._images: dict[str, np.ndarray] = {}
        self._prepared: OrderedDict[str, Any] = OrderedDict()
        #: map images kept prepared for the dense network (shortlists of nearby queries overlap)
        self.prepared_images = 512

    def _image(self, name: str) -> np.ndarray:
        """A map image, decoded once per query."""
        if name not in self._images:
            self._images[name] = read_image(self.map.image_paths[name])
        return self._images[name]

    def _network_input(self, name: str) -> Any:
        """A map image as the dense network takes it, kept for the next queries (least recently used out)."""
        if not hasattr(self.matcher, "prepare"):
            return self._image(name)
        if name in self._prepared:
            self._prepared.move_to_end(name)
        else:
            self._prepared[name] = self.matcher.prepare(self._image(name))
            if len(self._prepared) > self.prepared_images:
                self._prepared.popitem(last=False)
        return self._prepared[name]

    def settings(self) -> dict[str, Any]:
        """What the pair matches depend on (the match cache's signature)."""
        cfg = self.config
        common = {"matches": cfg.matches, "grid": cfg.dense.grid}
        if cfg.matches == "sparse":
            return common | {"map": str(self.map.root.resolve())}
        return common | {"model": str(getattr(self.matcher, "model_path", type(self.matcher).__name__)),
                         "image_size": getattr(self.matcher, "image_size", None),
                         "cyclic_tolerance_px": cfg.dense.cyclic_tolerance_px}

    def pair_matches(self, image: np.ndarray, names: list[str], query_name: str | None = None,
                     cache: PairMatchCache | None = None) -> dict[str, tuple[PairMatches, tuple[int, int]]]:
        """``{db: ((query_xy, db_xy, consistent, beta), db (H, W))}`` of the query against ``names``: from
        ``cache`` where stored, the rest computed (dense: in batches) and stored."""
        cfg = self.config
        found: dict[str, tuple[PairMatches, tuple[int, int]]] = {}
        todo = []
        for db in names:
            stored = cache.get(query_name, db) if cache is not None and query_name is not None else None
            if stored is not None:
                found[db] = stored
            else:
                todo.append(db)
        if not todo:
            return found
        beta = len(query_lattice(tuple(image.shape[:2]), cfg.dense.grid))
        if self.nn is not None:
            query_features = self.map.extractor(image)
            for db in todo:
                db_features = self.map.local_features(db)
                m = self.nn(query_features.descriptors, db_features.descriptors).pairs()
                q, d = query_features.keypoints[m[:, 0]], db_features.keypoints[m[:, 1]]
                w, h = db_features.image_size
                found[db] = ((q.astype(np.float32), d.astype(np.float32), np.ones(len(m), bool), beta),
                             (int(h), int(w)))
        else:
            databases = [self._network_input(db) for db in todo]
            answers = dense_matches_many(self.matcher, image, databases, cfg.dense.grid, cfg.dense.cyclic_tolerance_px)
            for db, database, answer in zip(todo, databases, answers, strict=True):
                found[db] = (answer, tuple(database.shape[:2]))
        if cache is not None and query_name is not None:
            for db in todo:
                cache.put(query_name, db, *found[db])
        return found

    def __call__(self, image: np.ndarray, names: list[str], scores: list[float], query_name: str | None = None,
                 cache: PairMatchCache | None = None) -> list[Candidate]:
        """The re-ranked candidates of one query (database images that cannot be read raise InputError);
        with ``query_name`` and ``cache``, pair matches are read from / stored in the cache."""
        cfg = self.config
        self._images.clear()
        matches = self.pair_matches(image, list(names[: cfg.rerank.shortlist]), query_name, cache)
        points: dict[str, tuple[np.ndarray, np.ndarray, tuple[int, int]]] = {}
        q_features = None

        def verify(db: str):
            (q, d, consistent, beta), hw = matches[db]
            v = verify_matches(q, d, consistent, dataclasses.replace(cfg.dense.verification, beta=float(beta)))
            points[db] = (q[v.consistent], d[v.consistent], hw)
            return v

        def similarity(db: str, _v) -> float:
            nonlocal q_features
            q, d, hw = points[db]
            if q_features is None:
                q_features = self.features.local_features(image)
            d_features = self.features.local_features(self._image(db))
            return local_similarity(q_features, d_features, q, d, tuple(image.shape[:2]), hw)

        return rerank(names, scores, verify, cfg.rerank, similarity if self.features is not None else None)


def _final_score(c: Candidate) -> float:
    if c.fused is not None:
        return float(c.fused) if np.isfinite(c.fused) else -1e9
    if c.verification is not None:
        return float(c.verification.score)
    return float("nan")


def verify_pairs(
    map_dir: str | Path | Map,
    pairs: str | Path,
    queries: str | Path | FrameSet | Iterable[Frame],
    out: str | Path,
    config: VerifyConfig = VerifyConfig(),
    split: str | None = None,
    checkpoint_every: int = 10,
    matches_cache: str | Path | None = None,
    **dataset_options: Any,
) -> VerifySummary:
    """Re-rank a pairs file by verification (see the module docstring for the files).

    ``matches_cache``: the HDF5 file of pair matches (:class:`~visloc.verification.cache.PairMatchCache`;
    default ``OUT.matches.h5``); pass the same file to several re-rankings of the same pairs to match once.
    """
    the_map = map_dir if isinstance(map_dir, Map) else Map(map_dir)
    out = Path(out)
    ranked = read_ranked_pairs(pairs)
    pair_scores = read_pair_scores(pairs) if scores_sidecar(pairs).is_file() else {}
    in_map = set(the_map.names)
    frames, skipped = query_frames(queries, split, dataset_options, the_map)
    by_name = {f.name: f for f in frames}
    partial = out.with_name(out.name + ".partial.json")
    signature = {"pairs": str(Path(pairs).resolve()), "map": str(the_map.root.resolve()),
                 "config": dataclasses.asdict(config)}
    with run_lock(out.with_name(out.name + ".lock"), str(out)):
        done: dict[str, list[dict]] = {}
        if partial.is_file():
            import json

            saved = json.loads(partial.read_text())
            if saved.get("signature") == json.loads(json.dumps(signature, default=str)):
                done = saved["results"]
        verifier: PairVerifier | None = None
        cache: PairMatchCache | None = None
        cache_path = Path(matches_cache) if matches_cache else out.with_name(out.name + ".matches.h5")
        todo = [q for q in ranked if q not in done]
        for k, q in enumerate(tqdm(todo, desc="verify", unit="query")):
            names = ranked[q]
            bad = [n for n in names if n not in in_map]
            if q not in by_name or bad:
                reason = "not among the queries" if q not in by_name else f"not map images: {' '.join(bad[:3])}"
                skipped.append(Skipped(q, Path(pairs), reason))
                continue
            verifier = verifier or PairVerifier(the_map, config)
            cache = cache or PairMatchCache(cache_path, verifier.settings())
            try:
                candidates = verifier(read_image(by_name[q].image_path), names,
                                      [pair_scores.get((q, n), 0.0) for n in names], q, cache)
            except InputError as e:
                skipped.append(Skipped(q, e.path, e.problem))
                continue
            done[q] = [c.to_json() | {"final": _final_score(c)} for c in candidates]
            if (k + 1) % checkpoint_every == 0:
                write_json(partial, {"signature": signature, "results": done})
        if cache is not None:
            cache.close()
        order = [q for q in ranked if q in done]
        out_pairs = [(q, c["name"]) for q in order for c in done[q]]
        final = [c["final"] for q in order for c in done[q]]
        write_pairs(out, out_pairs, [s if np.isfinite(s) else 0.0 for s in final])
        write_json(out.with_name(out.name + ".verification.json"),
                   {"signature": signature, "results": {q: done[q] for q in order},
                    "skipped": [{"name": s.name, "path": str(s.path), "reason": s.reason} for s in skipped]})
        partial.unlink(missing_ok=True)
    for s in skipped:
        logger.warning("skipped %s", s)
    return VerifySummary(out, len(order), skipped)


def retrieve_and_verify(
    map_dir: str | Path | Map,
    queries: str | Path | FrameSet | Iterable[Frame],
    out: str | Path,
    config: VerifyConfig = VerifyConfig(),
    retrieval: Any = None,
    keep: int = 0,
    split: str | None = None,
    **dataset_options: Any,
) -> VerifySummary:
    """Retrieval followed by verification: ``OUT.retrieval.txt`` (the map's retrieval, ``config.rerank.shortlist``
    images per query, or more if ``retrieval.num_retrieved`` asks) re-ranked into ``OUT`` (+ its sidecars);
    with ``keep`` > 0, ``OUT`` keeps only each query's first ``keep`` images (the verification log keeps all).

    ``retrieval``: a :class:`~visloc.localization.retrieve.RetrievalConfig` (default: the map's descriptor,
    no relpose re-ranking).
    """
    from .retrieve import RetrievalConfig, retrieve

    out = Path(out)
    retrieval = retrieval or RetrievalConfig(rerank=0)
    retrieval = dataclasses.replace(retrieval, num_retrieved=max(retrieval.num_retrieved, config.rerank.shortlist))
    retrieved = out.with_name(out.name + ".retrieval.txt")
    retrieve(map_dir, queries, retrieved, retrieval, split=split, **dataset_options)
    summary = verify_pairs(map_dir, retrieved, queries, out, config, split=split, **dataset_options)
    if keep > 0:
        ranked, scores = read_ranked_pairs(out), read_pair_scores(out)
        kept = [(q, d) for q, names in ranked.items() for d in names[:keep]]
        write_pairs(out, kept, [scores[p] for p in kept])
    return summary


__all__ = ["PairVerifier", "VerifyConfig", "VerifySummary", "retrieve_and_verify", "verify_pairs"]
