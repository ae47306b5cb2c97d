"""``visloc localize``: query images -> 6-DoF poses against a map, as the composition of the stages

    retrieve (:mod:`.retrieve`) -> match (:mod:`.match`) -> estimate + fuse (:mod:`.estimators`)

run per query in one process. Each stage can instead be fed by files written earlier or by another tool
(``pairs=``, ``features=``, ``matches=``: hloc's pairs, ``features.h5`` and ``matches.h5``). Estimators
are registered plug-ins (``pnp``, ``essential``, ``relpose``, ``unified``) with their own frozen configs.
A query with too little evidence is reported as not localized, never guessed.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import time
from collections.abc import Collection, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from ..datasets.base import Frame, FrameSet, Skipped
from ..errors import ConfigError, InputError
from ..features import LocalFeatures
from ..geometry import Camera, Pose
from ..io.atomic import write_json
from ..io.h5 import H5Reader, MatchReader, ShardedH5Writer, match_arrays, names_to_pair
from ..io.images import read_image
from ..io.lock import run_lock
from ..io.pairs import read_pair_scores, read_pairs, scores_sidecar, write_pairs
from ..io.poses import write_poses
from ..runtime import torch_threads
from .dense_match import DenseQueryMatcher
from .estimators import QueryEvidence, estimators
from .map import Map, read_local_features
from .match import MatchConfig, PairMatcher, feature_arrays
from .queries import query_frames, split_unwritable_names
from .retrieve import RetrievalConfig, Retriever

logger = logging.getLogger(__name__)

#: ``auto`` picks ``pnp`` on maps with 3D points, else ``essential``.
AUTO = "auto"
#: The status of a query whose position prior leaves no database image to retrieve.
NO_IMAGE_WITHIN_PRIOR = "no database image within the prior"


@dataclass(frozen=True)
class LocalizeConfig:
    """Attributes:
    method: a registered estimator (``pnp``, ``essential``, ``relpose``, ``unified``) or ``auto``
        (``pnp`` when the map has 3D points, else ``essential``).
    estimator: the config of that estimator (e.g. :class:`~visloc.localization.estimators.PnPConfig`);
        ``None`` takes its defaults. Build one with
        :func:`~visloc.localization.estimators.estimator_config`.
    retrieval: how many database images are retrieved and re-ranked per query.
    matching: the descriptor matcher.
    """

    method: str = AUTO
    estimator: Any = None
    retrieval: RetrievalConfig = RetrievalConfig()
    matching: MatchConfig = MatchConfig()

    def __post_init__(self) -> None:
        if self.method != AUTO:
            entry = estimators.entry(self.method)  # unknown names raise ConfigError
            if self.estimator is not None and not isinstance(self.estimator, entry.config_cls):
                raise ConfigError(f"method {self.method!r} takes a {entry.config_cls.__name__}, "
                                  f"got {type(self.estimator).__name__}")


@dataclass
class QueryResult:
    """Everything known about one localized (or not) query.

    Attributes:
        pose: ``cam_from_world`` or ``None`` when the query could not be localized.
        status: ``"localized"`` or the reason it was not.
        retrieved: database names in retrieval order, with their scores.
        matches / inliers: per retrieved image.
        support: database images supporting the pose.
        timings: seconds per stage (``extract``, ``retrieve``, ``match``, ``pose``).
        extra: method-specific details (``unified``: both candidate poses and which one was chosen).
    """

    name: str
    pose: Pose | None
    status: str
    method: str
    retrieved: list[str] = field(default_factory=list)
    retrieval_scores: list[float] = field(default_factory=list)
    matches: list[int] = field(default_factory=list)
    inliers: list[int] = field(default_factory=list)
    support: list[str] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["pose"] = None if self.pose is None else self.pose.to_json()
        return d

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> QueryResult:
        d = dict(d)
        p = d.pop("pose")
        return cls(pose=None if p is None else Pose.from_json(p), **d)


class Localizer:
    """Localize images against a :class:`~visloc.localization.map.Map` (load once, call many times)."""

    def __init__(self, map_: Map | str | Path, config: LocalizeConfig = LocalizeConfig()) -> None:
        self.map = map_ if isinstance(map_, Map) else Map(map_)
        self.config = config
        method = config.method
        if method == AUTO:
            method = "pnp" if self.map.has_points else "essential"
        self.method = method
        self.estimator = estimators.create(method, config.estimator)
        self.estimator.check(self.map)
        self.retriever = Retriever(self.map, config.retrieval)
        self.matcher: PairMatcher | None = None
        self.dense: DenseQueryMatcher | None = None
        if config.matching.is_dense:
            self.dense = DenseQueryMatcher(self.map, config.matching.dense_config())
        else:
            self.matcher = PairMatcher(self.map, config.matching)
        self.points_only = self.estimator.points_only(self.map)

    def localize_image(self, image: np.ndarray, camera: Camera, name: str = "query",
                       within: Collection[str] | None = None) -> QueryResult:
        """Localize one ``(H, W, 3)`` uint8 image taken with ``camera``; ``within``: retrieve only among these
        database images (a position prior, :func:`~visloc.localization.prior.names_within_radius`)."""
        return self.localize_with_evidence(image, camera, name, within=within)[0]

    def localize_with_evidence(
        self,
        image: np.ndarray | None,
        camera: Camera,
        name: str = "query",
        retrieved: tuple[list[str], list[float]] | None = None,
        features: LocalFeatures | None = None,
        matches: dict[str, tuple[np.ndarray, np.ndarray]] | None = None,
        within: Collection[str] | None = None,
    ) -> tuple[QueryResult, QueryEvidence]:
        """Localize one query; each stage's output may be given instead of computed.

        Args:
            image: the ``(H, W, 3)`` uint8 query image (``None`` when nothing needs it: retrieval, features
                and matches given, and no regression).
            camera: its intrinsics.
            retrieved: ranked database names and scores (e.g. from a pairs file); default: retrieval.
            features: the query's local features; default: extracted when needed.
            matches: ``{db: ((M, 2) pairs, (M,) scores)}``; default: matched when needed.
            within: retrieval searches only these database images (a position prior; ignored with
                ``retrieved``); empty: not localized, status :data:`NO_IMAGE_WITHIN_PRIOR`.

        Returns:
            The result and the evidence the estimator saw (features, matches, global descriptor).
        """
        if within is not None and retrieved is None and not within:
            return (QueryResult(name=name, pose=None, status=NO_IMAGE_WITHIN_PRIOR, method=self.method),
                    QueryEvidence(name, camera, [], None, {}, {}, None))
        timings: dict[str, float] = {}
        t = time.perf_counter()
        need_features = (self.estimator.needs_local_features and self.dense is None) or (
            retrieved is None and self.retriever.needs_local_features)
        if features is None and need_features:
            features = self.map.extractor(_need(image, name))
        gdesc = None
        if retrieved is None or self.estimator.needs_global_descriptor:
            gdesc = self.retriever.describe(_need(image, name), features)
        timings["extract"] = time.perf_counter() - t

        t = time.perf_counter()
        names, scores = retrieved if retrieved is not None else self.retriever(gdesc, name, within)
        timings["retrieve"] = time.perf_counter() - t

        t = time.perf_counter()
        pair_matches: dict[str, np.ndarray] = {}
        pair_scores: dict[str, np.ndarray] = {}
        if self.estimator.needs_local_features and matches is None and self.dense is not None:
            features, dense_matches = self.dense(_need(image, name), names, self.points_only)
            for db in names:
                pair_matches[db], pair_scores[db] = dense_matches[db]
        elif self.estimator.needs_local_features:
            for db in names:
                m, s = matches[db] if matches is not None else self.matcher(features, db, self.points_only)
                pair_matches[db], pair_scores[db] = m, s
        timings["match"] = time.perf_counter() - t

        evidence = QueryEvidence(name, camera, list(names), features, pair_matches, pair_scores, gdesc)
        t = time.perf_counter()
        est = self.estimator(evidence, self.map)
        timings["pose"] = time.perf_counter() - t
        result = QueryResult(
            name=name, pose=est.pose, status=est.status, method=self.method, retrieved=list(names),
            retrieval_scores=[float(s) for s in scores],
            matches=[len(pair_matches[db]) for db in names] if pair_matches else [],
            inliers=est.inliers, support=est.support, timings=timings, extra=est.extra,
        )
        return result, evidence


def _need(image: np.ndarray | None, name: str) -> np.ndarray:
    if image is None:
        raise InputError(Path(name), "the query image is needed (features or descriptors must be computed)")
    return image


def output_paths(out: str | Path) -> dict[str, Path]:
    """Files :func:`localize` writes next to the pose file ``out``."""
    out = Path(out)
    return {
        "poses": out,
        "log": out.with_name(out.name + ".log.json"),
        "pairs": out.with_name(out.name + ".pairs.txt"),
        "features": out.with_name(out.name + ".features.h5"),
        "matches": out.with_name(out.name + ".matches.h5"),
    }


def _partial_path(out: Path) -> Path:
    return out.with_name(out.name + ".partial.json")


@dataclass(frozen=True)
class LocalizeSummary:
    poses_path: Path
    log_path: Path
    results: list[QueryResult]
    skipped: list[Skipped]

    @property
    def num_localized(self) -> int:
        return sum(r.pose is not None for r in self.results)

    def status_counts(self) -> dict[str, int]:
        """How many queries ended with each status (``localized`` or the reason it was not), most first."""
        counts: dict[str, int] = {}
        for r in self.results:
            counts[r.status] = counts.get(r.status, 0) + 1
        return dict(sorted(counts.items(), key=lambda kv: -kv[1]))


class _StageInputs:
    """Stage outputs given as files (pairs, features, matches), read per query."""

    def __init__(self, pairs: Path | None, features: Path | None, matches: Path | None) -> None:
        if matches is not None and features is None:
            raise InputError(matches, "a match file refers to keypoints: give the query features with it (--features)")
        if matches is not None and pairs is None:
            raise InputError(matches, "a match file needs the pairs file it was computed from (--pairs)")
        self.pairs: dict[str, tuple[list[str], list[float]]] | None = None
        if pairs is not None:
            ranked = read_pairs(pairs)
            sims = read_pair_scores(pairs) if scores_sidecar(pairs).is_file() else {}
            self.pairs = {}
            for q, db in ranked:
                names, scores = self.pairs.setdefault(q, ([], []))
                names.append(db)
                scores.append(sims.get((q, db), float("nan")))
        self.paths = tuple(str(Path(p).resolve()) if p is not None else None for p in (pairs, features, matches))
        self.features = H5Reader(features) if features is not None else None
        self.matches = MatchReader(matches) if matches is not None else None

    def retrieved(self, name: str) -> tuple[list[str], list[float]] | None:
        if self.pairs is None:
            return None
        if name not in self.pairs:
            raise InputError(Path(name), "no pairs for this query in the pairs file")
        return self.pairs[name]

    def local_features(self, name: str) -> LocalFeatures | None:
        if self.features is None or name not in self.features:
            return None
        return read_local_features(self.features, name)

    def query_matches(
        self, name: str, dbs: list[str], features: LocalFeatures | None
    ) -> dict[str, tuple[np.ndarray, np.ndarray]] | None:
        """The query's matches to ``dbs`` from the match file (``None`` without one)."""
        if self.matches is None:
            return None
        if features is None:
            raise InputError(self.features.path, f"no features for the query {name} (the match file refers to them)")
        num_keypoints = len(features)
        out = {}
        for db in dbs:
            m, s = self.matches.read(name, db)
            if len(m) and m[:, 0].max() >= num_keypoints:
                raise InputError(self.matches.path, f"pair {name} {db}: match to keypoint {m[:, 0].max()} of a query "
                                                    f"with {num_keypoints} keypoints (other features?)")
            out[db] = (m, s)
        return out

    def close(self) -> None:
        for reader in (self.features, self.matches):
            if reader is not None:
                reader.close()


