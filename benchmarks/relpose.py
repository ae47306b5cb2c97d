"""Relocalization by pairwise relative poses (Publication V): the comparison the thesis makes.

On the embedded world, with the relative-pose model trained on the training traversals of all scenes but
one (the shipped model, or ``--model``):

* per scene: PoseNet (one model per seen scene), relpose + fusion (one model), the classical geometric
  pipeline (SIFT + VLAD + PnP) and the unified estimate (relpose prior/fallback + geometry);
* scalability: parameters and training time of one relpose model vs k PoseNet models;
* the held-out scene: relpose + fusion vs the pose of the top-1 retrieved image;
* TUM fr2/desk (even frames = map, odd = queries): relpose + fusion with the world-trained model;
* degraded queries (low light + blur + noise, :class:`~visloc.datasets.synthetic.QueryDegradation`):
  where local features get scarce, which of relpose, geometry and the unified estimate wins.

The unified estimate combines relpose + fusion with the geometric pipeline. Its checks are made twice:
against the foundation pipeline as its geometric input (SIFT + VLAD + PnP), and, stricter, against the
geometric pose computed on the unified estimate's own retrieval (the relpose encoder's descriptors: the row
"geometric (relpose retrieval + PnP)"), which isolates what the regressed pose adds beyond the network's
retrieval. The held-out scene's top-1 baseline is given for both retrievals (relpose encoder, VLAD). Errors within
1 mm / 0.01 deg of each other count as equal in the unified checks (the world's depth is quantised to 1 mm).

    python benchmarks/relpose.py                      # writes docs/results/relpose.md and .json
    python benchmarks/relpose.py --posenet-epochs 5   # a quick look
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import time
from pathlib import Path

import numpy as np

from visloc.datasets import load_frames
from visloc.datasets.synthetic import QueryDegradation, WorldConfig, make_world
from visloc.evaluation.localization import evaluate_localization
from visloc.io.atomic import write_json, write_text
from visloc.io.images import read_image
from visloc.localization import LocalizeConfig, Localizer, Map, MapConfig, build_map, estimator_config
from visloc.retrieval.relpose import DEFAULT_MODEL
from visloc.runtime import tune_malloc
from visloc.settings import data_dir, shipped_model

REPO = Path(__file__).resolve().parents[1]
KEYS = ("5cm_5deg", "25cm_2deg", "50cm_5deg", "5m_10deg")
GEOMETRIC_INPUT = "geometric (relpose retrieval + PnP)"
FOUNDATION = "geometric (SIFT+VLAD+PnP)"
TOP1 = "top-1 retrieved pose"
TOP1_VLAD = "top-1 retrieved pose (VLAD)"
METRIC = "relpose + metric fusion"
#: Errors closer than this count as equal in the unified checks: the world's depth maps (and so its 3D
#: points) are quantised to 1 mm, so sub-millimetre differences between two PnP poses are noise.
RESOLUTION = (0.001, 0.01)  # metres, degrees
#: Query conditions beyond the default: dim and blurred, and severely so.
DEGRADATIONS = {"degraded": QueryDegradation(blur_sigma=3.0, gain=0.6, noise_sigma=8.0),
                "severe": QueryDegradation(blur_sigma=5.0, gain=0.35, noise_sigma=12.0)}


def paired(a, b, scene: str, rounds: int = 2000) -> str:
    """Per-query comparison of two methods' position errors in one scene: wins of ``a`` and a bootstrap
    95 % interval of the difference of medians (``a - b``, cm); a query one method did not localize counts
    as an infinite error."""
    names = [n for n, e in b.per_query.items() if n.split("/")[0] == scene]
    ea = np.array([np.inf if a.per_query.get(n) is None else a.per_query[n].t_m for n in names])
    eb = np.array([np.inf if b.per_query[n] is None else b.per_query[n].t_m for n in names])
    rng = np.random.default_rng(0)
    idx = rng.integers(0, len(names), size=(rounds, len(names)))
    diff = np.median(ea[idx], axis=1) - np.median(eb[idx], axis=1)
    lo, hi = np.percentile(diff, [2.5, 97.5])
    return (f"{int(np.sum(ea < eb))}/{len(names)} queries closer; median difference 95 % bootstrap interval "
            f"[{100 * lo:+.1f}, {100 * hi:+.1f}] cm")


def checks(results: dict, degraded: dict[str, dict], scenes: list[str], seen: list[str], held_out: str,
           relpose_input: str) -> list[str]:
    """The issue's three numbers, evaluated on this run (median errors; a failed median is inf)."""
    def med(table, method, scene):
        s = table[method].scenes[scene]
        return s.median_t_m, s.median_R_deg

    def tie(a: float, b: float, floor: float) -> bool:
        return abs(a - b) <= floor

    out = []
    for fused in ("relpose + fusion", METRIC):
        beats = [s for s in seen if all(a < b for a, b in zip(med(results, fused, s),
                                                                 med(results, "PoseNet (one per scene)", s), strict=True))]
        out.append(f"- {fused} beats per-scene PoseNet on median t and R in {len(beats)}/{len(seen)} seen scenes")
        r = med(results, fused, held_out)[0]
        for top1 in (TOP1, TOP1_VLAD):
            t1 = med(results, top1, held_out)[0]
            out.append(f"- held-out {held_out}: {fused} {100 * r:.1f} cm vs {top1} {100 * t1:.1f} cm "
                       f"({'beats' if r < t1 else 'does not beat'} it; "
                       f"{paired(results[fused], results[top1], held_out)})")
    for geometric in (FOUNDATION, GEOMETRIC_INPUT):
        out.append(f"- unified against {relpose_input} and {geometric}:")
        for name, table in (("default", results), *degraded.items()):
            for s in scenes:
                u = med(table, "unified", s)
                best = [min(a, b) for a, b in zip(med(table, relpose_input, s), med(table, geometric, s), strict=True)]
                ties = [tie(a, b, f) for a, b, f in zip(u, best, RESOLUTION, strict=True)]
                ratio = [1.0 if t else a / b if b > 0 else np.inf for a, b, t in zip(u, best, ties, strict=True)]
                verdict = ("better than both" if all(a < b and not t for a, b, t in zip(u, best, ties, strict=True))
                           else "within 10 % of the better" if max(ratio) <= 1.1 else "worse by more than 10 %")
                out.append(f"  - {name} queries, {s}: {100 * u[0]:.2f} cm / {u[1]:.3f} deg vs the better input "
                           f"{100 * best[0]:.2f} cm / {best[1]:.3f} deg: {verdict}")
    return out



