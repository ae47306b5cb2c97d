"""Dense correspondence (Publication IV, matching half): the comparison of the dense-matching issue.

One run, every method on the same pairs:

* methods: identity flow, SIFT + RANSAC homography flow, and every ``--model NAME=PATH`` (trained with
  ``visloc train dense``; default: the shipped ``dense_tiny_world.pt``);
* **embedded-world pairs** (test traversal of the default world, never trained on; view pairs with overlap
  0.3-0.9, exact maps from depth and poses, images 240 x 320): AEPE and PCK@1/3/5 px per viewpoint-change
  bin (angle between the optical axes). A pair is *planar* when a homography fitted to its exact map
  explains it within 1 px (median): SIFT's homography can be exact there; the issue's number is about the
  non-planar pairs;
* ``evd_homography`` (15 extreme-viewpoint pairs, DGC-Net's 240 x 240 protocol) and scikit-image's
  ``stereo_motorcycle`` (real photographs, exact disparity; full 741 x 500 resolution): AEPE, PCK;
* ScanNet (SuperGlue's 15 pairs): relative-pose AUC@5/10/20 deg with SIFT point matches and with matches
  sampled from each dense map;
* ``--swap NAME=ENCODER_MODEL+DECODER_MODEL``: the universal decoder of one trained model run on another
  model's encoder, neither retrained (Publication IV's UCMD claim; ``visloc evaluate matching --decoder-from``);
* parameters and milliseconds per pair (forward pass) at 240 x 240 and 480 x 640 on this CPU, also for
  ``--cost-only`` architectures (e.g. ``vgg16``: DGC-Net's encoder, too slow to train on this CPU) with
  random weights.

    python benchmarks/dense.py                    # writes docs/results/dense.md and .json
    python benchmarks/dense.py --model nc=runs/dense_nc/model.pt --model ucmd=runs/dense/model.pt \
        --swap "tiny decoder on mobilenet=runs/mobile/model.pt+runs/dense/model.pt" --cost-only vgg16
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import os
import time
from pathlib import Path

import cv2
import numpy as np
import torch

from visloc.datasets.homography import read_evd
from visloc.datasets.scannet import read_scannet_pairs
from visloc.datasets.stereo import stereo_motorcycle_pair
from visloc.datasets.synthetic import WorldConfig, make_world
from visloc.evaluation import dense_matching as dm
from visloc.io.atomic import write_json, write_text
from visloc.matching.dense import DenseMatcherSettings, DenseNetworkMatcher
from visloc.matching.dense_baselines import SiftHomography, identity_correspondence
from visloc.models.backbones import BackboneConfig, count_parameters
from visloc.models.dense import DenseMatcher
from visloc.settings import data_dir, shipped_model
from visloc.training.dense_data import WorldPairConfig, WorldViewPairs
from visloc.training.pairs import PairSamplingConfig

REPO = Path(__file__).resolve().parents[1]
BINS = ((0, 15), (15, 30), (30, 45), (45, 90))
CYCLIC_PX = 2.0
WORLD_SIZE = (240, 320)


def planar(gt_map: torch.Tensor, mask: torch.Tensor, tol_px: float = 1.0) -> bool:
    """Whether a homography explains the exact map within ``tol_px`` (median over valid pixels)."""
    m = mask[0].numpy()
    if m.sum() < 8:
        return False
    ys, xs = np.nonzero(m)
    tgt = np.stack([xs, ys], 1).astype(np.float64)
    src = gt_map[:, ys, xs].numpy().T.astype(np.float64)
    H, _ = cv2.findHomography(tgt, src, 0)
    if H is None:
        return False
    proj = cv2.perspectiveTransform(tgt[:, None], H)[:, 0]
    return float(np.median(np.linalg.norm(proj - src, axis=1))) < tol_px


def world_pairs(root: Path, per_scene: int) -> list[dm.FlowPair]:
    config = WorldPairConfig(output_size=WORLD_SIZE, split="test",
                             sampling=PairSamplingConfig(max_pairs_per_scene=per_scene, seed=1))
    data = WorldViewPairs(root, config)
    out = []
    for i in range(len(data)):
        item = data[i]
        img = [(item[k].clamp(0, 1) * 255).round().byte().permute(1, 2, 0).numpy() for k in ("source", "target")]
        mask = item["mask"].bool()
        out.append(dm.FlowPair(f"{item['target_name']}<-{item['source_name']}", img[0], img[1], item["map"], mask,
                               {"view_angle_deg": float(item["view_angle_deg"]),
                                "planar": float(planar(item["map"], mask))}))
    return out


def network_matcher(spec: str, image_size: int | None = 0) -> DenseNetworkMatcher:
    """``PATH`` or ``ENCODER_PATH+DECODER_PATH`` (the second's decoder on the first's encoder)."""
    encoder, _, decoder = spec.partition("+")
    return DenseNetworkMatcher(Path(encoder), DenseMatcherSettings(image_size=image_size,
                                                                   decoder_from=decoder or None))


def untrained(backbone: str, like: DenseNetworkMatcher) -> DenseNetworkMatcher:
    """``like``'s architecture on another encoder, randomly initialised (for its cost only)."""
    config = dataclasses.replace(like.model.config, backbone=BackboneConfig(backbone, "none", allow_random_init=True))
    matcher = copy.copy(like)
    matcher.model = DenseMatcher(config).eval()
    return matcher


