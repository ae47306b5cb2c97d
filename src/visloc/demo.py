"""``visloc demo``: the main job on the embedded world, end to end.

embedded world -> map of its training traversals -> localization of its test traversal ->
evaluation per scene -> ``results.json`` + ``report.html`` with figures. No downloads, no weights.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from dataclasses import dataclass
from pathlib import Path

from .datasets import load_frames
from .datasets.synthetic import WorldConfig, make_world
from .evaluation.localization import LocalizationResults, evaluate_localization
from .io.atomic import write_json
from .localization import LocalizeConfig, Map, MapConfig, build_map, localize
from .localization.estimators import estimators
from .localization.localize import output_paths
from .viz import write_report
from .viz.localization import pick_examples, query_figures, topview_figures

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class DemoOutputs:
    out_dir: Path
    results: LocalizationResults
    report: Path
    seconds: dict[str, float]


def run_demo(
    out_dir: str | Path,
    world: WorldConfig = WorldConfig(),
    map_config: MapConfig = MapConfig(),
    localize_config: LocalizeConfig = LocalizeConfig(),
    progress: bool = True,
) -> DemoOutputs:
    """Run the whole pipeline on the embedded world and write results and report to ``out_dir``.

    Every stage resumes from what an interrupted earlier run left in ``out_dir``.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    seconds: dict[str, float] = {}

    t = time.perf_counter()
    world_root = make_world(out / "world", world, progress=progress)
    seconds["world"] = time.perf_counter() - t

    map_dir = out / "map"
    method = localize_config.method
    if method != "auto" and estimators.entry(method).factory.needs_global_descriptor:
        # the relative-pose encoder (shipped model unless the config names one) is the global descriptor
        map_dir = out / "map_relpose"
        if map_config.global_descriptor != "relpose":
            map_config = dataclasses.replace(map_config, global_descriptor="relpose", global_options={})
    t = time.perf_counter()
    build_map(world_root, map_dir, map_config, split="train")
    seconds["map"] = time.perf_counter() - t

    t = time.perf_counter()
    queries = load_frames(world_root, split="test")
    poses_path = out / f"poses_{localize_config.method}.txt"
    summary = localize(map_dir, queries, poses_path, localize_config)
    seconds["localize"] = time.perf_counter() - t

    estimates = {r.name: r.pose for r in summary.results if r.pose is not None}
    config = {
        "world": dataclasses.asdict(world),
        "map": dataclasses.asdict(map_config),
        "localize": dataclasses.asdict(localize_config),
    }
    results = evaluate_localization(estimates, queries.poses(), config=config)
    results.write(out / "results.json")

    fig_dir = out / "figures"
    the_map = Map(map_dir)
    figures = topview_figures(fig_dir, queries.poses(), estimates, the_map.poses, the_map.scenes)
    frames = queries.by_name()
    written = output_paths(poses_path)
    for r in pick_examples(summary.results):
        figures += query_figures(fig_dir, the_map, frames[r.name], r, written["features"], written["matches"])
    seconds["total"] = sum(seconds.values())
    timings = {
        stage: sum(r.timings.get(stage, 0.0) for r in summary.results) / max(1, len(summary.results))
        for stage in ("extract", "retrieve", "match", "pose")
    }
    extra = {"seconds": seconds, "mean per-query seconds by stage": timings, "config": config}
    write_json(out / "timings.json", {"seconds": seconds, "per_query": timings})
    report = write_report(out, results, figures, "visloc demo: embedded world", extra=extra)
    the_map.close()
    return DemoOutputs(out, results, report, seconds)
