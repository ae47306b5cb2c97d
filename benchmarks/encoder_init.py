"""The trained retrieval encoder as an initialisation elsewhere (``--weights``): relocalization in an unseen room.

The relative-pose model of Publication V is trained twice with the shipped recipe
(``scripts/train_shipped_relpose.sh``: the default embedded world, scene ``conference`` held out, a base
stage then the correlation head), once with its ``tiny`` encoder from random initialisation (the shipped
model, ``relpose_tiny_world.pt``) and once from a retrieval encoder. For a fair comparison that encoder is
retrained here with the shipped retrieval recipe (``scripts/train_shipped_retrieval.sh``) but with
``--exclude-scene conference`` too, so neither model ever saw the held-out room (the shipped retrieval
encoder did see it). Both are evaluated on the held-out room's test traversal: relpose + metric fusion over
the model's own retrieval, median position / rotation error, against the pose of the top-1 VLAD-retrieved
image (the baseline of ``benchmarks/relpose.py``).

The semantic half (the class-disjoint PF-WILLOW benchmark from the retrieval encoder) is
``python benchmarks/semantic.py --threads 1 --backbone-weights src/visloc/weights/retrieval_tiny_world.pt``
(writes ``docs/results/semantic_init.md``; the shipped encoder never saw a PF-WILLOW image).

    python benchmarks/encoder_init.py          # about 35 min on 2 CPU cores; writes docs/results/encoder_init.md
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from visloc.datasets import load_frames
from visloc.datasets.synthetic import WorldConfig, make_world
from visloc.evaluation.localization import evaluate_localization
from visloc.io.atomic import write_json, write_text
from visloc.localization import LocalizeConfig, Localizer, Map, MapConfig, build_map, estimator_config
from visloc.retrieval.relpose import DEFAULT_MODEL
from visloc.settings import shipped_model

REPO = Path(__file__).resolve().parents[1]
RELPOSE_COMMON = ["--translation-frame", "camera", "--resize", "128", "--crop", "112", "--batch-size", "32",
                  "--seed", "333", "--exclude-scene", "conference", "--cache-images", "--num-workers", "0",
                  "--no-progress"]


def visloc(*args: str, threads: int = 1) -> None:
    """Run the ``visloc`` CLI of this environment (as the shipped training scripts do)."""
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    exe = Path(sys.executable).with_name("visloc")
    subprocess.run([str(exe), *args], check=True, env=env)


def retrieval_encoder(work: Path, held_out: str) -> Path:
    """The shipped retrieval recipe with ``held_out`` excluded (reused when finished)."""
    model = work / "retrieval" / "model.pt"
    if model.is_file():
        return model
    world = work / "world_hard"
    if not (world / "dataset.json").is_file():
        visloc("world", "make", str(world), "--preset", "hard", "--set", "train_traversals=3",
               "--set", "frames_per_train_traversal=20")
    visloc("train", "retrieval", "--data", str(world), "--out", str(work / "retrieval"), "--overwrite",
           "--backbone", "tiny", "--weights", "none", "--allow-random-init", "--pooling", "gem",
           "--whitening-dim", "128", "--image-size", "256", "--loss", "contrastive", "--margin", "0.7",
           "--num-negatives", "5", "--val-every", "5", "--night-prob", "0.5", "--edge-occluder-prob", "0.4",
           "--edge-occluder-max", "0.5", "--epochs", "30", "--milestones", "22", "--batch-size", "8",
           "--lr", "1e-3", "--seed", "0", "--cache-images", "--num-workers", "0", "--device", "cpu",
           "--no-progress", "--exclude-scene", held_out)
    return model


def relpose_from(world: Path, work: Path, init: Path) -> tuple[Path, float]:
    """The shipped relpose recipe with the base stage's encoder initialised from ``init``."""
    model = work / "relpose" / "model.pt"
    if not model.is_file():
        visloc("train", "relpose", "--data", str(world), "--out", str(work / "relpose_base"), *RELPOSE_COMMON,
               "--backbone", "tiny", "--weights", str(init), "--epochs", "30", "--milestones", "20")
        visloc("train", "relpose", "--data", str(world), "--out", str(work / "relpose"), *RELPOSE_COMMON,
               "--backbone", "tiny", "--weights", str(work / "relpose_base" / "model.pt"), "--head", "correlation",
               "--hidden", "256", "--centre-crop", "--min-overlap", "0.5", "--max-overlap", "0.98", "--epochs", "20",
               "--milestones", "14", threads=2)
    seconds = sum(e["seconds"] for d in ("relpose_base", "relpose")
                  for e in json.loads((work / d / "metrics.json").read_text())["epochs"])
    return model, seconds


