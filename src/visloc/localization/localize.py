"""``visloc localize``: query images -> 6-DoF poses against a map.

Per query: local features + global descriptor, top-k retrieval (FAISS), matching to every retrieved
database image, then one of two geometric estimators:

* ``pnp`` (the map has 3D points): the 2D-3D correspondences of all retrieved images are pooled
  into one LO-RANSAC PnP with non-linear refinement; the images whose own correspondences agree with
  the result (at least ``min_inliers`` inliers) are the supporting images.
* ``essential`` (no 3D points needed): a relative pose from the essential matrix per retrieved image,
  turned into a query rotation hypothesis and a world ray from the database centre, then fused by
  :func:`~visloc.localization.fusion.fuse_rays` (triangulated centre + consensus + L1 rotation mean).

A query with too little evidence is reported as not localized, never guessed.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from ..datasets import load_frames
from ..datasets.base import Frame, FrameSet, Skipped
from ..errors import ConfigError, InputError
from ..features import LocalFeatures
from ..geometry import Camera, Pose, pose_error
from ..geometry.backends import RansacConfig, estimate_absolute_pose, estimate_relative_pose
from ..io.atomic import write_json
from ..io.h5 import ShardedH5Writer, names_to_pair
from ..io.images import read_image
from ..io.pairs import write_pairs
from ..io.poses import write_poses
from ..matching import NearestNeighborMatcher, NNConfig
from ..models.labels import label_translation_to_world
from .fusion import (
    MetricFusionConfig,
    RansacRayFusionConfig,
    RayFusionConfig,
    fuse_metric,
    fuse_original,
    fuse_rays,
    fuse_rays_ransac,
    hypotheses_from_relative_poses,
)
from .map import Map, index_vectors

logger = logging.getLogger(__name__)

METHODS = ("auto", "pnp", "essential", "relpose", "unified")
#: Methods that regress relative poses (the map's global descriptor must be ``relpose``).
REGRESSION_METHODS = ("relpose", "unified")
#: How ``relpose`` fuses the regressed relative poses (see :class:`LocalizeConfig`).
RELPOSE_FUSIONS = ("original", "ransac", "metric")


@dataclass(frozen=True)
class LocalizeConfig:
    """Attributes:
    method: ``pnp``, ``essential``, ``relpose`` (regressed relative poses + the original fusion),
        ``unified`` (relpose as prior and fallback, geometry to refine) or ``auto`` (``pnp`` when the map
        has 3D points, else ``essential``).
    num_retrieved: database images retrieved per query.
    min_matches: fewer matches with a database image and it is not used.
    min_inliers: a database image supports the pose with at least this many inliers.
    min_support: images needed to accept a pose (``essential`` needs 2 to triangulate).
    pnp: RANSAC settings for PnP (threshold in pixels of reprojection error).
    essential: RANSAC settings for the essential matrix (threshold: Sampson error in pixels).
    matcher: descriptor matching settings.
    rays: ray-fusion thresholds of the ``essential`` method.
    relpose_fusion: ``original`` (exhaustive, Laskar et al. 2017), ``ransac`` (rays, any N, sampled) or
        ``metric`` (each regressed translation taken with its length: one centre hypothesis per image,
        :func:`~visloc.localization.fusion.fuse_metric`).
    relpose_rays: settings of the ``ransac`` relpose fusion.
    relpose_metric: settings of the ``metric`` relpose fusion.
    relpose_rerank: maps built with a correlation-head relpose model (any method): retrieve this many images,
        re-rank them by the mutual nearest neighbours between the query's and each image's stored
        feature maps (a dense check of the shortlist, as the thesis re-ranks retrieval with dense
        matching) and keep the best ``num_retrieved``; 0 keeps the global-descriptor ranking. Models
        without a correlation head store no feature maps and always keep the global ranking.
    unified_gate_m / unified_gate_deg: ``unified`` keeps the geometric pose when
        ``unified_support_images`` retrieved images each support it with ``min_inliers`` inliers, when it
        has ``unified_strong_inliers`` inliers, or when it lies within this distance and angle of the
        regressed prior; otherwise (or when geometry fails) it reports the regressed pose. With the
        default of one supporting image every geometric pose is kept and the regressed pose is the
        fallback only: on the embedded world a localized PnP pose was right whenever the prior
        disagreed with it (the prior was metres off; ``benchmarks/relpose.py``). Raise it to 2 to let
        the prior veto poses that rest on a single image.
    """

    method: str = "auto"
    num_retrieved: int = 5
    min_matches: int = 15
    min_inliers: int = 12
    min_support: int = 1
    pnp: RansacConfig = RansacConfig(max_error_px=4.0)
    essential: RansacConfig = RansacConfig(max_error_px=1.0)
    matcher: NNConfig = NNConfig()
    rays: RayFusionConfig = RayFusionConfig(sign_agnostic=False)
    relpose_fusion: str = "original"
    relpose_rays: RansacRayFusionConfig = RansacRayFusionConfig(sign_agnostic=True, fallback_to_first=True)
    relpose_metric: MetricFusionConfig = MetricFusionConfig()
    relpose_rerank: int = 30
    unified_gate_m: float = 1.0
    unified_gate_deg: float = 30.0
    unified_strong_inliers: int = 100
    unified_support_images: int = 1

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ConfigError(f"unknown localization method {self.method!r}; known: {METHODS}")
        if self.relpose_fusion not in RELPOSE_FUSIONS:
            raise ConfigError(f"relpose_fusion must be one of {RELPOSE_FUSIONS}, got {self.relpose_fusion!r}")
        if self.relpose_rerank < 0:
            raise ConfigError(f"relpose_rerank must be >= 0, got {self.relpose_rerank}")


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
        d["pose"] = None if self.pose is None else {"qvec": self.pose.qvec.tolist(), "tvec": self.pose.t.tolist()}
        return d

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> QueryResult:
        d = dict(d)
        p = d.pop("pose")
        pose = None if p is None else Pose.from_qt(p["qvec"], p["tvec"])
        return cls(pose=pose, **d)


@dataclass(frozen=True, eq=False)
class QueryEvidence:
    """What a localization computed besides the pose: the query's local features and its matches
    ``{db name: (M, 2) (query keypoint, database keypoint)}`` (written hloc-style by :func:`localize`)."""

    features: LocalFeatures | None
    matches: dict[str, np.ndarray]
    global_descriptor: np.ndarray | None = None


class Localizer:
    """Localize images against a :class:`~visloc.localization.map.Map` (load once, call many times)."""

    def __init__(self, map_: Map | str | Path, config: LocalizeConfig = LocalizeConfig()) -> None:
        self.map = map_ if isinstance(map_, Map) else Map(map_)
        self.config = config
        method = config.method
        if method == "auto":
            method = "pnp" if self.map.has_points else "essential"
        if method == "pnp" and not self.map.has_points:
            raise ConfigError(f"{self.map.root}: method 'pnp' needs a map with 3D points (depth or triangulation)")
        if method in REGRESSION_METHODS and self.map.config.global_descriptor != "relpose":
            raise ConfigError(f"{self.map.root}: method {method!r} needs a map built with the relpose global "
                              f"descriptor (`visloc map build --global-descriptor relpose`), this one has "
                              f"{self.map.config.global_descriptor!r}")
        self.method = method
        self.geometric_method = "pnp" if self.map.has_points else "essential"
        self.extractor = self.map.make_extractor()
        self.global_descriptor = self.map.make_global_descriptor()
        self.matcher = NearestNeighborMatcher(config.matcher)

    def localize_image(self, image: np.ndarray, camera: Camera, name: str = "query") -> QueryResult:
        """Localize one ``(H, W, 3)`` uint8 image taken with ``camera``."""
        return self.localize_with_evidence(image, camera, name)[0]

    def localize_with_evidence(
        self, image: np.ndarray, camera: Camera, name: str = "query"
    ) -> tuple[QueryResult, QueryEvidence]:
        """:meth:`localize_image`, also returning the query features and matches."""
        cfg = self.config
        timings: dict[str, float] = {}
        t = time.perf_counter()
        feats = self.extractor(image) if self.method != "relpose" else None
        gdesc = self.global_descriptor(image, feats)
        timings["extract"] = time.perf_counter() - t

        t = time.perf_counter()
        dense_ok = self.map.config.global_descriptor == "relpose" and self.global_descriptor.has_feature_maps
        rerank = cfg.relpose_rerank if dense_ok else 0
        k = max(cfg.num_retrieved, rerank)
        scores, idx = self.map.index.search(index_vectors(self.global_descriptor, gdesc[None]), k)
        retrieved = [self.map.names[i] for i in idx[0] if i >= 0]
        scores = scores[:, : len(retrieved)]
        if rerank:
            dense = self.global_descriptor.rerank_scores(
                np.stack([self.map.global_descriptor(db) for db in retrieved]), gdesc)
            order = np.argsort(-dense, kind="stable")[: cfg.num_retrieved]
            retrieved, scores = [retrieved[i] for i in order], dense[None, order]
        timings["retrieve"] = time.perf_counter() - t

        result = QueryResult(
            name=name, pose=None, status="", method=self.method, retrieved=retrieved,
            retrieval_scores=[float(s) for s in scores[0][: len(retrieved)]],
        )
        evidence = QueryEvidence(feats, {}, gdesc)
        estimators = {"pnp": self._pnp, "essential": self._essential, "relpose": self._relpose,
                      "unified": self._unified}
        estimators[self.method](result, evidence, camera, timings)
        result.timings = timings
        return result, evidence

    def _match(self, feats: LocalFeatures, db: str, subset: np.ndarray | None = None) -> np.ndarray:
        """``(M, 2)`` matches (query keypoint, database keypoint); ``subset`` restricts the database side."""
        db_desc = self.map.local_features(db).descriptors
        if subset is None:
            return self.matcher(feats.descriptors, db_desc).pairs()
        m = self.matcher(feats.descriptors, db_desc[subset]).pairs()
        m[:, 1] = subset[m[:, 1]]
        return m

    # --- estimators -----------------------------------------------------------------------------
    def _pnp(self, result: QueryResult, evidence: QueryEvidence, camera: Camera, timings: dict) -> None:
        """Pooled 2D-3D correspondences of all retrieved images -> one LO-RANSAC PnP."""
        cfg, feats = self.config, evidence.features
        t = time.perf_counter()
        p2d, p3d, owner, counts = [], [], [], []
        for i, db in enumerate(result.retrieved):
            pts = self.map.points3D(db)
            with_point = np.flatnonzero(np.all(np.isfinite(pts), axis=1)) if pts is not None else np.zeros(0, int)
            m = self._match(feats, db, with_point) if len(with_point) >= 2 else np.zeros((0, 2), int)
            evidence.matches[db] = m
            counts.append(len(m))
            if len(m) < cfg.min_matches:
                continue
            p2d.append(feats.keypoints[m[:, 0]])
            p3d.append(pts[m[:, 1]])
            owner.append(np.full(len(m), i))
        result.matches = counts
        timings["match"] = time.perf_counter() - t
        t = time.perf_counter()
        result.inliers = [0] * len(result.retrieved)
        try:
            if not p2d or sum(len(p) for p in p2d) < cfg.min_inliers:
                result.status = "too few 2D-3D matches"
                return
            owner_all = np.concatenate(owner)
            est = estimate_absolute_pose(np.concatenate(p2d), np.concatenate(p3d), camera, cfg.pnp)
            if est is None:
                result.status = "PnP failed"
                return
            counts = np.bincount(owner_all[est.inliers], minlength=len(result.retrieved))
            result.inliers = [int(c) for c in counts]
            result.support = [db for db, c in zip(result.retrieved, counts, strict=True) if c >= cfg.min_inliers]
            if len(result.support) < cfg.min_support:
                result.status = f"only {len(result.support)} supporting images"
                return
            result.pose, result.status = est.pose, "localized"
        finally:
            timings["pose"] = time.perf_counter() - t

    def _essential(self, result: QueryResult, evidence: QueryEvidence, camera: Camera, timings: dict) -> None:
        """Relative pose to every retrieved image from the essential matrix, fused by ray triangulation."""
        cfg, feats = self.config, evidence.features
        t = time.perf_counter()
        pairs = [self._match(feats, db) for db in result.retrieved]
        evidence.matches.update(zip(result.retrieved, pairs, strict=True))
        result.matches = [len(m) for m in pairs]
        timings["match"] = time.perf_counter() - t
        t = time.perf_counter()
        centers, dirs, rots, used = [], [], [], []
        result.inliers = [0] * len(result.retrieved)
        for i, (db, m) in enumerate(zip(result.retrieved, pairs, strict=True)):
            if len(m) < cfg.min_matches:
                continue
            db_kps = self.map.local_features(db).keypoints
            est = estimate_relative_pose(
                db_kps[m[:, 1]], feats.keypoints[m[:, 0]], self.map.cameras[db], camera, cfg.essential
            )
            if est is None or est.num_inliers < cfg.min_inliers:
                continue
            result.inliers[i] = est.num_inliers
            db_pose = self.map.poses[db]
            rel = est.pose  # query_from_db, unit translation
            rots.append(rel.R @ db_pose.R)
            centers.append(db_pose.center)
            dirs.append(db_pose.R.T @ (-rel.R.T @ rel.t))
            used.append(db)
        try:
            if len(used) < max(2, cfg.min_support):
                result.status = f"only {len(used)} relative poses (2 needed to triangulate)"
                return
            fused = fuse_rays(np.stack(centers), np.stack(dirs), np.stack(rots), cfg.rays)
            if fused.pose is None:
                result.status = "rays do not intersect"
                return
            result.support = [db for db, s in zip(used, fused.position_support, strict=True) if s]
            if len(result.support) < max(2, cfg.min_support):
                result.status = "no consensus among relative poses"
                return
            result.pose, result.status = fused.pose, "localized"
        finally:
            timings["pose"] = time.perf_counter() - t

    def _relpose(self, result: QueryResult, evidence: QueryEvidence, camera: Camera, timings: dict) -> None:
        """Regress the relative pose to every retrieved image and fuse (Publication V)."""
        t = time.perf_counter()
        dbs = result.retrieved
        t_pred, q_pred = self.global_descriptor.regress(
            np.stack([self.map.global_descriptor(db) for db in dbs]), evidence.global_descriptor
        )
        frame = self.global_descriptor.translation_frame
        poses = [self.map.poses[db] for db in dbs]
        world_t = np.stack([label_translation_to_world(p, ti, frame) for p, ti in zip(poses, t_pred, strict=True)])
        centers = np.stack([p.center for p in poses])
        R_wc = np.stack([p.R.T for p in poses])
        if self.config.relpose_fusion == "original":
            fused = fuse_original(centers, R_wc, q_pred, world_t)
        else:
            directions, rotations = hypotheses_from_relative_poses(R_wc, q_pred, world_t)
            R_cw = np.swapaxes(rotations, -1, -2)
            if self.config.relpose_fusion == "metric":
                fused = fuse_metric(centers, world_t, R_cw, self.config.relpose_metric)
            else:
                fused = fuse_rays_ransac(centers, directions, R_cw, self.config.relpose_rays)
        timings["pose"] = timings.get("pose", 0.0) + time.perf_counter() - t
        result.support = [db for db, s in zip(dbs, fused.position_support, strict=True) if s]
        if fused.pose is None:
            result.status = "no relative-pose consensus"
            return
        result.pose = fused.pose
        result.status = "localized (first retrieved centre: no ray pair)" if fused.fallback else "localized"

    def _unified(self, result: QueryResult, evidence: QueryEvidence, camera: Camera, timings: dict) -> None:
        """Regressed pose as prior and fallback, geometric pose (PnP or essential) to refine it."""
        cfg = self.config
        prior = QueryResult(result.name, None, "", "relpose", result.retrieved, result.retrieval_scores)
        self._relpose(prior, evidence, camera, timings)
        geometric = getattr(self, "_" + self.geometric_method)
        geometric(result, evidence, camera, timings)
        chosen, reason = "relpose", "geometry failed: " + result.status
        if result.pose is not None:
            dt, dR = pose_error(result.pose, prior.pose) if prior.pose is not None else (0.0, 0.0)
            strong = max(result.inliers, default=0) >= cfg.unified_strong_inliers
            multi_view = len(result.support) >= cfg.unified_support_images
            if strong or multi_view or (dt <= cfg.unified_gate_m and dR <= cfg.unified_gate_deg):
                chosen = "geometry"
                reason = ("strong" if strong else f"{len(result.support)} supporting images" if multi_view
                          else "agrees with the prior")
            else:
                reason = f"geometry {dt:.2f} m / {dR:.1f} deg from the prior with weak support"
        result.extra = {
            "chosen": chosen,
            "reason": reason,
            "relpose": None if prior.pose is None else {"qvec": prior.pose.qvec.tolist(), "tvec": prior.pose.t.tolist()},
            "geometry": None if result.pose is None else {"qvec": result.pose.qvec.tolist(), "tvec": result.pose.t.tolist()},
        }
        if chosen == "relpose":
            result.pose, result.status, result.support = prior.pose, prior.status, prior.support


def _log_path(out: Path) -> Path:
    return out.with_name(out.name + ".log.json")


def _partial_path(out: Path) -> Path:
    return out.with_name(out.name + ".partial.json")


def output_paths(out: str | Path) -> dict[str, Path]:
    """Files :func:`localize` writes next to the pose file ``out``."""
    out = Path(out)
    return {
        "poses": out,
        "log": _log_path(out),
        "pairs": out.with_name(out.name + ".pairs.txt"),
        "features": out.with_name(out.name + ".features.h5"),
        "matches": out.with_name(out.name + ".matches.h5"),
    }


def _evidence_arrays(evidence: QueryEvidence) -> tuple[dict[str, np.ndarray], dict[str, dict[str, np.ndarray]]]:
    """hloc layout: the query's feature group and one ``matches0`` group per retrieved image."""
    f = evidence.features
    feats = {"keypoints": f.keypoints, "descriptors": f.descriptors.T.astype(np.float16), "scores": f.scores,
             "image_size": np.array(f.image_size)}
    matches = {}
    for db, m in evidence.matches.items():
        matches0 = np.full(len(f), -1, np.int32)
        matches0[m[:, 0]] = m[:, 1]
        matches[db] = {"matches0": matches0}
    return feats, matches