def localize(
    map_dir: str | Path | Map,
    queries: str | Path | FrameSet | Iterable[Frame],
    out: str | Path,
    config: LocalizeConfig = LocalizeConfig(),
    split: str | None = None,
    checkpoint_every: int = 20,
    pairs: str | Path | None = None,
    features: str | Path | None = None,
    matches: str | Path | None = None,
    cluster: Any = None,
    **dataset_options: Any,
) -> LocalizeSummary:
    """Localize a batch of query images and write ``out`` (hloc pose file of the localized queries)
    plus, next to it (see :func:`output_paths`): ``out.log.json`` (per-query details, skipped images),
    ``out.pairs.txt`` (retrieval pairs, ranked, with a scores sidecar), and the query features and
    query-database matches in hloc's HDF5 layout (``out.features.h5``, ``out.matches.h5`` with
    ``matches0`` and ``matching_scores0``).

    Resumable: results are checkpointed to ``out.partial.json`` every ``checkpoint_every`` queries,
    and a rerun skips the queries found there. Unreadable images are skipped and listed.

    Args:
        map_dir: a map folder (or an opened :class:`Map`).
        queries: a data set folder (its ``split`` frames are used; ground truth is ignored), a
            :class:`FrameSet`, or frames.
        out: the pose file to write.
        pairs: a ranked hloc pairs file (``visloc retrieve``, hloc's ``pairs_from_retrieval``): every
            database image listed for a query is used, in file order, instead of retrieval.
        features: an hloc ``features.h5`` holding the queries' local features (instead of extracting).
        matches: an hloc ``matches.h5`` of the ``pairs`` (needs ``features``: it indexes their keypoints;
            the database side indexes the map's keypoints).
        cluster: localize chunks of queries as tasks on a Dask cluster: ``local:N``, ``tcp://HOST:PORT`` or a
            ``distributed.Client`` (:mod:`.cluster`); the outputs are those of the run without it.
    """
    out = Path(out)
    check_output_file(out, "--out")
    if isinstance(cluster, str):
        from .cluster import parse_cluster

        parse_cluster(cluster)  # a bad address is refused before any work
    localizer = Localizer(map_dir, config)
    frames, skipped = query_frames(queries, split, dataset_options, localizer.map)
    frames, unnamed = split_unwritable_names(frames)
    skipped += unnamed
    given = _StageInputs(*(Path(p) if p is not None else None for p in (pairs, features, matches)))
    signature = {
        "map": str(localizer.map.root.resolve()),
        "config": json.loads(json.dumps(dataclasses.asdict(config), default=str)),
        "inputs": [str(p) if p is not None else None for p in (pairs, features, matches)],
        "queries": [f.name for f in frames],
    }
    try:
        with run_lock(out.with_name(out.name + ".lock"), str(out)):
            return _localize_batch(localizer, frames, skipped, given, out, signature, checkpoint_every, cluster)
    finally:
        given.close()