def held_out_errors(map_dir: Path, frames, method: str, fusion: str | None) -> tuple[dict, dict]:
    """Estimates and top-1 retrieved poses of ``frames``."""
    options = {"fusion": fusion} if fusion else {}
    localizer = Localizer(Map(map_dir), LocalizeConfig(method, estimator_config(method, options)))
    estimates, top1 = {}, {}
    from visloc.io.images import read_image

    for f in frames:
        r = localizer.localize_image(read_image(f.image_path), f.camera, f.name)
        if r.pose is not None:
            estimates[f.name] = r.pose
        top1[f.name] = localizer.map.poses[r.retrieved[0]]
    return estimates, top1


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", type=Path, default=Path("/tmp/visloc_encoder_init"))
    parser.add_argument("--held-out", default="conference")
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    if args.held_out != "conference":
        parser.error("the shipped relpose recipe holds out 'conference'; only that is comparable")
    t0 = time.perf_counter()
    encoder = retrieval_encoder(args.work, args.held_out)
    world = make_world(args.work / "world", WorldConfig(), progress=False)
    new_model, new_seconds = relpose_from(world, args.work, encoder)
    shipped = shipped_model(DEFAULT_MODEL)
    shipped_seconds = json.loads(shipped.with_suffix(".json").read_text())["train_seconds"]

    test = load_frames(world, split="test")
    frames = [f for f in test.frames if f.scene == args.held_out]
    truth = {f.name: test.poses()[f.name] for f in frames}
    rows: dict[str, object] = {}
    for label, model in (("random init (shipped relpose model)", shipped), ("retrieval-encoder init", new_model)):
        map_dir = args.work / ("map_shipped" if model == shipped else "map_init")
        if not (map_dir / "map.json").is_file():
            build_map(world, map_dir, MapConfig(global_descriptor="relpose", global_options={"model": str(model)}),
                      split="train")
        est, top1 = held_out_errors(map_dir, frames, "relpose", "metric")
        rows[f"relpose + metric fusion, {label}"] = evaluate_localization(est, truth)
        rows[f"top-1 retrieved pose, {label} encoder"] = evaluate_localization(top1, truth)
    vlad_map = args.work / "map_vlad"
    if not (vlad_map / "map.json").is_file():
        build_map(world, vlad_map, MapConfig(), split="train")
    _, top1 = held_out_errors(vlad_map, frames, "pnp", None)
    rows["top-1 retrieved pose (VLAD)"] = evaluate_localization(top1, truth)

    def cell(stats) -> str:
        s = stats.overall
        return (f"{100 * s.median_t_m:.1f} | {s.median_R_deg:.2f}" if np.isfinite(s.median_t_m)
                else "fail | fail")

    lines = ["# The trained retrieval encoder as an initialisation (`--weights`)", "",
             f"Produced by `python benchmarks/encoder_init.py` on {os.cpu_count()} shared CPU cores, "
             f"{time.strftime('%Y-%m-%d')} ({(time.perf_counter() - t0) / 60:.0f} min this invocation; finished "
             f"runs in `--work` are reused). Held-out room `{args.held_out}` of the default embedded world "
             f"({len(frames)} test frames); neither model nor the retrieval encoder saw it. Relpose training "
             f"time: shipped {shipped_seconds:.0f} s, retrieval-encoder init {new_seconds:.0f} s.", "",
             "| method | median t (cm) | median R (deg) |", "|---|---:|---:|"]
    lines += [f"| {k} | {cell(v)} |" for k, v in rows.items()]
    lines += ["", "Semantic matching from the same kind of encoder: `docs/results/semantic_init.md` "
              "(`python benchmarks/semantic.py --threads 1 --backbone-weights "
              "src/visloc/weights/retrieval_tiny_world.pt`).", ""]
    text = "\n".join(lines)
    print(text)
    if not args.no_write:
        write_text(REPO / "docs" / "results" / "encoder_init.md", text)
        write_json(REPO / "docs" / "results" / "encoder_init.json",
                   {k: v.to_json() for k, v in rows.items()})


if __name__ == "__main__":
    main()
