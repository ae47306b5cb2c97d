"""The embedded world's ``hard`` preset against the default world (not a test).

For both worlds: makes the world (``--work`` folder; reruns resume), builds a RootSIFT-VLAD map of the
training traversals (``build_map``, depth points), retrieves the 10 best database images of every
test-traversal frame (``retrieve``) and reports Recall@1/5/10 with the place rule of
:mod:`visloc.evaluation.place_recall` (same room, centre within 1 m, viewing direction within 45 deg).
Then localizes every test frame (``localize``, method ``pnp``, 5 retrieved images) and reports per scene
the share within (5 cm, 5 deg) and the median errors. Also summarises the hard world's object queries.
Writes ``docs/results/hard_world.md`` and ``.json``.

    python benchmarks/hard_world.py                        # both worlds (about 10 minutes on 2 cores)
    python benchmarks/hard_world.py --only hard --no-write # one world, no files
    python benchmarks/hard_world.py --set test_ambient=0.4 # tune the hard preset (other --work!)
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import time
from pathlib import Path
from typing import Any

import numpy as np

from visloc.datasets.synthetic import OBJECT_QUERIES_JSON, WORLD_PRESETS, WorldConfig, make_world
from visloc.evaluation.localization import evaluate_localization, threshold_key
from visloc.evaluation.place_recall import world_place_ground_truth
from visloc.io.atomic import write_json, write_text
from visloc.io.pairs import read_ranked_pairs
from visloc.localization import LocalizeConfig, RetrievalConfig, build_map, localize, retrieve
from visloc.runtime import tune_malloc

REPO = Path(__file__).resolve().parents[1]
NS = (1, 5, 10)
THRESHOLD = (0.05, 5.0)


def parse_value(text: str) -> Any:
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return {"true": True, "false": False}.get(text.lower(), text)


def run_world(preset: str, work: Path, overrides: dict[str, Any]) -> dict[str, Any]:
    config = WorldConfig.preset(preset, **(overrides if preset != "default" else {}))
    t0 = time.perf_counter()
    root = make_world(work / f"world_{preset}", config, progress=False)
    seconds_world = time.perf_counter() - t0
    map_dir = work / f"map_{preset}"
    t0 = time.perf_counter()
    if not (map_dir / "map.json").is_file():
        build_map(root, map_dir, split="train")
    seconds_map = time.perf_counter() - t0

    pairs = work / f"pairs_{preset}.txt"
    retrieve(map_dir, root, pairs, RetrievalConfig(num_retrieved=max(NS)))
    ranked = read_ranked_pairs(pairs)
    truth = world_place_ground_truth(root)
    recall = truth.recall(ranked, NS)
    num_positives = [len(p) for p in truth.positives]
    # The first answer of each query, by kind of mistake.
    db_scene = {f.name: f.scene for f in truth.database}
    positives = truth.positive_names()
    wrong_room = sum(db_scene[ranked[q.name][0]] != q.scene for q in truth.queries if ranked.get(q.name))
    wrong_place = sum(ranked[q.name][0] not in positives[q.name] for q in truth.queries if ranked.get(q.name))
    per_scene = {}
    for scene in sorted({q.scene for q in truth.queries}):
        idx = [i for i, q in enumerate(truth.queries) if q.scene == scene]
        hits = [ranked.get(truth.queries[i].name, [None])[0] in positives[truth.queries[i].name] for i in idx]
        per_scene[scene] = float(np.mean(hits))
    print(f"[{preset}] {len(truth.queries)} queries, {len(truth.database)} database images "
          f"(positives per query: median {np.median(num_positives):.0f}, min {min(num_positives)}); "
          + " ".join(f"R@{n} {100 * recall[n]:.1f}" for n in NS)
          + f"; first answer in another room: {wrong_room}")

    loc_out = work / f"poses_{preset}.txt"
    for path in loc_out.parent.glob(loc_out.name + "*"):
        path.unlink()
    t0 = time.perf_counter()
    summary = localize(map_dir, root, loc_out, LocalizeConfig(method="pnp"))
    seconds_loc = time.perf_counter() - t0
    estimates = {r.name: r.pose for r in summary.results if r.pose is not None}
    gt = {q.name: q.pose for q in truth.queries}
    scenes = {q.name: q.scene for q in truth.queries}
    res = evaluate_localization(estimates, gt, scene_of=scenes.__getitem__, thresholds=[THRESHOLD])
    print(res.format_table())

    out: dict[str, Any] = {
        "preset": preset, "config": config.to_dict(), "queries": len(truth.queries),
        "database": len(truth.database),
        "positives_per_query": {"median": float(np.median(num_positives)), "min": int(min(num_positives)),
                                "max": int(max(num_positives))},
        "recall": {str(n): recall[n] for n in NS}, "recall_at_1_per_scene": per_scene,
        "first_answer_wrong": wrong_place, "first_answer_other_room": wrong_room,
        "localization": res.to_json(), "localization_status": summary.status_counts(),
        "seconds": {"world": seconds_world, "map": seconds_map, "localize": seconds_loc},
    }
    meta = json.loads((root / "dataset.json").read_text())
    if "preset" in meta:
        out["changes"] = {s["name"]: s.get("test_changes", []) for s in meta["scenes"]}
        out["occluded_frames"] = {s["name"]: sum(len(v) for v in s.get("occluded_frames", {}).values())
                                  for s in meta["scenes"]}
    spec_path = root / OBJECT_QUERIES_JSON
    if spec_path.is_file():
        spec = json.loads(spec_path.read_text())
        qs = spec["queries"]
        out["object_queries"] = {
            "queries": len(qs), "database": len(spec["database"]),
            "posters": sum(q["kind"] == "poster" for q in qs), "boxes": sum(q["kind"] == "box" for q in qs),
            "moved": sum(q["moved"] for q in qs), "texture_repeated": sum(q["texture_repeated"] for q in qs),
            "positives_median": float(np.median([len(q["positives"]) for q in qs])) if qs else None,
            "junk_median": float(np.median([len(q["junk"]) for q in qs])) if qs else None,
        }
    return out


def sample_figure(root: Path, out: Path, per_scene: int = 1) -> None:
    """``out`` (JPEG): for each scene, test frames with an occluder / moved object next to the database frame
    nearest in pose (the place rule's best positive), so the docs show what the hard preset changes."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from visloc.io.images import read_image

    truth = world_place_ground_truth(root)
    meta = json.loads((root / "dataset.json").read_text())
    occluded = {s["name"]: set(next(iter(s.get("occluded_frames", {}).values()), [])) for s in meta["scenes"]}
    rows = []
    for scene in sorted({q.scene for q in truth.queries}):
        idx = [i for i, q in enumerate(truth.queries) if q.scene == scene and truth.positives[i]]
        frame_no = [int(truth.queries[i].name.rsplit("-", 1)[1].split(".")[0]) for i in idx]
        pick = [i for i, f in zip(idx, frame_no, strict=True) if f in occluded.get(scene, set())][:per_scene]
        pick += [i for i in idx if i not in pick][len(idx) // 2:len(idx) // 2 + max(0, per_scene - len(pick))]
        for i in pick:
            q = truth.queries[i]
            best = min(truth.positives[i], key=lambda j: np.linalg.norm(truth.database[j].pose.center - q.pose.center))
            rows.append((truth.database[best], q))
    fig = Figure(figsize=(6.4, 2.4 * len(rows)), dpi=100)
    FigureCanvasAgg(fig)
    for r, (db, q) in enumerate(rows):
        for c, (frame, label) in enumerate(((db, "database (training traversal)"), (q, "test traversal"))):
            ax = fig.add_subplot(len(rows), 2, 2 * r + c + 1)
            ax.imshow(read_image(frame.image_path))
            ax.set_title(f"{label}\n{frame.name}", fontsize=7)
            ax.axis("off")
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, pil_kwargs={"quality": 85})


def markdown(rows: list[dict[str, Any]], command: str) -> str:
    key = threshold_key(*THRESHOLD)
    lines = ["# The hard embedded world", "",
             f"Produced by `{command}` on {platform.node()} ({os.cpu_count()} cores), {time.strftime('%Y-%m-%d')}.",
             "", "Database: the training traversals; queries: the test traversal of every room. A database image "
             "is a correct answer when it is in the query's room, its camera centre within 1 m and its viewing "
             "direction within 45 deg of the query's (`visloc.evaluation.place_recall`). RootSIFT-VLAD is the "
             "map's global descriptor (`build_map` defaults); localization is `localize` with method `pnp` and 5 "
             "retrieved images. See [docs/world.md](../world.md) for what the hard preset changes.", "",
             "## Place recognition (RootSIFT-VLAD)", "",
             "| world | database | queries | positives / query (median, min) | R@1 | R@5 | R@10 | 1st answer in another room |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        p = r["positives_per_query"]
        lines.append(f"| {r['preset']} | {r['database']} | {r['queries']} | {p['median']:.0f}, {p['min']} | "
                     + " | ".join(f"{100 * r['recall'][str(n)]:.1f} %" for n in NS)
                     + f" | {r['first_answer_other_room']} |")
    lines += ["", "Recall@1 per scene: " + "; ".join(
        f"{r['preset']}: " + ", ".join(f"{s} {100 * v:.0f} %" for s, v in r["recall_at_1_per_scene"].items())
        for r in rows) + ".", "",
        "## Localization (pnp, 5 retrieved)", "",
        "| world | scene | queries | localized | within (5 cm, 5 deg) | median t (cm) | median R (deg) |",
        "|---|---|---|---|---|---|---|"]
    for r in rows:
        res = r["localization"]
        for scene, s in [*res["scenes"].items(), ("overall", res["overall"])]:
            t = "fail" if s["median_t_m"] is None else f"{100 * s['median_t_m']:.2f}"
            a = "fail" if s["median_R_deg"] is None else f"{s['median_R_deg']:.3f}"
            lines.append(f"| {r['preset']} | {scene} | {s['num_queries']} | {s['num_localized']} | "
                         f"{100 * s[key]:.0f} % | {t} | {a} |")
    for r in rows:
        if "object_queries" in r:
            o = r["object_queries"]
            lines += ["", f"## Object queries ({r['preset']} world)", "",
                      f"{o['queries']} queries ({o['posters']} posters, {o['boxes']} boxes; {o['moved']} of moved "
                      f"objects, {o['texture_repeated']} of posters whose design hangs in other rooms too) against "
                      f"{o['database']} database images; median {o['positives_median']:.0f} positives and "
                      f"{o['junk_median']:.0f} junk images per query (`object_queries.json`)."]
        if "changes" in r:
            moved = sum(c["change"] == "moved" for v in r["changes"].values() for c in v)
            removed = sum(c["change"] == "removed" for v in r["changes"].values() for c in v)
            lines += ["", f"The {r['preset']} world's test traversals: {moved} objects moved, {removed} removed, "
                      f"{sum(r['occluded_frames'].values())} of {r['queries']} frames with an occluder."]
    lines += ["", "Times (s): " + "; ".join(
        f"{r['preset']}: world {r['seconds']['world']:.0f}, map {r['seconds']['map']:.0f}, "
        f"localize {r['seconds']['localize']:.0f}" for r in rows) + " (zero: resumed from the work folder)."]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", type=Path, default=Path("/tmp/bench_hard_world"), help="Scratch folder (resumed).")
    parser.add_argument("--only", choices=["default", "hard"], default=None)
    parser.add_argument("--set", dest="sets", action="append", default=[],
                        help="Override a field of the hard preset, key=value (repeat).")
    parser.add_argument("--no-write", action="store_true", help="Do not update docs/results.")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    tune_malloc()
    overrides = {}
    for item in args.sets:
        k, _, v = item.partition("=")
        overrides[k] = parse_value(v)
    rows = [run_world(preset, args.work, overrides) for preset in WORLD_PRESETS
            if preset in ("default", "hard") and args.only in (None, preset)]
    if not args.no_write and rows:
        command = "python benchmarks/hard_world.py" + "".join(f" --set {s}" for s in args.sets)
        out = REPO / "docs" / "results"
        write_text(out / "hard_world.md", markdown(rows, command))
        write_json(out / "hard_world.json", rows)
        if any(r["preset"] == "hard" for r in rows):
            sample_figure(args.work / "world_hard", REPO / "docs" / "images" / "hard_world_samples.jpg")
        print(f"\nwrote {out / 'hard_world.md'}")


if __name__ == "__main__":
    main()