def check_output_file(out: Path, option: str) -> None:
    """Refuse an output path that cannot be written, before any work is done.

    Raises:
        InputError: ``out`` is a folder, or its folder cannot be created or written.
    """
    if out.is_dir():
        raise InputError(out, f"{option} must be a file, this is a folder")
    parent = out.parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise InputError(parent, f"cannot create the folder for {option} ({e.strerror})") from None
    if not os.access(parent, os.W_OK | os.X_OK):
        raise InputError(parent, f"cannot write {option} here (no write permission)")


def _resume_state(out: Path, signature: dict[str, Any], writers: list[ShardedH5Writer]) -> dict[str, QueryResult]:
    """Queries already localized by an interrupted run with the same inputs; otherwise start afresh, so that
    no output mixes two runs (a finished run's side files are replaced, not extended)."""
    partial = _partial_path(out)
    if partial.is_file():
        try:
            saved = json.loads(partial.read_text())
            if saved.get("signature") == signature:
                done = {d["name"]: QueryResult.from_json(d) for d in saved["results"]}
                logger.info("resuming: %d queries already localized in %s", len(done), partial)
                return done
            logger.warning("%s was started with other inputs or settings: starting afresh", out)
        except (json.JSONDecodeError, KeyError, TypeError, ValueError):
            logger.warning("ignoring unreadable checkpoint %s", partial)
    for writer in writers:
        writer.discard()
    partial.unlink(missing_ok=True)
    return {}