@dataclass(frozen=True)
class LocalizeSummary:
    poses_path: Path
    log_path: Path
    results: list[QueryResult]
    skipped: list[Skipped]

    @property
    def num_localized(self) -> int:
        return sum(r.pose is not None for r in self.results)


def localize(
    map_dir: str | Path | Map,
    queries: str | Path | FrameSet | Iterable[Frame],
    out: str | Path,
    config: LocalizeConfig = LocalizeConfig(),
    split: str = "test",
    checkpoint_every: int = 20,
    **dataset_options: Any,
) -> LocalizeSummary:
    """Localize a batch of query images and write ``out`` (hloc pose file of the localized queries)
    plus, next to it (see :func:`output_paths`): ``out.log.json`` (per-query details, skipped images),
    ``out.pairs.txt`` (retrieval pairs, ranked, with a scores sidecar), and the query features and
    query-database matches in hloc's HDF5 layout (``out.features.h5``, ``out.matches.h5``).

    Resumable: results are checkpointed to ``out.partial.json`` every ``checkpoint_every`` queries,
    and a rerun skips the queries found there. Unreadable images are skipped and listed.

    Args:
        map_dir: a map folder (or an opened :class:`Map`).
        queries: a data set folder (its ``split`` frames are used; ground truth is ignored), a
            :class:`FrameSet`, or frames.
        out: the pose file to write.
    """
    out = Path(out)
    localizer = Localizer(map_dir, config)
    if isinstance(queries, (str, Path)):
        frameset = load_frames(queries, split=split, require_poses=False, **dataset_options)
        frames, skipped = frameset.frames, list(frameset.skipped)
    elif isinstance(queries, FrameSet):
        frames, skipped = queries.frames, list(queries.skipped)
    else:
        frames, skipped = list(queries), []
    if not frames:
        raise InputError(Path(str(queries)), "no query images")

    import json

    done: dict[str, QueryResult] = {}
    partial = _partial_path(out)
    if partial.is_file():
        try:
            done = {d["name"]: QueryResult.from_json(d) for d in json.loads(partial.read_text())["results"]}
            logger.info("resuming: %d queries already localized in %s", len(done), partial)
        except (json.JSONDecodeError, KeyError, TypeError, ValueError):
            logger.warning("ignoring unreadable checkpoint %s", partial)

    paths = output_paths(out)
    feature_writer = ShardedH5Writer(paths["features"], flush_every=checkpoint_every + 1)
    match_writer = ShardedH5Writer(paths["matches"], flush_every=checkpoint_every * config.num_retrieved + 1)

    def checkpoint() -> None:
        feature_writer.flush()  # the h5 shards always hold at least the checkpointed queries
        match_writer.flush()
        write_json(partial, {"results": [r.to_json() for r in done.values()]})

    todo = [f for f in frames if f.name not in done]
    for k, frame in enumerate(tqdm(todo, desc="localize", unit="img")):
        try:
            image = read_image(frame.image_path)
        except InputError as e:
            skipped.append(Skipped(frame.name, frame.image_path, e.problem))
            continue
        result, evidence = localizer.localize_with_evidence(image, frame.camera, frame.name)
        done[frame.name] = result
        if evidence.features is not None:  # ``relpose`` uses no local features
            feats, matches = _evidence_arrays(evidence)
            feature_writer.add(frame.name, feats)
            for db, arrays in matches.items():
                match_writer.add(names_to_pair(frame.name, db), arrays)
        if (k + 1) % checkpoint_every == 0:
            checkpoint()

    results = [done[f.name] for f in frames if f.name in done]
    feature_writer.finalize(file_attrs={"extractor": localizer.map.config.extractor})
    match_writer.finalize()
    write_pairs(
        paths["pairs"], [(r.name, db) for r in results for db in r.retrieved],
        [s for r in results for s in r.retrieval_scores],
    )
    write_poses(out, {r.name: r.pose for r in results if r.pose is not None})
    write_json(
        _log_path(out),
        {
            "map": str(localizer.map.root),
            "method": localizer.method,
            "config": dataclasses.asdict(config),
            "results": [r.to_json() for r in results],
            "skipped": [{"name": s.name, "path": str(s.path), "reason": s.reason} for s in skipped],
        },
    )
    partial.unlink(missing_ok=True)
    n_loc = sum(r.pose is not None for r in results)
    logger.info("localized %d of %d queries -> %s", n_loc, len(results), out)
    for s in skipped:
        logger.warning("skipped %s", s)
    return LocalizeSummary(out, _log_path(out), results, skipped)

