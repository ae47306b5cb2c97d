"""Geometric verification re-ranking (Publication IV, verification half): the comparison of the
verification issue.

For each data set, one retrieval run (RootSIFT-VLAD, the map's default global descriptor; top ``--shortlist``)
and every re-ranking of the same lists through ``visloc.localization.verify.verify_pairs``:

* global only (the retrieval order);
* SIFT + RANSAC inlier count (the map's local features, mutual nearest neighbours, fundamental matrix): the
  ``classical`` preset, visloc's default;
* dense inlier count ``|I|`` (the shipped dense network's lattice matches);
* ``S`` (cyclically consistent inliers, equation 3.3);
* ``S_F`` on the top ``--second-stage`` of the ``S`` list, ``monotone`` (the ``paper`` preset) and ``paper``
  (equation 3.4 as printed);
* with ``--learned``, the learned fusion (the shipped ``fusion_world.json``) on the top of the ``S`` list;
* on landmarks_mini also a map per ``--landmarks-extractors`` (ALIKED by default: its VLAD, then its inlier count).

Data: the default and the hard embedded worlds (test traversals against a retrieval-only map of the
training traversals; Recall@1/5/10 with the place rule of :mod:`visloc.evaluation.place_recall`, and Recall@1
on the queries whose global top-1 is wrong) and ``landmarks_mini`` (mAP, every photo against the others).
Time per query is the re-ranking's wall time.

    python benchmarks/verification.py              # writes docs/results/verification.md and .json
    python benchmarks/verification.py --sections default --shortlist 10 --no-write
    python benchmarks/verification.py --learned --sections landmarks --update   # rerun one section
"""

from __future__ import annotations

import argparse
import json
import os
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from visloc.io.atomic import write_json, write_text
from visloc.io.pairs import read_ranked_pairs
from visloc.localization import RetrievalConfig, build_map, retrieve
from visloc.localization.map import MapConfig
from visloc.localization.verify import VerifyConfig, verify_pairs, verify_preset
from visloc.verification.rerank import RerankConfig

REPO = Path(__file__).resolve().parents[1]
NS = (1, 5, 10)


def methods(shortlist: int, second: int, learned: bool) -> dict[str, VerifyConfig | None]:
    def cfg(first: str, second_stage: int, matches: str = "dense", fusion: str = "monotone") -> VerifyConfig:
        return VerifyConfig(rerank=RerankConfig(shortlist=shortlist, first_stage=first, second_stage=second_stage,
                                                fusion=fusion), matches=matches)

    out = {
        "global only (RootSIFT-VLAD)": None,
        "SIFT + RANSAC inlier count": verify_preset("classical", shortlist),
        "dense inlier count |I|": cfg("inliers", 0),
        "S (eq. 3.3)": cfg("S", 0),
        f"S_F monotone (top {second} of S)": cfg("S", second),
        f"S_F as printed (top {second} of S)": cfg("S", second, fusion="paper"),
    }
    if learned:
        out[f"learned fusion (top {second} of S)"] = cfg("S", second, fusion="learned")
    return out


def build_world_map(data: Path, out: Path, **options: Any) -> Path:
    if not (out / "map.json").is_file():
        build_map(data, out, MapConfig(), **options)
    return out


def retrieval_map(data: Path, out: Path, **options: Any) -> Path:
    if not (out / "map.json").is_file():
        build_map(data, out, MapConfig(points="none"), **options)
    return out