@dataclass(frozen=True)
class _Outcome:
    """What one query gives the batch: its result and evidence arrays (hloc layout), or why it was skipped."""

    result: QueryResult | None
    skipped: Skipped | None = None
    features: dict[str, np.ndarray] | None = None
    matches: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)


def _localize_frame(localizer: Localizer, frame: Frame, given: _StageInputs) -> _Outcome:
    """Localize one query frame of a batch (in this process, or in a cluster worker)."""
    try:
        retrieved = given.retrieved(frame.name)
        feats = given.local_features(frame.name)
        needs_image = (retrieved is None or localizer.estimator.needs_global_descriptor
                       or (feats is None and localizer.estimator.needs_local_features))
        image = read_image(frame.image_path) if needs_image else None
        file_matches = given.query_matches(frame.name, retrieved[0], feats) if retrieved else None
        result, evidence = localizer.localize_with_evidence(image, frame.camera, frame.name, retrieved,
                                                            feats, file_matches)
    except InputError as e:
        own = e.path in (frame.image_path, Path(frame.name))
        return _Outcome(None, Skipped(frame.name, frame.image_path, e.problem if own else str(e)))
    if evidence.features is None:
        return _Outcome(result)
    matches = {names_to_pair(frame.name, db): match_arrays(m, evidence.match_scores[db], len(evidence.features))
               for db, m in evidence.matches.items()}
    return _Outcome(result, features=feature_arrays(evidence.features), matches=matches)


