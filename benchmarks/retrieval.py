"""Retrieval benchmark (not a test): global descriptors on the embedded worlds and landmarks_mini, the query
attention of Publication III on object queries, and localization on the hard world.

Sections (``--sections``, all by default):

* ``place``: the default and the ``hard`` embedded world, database = training traversals, queries = test
  traversal; Recall@1/5/10 with the place rule of :mod:`visloc.evaluation.place_recall` (same room, centre
  within 1 m, viewing direction within 45 degrees) for RootSIFT-VLAD, the relpose encoder and the CNN
  descriptors (:data:`PLACE_METHODS`: the shipped retrieval network with its GeM + learned whitening
  head, at one and three scales, R-MAC on its last map with and without PCA whitening learned on the
  database, MAC; VLAD and the shipped network also with average query expansion (AQE) and with
  database-side augmentation (DBA) + AQE; with ``--netvlad-model`` a trained NetVLAD network), each through the product's own path (``build_map`` with no 3D points, then
  ``retrieve``), with the mean time per query (``retrieve``'s wall time: read, describe, search).
* ``objects``: object queries of the hard world (one poster or box as the region of interest; positives:
  database views that see it, exact from rendering); mAP (Oxford rule: other copies of a repeated
  texture are junk) of Full query, Cropped ROI, Cropped activation, attention, attention +
  saliency-weighted R-MAC and the database-side variant; same network and weights, with its own pooling
  and with R-MAC, one run.
* ``landmarks``: ``landmarks_mini`` mAP (every other photo of the same landmark positive) for the same
  descriptors.
* ``localization``: the hard world's test traversal localized (``pnp``) with maps whose global
  descriptor is RootSIFT-VLAD or the best CNN descriptor of ``place``: share of queries within
  (5 cm, 5 deg) per scene.

Writes ``docs/results/retrieval.md`` and ``.json``; the machine load is recorded next to the timings.

    python benchmarks/retrieval.py                          # everything, about 15 min on 2 cores
    python benchmarks/retrieval.py --sections place objects
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

REPO = Path(__file__).resolve().parents[1]
SECTIONS = ("place", "objects", "landmarks", "localization")
NS = (1, 5, 10)
THRESHOLD = (0.05, 5.0)


def load() -> float:
    return round(os.getloadavg()[0], 2)


def unit(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


def rank(db: np.ndarray, q: np.ndarray, k: int | None = None) -> np.ndarray:
    """``(Q, K)`` database indices by decreasing inner product (exact)."""
    sim = q @ db.T
    order = np.argsort(-sim, axis=1, kind="stable")
    return order if k is None else order[:, :k]


# --- place recognition through the product's own maps -------------------------------------------------

#: The rows of the place table: label, global descriptor, its options; the option ``_qe`` is average query
#: expansion at search time (``RetrievalConfig.query_expansion``), ``_index`` the map's index options
#: (``dba_k``: database-side augmentation). ``--netvlad-model`` adds the trained NetVLAD row.
PLACE_METHODS: tuple[tuple[str, str, dict[str, Any]], ...] = (
    ("RootSIFT-VLAD (64 words)", "vlad", {}),
    ("RootSIFT-VLAD + AQE (k=2)", "vlad", {"_qe": 2}),
    ("RootSIFT-VLAD + DBA (k=2) + AQE (k=2)", "vlad", {"_qe": 2, "_index": {"dba_k": 2}}),
    ("relpose encoder (shipped)", "relpose", {}),
    ("CNN: GeM + learned whitening (shipped, the default)", "cnn", {}),
    ("CNN: GeM + learned whitening + AQE (k=2)", "cnn", {"_qe": 2}),
    ("CNN: GeM + learned whitening + DBA (k=2) + AQE (k=2)", "cnn", {"_qe": 2, "_index": {"dba_k": 2}}),
    ("CNN: GeM + learned whitening, 3 scales", "cnn", {"scales": [0.75, 1.0, 1.25]}),
    ("CNN: R-MAC on the last map", "cnn", {"pooling": "rmac"}),
    ("CNN: R-MAC + PCA whitening (database)", "cnn", {"pooling": "rmac", "whitening": "pca"}),
    ("CNN: MAC", "cnn", {"pooling": "mac"}),
)


#: Rows added by command-line options (``--netvlad-model``).
EXTRA_METHODS: list[tuple[str, str, dict[str, Any]]] = []


def split_options(options: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any], int]:
    """A row's options as (global descriptor options, index options, query expansion k)."""
    plain = {k: v for k, v in options.items() if not k.startswith("_")}
    return plain, dict(options.get("_index", {})), int(options.get("_qe", 0))