def posenet_runs(world: Path, work: Path, scenes: list[str], epochs: int) -> dict[str, dict]:
    """Train one PoseNet per seen scene (or reuse a finished run in ``work``)."""
    from visloc.training.posenet import tiny_posenet_config, train_posenet

    config = tiny_posenet_config(epochs=epochs, milestones=(int(epochs * 0.75),), cache_images=True,
                                 num_workers=0, progress=False, batch_size=16)
    runs = {}
    for scene in scenes:
        out = work / f"posenet_{scene}"
        if not (out / "model.pt").is_file():
            t = time.perf_counter()
            train_posenet(world, out, scene, config)
            (out / "seconds.txt").write_text(f"{time.perf_counter() - t:.1f}\n")
        metrics = json.loads((out / "metrics.json").read_text())
        runs[scene] = {"model": out / "model.pt", "seconds": float((out / "seconds.txt").read_text()),
                       "parameters": metrics["parameters"]}
    return runs


def posenet_estimates(model_path: Path, frames) -> dict:
    import torch

    from visloc.models.checkpoint import load_model, read_checkpoint
    from visloc.models.posenet import posenet_output_to_pose
    from visloc.models.preprocess import eval_batch

    model = load_model(model_path)
    pre = read_checkpoint(model_path)["metrics"]["preprocess"]
    out = {}
    with torch.inference_mode():
        for f in frames:
            c, q = model(eval_batch([read_image(f.image_path)], pre["resize"], pre["crop"]))
            out[f.name] = posenet_output_to_pose(c[0].numpy(), q[0].numpy())
    return out


def query_images(frames, degradation: QueryDegradation | None = None) -> dict[str, np.ndarray]:
    """The query images, degraded with a per-query seed (identical for every method) when asked."""
    images = {}
    for i, f in enumerate(frames):
        image = read_image(f.image_path)
        images[f.name] = image if degradation is None else degradation.apply(image, np.random.default_rng(i))
    return images