def rerank_all(map_dir: Path, data: Path, pairs: Path, work: Path, configs: dict[str, VerifyConfig | None],
               **options: Any) -> dict[str, tuple[dict[str, list[str]], float]]:
    """``{method: (ranked lists, seconds per query)}``.

    The matches of a pair are computed once per kind (dense, sparse) and shared by the methods through a match
    cache; a method's time is its own verification time with the cache warm plus the matching time of its
    kind, measured once (a cold run minus a warm rerun of the first method of that kind)."""
    out: dict[str, tuple[dict[str, list[str]], float]] = {}
    base = read_ranked_pairs(pairs)
    matching: dict[str, float] = {}
    for k, (name, config) in enumerate(configs.items()):
        if config is None:
            out[name] = (base, 0.0)
            continue
        cache = work / f"{config.matches}.matches.h5"
        if config.matches not in matching:
            cache.unlink(missing_ok=True)
            t = time.perf_counter()
            verify_pairs(map_dir, pairs, data, work / f"cold_{k}.txt", config, matches_cache=cache, **options)
            cold = time.perf_counter() - t
        target = work / f"verified_{k}.txt"
        t = time.perf_counter()
        verify_pairs(map_dir, pairs, data, target, config, matches_cache=cache, **options)
        warm = time.perf_counter() - t
        if config.matches not in matching:
            matching[config.matches] = max(0.0, cold - warm)
        seconds = (warm + matching[config.matches]) / len(base)
        out[name] = (read_ranked_pairs(target), seconds)
        print(f"  {name}: {1000 * seconds:.0f} ms/query (matching {1000 * matching[config.matches] / len(base):.0f})",
              flush=True)
    return out


def localization_rows(map_dir: Path, root: Path, ranked: dict[str, tuple[dict[str, list[str]], float]],
                      methods_: list[str], top: int) -> list[dict[str, Any]]:
    """PnP localization of the test queries from the top ``top`` of each method's lists; share within
    (5 cm, 5 deg) per scene."""
    from visloc.datasets import load_frames
    from visloc.evaluation.localization import evaluate_localization
    from visloc.io.images import read_image
    from visloc.localization import LocalizeConfig, Localizer, Map

    queries = load_frames(root, split="test")
    kept = next(iter(ranked.values()))[0]  # the queries of the run (--max-queries)
    queries = replace(queries, frames=[f for f in queries.frames if f.name in kept])
    localizer = Localizer(Map(map_dir), LocalizeConfig(method="pnp", retrieval=RetrievalConfig(num_retrieved=top)))
    scenes = {f.name: f.scene for f in queries.frames}
    rows = []
    for name in methods_:
        lists = ranked[name][0]
        estimates = {}
        for f in queries.frames:
            names = lists.get(f.name, [])[:top]
            r, _ = localizer.localize_with_evidence(read_image(f.image_path), f.camera, f.name,
                                                    retrieved=(names, [0.0] * len(names)))
            if r.pose is not None:
                estimates[f.name] = r.pose
        res = evaluate_localization(estimates, queries.poses(), scene_of=scenes.__getitem__)
        share = {scene: stats.recall["5cm_5deg"] for scene, stats in res.scenes.items()}
        rows.append({"method": name, "within_5cm_5deg": share, "overall": res.overall.recall["5cm_5deg"]})
        print(f"  localization from {name}: " + " ".join(f"{s} {100 * v:.0f}" for s, v in share.items()), flush=True)
    return rows