def cnn_descriptor(**options: Any):
    from visloc.retrieval import global_descriptors

    return global_descriptors.create("cnn", **options)


def slug(descriptor: str, options: dict[str, Any]) -> str:
    import re

    text = "_".join([descriptor, *(f"{k}-{v}" for k, v in sorted(options.items()))])
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", text)


def world(work: Path, preset: str) -> Path:
    from visloc.datasets.synthetic import WorldConfig, make_world

    return make_world(work / f"world_{preset}", WorldConfig.preset(preset), progress=False)


def retrieval_map(data: Path, out: Path, descriptor: str, options: dict[str, Any], **dataset_options: Any) -> Path:
    """A retrieval-only map (no 3D points) of ``data``'s database images (reused when complete)."""
    from visloc.localization import build_map
    from visloc.localization.map import MapConfig

    if not (out / "map.json").is_file():
        plain, index, _ = split_options(options)
        build_map(data, out, MapConfig(global_descriptor=descriptor, global_options=plain, points="none",
                                       index=index), **dataset_options)
    return out


def index_dim(map_dir: Path) -> int:
    import faiss

    return int(faiss.read_index(str(map_dir / "global_index.faiss")).d)


def place_section(work: Path) -> dict[str, Any]:
    """Recall@N on the test traversals of both worlds, each descriptor through ``build_map`` + ``retrieve``;
    time per query = ``retrieve``'s wall time (read, describe, search) over the queries."""
    from visloc.evaluation.place_recall import world_place_ground_truth
    from visloc.io.pairs import read_ranked_pairs
    from visloc.localization import RetrievalConfig, retrieve

    results: dict[str, Any] = {}
    for preset in ("default", "hard"):
        root = world(work, preset)
        truth = world_place_ground_truth(root)
        rows = []
        for label, descriptor, options in (*PLACE_METHODS, *EXTRA_METHODS):
            map_dir = retrieval_map(root, work / f"map_{preset}_{slug(descriptor, options)}", descriptor, options)
            pairs = work / f"pairs_{preset}_{slug(descriptor, options)}.txt"
            before = load()
            t = time.perf_counter()
            retrieve(map_dir, root, pairs, RetrievalConfig(num_retrieved=max(NS), rerank=0,
                                                           query_expansion=split_options(options)[2]))
            seconds = (time.perf_counter() - t) / len(truth.queries)
            recall = truth.recall(read_ranked_pairs(pairs), NS)
            dim = index_dim(map_dir)
            rows.append({"method": label, "descriptor": descriptor, "options": options, "dim": dim,
                         "recall": {str(n): recall[n] for n in NS}, "seconds_per_query": seconds,
                         "load": [before, load()]})
            print(f"[place/{preset}] {label}: " + " ".join(f"R@{n} {100 * recall[n]:.1f}" for n in NS)
                  + f" | {1000 * seconds:.0f} ms/query | load {before}", flush=True)
        results[preset] = {"database": len(truth.database), "queries": len(truth.queries), "rows": rows}
    return results


def objects_section(work: Path) -> dict[str, Any]:
    from visloc.evaluation.retrieval import oxford_map
    from visloc.io.images import read_image

    root = world(work, "hard")
    spec = json.loads((root / "object_queries.json").read_text())
    db_names = spec["database"]
    db_images = [read_image(root / n) for n in db_names]
    index = {n: i for i, n in enumerate(db_names)}
    qs = spec["queries"]
    gnd = [{"good": [index[n] for n in q["positives"]], "junk": [index[n] for n in q.get("junk", [])]} for q in qs]
    q_images = [read_image(root / q["name"]) for q in qs]
    boxes = [tuple(q["box"]) for q in qs]
    rows = []
    db_side_seconds = {}
    for pooling in ("model", "rmac"):  # the network's own head, and R-MAC on its last map (the paper's)
        plain = cnn_descriptor(pooling=pooling)
        db_plain = unit(np.stack([plain(img) for img in db_images]))
        db_side = cnn_descriptor(pooling=pooling, database="saliency_boxes")
        t = time.perf_counter()
        db_boxes = unit(np.stack([db_side(img) for img in db_images]))
        db_side_seconds[pooling] = (time.perf_counter() - t) / len(db_images)
        variants = [("Full query", "full", db_plain), ("Cropped ROI", "cropped_roi", db_plain),
                    ("Cropped activation", "cropped_activation", db_plain), ("Attention", "attention", db_plain),
                    ("Attention + saliency-weighted R-MAC", "attention_wrmac", db_plain),
                    ("Database-side variant + attention + weighted R-MAC query", "attention_wrmac", db_boxes)]
        for label, mode, db in variants:
            desc = cnn_descriptor(pooling=pooling, query=mode)
            before = load()
            t = time.perf_counter()
            qv = unit(np.stack([desc.describe_query(img, box) for img, box in zip(q_images, boxes, strict=True)]))
            seconds = (time.perf_counter() - t) / len(qs)
            m = oxford_map(rank(db, qv), gnd).protocols["oxford"]["mAP"]
            rows.append({"method": label, "pooling": pooling, "mAP": m, "seconds_per_query": seconds,
                         "load": [before, load()]})
            print(f"[objects/{pooling}] {label}: mAP {100 * m:.1f} | {1000 * seconds:.1f} ms/query", flush=True)
    return {"queries": len(qs), "database": len(db_names), "rows": rows,
            "database_side_seconds_per_image": db_side_seconds}