#: Per worker process: the localizer and stage inputs of the last (map, config, inputs), kept for the next chunks.
_WORKER_STATE: dict[str, tuple[Localizer, _StageInputs]] = {}


def localize_chunk(map_dir: str, config: LocalizeConfig, inputs: tuple[str | None, str | None, str | None],
                   threads: int, frames: list[Frame]) -> list[_Outcome]:
    """Localize ``frames`` against the map in ``map_dir``: a cluster task (the map is opened once per
    worker process and kept for its next chunks; a rebuilt map, another config or other inputs reopen it).

    ``threads``: torch's intra-op threads of the client. A network (``relpose``'s encoder and regression head)
    sums in an order that depends on it (:func:`~visloc.runtime.torch_threads`), so the worker uses the
    client's count: its poses are the plain run's bit for bit, not 1e-9 apart."""
    manifest = Path(map_dir) / "map.json"
    stamp = manifest.stat().st_mtime_ns if manifest.is_file() else None
    key = json.dumps([map_dir, stamp, dataclasses.asdict(config), inputs], default=str, sort_keys=True)
    if key not in _WORKER_STATE:
        for localizer, given in _WORKER_STATE.values():
            localizer.map.close()
            given.close()
        _WORKER_STATE.clear()
        _WORKER_STATE[key] = (Localizer(map_dir, config),
                              _StageInputs(*(Path(p) if p is not None else None for p in inputs)))
    localizer, given = _WORKER_STATE[key]
    with torch_threads(threads):
        return [_localize_frame(localizer, frame, given) for frame in frames]