def world_section(work: Path, preset: str, configs, shortlist: int, max_queries: int, top: int) -> dict[str, Any]:
    from visloc.datasets.synthetic import WorldConfig, make_world
    from visloc.evaluation.place_recall import world_place_ground_truth
    from visloc.io.pairs import read_pair_scores, write_pairs

    root = make_world(work / f"world_{preset}", WorldConfig.preset(preset), progress=False)
    map_dir = build_world_map(root, work / f"map_{preset}", split="train")
    pairs = work / f"pairs_{preset}.txt"
    retrieve(map_dir, root, pairs, RetrievalConfig(num_retrieved=shortlist, rerank=0), split="test")
    if max_queries:
        lists, scores = read_ranked_pairs(pairs), read_pair_scores(pairs)
        kept = [(q, d) for q in list(lists)[:max_queries] for d in lists[q]]
        write_pairs(pairs, kept, [scores[p] for p in kept])
    positives = world_place_ground_truth(root).positive_names()
    (work / preset).mkdir(parents=True, exist_ok=True)
    ranked = rerank_all(map_dir, root, pairs, work / preset, configs, split="test")
    base = ranked[next(iter(ranked))][0]
    wrong = [q for q, names in base.items() if names and names[0] not in positives.get(q, set())]
    rows = []
    for name, (lists, seconds) in ranked.items():
        recall = {n: sum(1 for q in base if set(lists[q][:n]) & positives.get(q, set())) / len(base) for n in NS}
        fixed = sum(1 for q in wrong if lists[q] and lists[q][0] in positives.get(q, set()))
        broken = sum(1 for q in base if q not in wrong and lists[q] and lists[q][0] not in positives.get(q, set()))
        rows.append({"method": name, "recall": {str(n): recall[n] for n in NS}, "seconds_per_query": seconds,
                     "wrong_top1_fixed": fixed, "wrong_top1": len(wrong), "right_top1_broken": broken})
        print(f"[{preset}] {name}: " + " ".join(f"R@{n} {100 * recall[n]:.1f}" for n in NS)
              + f" | fixed {fixed}/{len(wrong)} wrong top-1, broke {broken}", flush=True)
    localization = localization_rows(map_dir, root, ranked, list(ranked), top) if top else []
    return {"queries": len(base), "rows": rows, "localization": localization, "top": top}


def landmarks_section(work: Path, configs, extractors: list[str], shortlist: int) -> dict[str, Any]:
    """mAP of every method on the SIFT map; then, for each of ``extractors``, a map with those local features
    (its VLAD for retrieval) re-ranked by their RANSAC inlier count."""
    from visloc.evaluation.retrieval import evaluate_pairs_with_labels, read_labels_csv
    from visloc.io.pairs import write_pairs
    from visloc.localization import Map
    from visloc.settings import data_dir

    root = data_dir() / "landmarks_mini"
    labels = read_labels_csv(root / "labels.csv")
    rows = []
    runs = [("sift", configs)] + [(x, {f"global only ({x.upper()}-VLAD)": None,
                                       f"{x.upper()} + RANSAC inlier count": verify_preset("classical", shortlist)})
                                  for x in extractors]
    for extractor, methods_ in runs:
        suffix = "" if extractor == "sift" else f"_{extractor}"
        map_dir = work / f"map_landmarks{suffix}"
        if not (map_dir / "map.json").is_file():
            build_map(root, map_dir, MapConfig(points="none", extractor=extractor))
        names = Map(map_dir).names
        pairs = work / f"pairs_landmarks{suffix}.txt"
        retrieve(map_dir, root, pairs, RetrievalConfig(num_retrieved=len(names), rerank=0, exclude_self=True))
        (work / f"landmarks{suffix}").mkdir(parents=True, exist_ok=True)
        for name, (lists, seconds) in rerank_all(map_dir, root, pairs, work / f"landmarks{suffix}", methods_).items():
            ranked_file = work / f"landmarks{suffix}" / "ranked.txt"
            write_pairs(ranked_file, [(q, d) for q, ds in lists.items() for d in ds])
            m = evaluate_pairs_with_labels(ranked_file, labels, names).protocols["labels"]["mAP"]
            rows.append({"method": name, "mAP": m, "seconds_per_query": seconds})
            print(f"[landmarks] {name}: mAP {100 * m:.1f}", flush=True)
    return {"images": len(labels), "rows": rows}


def run_info() -> dict[str, Any]:
    """When a section ran and the machine's load then (its timings are only comparable within a section)."""
    return {"date": time.strftime("%Y-%m-%d %H:%M"), "load": os.getloadavg()[0]}


def _ran(r: dict[str, Any]) -> str:
    return f"; run {r['date']}, load {r['load']:.1f}" if "date" in r else ""