def landmarks_section(work: Path) -> dict[str, Any]:
    """``landmarks_mini``: every photo searched against the others through a retrieval-only map of the
    folder; mAP with labels (``evaluate_pairs_with_labels``, the query itself excluded)."""
    from visloc.evaluation.retrieval import evaluate_pairs_with_labels, read_labels_csv
    from visloc.localization import Map, RetrievalConfig, retrieve
    from visloc.settings import data_dir

    root = data_dir() / "landmarks_mini"
    labels = read_labels_csv(root / "labels.csv")
    rows = []
    for label, descriptor, options in (*PLACE_METHODS, *EXTRA_METHODS):
        map_dir = retrieval_map(root, work / f"map_landmarks_{slug(descriptor, options)}", descriptor, options)
        names = Map(map_dir).names
        pairs = work / f"pairs_landmarks_{slug(descriptor, options)}.txt"
        t = time.perf_counter()
        retrieve(map_dir, root, pairs, RetrievalConfig(num_retrieved=len(names), rerank=0, exclude_self=True,
                                                       query_expansion=split_options(options)[2]))
        seconds = (time.perf_counter() - t) / len(names)
        m = evaluate_pairs_with_labels(pairs, labels, names).protocols["labels"]["mAP"]
        rows.append({"method": label, "mAP": m, "seconds_per_query": seconds})
        print(f"[landmarks] {label}: mAP {100 * m:.1f} | {1000 * seconds:.0f} ms/query", flush=True)
    return {"images": len(labels), "rows": rows}


def localization_section(work: Path, best: tuple[str, str, dict[str, Any]]) -> dict[str, Any]:
    """The hard world's test traversal localized (``pnp``, 5 retrieved, depth points) with RootSIFT-VLAD and
    with the best CNN row of the place table."""
    from visloc.evaluation.localization import evaluate_localization, threshold_key
    from visloc.evaluation.place_recall import world_place_ground_truth
    from visloc.localization import LocalizeConfig, build_map, localize
    from visloc.localization.map import MapConfig

    root = world(work, "hard")
    truth = world_place_ground_truth(root)
    gt = {q.name: q.pose for q in truth.queries}
    scenes = {q.name: q.scene for q in truth.queries}
    out = {}
    for label, descriptor, options in (PLACE_METHODS[0], best):
        map_dir = work / f"map_loc_{slug(descriptor, options)}"
        if not (map_dir / "map.json").is_file():
            build_map(root, map_dir, MapConfig(global_descriptor=descriptor, global_options=dict(options)))
        poses = work / f"poses_{slug(descriptor, options)}.txt"
        for path in poses.parent.glob(poses.name + "*"):
            path.unlink()
        summary = localize(map_dir, root, poses, LocalizeConfig(method="pnp"))
        estimates = {r.name: r.pose for r in summary.results if r.pose is not None}
        res = evaluate_localization(estimates, gt, scene_of=scenes.__getitem__, thresholds=[THRESHOLD])
        print(f"\n== hard world localization, {label}\n{res.format_table()}", flush=True)
        out[label] = {"key": threshold_key(*THRESHOLD), **res.to_json()}
    return out