def timing(matcher, repeats: int) -> dict[str, float]:
    matcher = copy.copy(matcher)
    matcher.image_size = None  # the given sizes
    out = {"parameters": count_parameters(matcher.model)}
    rng = np.random.default_rng(0)
    for h, w in ((240, 240), (480, 640)):
        a, b = (rng.integers(0, 255, (h, w, 3), dtype=np.uint8) for _ in range(2))
        matcher(a, b)
        best = min(_seconds(matcher, a, b) for _ in range(repeats))
        out[f"ms_{h}x{w}"] = 1000 * best
    return out


def _seconds(matcher, a, b) -> float:
    t = time.perf_counter()
    matcher(a, b)
    return time.perf_counter() - t


def fmt(x: float, scale: float = 1.0, digits: int = 2) -> str:
    return "-" if x is None or not np.isfinite(x) else f"{scale * x:.{digits}f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", action="append", default=None, metavar="NAME=PATH",
                        help="a trained dense model (repeat); default: the shipped one")
    parser.add_argument("--work", type=Path, default=Path("/tmp/visloc_dense_bench"))
    parser.add_argument("--swap", action="append", default=[], metavar="NAME=ENCODER_MODEL+DECODER_MODEL",
                        help="the second model's universal decoder on the first model's encoder (repeat)")
    parser.add_argument("--cost-only", action="append", default=[], metavar="BACKBONE",
                        help="cost row of the first model's architecture on another (untrained) encoder")
    parser.add_argument("--world", type=Path, default=None, help="posed data set (default: the default world)")
    parser.add_argument("--pairs-per-scene", type=int, default=40)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    models = dict(m.split("=", 1) for m in (args.model or [f"dense (shipped)={shipped_model('dense_tiny_world.pt')}"]))
    methods = {"identity": identity_correspondence, "SIFT + RANSAC homography": SiftHomography()}
    models.update(dict(m.split("=", 1) for m in args.swap))
    networks = {name: network_matcher(spec) for name, spec in models.items()}
    methods.update(networks)

    world = args.world or make_world(args.work / "world", WorldConfig(), progress=False)
    wpairs = world_pairs(world, args.pairs_per_scene)
    data = data_dir()
    evd = list(dm.homography_flow_pairs(read_evd(data / "evd_homography"), 240))
    moto = [dm.stereo_flow_pair(stereo_motorcycle_pair())]
    scannet = read_scannet_pairs(data / "scannet_pairs" / "pairs_with_gt.txt").pairs

    results: dict = {}
    for name, matcher in methods.items():
        r: dict = {}
        for set_name, pairs in (("world", wpairs), ("evd", evd), ("motorcycle", moto)):
            res, errors = dm.evaluate_flow_pairs(matcher, pairs)
            r[set_name] = {"all": res.to_json()}
            if set_name == "world":
                for planar_flag in (0.0, 1.0):
                    for lo, hi in BINS:
                        sub = res.subset(lambda row, f=planar_flag, a=lo, b=hi: row.info["planar"] == f
                                         and a <= row.info["view_angle_deg"] < b, errors)
                        key = f"{'planar' if planar_flag else 'non-planar'} {lo}-{hi}"
                        r[set_name][key] = {"pairs": len(sub.rows), "aepe": sub.mean_aepe,
                                            "pck": {str(k): v for k, v in sub.pooled_pck.items()}}
        if name != "identity":
            point = dm.sift_point_matcher() if name.startswith("SIFT") else dm.dense_point_matcher(matcher)
            r["scannet"] = dm.evaluate_pose_pairs(point, scannet).to_json()
        if name in networks:
            cyclic = dm.dense_point_matcher(matcher, cyclic_tolerance_px=CYCLIC_PX)
            r["scannet_cyclic"] = dm.evaluate_pose_pairs(cyclic, scannet).to_json()
        results[name] = r
    costs = {name: timing(m, args.repeats) for name, m in networks.items()}
    first = next(iter(networks.values()))
    for backbone in args.cost_only:
        costs[f"{backbone} encoder, same decoder (untrained: cost only)"] = timing(untrained(backbone, first),
                                                                                   args.repeats)

    lines = ["# Dense correspondence (Publication IV, matching half)", "",
             f"Produced by `python benchmarks/dense.py` on {os.cpu_count()} shared CPU cores "
             f"({torch.get_num_threads()} torch threads, load {os.getloadavg()[0]:.1f}), {time.strftime('%Y-%m-%d')}, "
             f"{(time.perf_counter() - t0) / 60:.0f} min. Models: "
             + ", ".join(f"`{k}` = `{v}`" for k, v in models.items()) + ".", "",
             f"## Embedded-world view pairs (test traversals, {len(wpairs)} pairs, {WORLD_SIZE[0]}x{WORLD_SIZE[1]})", "",
             "AEPE (px) per viewpoint-change bin (angle between the optical axes, degrees); a pair is planar when "
             "a homography explains its exact map within 1 px.", ""]
    keys = [k for k in results["identity"]["world"] if k != "all"]
    lines += ["| method | " + " | ".join(f"{k} (n={results['identity']['world'][k]['pairs']})" for k in keys)
              + " | all: AEPE | PCK@1 | PCK@3 | PCK@5 |",
              "|---|" + "---:|" * (len(keys) + 4)]
    for name, r in results.items():
        w = r["world"]
        lines.append(f"| {name} | " + " | ".join(fmt(w[k]["aepe"]) for k in keys) + f" | {fmt(w['all']['mean_aepe'])} | "
                     + " | ".join(fmt(w["all"]["pooled_pck"].get(str(t)), 100, 1) for t in dm.PCK_THRESHOLDS) + " |")
    for set_name, title in (("evd", "evd_homography (15 pairs, 240 x 240)"),
                            ("motorcycle", "stereo_motorcycle (real photographs, 741 x 500)")):
        lines += ["", f"## {title}", "", "| method | AEPE (px) | PCK@1 | PCK@3 | PCK@5 | s / pair |",
                  "|---|---:|---:|---:|---:|---:|"]
        for name, r in results.items():
            a = r[set_name]["all"]
            lines.append(f"| {name} | {fmt(a['mean_aepe'])} | "
                         + " | ".join(fmt(a["pooled_pck"].get(str(t)), 100, 1) for t in dm.PCK_THRESHOLDS)
                         + f" | {fmt(a['mean_seconds'], 1, 3)} |")
    lines += ["", "## ScanNet relative pose (SuperGlue's 15 pairs)", "",
              "| matches | AUC@5 | AUC@10 | AUC@20 | median inliers |", "|---|---:|---:|---:|---:|"]
    for name, r in results.items():
        for key, how in (("scannet", "2048 sampled by confidence"),
                         ("scannet_cyclic", f"cyclically consistent ({CYCLIC_PX:g} px), 2048 by confidence")):
            if key in r:
                s = r[key]
                label = "SIFT (ratio 0.8, mutual)" if name.startswith("SIFT") else f"{name}: {how}"
                lines.append(f"| {label} | " + " | ".join(fmt(s["auc"][str(t)], 100, 1) for t in dm.AUC_THRESHOLDS)
                             + f" | {int(np.median([p['inliers'] for p in s['pairs']]))} |")
    lines += ["", "## Cost (forward pass, this CPU)", "", "| model | parameters | ms 240x240 | ms 480x640 |",
              "|---|---:|---:|---:|"]
    for name, c in costs.items():
        lines.append(f"| {name} | {c['parameters']:,} | {c['ms_240x240']:.0f} | {c['ms_480x640']:.0f} |")
    text = "\n".join(lines) + "\n"
    print(text)
    if not args.no_write:
        write_text(REPO / "docs" / "results" / "dense.md", text)
        write_json(REPO / "docs" / "results" / "dense.json", {"results": results, "costs": costs,
                                                               "models": models})


if __name__ == "__main__":
    main()