def markdown(results: dict[str, Any], args: argparse.Namespace) -> str:
    lines = ["# Geometric verification re-ranking (Publication IV)", "",
             f"Produced by `python benchmarks/verification.py --learned` on {os.cpu_count()} shared CPU cores "
             f"(each section's date and load average in its title: timings compare within a section); shortlist "
             f"{args.shortlist}, second stage {args.second_stage}; dense model: the shipped `dense_tiny_world.pt`.",
             "",
             "visloc's default (`visloc verify`, `--verify`: the `classical` preset) is the *SIFT + RANSAC inlier "
             "count* row; `--preset paper` is the *S_F monotone* row, `--preset paper-printed` the *S_F as printed* "
             "row, `--fusion learned` the learned fusion row.", ""]
    for preset in ("default", "hard"):
        if preset not in results:
            continue
        r = results[preset]
        lines += [f"## {preset} world ({r['queries']} test queries{_ran(r)})", "",
                  "| method | R@1 | R@5 | R@10 | wrong global top-1 fixed | right top-1 broken | ms / query |",
                  "|---|---:|---:|---:|---:|---:|---:|"]
        for row in r["rows"]:
            rec = row["recall"]
            lines.append(f"| {row['method']} | " + " | ".join(f"{100 * rec[str(n)]:.1f}" for n in NS)
                         + f" | {row['wrong_top1_fixed']} / {row['wrong_top1']} | {row['right_top1_broken']} | "
                         f"{1000 * row['seconds_per_query']:.0f} |")
        lines.append("")
        if r["localization"]:
            scenes = list(r["localization"][0]["within_5cm_5deg"])
            lines += [f"Localization (PnP on the map's SIFT points, top {r['top']} of each list): share of test "
                      "queries within (5 cm, 5 deg) per scene.", "",
                      "| pairs from | " + " | ".join(scenes) + " | all |", "|---|" + "---:|" * (len(scenes) + 1)]
            for row in r["localization"]:
                lines.append(f"| {row['method']} | " + " | ".join(f"{100 * row['within_5cm_5deg'][s]:.1f}"
                                                                 for s in scenes) + f" | {100 * row['overall']:.1f} |")
            lines.append("")
    if "landmarks" in results:
        lines += [f"## landmarks_mini ({results['landmarks']['images']} photos, mAP{_ran(results['landmarks'])})", "",
                  "| method | mAP | ms / query |", "|---|---:|---:|"]
        for row in results["landmarks"]["rows"]:
            lines.append(f"| {row['method']} | {100 * row['mAP']:.1f} | {1000 * row['seconds_per_query']:.0f} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", type=Path, default=Path("/tmp/visloc_verification_bench"))
    parser.add_argument("--sections", nargs="+", default=["default", "hard", "landmarks"],
                        choices=["default", "hard", "landmarks"])
    parser.add_argument("--shortlist", type=int, default=20)
    parser.add_argument("--second-stage", type=int, default=5)
    parser.add_argument("--max-queries", type=int, default=0, help="first N queries of each world (0: all)")
    parser.add_argument("--localization-top", type=int, default=5, help="images per query for PnP (0: skip)")
    parser.add_argument("--learned", action="store_true", help="add the learned fusion (shipped fusion_world.json)")
    parser.add_argument("--landmarks-extractors", nargs="*", default=["aliked"],
                        help="landmarks_mini: also maps with these local features, re-ranked by their inliers")
    parser.add_argument("--update", action="store_true",
                        help="replace only the --sections run in the existing docs/results/verification.json")
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    configs = methods(args.shortlist, args.second_stage, args.learned)
    results: dict[str, Any] = {}
    if args.update and (REPO / "docs" / "results" / "verification.json").is_file():  # keep the sections not rerun
        results = json.loads((REPO / "docs" / "results" / "verification.json").read_text())
    for preset in ("default", "hard"):
        if preset in args.sections:
            results[preset] = world_section(args.work, preset, configs, args.shortlist, args.max_queries,
                                            args.localization_top) | run_info()
    if "landmarks" in args.sections:
        results["landmarks"] = landmarks_section(args.work, configs, args.landmarks_extractors, args.shortlist) \
            | run_info()
    text = markdown(results, args)
    print(text)
    if not args.no_write:
        write_text(REPO / "docs" / "results" / "verification.md", text)
        write_json(REPO / "docs" / "results" / "verification.json", results)


if __name__ == "__main__":
    main()