def markdown(results: dict[str, Any]) -> str:
    lines = ["# Retrieval benchmark", "",
             f"Produced by `python benchmarks/retrieval.py` on {platform.node()} ({os.cpu_count()} cores); "
             f"{results['date']}. Timings are per query on this shared CPU (describe + exact search), with the "
             "load average noted; compare them within a table only.", ""]
    place = results.get("place")
    if place:
        lines += ["## Place recognition on the embedded worlds", "",
                  "Database: training traversals; queries: the test traversal. A database image is correct when it "
                  "is in the query's room, its centre within 1 m and its viewing direction within 45 degrees.", ""]
        for preset, block in place.items():
            lines += [f"### {preset} world ({block['database']} database images, {block['queries']} queries)", "",
                      "| descriptor | dim | R@1 | R@5 | R@10 | ms / query |", "|---|---:|---:|---:|---:|---:|"]
            for r in block["rows"]:
                rec = r["recall"]
                lines.append(f"| {r['method']} | {r['dim']} | {100 * rec['1']:.1f} | {100 * rec['5']:.1f} | "
                             f"{100 * rec['10']:.1f} | {1000 * r['seconds_per_query']:.1f} |")
            lines.append("")
    objects = results.get("objects")
    if objects:
        lines += ["## Object queries on the hard world (Publication III)", "",
                  f"{objects['queries']} queries (region of interest: one poster or box), {objects['database']} "
                  "database images; positives: database views that see the object (exact, from rendering); "
                  "copies of a repeated texture elsewhere are junk (Oxford protocol). Same network and weights "
                  "for every row (the shipped retrieval network); `pooling` is how a map or region is pooled: "
                  "`model` the network's own GeM + learned whitening, `rmac` R-MAC on its last map.", "",
                  "| query representation | pooling | mAP | ms / query |", "|---|---|---:|---:|"]
        for r in objects["rows"]:
            lines.append(f"| {r['method']} | {r['pooling']} | {100 * r['mAP']:.1f} | "
                         f"{1000 * r['seconds_per_query']:.1f} |")
        lines += ["", "The database-side variant costs " + ", ".join(
            f"{1000 * v:.0f} ms ({k})" for k, v in objects["database_side_seconds_per_image"].items())
            + " per database image to describe.", ""]
    land = results.get("landmarks")
    if land:
        lines += ["## landmarks_mini", "", f"{land['images']} photos, each searched against the others; mAP with "
                  "labels (every other photo of the same landmark is positive).", "",
                  "| descriptor | mAP |", "|---|---:|"]
        lines += [f"| {r['method']} | {100 * r['mAP']:.1f} |" for r in land["rows"]]
        lines.append("")
    loc = results.get("localization")
    if loc:
        lines += ["## Localization on the hard world (pnp, 5 retrieved, depth points)", "",
                  "| retrieval | scene | queries | localized | within (5 cm, 5 deg) | median cm | median deg |",
                  "|---|---|---:|---:|---:|---:|---:|"]
        for label, res in loc.items():
            for scene, st in [*res["scenes"].items(), ("overall", res["overall"])]:
                t = "fail" if st["median_t_m"] is None else f"{100 * st['median_t_m']:.2f}"
                a = "fail" if st["median_R_deg"] is None else f"{st['median_R_deg']:.3f}"
                lines.append(f"| {label} | {scene} | {st['num_queries']} | {st['num_localized']} | "
                             f"{100 * st[res['key']]:.0f} % | {t} | {a} |")
        lines.append("")
    index = results.get("index")
    if index:
        lines += ["## Index", "", index, ""]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", type=Path, default=Path("/tmp/bench_retrieval"), help="worlds and maps (reused)")
    parser.add_argument("--sections", nargs="+", choices=SECTIONS, default=list(SECTIONS))
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "results" / "retrieval")
    parser.add_argument("--netvlad-model", type=Path, default=None,
                        help="a NetVLAD retrieval model (scripts/train_retrieval_netvlad.sh) for the trained-NetVLAD row")
    args = parser.parse_args()
    if args.netvlad_model is not None:
        EXTRA_METHODS.append(("CNN: NetVLAD (16 clusters) + learned whitening, trained "
                              "(scripts/train_retrieval_netvlad.sh)", "cnn", {"model": str(args.netvlad_model)}))
    logging.basicConfig(level=logging.WARNING)
    from visloc.io.atomic import write_json, write_text

    args.work.mkdir(parents=True, exist_ok=True)
    json_path = args.out.with_suffix(".json")
    results: dict[str, Any] = json.loads(json_path.read_text()) if json_path.is_file() else {}
    results["date"] = time.strftime("%Y-%m-%d")
    if "place" in args.sections:
        results["place"] = place_section(args.work)
    if "objects" in args.sections:
        results["objects"] = objects_section(args.work)
    if "landmarks" in args.sections:
        results["landmarks"] = landmarks_section(args.work)
    if "localization" in args.sections:
        rows = [r for r in results["place"]["hard"]["rows"]
                if r["descriptor"] == "cnn" and not any(k.startswith("_") for k in r["options"])]
        best = max(rows, key=lambda r: (r["recall"]["1"], r["recall"]["5"]))
        results["localization"] = localization_section(args.work, (best["method"], "cnn", best["options"]))
    write_json(json_path, results)
    write_text(args.out.with_suffix(".md"), markdown(results))
    print(f"wrote {args.out.with_suffix('.md')}")


if __name__ == "__main__":
    main()