def localize(map_dir: Path, frames, method: str, images: dict[str, np.ndarray],
             fusion: str = "original") -> tuple[dict, dict, float]:
    """Estimates, the top-1 retrieved database pose of each query, and seconds per query."""
    options = {"relpose": {"fusion": fusion}, "unified": {"relpose.fusion": fusion}}.get(method, {})
    localizer = Localizer(Map(map_dir), LocalizeConfig(method, estimator_config(method, options)))
    estimates, top1, seconds = {}, {}, []
    for f in frames:
        image = images[f.name]
        t = time.perf_counter()
        r = localizer.localize_image(image, f.camera, f.name)
        seconds.append(time.perf_counter() - t)
        if r.pose is not None:
            estimates[f.name] = r.pose
        top1[f.name] = localizer.map.poses[r.retrieved[0]]
    return estimates, top1, float(np.mean(seconds))


def row(name: str, stats) -> str:
    t = "fail" if not np.isfinite(stats.median_t_m) else f"{100 * stats.median_t_m:.1f}"
    r = "fail" if not np.isfinite(stats.median_R_deg) else f"{stats.median_R_deg:.2f}"
    return f"| {name} | {t} | {r} | " + " | ".join(f"{100 * stats.recall[k]:.0f}%" for k in KEYS) + " |"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", type=Path, default=Path("/tmp/visloc_relpose_bench"))
    parser.add_argument("--model", type=Path, default=None, help="relpose model.pt (default: the shipped one)")
    parser.add_argument("--held-out", default="conference", help="scene the relpose model never saw")
    parser.add_argument("--posenet-epochs", type=int, default=60)
    parser.add_argument("--unified-fusion", default="metric", choices=["original", "ransac", "metric"],
                        help="relpose fusion of the unified estimate's prior and fallback")
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    tune_malloc()
    model = args.model or shipped_model(DEFAULT_MODEL)
    model_metrics = json.loads(Path(str(model).replace(".pt", ".json")).read_text()) if Path(
        str(model).replace(".pt", ".json")).is_file() else {}

    world = make_world(args.work / "world", WorldConfig(), progress=False)
    test = load_frames(world, split="test")
    scenes = test.scenes
    seen = [s for s in scenes if s != args.held_out]
    truth = test.poses()
    by_scene = {s: [f for f in test.frames if f.scene == s] for s in scenes}

    relpose_map = args.work / "map_relpose"
    if not (relpose_map / "map.json").is_file():
        build_map(world, relpose_map, MapConfig(global_descriptor="relpose", global_options={"model": str(model)}),
                  split="train")
    vlad_map = args.work / "map_vlad"
    if not (vlad_map / "map.json").is_file():
        build_map(world, vlad_map, MapConfig(), split="train")

    results, seconds = {}, {}
    degraded: dict[str, dict] = {name: {} for name in DEGRADATIONS}
    runs_localize = (("relpose + fusion", relpose_map, "relpose", "original"),
                     (METRIC, relpose_map, "relpose", "metric"),
                     (FOUNDATION, vlad_map, "pnp", "original"),
                     (GEOMETRIC_INPUT, relpose_map, "pnp", "original"),
                     ("unified", relpose_map, "unified", args.unified_fusion))
    for condition in ("default", *DEGRADATIONS):
        images = query_images(test.frames, DEGRADATIONS.get(condition))
        table = results if condition == "default" else degraded[condition]
        for label, map_dir, method, fusion in runs_localize:
            est, top1, sec = localize(map_dir, test.frames, method, images, fusion)
            table[label] = evaluate_localization(est, truth)
            if condition == "default":
                seconds[label] = sec
            if label == "relpose + fusion":
                table[TOP1] = evaluate_localization(top1, truth)
            if label == FOUNDATION:
                table[TOP1_VLAD] = evaluate_localization(top1, truth)
    runs = posenet_runs(world, args.work, seen, args.posenet_epochs)
    posenet_est = {}
    for scene, run in runs.items():
        posenet_est.update(posenet_estimates(run["model"], by_scene[scene]))
    results["PoseNet (one per scene)"] = evaluate_localization(
        posenet_est, {n: p for n, p in truth.items() if n.split("/")[0] in seen})

    tum = data_dir() / "tum_fr2_desk"
    tum_stats = None
    if tum.is_dir():
        tum_map = args.work / "map_tum_relpose"
        if not (tum_map / "map.json").is_file():
            build_map(tum, tum_map, MapConfig(global_descriptor="relpose", global_options={"model": str(model)}),
                      split="even")
        odd = load_frames(tum, split="odd")
        est, _, _ = localize(tum_map, odd.frames, "relpose", query_images(odd.frames))
        tum_stats = evaluate_localization(est, odd.poses(), scene_of=lambda n: "tum_fr2_desk")

    methods = ["PoseNet (one per scene)", "relpose + fusion", METRIC, FOUNDATION, GEOMETRIC_INPUT, "unified"]
    lines = ["# Relocalization by pairwise relative poses (Publication V) on the embedded world", "",
             f"Produced by `python benchmarks/relpose.py` on {os.cpu_count()} CPU cores, "
             f"{time.strftime('%Y-%m-%d')}. Relative-pose model: `{model.name}` "
             f"(trained on every scene but `{args.held_out}`; {model_metrics.get('parameters', '?')} parameters); "
             f"the unified estimate's fallback uses the {args.unified_fusion} fusion. "
             "Errors per scene: median camera-centre distance (cm) and rotation (deg); shares within thresholds.",
             ""]
    for scene in scenes:
        lines += [f"## {scene}{' (held out: never seen in training)' if scene == args.held_out else ''}", "",
                  "| method | median t (cm) | median R (deg) | " + " | ".join(KEYS) + " |",
                  "|---|---|---|" + "---|" * len(KEYS)]
        for m in [*methods, TOP1, TOP1_VLAD]:
            stats = results[m].scenes.get(scene)
            if stats is not None:
                lines.append(row(m, stats))
        lines.append("")
    posenet_params = sum(r["parameters"] for r in runs.values())
    posenet_seconds = sum(r["seconds"] for r in runs.values())
    lines += ["## Scalability", "",
              "| | models | parameters stored | training time (s, this CPU) |", "|---|---|---|---|",
              f"| relpose (one model, all seen scenes) | 1 | {model_metrics.get('parameters', '?')} | "
              f"{model_metrics.get('train_seconds', '?')} |",
              f"| PoseNet (one per scene) | {len(runs)} | {posenet_params} | {posenet_seconds:.0f} |", "",
              "Seconds per query: " + ", ".join(f"{k} {v:.3f}" for k, v in seconds.items()), ""]
    for condition, degradation in DEGRADATIONS.items():
        lines += [f"## {condition.capitalize()} queries ({degradation}), same maps", "",
                  "| scene | method | median t (cm) | median R (deg) | " + " | ".join(KEYS) + " |",
                  "|---|---|---|---|" + "---|" * len(KEYS)]
        for scene in scenes:
            for m in ["relpose + fusion", METRIC, FOUNDATION, GEOMETRIC_INPUT, "unified", TOP1]:
                lines.append(f"| {scene} " + row(m, degraded[condition][m].scenes[scene]))
        lines.append("")
    lines += ["## Checks against the issue's numbers", "", *checks(
        results, degraded, scenes, seen, args.held_out, METRIC if args.unified_fusion == "metric" else "relpose + fusion"),
              ""]
    if tum_stats is not None:
        lines += ["## Cross-domain: TUM fr2/desk with the world-trained model (even frames = map, odd = queries)",
                  "", "| method | median t (cm) | median R (deg) | " + " | ".join(KEYS) + " |",
                  "|---|---|---|" + "---|" * len(KEYS), row("relpose + fusion", tum_stats.overall), ""]
    text = "\n".join(lines) + "\n"
    print(text)
    if not args.no_write:
        out = REPO / "docs" / "results"
        write_text(out / "relpose.md", text)
        write_json(out / "relpose.json", {
            "results": {k: v.to_json() for k, v in results.items()},
            "degraded": {c: {k: v.to_json() for k, v in t.items()} for c, t in degraded.items()},
            "degradations": {c: dataclasses.asdict(d) for c, d in DEGRADATIONS.items()},
            "tum": None if tum_stats is None else tum_stats.to_json(),
            "posenet": {s: {k: str(v) for k, v in r.items()} for s, r in runs.items()},
            "model": str(model), "model_metrics": model_metrics, "seconds_per_query": seconds,
            "posenet_epochs": args.posenet_epochs,
            "config": {m: dataclasses.asdict(estimator_config(m)) for m in ("relpose", "unified")},
        })


if __name__ == "__main__":
    main()
