"""Verification stage: a ranked pairs file -> the same pairs re-ranked by geometric verification
(``visloc verify``; Publication IV).

For every query of the pairs file, its first ``shortlist`` database images (map images) are verified with
the dense network (:mod:`visloc.verification.dense`: lattice matches, RANSAC inliers ``I``, cyclically
consistent inliers ``C``, ``S``), the list re-sorted (:func:`visloc.verification.rerank.rerank`), and the top
``second_stage`` re-sorted by ``S_F`` with ``S_L`` from the retrieval network's local features (the ``cnn``
descriptor's network, the shipped one by default) and ``G`` from the retrieval scores (the pairs file's
``.scores.json`` sidecar; 0 similarity without one).

Outputs: ``OUT`` (ranked pairs, the new order), ``OUT.scores.json`` (the final score per pair: ``S_F`` for the
second stage, then ``S`` / ``|I|``), ``OUT.verification.json`` (every candidate's ``|M|, |I|, |C|, S, S_L, G,
S_F`` and the config). Resumable: finished queries are checkpointed to ``OUT.partial.json``.
"""

from __future__ import annotations

import dataclasses
import logging
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
from ..verification.dense import DenseVerificationConfig, dense_pair_matches, query_lattice
from ..verification.rerank import Candidate, RerankConfig, local_similarity, rerank
from ..verification.scores import verify_matches
from .map import Map
from .queries import query_frames

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class VerifyConfig:
    """Attributes:
    rerank: shortlist and stage lengths, first-stage score, fusion.
    dense: the lattice, cyclic tolerance and RANSAC model of the dense verification (``matches="sparse"``
        uses its RANSAC model and ``beta`` = the lattice size too).
    matches: ``dense`` (the network's maps) or ``sparse`` (the map's local features: the query's extracted
        with the map's extractor, mutual nearest neighbours, so every match is "consistent" and ``S`` reduces
        to ``exp(-beta / |I|)``; the classical baseline, usually with ``first_stage="inliers"``).
    model: the dense network (``None``: the shipped ``dense_tiny_world.pt``).
    image_size: longer side the dense network sees (0: its training size).
    retrieval_model: the retrieval network whose local features give ``S_L`` (``None``: the shipped one).
    """

    rerank: RerankConfig = RerankConfig()
    dense: DenseVerificationConfig = DenseVerificationConfig()
    matches: str = "dense"
    model: str | None = None
    image_size: int = 0
    retrieval_model: str | None = None

    def __post_init__(self) -> None:
        if self.matches not in ("dense", "sparse"):
            raise ConfigError(f"matches must be dense or sparse, got {self.matches!r}")


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

    def __call__(self, image: np.ndarray, names: list[str], scores: list[float]) -> list[Candidate]:
        """The re-ranked candidates of one query (database images that cannot be read raise InputError)."""
        cfg = self.config
        points: dict[str, tuple[np.ndarray, np.ndarray, tuple[int, int]]] = {}
        q_features = None

        query_features = self.map.extractor(image) if self.nn is not None else None

        def verify(db: str):
            if self.nn is not None:
                db_features = self.map.local_features(db)
                m = self.nn(query_features.descriptors, db_features.descriptors).pairs()
                q, d = query_features.keypoints[m[:, 0]], db_features.keypoints[m[:, 1]]
                consistent = np.ones(len(m), bool)
                beta = len(query_lattice(tuple(image.shape[:2]), cfg.dense.grid))
                w, h = db_features.image_size
                hw = (int(h), int(w))
            else:
                database = read_image(self.map.image_paths[db])
                hw = tuple(database.shape[:2])
                q, d, consistent, beta = dense_pair_matches(self.matcher, image, database, cfg.dense.grid,
                                                            cfg.dense.cyclic_tolerance_px)
            v = verify_matches(q, d, consistent, dataclasses.replace(cfg.dense.verification, beta=float(beta)))
            points[db] = (q[v.consistent], d[v.consistent], hw)
            return v

        def similarity(db: str, _v) -> float:
            nonlocal q_features
            q, d, hw = points[db]
            if q_features is None:
                q_features = self.features.local_features(image)
            d_features = self.features.local_features(read_image(self.map.image_paths[db]))
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
    **dataset_options: Any,
) -> VerifySummary:
    """Re-rank a pairs file by verification (see the module docstring for the files)."""
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
        todo = [q for q in ranked if q not in done]
        for k, q in enumerate(tqdm(todo, desc="verify", unit="query")):
            names = ranked[q]
            bad = [n for n in names if n not in in_map]
            if q not in by_name or bad:
                reason = "not among the queries" if q not in by_name else f"not map images: {' '.join(bad[:3])}"
                skipped.append(Skipped(q, Path(pairs), reason))
                continue
            verifier = verifier or PairVerifier(the_map, config)
            try:
                candidates = verifier(read_image(by_name[q].image_path), names,
                                      [pair_scores.get((q, n), 0.0) for n in names])
            except InputError as e:
                skipped.append(Skipped(q, e.path, e.problem))
                continue
            done[q] = [c.to_json() | {"final": _final_score(c)} for c in candidates]
            if (k + 1) % checkpoint_every == 0:
                write_json(partial, {"signature": signature, "results": done})
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


__all__ = ["PairVerifier", "VerifyConfig", "VerifySummary", "verify_pairs"]