def _cluster_outcomes(cluster: Any, localizer: Localizer, frames: list[Frame], given: _StageInputs) -> Iterator[_Outcome]:
    """The outcomes of ``frames``, in order, from :func:`localize_chunk` tasks on a Dask cluster."""
    from .cluster import map_chunks

    # absolute paths: a worker of a remote cluster need not share this process's working folder
    sent = [dataclasses.replace(f, image_path=Path(f.image_path).resolve()) for f in frames]
    as_given = {f.name: f.image_path for f in frames}  # skipped images are reported as the plain run does
    import torch

    common = (str(localizer.map.root.resolve()), localizer.config, given.paths, torch.get_num_threads())
    for outcome in map_chunks(cluster, localize_chunk, common, sent):
        if outcome.skipped is not None:
            outcome = dataclasses.replace(outcome, skipped=dataclasses.replace(
                outcome.skipped, path=as_given[outcome.skipped.name]))
        yield outcome


def _localize_batch(
    localizer: Localizer, frames: list[Frame], skipped: list[Skipped], given: _StageInputs, out: Path,
    signature: dict[str, Any], checkpoint_every: int, cluster: Any = None,
) -> LocalizeSummary:
    paths = output_paths(out)
    partial = _partial_path(out)
    feature_writer = ShardedH5Writer(paths["features"], flush_every=checkpoint_every + 1)
    match_writer = ShardedH5Writer(paths["matches"],
                                   flush_every=checkpoint_every * localizer.config.retrieval.num_retrieved + 1)
    done = _resume_state(out, signature, [feature_writer, match_writer])

    def checkpoint() -> None:
        feature_writer.flush()  # the h5 shards always hold at least the checkpointed queries
        match_writer.flush()
        write_json(partial, {"signature": signature, "results": [r.to_json() for r in done.values()]})

    todo = [f for f in frames if f.name not in done]
    outcomes = (_localize_frame(localizer, frame, given) for frame in todo) if cluster is None else (
        _cluster_outcomes(cluster, localizer, todo, given))
    for k, outcome in enumerate(tqdm(outcomes, total=len(todo), desc="localize", unit="img")):
        if outcome.skipped is not None:
            skipped.append(outcome.skipped)
            continue
        done[outcome.result.name] = outcome.result
        if outcome.features is not None:
            feature_writer.add(outcome.result.name, outcome.features)
            for pair, arrays in outcome.matches.items():
                match_writer.add(pair, arrays)
        if (k + 1) % checkpoint_every == 0:
            checkpoint()

    results = [done[f.name] for f in frames if f.name in done]
    feature_writer.finalize(file_attrs={"extractor": "dense" if localizer.dense else localizer.map.config.extractor})
    match_writer.finalize()
    scores = [s for r in results for s in r.retrieval_scores]
    write_pairs(paths["pairs"], [(r.name, db) for r in results for db in r.retrieved],
                scores if all(np.isfinite(scores)) else None)
    write_poses(out, {r.name: r.pose for r in results if r.pose is not None})
    write_json(
        paths["log"],
        {
            "map": str(localizer.map.root),
            "method": localizer.method,
            "config": signature["config"] | {"estimator": dataclasses.asdict(localizer.estimator.config)},
            "inputs": dict(zip(("pairs", "features", "matches"), signature["inputs"], strict=True)),
            "results": [r.to_json() for r in results],
            "skipped": [{"name": s.name, "path": str(s.path), "reason": s.reason} for s in skipped],
        },
    )
    partial.unlink(missing_ok=True)
    n_loc = sum(r.pose is not None for r in results)
    logger.info("localized %d of %d queries -> %s", n_loc, len(results), out)
    for s in skipped:
        logger.warning("skipped %s", s)
    return LocalizeSummary(out, paths["log"], results, skipped)
