"""Train the learned second-stage fusion (``visloc/weights/fusion_world.json``) on the embedded world.

The world is made with a seed other than the default world's (the verification benchmark evaluates on the
default and hard worlds of seed 0). Per preset: a retrieval-only map of the training traversals, the top 20
database images of every test query (RootSIFT-VLAD), verified by the shipped dense network with ``S_L`` for all
20 (``verify_pairs``, second stage 20); each candidate is labelled correct / wrong by the place rule
(:func:`visloc.evaluation.place_recall.world_place_ground_truth`). The queries are split at random into a
training and a held-out part; the logistic model (:func:`visloc.verification.learned.fit`) is fitted on the
training part and the held-out part measures it: accuracy, and Recall@1 of each query's 20 re-sorted by the
model, by ``S``, by the first stage then a second stage (``monotone`` or learned) on the top 5, and the
retrieval order. The model written is the one fitted on the training part (so the metrics are its own).

    OMP_NUM_THREADS=1 python scripts/train_fusion.py                     # writes src/visloc/weights/...
    python scripts/train_fusion.py --max-queries 10 --out /tmp/f.json    # a quick check
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from visloc.datasets.synthetic import WorldConfig, make_world
from visloc.evaluation.place_recall import world_place_ground_truth
from visloc.io.pairs import read_pair_scores, read_ranked_pairs, write_pairs
from visloc.localization import RetrievalConfig, build_map, retrieve
from visloc.localization.map import MapConfig
from visloc.localization.verify import verify_pairs, verify_preset
from visloc.verification.learned import FusionModel, features, fit
from visloc.verification.scores import fused_score

REPO = Path(__file__).resolve().parents[1]
SHORTLIST = 20
SECOND_STAGE = 5


def candidates(work: Path, preset: str, seed: int, max_queries: int) -> dict[str, list[dict[str, Any]]]:
    """``{query: [candidate dict of OUT.verification.json + "label"]}`` of one world (retrieval order)."""
    root = make_world(work / f"world_{preset}_{seed}", dataclasses.replace(WorldConfig.preset(preset), seed=seed),
                      progress=False)
    map_dir = work / f"map_{preset}_{seed}"
    if not (map_dir / "map.json").is_file():
        build_map(root, map_dir, MapConfig(points="none"), split="train")
    pairs = work / f"pairs_{preset}_{seed}.txt"
    retrieve(map_dir, root, pairs, RetrievalConfig(num_retrieved=SHORTLIST, rerank=0), split="test")
    if max_queries:  # every k-th query, so that every room is represented
        lists, scores = read_ranked_pairs(pairs), read_pair_scores(pairs)
        names = list(lists)
        keep = names[:: max(1, math.ceil(len(names) / max_queries))][:max_queries]
        kept = [(q, d) for q in keep for d in lists[q]]
        write_pairs(pairs, kept, [scores[p] for p in kept])
    out = work / f"verified_{preset}_{seed}.txt"
    verify_pairs(map_dir, pairs, root, out, verify_preset("paper", SHORTLIST, second_stage=SHORTLIST),
                 split="test")
    results = json.loads(out.with_name(out.name + ".verification.json").read_text())["results"]
    positives = world_place_ground_truth(root).positive_names()
    return {f"{preset}/{q}": sorted([c | {"label": int(c["name"] in positives.get(q, set()))} for c in cs],
                                    key=lambda c: c["retrieval_rank"])
            for q, cs in results.items()}


def row(c: dict[str, Any]) -> np.ndarray:
    """The raw ``(4,)`` features of one candidate dict."""
    return features(c["consistent"], c["inliers"], c["S_L"], c["G"])


def top1(cs: list[dict[str, Any]], key: Callable[[dict[str, Any]], float], second: int = 0,
         stage2: Callable[[dict[str, Any]], float] | None = None) -> int:
    """Label of the first candidate after a stable sort by ``-key`` (then the top ``second`` by ``-stage2``)."""
    order = sorted(cs, key=lambda c: -key(c))
    if second and stage2 is not None:
        order = sorted(order[:second], key=lambda c: -stage2(c)) + order[second:]
    return order[0]["label"]


def evaluate(model: FusionModel, queries: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    """Accuracy (logit > 0) and Recall@1 of the re-sortings of each query's shortlist."""
    cs = [c for q in queries.values() for c in q]
    logit = dict(zip(map(id, cs), model.logits(np.stack([row(c) for c in cs])), strict=True))
    learned = lambda c: float(logit[id(c)])  # noqa: E731
    s = lambda c: float(c["S"])  # noqa: E731
    monotone = lambda c: fused_score(c["S_L"], c["S"], c["G"], "monotone")  # noqa: E731
    retrieval = lambda c: -float(c["retrieval_rank"])  # noqa: E731
    methods = {"retrieval": (retrieval, 0, None), "S": (s, 0, None), "learned (all 20)": (learned, 0, None),
               "monotone (all 20)": (monotone, 0, None),
               f"S then monotone (top {SECOND_STAGE})": (s, SECOND_STAGE, monotone),
               f"S then learned (top {SECOND_STAGE})": (s, SECOND_STAGE, learned)}
    n = max(1, len(queries))
    return {"queries": len(queries), "candidates": len(cs), "positives": sum(c["label"] for c in cs),
            "accuracy": float(np.mean([(logit[id(c)] > 0) == bool(c["label"]) for c in cs])) if cs else None,
            "recall_at_1": {name: sum(top1(q, *m) for q in queries.values()) / n for name, m in methods.items()}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", type=Path, default=Path("/tmp/visloc_fusion"))
    parser.add_argument("--seed", type=int, default=1, help="world seed (the benchmark's worlds use 0)")
    parser.add_argument("--presets", nargs="+", default=["default", "hard"], help="world presets to train on")
    parser.add_argument("--max-queries", type=int, default=0, help="test queries per world (0: all)")
    parser.add_argument("--held-out", type=float, default=0.3, help="share of the queries held out")
    parser.add_argument("--l2", type=float, default=1e-2)
    parser.add_argument("--out", type=Path, default=REPO / "src" / "visloc" / "weights" / "fusion_world.json")
    args = parser.parse_args()
    if args.seed == 0:
        parser.error("--seed 0 is the benchmark's world; train on another seed")
    start = time.perf_counter()
    queries: dict[str, list[dict[str, Any]]] = {}
    for preset in args.presets:
        queries |= candidates(args.work, preset, args.seed, args.max_queries)
    names = sorted(queries)
    rng = np.random.default_rng(args.seed)
    held = set(rng.permutation(names)[: round(args.held_out * len(names))].tolist())
    train = {q: queries[q] for q in names if q not in held}
    test = {q: queries[q] for q in names if q in held}
    x = np.stack([row(c) for q in train.values() for c in q])
    y = np.array([c["label"] for q in train.values() for c in q])
    model = fit(x, y, l2=args.l2)
    metrics = {"world": {"presets": args.presets, "seed": args.seed, "max_queries": args.max_queries},
               "shortlist": SHORTLIST, "l2": args.l2, "train": evaluate(model, train),
               "held_out": evaluate(model, test)}
    for preset in args.presets:
        metrics[f"held_out_{preset}"] = evaluate(model, {q: c for q, c in test.items() if q.startswith(preset + "/")})
    metrics["seconds"] = round(time.perf_counter() - start, 1)
    model = dataclasses.replace(model, metrics=metrics)
    model.save(args.out)
    print(json.dumps(model.to_json(), indent=2))


if __name__ == "__main__":
    main()
