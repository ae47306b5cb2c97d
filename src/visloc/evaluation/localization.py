"""Camera localization metrics with the standard protocol (7-Scenes / Cambridge, as in hloc).

For every query of the ground truth:

* translation error = distance between the estimated and the true camera centres (metres);
* rotation error = angle of ``R_est R_gt^T`` (degrees);
* a query without an estimate (not localized) is a failure: both errors are ``+inf``, so it lies
  outside every threshold and enters the medians as ``+inf`` (the protocol of
  ``visloc_pseudo_gt_limitations``). A scene where half or more of the queries fail therefore has an
  infinite median, written as ``null`` in JSON ("the median is a failure").

Queries are split into scenes by ``scene_of(name)`` (default: the first path component, ``"all"`` for
names without ``/``), and every statistic is also given ``overall``.

``results.json`` layout::

    {"scenes": {scene: {"num_queries": int, "num_localized": int,
                        "median_t_m": float | null, "median_R_deg": float | null,
                        "<t>_<R>deg": share in [0, 1], ...}},
     "overall": {same keys},
     "per_query": {name: {"scene": str, "t_m": float, "R_deg": float} | null},   # null = not localized
     "ignored_estimates": [names estimated but absent from the ground truth],
     "config": {"thresholds": [[t_m, R_deg], ...], "threshold_keys": [...], ...}}
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .. import __version__
from ..errors import InputError
from ..geometry.pose import Pose, pose_error
from ..io.atomic import write_json
from ..io.poses import read_poses

logger = logging.getLogger(__name__)

#: ``(translation in metres, rotation in degrees)`` pairs: hloc's 7-Scenes and Cambridge thresholds.
DEFAULT_THRESHOLDS: tuple[tuple[float, float], ...] = (
    (0.01, 1.0),
    (0.02, 2.0),
    (0.05, 5.0),
    (0.25, 2.0),
    (0.50, 5.0),
    (5.0, 10.0),
)
#: Relative slack when comparing an error with a threshold: an error that equals the threshold up to
#: floating-point round-off of its computation counts as on it (hence within).
_THRESHOLD_RTOL = 1e-9
_FIXED_KEYS = ("num_queries", "num_localized", "median_t_m", "median_R_deg")


def _short_number(value: float) -> str:
    return f"{round(value, 6):g}"


def threshold_key(t_m: float, R_deg: float) -> str:
    """Name of a threshold pair: ``(0.05, 5) -> "5cm_5deg"``, ``(5, 10) -> "5m_10deg"``.

    Translations below one metre are written in centimetres, others in metres.

    Args:
        t_m: translation threshold in metres (> 0).
        R_deg: rotation threshold in degrees (> 0).

    Returns:
        The key used in ``results.json`` and tables, e.g. ``"0.5cm_0.5deg"``.
    """
    t_part = f"{_short_number(t_m * 100)}cm" if t_m < 1.0 else f"{_short_number(t_m)}m"
    return f"{t_part}_{_short_number(R_deg)}deg"


def _check_thresholds(thresholds: Iterable[Sequence[float]]) -> tuple[tuple[float, float], ...]:
    checked = []
    for pair in thresholds:
        if len(pair) != 2:
            raise ValueError(f"a threshold is a (t_m, R_deg) pair, got {pair!r}")
        t, r = float(pair[0]), float(pair[1])
        if not (math.isfinite(t) and math.isfinite(r) and t > 0 and r > 0):
            raise ValueError(f"thresholds must be positive and finite, got ({t}, {r})")
        checked.append((t, r))
    keys = [threshold_key(t, r) for t, r in checked]
    if len(set(keys)) != len(keys):
        raise ValueError(f"duplicate thresholds: {keys}")
    return tuple(checked)


def default_scene_of(name: str) -> str:
    """First path component of an image name (``"chess/seq-03/frame-000000.color.png" -> "chess"``),
    or ``"all"`` when the name has no ``/``."""
    return name.split("/", 1)[0] if "/" in name else "all"


@dataclass(frozen=True)
class QueryError:
    """Errors of one localized query.

    Attributes:
        scene: scene the query belongs to.
        t_m: distance between estimated and true camera centres (metres).
        R_deg: angle of ``R_est R_gt^T`` (degrees).
    """

    scene: str
    t_m: float
    R_deg: float


@dataclass(frozen=True)
class SceneStats:
    """Statistics of a set of queries (one scene, or all of them).

    Attributes:
        num_queries: queries in the ground truth.
        num_localized: queries that have an estimate.
        median_t_m: median translation error in metres (``inf`` when it is a failure).
        median_R_deg: median rotation error in degrees (``inf`` when it is a failure).
        recall: ``{threshold key: share of all queries within it}``, shares in ``[0, 1]``.
    """

    num_queries: int
    num_localized: int
    median_t_m: float
    median_R_deg: float
    recall: dict[str, float] = field(default_factory=dict)

    @classmethod
    def from_errors(
        cls, t_err: np.ndarray, R_err: np.ndarray, thresholds: Sequence[tuple[float, float]]
    ) -> SceneStats:
        """Statistics of error arrays ``(N,)`` where a failure is ``inf`` in both."""
        t_err = np.asarray(t_err, dtype=np.float64)
        R_err = np.asarray(R_err, dtype=np.float64)
        n = len(t_err)
        recall = {}
        for t, r in thresholds:
            within = (t_err <= t * (1 + _THRESHOLD_RTOL)) & (R_err <= r * (1 + _THRESHOLD_RTOL))
            recall[threshold_key(t, r)] = float(np.count_nonzero(within)) / n if n else 0.0
        return cls(
            num_queries=n,
            num_localized=int(np.count_nonzero(np.isfinite(t_err))),
            median_t_m=float(np.median(t_err)) if n else math.inf,
            median_R_deg=float(np.median(R_err)) if n else math.inf,
            recall=recall,
        )

    def to_json(self) -> dict[str, Any]:
        """Flat JSON dict; infinite medians become ``None``."""
        return {
            "num_queries": self.num_queries,
            "num_localized": self.num_localized,
            "median_t_m": _finite_or_none(self.median_t_m),
            "median_R_deg": _finite_or_none(self.median_R_deg),
            **self.recall,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> SceneStats:
        """Inverse of :meth:`to_json`."""
        return cls(
            num_queries=int(data["num_queries"]),
            num_localized=int(data["num_localized"]),
            median_t_m=_none_to_inf(data["median_t_m"]),
            median_R_deg=_none_to_inf(data["median_R_deg"]),
            recall={k: float(v) for k, v in data.items() if k not in _FIXED_KEYS},
        )


def _finite_or_none(x: float) -> float | None:
    return float(x) if math.isfinite(x) else None


def _none_to_inf(x: float | None) -> float:
    return math.inf if x is None else float(x)


@dataclass(frozen=True)
class LocalizationResults:
    """Result of :func:`evaluate_localization`.

    Attributes:
        scenes: ``{scene: SceneStats}``, sorted by scene name.
        overall: statistics over all queries.
        per_query: ``{name: QueryError}``, ``None`` for a query that was not localized.
        thresholds: the ``(t_m, R_deg)`` pairs evaluated, in order.
        ignored_estimates: estimated names that are not in the ground truth.
        config: how the evaluation was run (written into ``results.json``).
    """

    scenes: dict[str, SceneStats]
    overall: SceneStats
    per_query: dict[str, QueryError | None]
    thresholds: tuple[tuple[float, float], ...]
    ignored_estimates: tuple[str, ...] = ()
    config: dict[str, Any] = field(default_factory=dict)

    @property
    def threshold_keys(self) -> list[str]:
        """Keys of :attr:`thresholds`, e.g. ``["1cm_1deg", ...]``."""
        return [threshold_key(t, r) for t, r in self.thresholds]

    @property
    def failed(self) -> list[str]:
        """Names of the queries that were not localized."""
        return [name for name, err in self.per_query.items() if err is None]

    def to_json(self) -> dict[str, Any]:
        """The ``results.json`` content (see the module docstring); JSON-serialisable, no ``inf``."""
        return {
            "scenes": {scene: stats.to_json() for scene, stats in self.scenes.items()},
            "overall": self.overall.to_json(),
            "per_query": {
                name: None if err is None else {"scene": err.scene, "t_m": err.t_m, "R_deg": err.R_deg}
                for name, err in self.per_query.items()
            },
            "ignored_estimates": list(self.ignored_estimates),
            "config": {
                **self.config,
                "thresholds": [[t, r] for t, r in self.thresholds],
                "threshold_keys": self.threshold_keys,
            },
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> LocalizationResults:
        """Rebuild results from :meth:`to_json` output (e.g. a loaded ``results.json``)."""
        config = dict(data.get("config", {}))
        thresholds = _check_thresholds(config.pop("thresholds", DEFAULT_THRESHOLDS))
        config.pop("threshold_keys", None)
        per_query: dict[str, QueryError | None] = {
            name: None if e is None else QueryError(str(e["scene"]), float(e["t_m"]), float(e["R_deg"]))
            for name, e in data["per_query"].items()
        }
        return cls(
            scenes={scene: SceneStats.from_json(s) for scene, s in data["scenes"].items()},
            overall=SceneStats.from_json(data["overall"]),
            per_query=per_query,
            thresholds=thresholds,
            ignored_estimates=tuple(data.get("ignored_estimates", ())),
            config=config,
        )

    def write(self, path: str | Path) -> Path:
        """Write :meth:`to_json` atomically to ``path`` (typically ``results.json``); returns the path."""
        path = Path(path)
        write_json(path, self.to_json())
        logger.info("wrote localization results to %s", path)
        return path

    def table_rows(self) -> tuple[list[str], list[list[str]]]:
        """Header and formatted rows (one per scene, then ``overall``) shared by text and HTML tables.

        Medians are shown in cm / degrees (``inf`` when the median is a failure), shares in percent.
        """
        header = ["scene", "n", "localized", "median t (cm)", "median R (deg)", *self.threshold_keys]
        rows = [
            _format_row(name, stats, self.threshold_keys)
            for name, stats in [*self.scenes.items(), ("overall", self.overall)]
        ]
        return header, rows

    def format_table(self) -> str:
        """A printable per-scene table with an ``overall`` row."""
        header, rows = self.table_rows()
        widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]

        def line(cells: list[str]) -> str:
            first = cells[0].ljust(widths[0])
            return " | ".join([first, *(c.rjust(w) for c, w in zip(cells[1:], widths[1:], strict=True))])

        rule = "-+-".join("-" * w for w in widths)
        return "\n".join([line(header), rule, *(line(r) for r in rows[:-1]), rule, line(rows[-1])])


def _format_row(name: str, stats: SceneStats, keys: Sequence[str]) -> list[str]:
    t_cm = f"{stats.median_t_m * 100:.3f}" if math.isfinite(stats.median_t_m) else "inf"
    r_deg = f"{stats.median_R_deg:.3f}" if math.isfinite(stats.median_R_deg) else "inf"
    shares = [f"{100 * stats.recall[k]:.1f}" for k in keys]
    return [name, str(stats.num_queries), str(stats.num_localized), t_cm, r_deg, *shares]


def evaluate_localization(
    estimates: Mapping[str, Pose],
    truth: Mapping[str, Pose],
    scene_of: Callable[[str], str] | None = None,
    thresholds: Iterable[Sequence[float]] = DEFAULT_THRESHOLDS,
    config: Mapping[str, Any] | None = None,
) -> LocalizationResults:
    """Evaluate estimated ``cam_from_world`` poses against the ground truth.

    Args:
        estimates: ``{name: Pose}`` estimated poses; queries of ``truth`` absent here are failures.
        truth: ``{name: Pose}`` ground-truth poses; every entry is evaluated.
        scene_of: maps a query name to its scene; default :func:`default_scene_of`.
        thresholds: ``(t_m, R_deg)`` pairs; a query is within one when ``t_err <= t and R_err <= R``.
        config: extra entries recorded in ``results.config`` (method, data set, ...).

    Returns:
        Per-scene and overall statistics plus per-query errors.

    Raises:
        ValueError: empty ground truth, or invalid thresholds.
    """
    if not truth:
        raise ValueError("the ground truth holds no queries")
    thresholds = _check_thresholds(thresholds)
    scene_fn = scene_of or default_scene_of

    ignored = tuple(sorted(set(estimates) - set(truth)))
    if ignored:
        logger.warning(
            "%d estimate(s) have no ground truth and are ignored (e.g. %s); ground-truth names look like %s",
            len(ignored), ", ".join(ignored[:3]), ", ".join(sorted(truth)[:2]),
        )  # fmt: skip

    per_query: dict[str, QueryError | None] = {}
    by_scene: dict[str, list[tuple[float, float]]] = {}
    for name in sorted(truth):
        scene = scene_fn(name)
        if name in estimates:
            t_err, R_err = pose_error(estimates[name], truth[name])
            per_query[name] = QueryError(scene, t_err, R_err)
        else:
            t_err, R_err = math.inf, math.inf
            per_query[name] = None
        by_scene.setdefault(scene, []).append((t_err, R_err))

    def stats_of(errors: list[tuple[float, float]]) -> SceneStats:
        arr = np.asarray(errors, dtype=np.float64).reshape(-1, 2)
        return SceneStats.from_errors(arr[:, 0], arr[:, 1], thresholds)

    scenes = {scene: stats_of(by_scene[scene]) for scene in sorted(by_scene)}
    overall = stats_of([e for scene in scenes for e in by_scene[scene]])
    num_failed = overall.num_queries - overall.num_localized
    if num_failed:
        logger.info("%d of %d queries were not localized (counted as failures)", num_failed, len(truth))

    run_config: dict[str, Any] = {
        "protocol": "t = camera-centre distance (m), R = angle of R_est R_gt^T (deg); "
        "within a threshold when t <= t_thr and R <= R_thr; a missing estimate is a failure "
        "(infinite error); a median of null means the median is a failure",
        "scene_of": "first path component" if scene_of is None else getattr(scene_of, "__name__", "custom"),
        "visloc_version": __version__,
        **(config or {}),
    }
    return LocalizationResults(
        scenes=scenes,
        overall=overall,
        per_query=per_query,
        thresholds=thresholds,
        ignored_estimates=ignored,
        config=run_config,
    )


def evaluate_localization_files(
    poses_path: str | Path,
    gt: Mapping[str, Pose] | str | Path,
    scene_of: Callable[[str], str] | None = None,
    thresholds: Iterable[Sequence[float]] = DEFAULT_THRESHOLDS,
    config: Mapping[str, Any] | None = None,
) -> LocalizationResults:
    """Evaluate an hloc pose file (``name qw qx qy qz tx ty tz``, world-to-camera).

    Args:
        poses_path: estimated poses file.
        gt: ground truth as ``{name: Pose}`` or as the path of an hloc pose file.
        scene_of: see :func:`evaluate_localization`.
        thresholds: see :func:`evaluate_localization`.
        config: see :func:`evaluate_localization`.

    Returns:
        The :class:`LocalizationResults`; their config records the input paths.

    Raises:
        InputError: a file is missing or malformed, or the ground-truth file holds no poses.
    """
    estimates = read_poses(poses_path)
    run_config: dict[str, Any] = {"estimates": str(poses_path)}
    if isinstance(gt, (str, Path)):
        truth = read_poses(gt)
        if not truth:
            raise InputError(gt, "ground-truth pose file holds no poses")
        run_config["ground_truth"] = str(gt)
    else:
        truth = dict(gt)
    run_config.update(config or {})
    return evaluate_localization(
        estimates, truth, scene_of=scene_of, thresholds=thresholds, config=run_config
    )


def run_log(poses_path: str | Path) -> dict[str, Any] | None:
    """The ``POSES.log.json`` that ``visloc localize`` wrote next to a pose file (``None`` when absent)."""
    import json

    path = Path(poses_path)
    log = path.with_name(path.name + ".log.json")
    if not log.is_file():
        return None
    try:
        return json.loads(log.read_text())
    except json.JSONDecodeError as e:
        raise InputError(log, f"invalid JSON ({e})") from None


def ground_truth_of_run(
    poses_path: str | Path, gt: str | Path, split: str | None = None
) -> tuple[dict[str, Pose], Callable[[str], str] | None, dict[str, Any]]:
    """The ground truth a pose file is evaluated against, its scene of each name, and what is known of the run.

    Args:
        poses_path: the estimated poses; when ``visloc localize`` wrote them, its log names the queries.
        gt: an hloc pose file (every pose in it is a query), or a data set folder.
        split: the queries of a data set folder; ``None``: the queries of the run (localized, failed or
            skipped, from the log), else the ``test`` split.

    Returns:
        ``(truth, scene_of, run)``: ``run`` holds the run's map, method, configuration and data set.
    """
    from ..datasets import load_frames

    log = run_log(poses_path)
    run: dict[str, Any] = {}
    if log is not None:
        run = {"map": log.get("map"), "method": log.get("method"), "localize_config": log.get("config")}
    gt = Path(gt)
    if gt.is_file():
        return read_poses(gt), None, run
    queries = None
    if split is None and log is not None:
        queries = {r["name"] for r in log.get("results", [])} | {s["name"] for s in log.get("skipped", [])}
    frames = load_frames(gt, split="all" if queries is not None else (split or "test"), require_poses=True)
    chosen = [f for f in frames.frames if queries is None or f.name in queries]
    if not chosen:
        raise InputError(gt, "none of the run's queries has a ground-truth pose here" if queries is not None
                         else f"no frame with a pose in split {split or 'test'!r}")
    scenes = {f.name: f.scene for f in chosen}

    def scene_of(name: str) -> str:
        return scenes.get(name) or default_scene_of(name)

    scene_of.__name__ = f"scenes of the data set {gt.name}"
    run["ground_truth"] = {"path": str(gt), "format": frames.format,
                           "queries": "the run's (from its log)" if queries is not None else (split or "test")}
    return {f.name: f.pose for f in chosen}, scene_of, run
