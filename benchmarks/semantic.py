"""Semantic matching with weak supervision (Publications I and II) on PF-WILLOW: the comparison of the issue.

Protocol:

* **one synthetic pretraining** shared by every fold (CNNGeometric's random warps of photographs: by default
  the scikit-image photographs of :class:`~visloc.semantic.data.SyntheticWarpPairs`; it never sees a
  PF-WILLOW image), the ``tiny`` backbone trained from scratch (no ImageNet weights on this machine);
* **class-disjoint folds**: the 10 PF-WILLOW classes (sorted) in consecutive groups of ``--fold-size`` (5
  folds of 2); for each fold, three weak fine-tunings of the pretrained model on the weak pairs
  (:func:`~visloc.datasets.weak_pairs.make_weak_pairs`: flips + random same-class pairs) of the *other*
  classes only -- Publication I (synthetic grid loss + cyclic on a grid), Publication II NN + cyclic and
  Chamfer + cyclic (keypoint sets, both directions) -- and evaluation on the fold's classes; every class is
  tested exactly once and never trained on;
* rows: identity, synthetic pretraining only, the three fine-tunings (each class's numbers from the fold that
  tests it); PCK@0.1 with L = longer side of the source keypoint box (``bbox``, PF-WILLOW) and of the source
  image (``image``), per class and mean; training time on this CPU.

    python benchmarks/semantic.py                          # writes docs/results/semantic.md and .json
    python benchmarks/semantic.py --threads 1              # a shared machine: one thread per process is faster
    python benchmarks/semantic.py --pretrain-epochs 1 --pretrain-length 64 --finetune-epochs 1 --no-write
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import subprocess
import time
from pathlib import Path
from typing import Any

import numpy as np

from visloc.datasets.semantic import SemanticPair, pf_willow_pairs, read_pf_willow
from visloc.evaluation.semantic import PCKResults
from visloc.evaluation.semantic_model import evaluate_matcher
from visloc.geometry.warps import Warp
from visloc.io.atomic import write_json, write_text
from visloc.models.backbones import BackboneConfig
from visloc.semantic.models import tiny_matcher_config
from visloc.semantic.predict import load_matcher, predict_warps
from visloc.settings import data_dir
from visloc.training.loop import LoopConfig
from visloc.training.semantic import LOSS_PRESETS, TrainSemanticConfig, train_semantic

REPO = Path(__file__).resolve().parents[1]
ALPHA = 0.1
NORMS = ("bbox", "image")
ALPHAS = (0.05, 0.1, 0.15)
WEAK_ROWS = {  # row label -> loss preset
    "+ cyclic (Pub I: synthetic grid loss + cyclic)": "pub1",
    "+ NN + cyclic (Pub II)": "pub2_nn",
    "+ Chamfer + cyclic (Pub II)": "pub2_chamfer",
}
#: ``--control`` rows -> (loss preset, learning rate or None for the fine-tuning one): what the weak losses'
#: gain is compared with. "bn": the Chamfer run at lr 1e-12 -- the weights stay put (Adam moves each by at
#: most ~lr per step), only the batch-norm running statistics adapt to the real training images.
CONTROL_ROWS = {
    "control: synthetic grid loss only, continued (Pub I without cyclic)": ("supervised", None),
    "control: batch-norm statistics of the real pairs only (Chamfer at lr 1e-12)": ("pub2_chamfer", 1e-12),
}
IDENTITY_ROW = "identity (no alignment)"
PRETRAIN_ROW = "synthetic pretraining only"


def load_average() -> str:
    try:
        return subprocess.run(["uptime"], capture_output=True, text=True, check=False).stdout.strip()
    except OSError:
        return "uptime unavailable"


def folds_of(classes: list[str], size: int) -> list[list[str]]:
    """Consecutive groups of ``size`` sorted classes (the last may be smaller)."""
    return [classes[i : i + size] for i in range(0, len(classes), size)]


def category_folds(classes: list[str]) -> list[list[str]]:
    """One fold per object category: PF-WILLOW's ``car(G)``, ``car(M)``, ``car(S)`` -> ``car`` ..., so no
    test class shares its category with a training class."""
    by_category: dict[str, list[str]] = {}
    for c in classes:
        by_category.setdefault(c.split("(")[0], []).append(c)
    return [by_category[k] for k in sorted(by_category)]


def run_once(out: Path, config: TrainSemanticConfig) -> dict[str, Any]:
    """Train unless ``out/model.pt`` exists (a finished run is reused); the metrics of the run, with the
    machine's load averages at its start and end (``load``, recorded in ``out/load.json``)."""
    if not (out / "model.pt").is_file():
        before = os.getloadavg()
        train_semantic(out, config)
        write_json(out / "load.json", {"start": list(before), "end": list(os.getloadavg())})
    metrics = json.loads((out / "metrics.json").read_text())
    load_file = out / "load.json"
    metrics["load"] = json.loads(load_file.read_text()) if load_file.is_file() else None
    return metrics


def load_range(runs: list[dict[str, Any]]) -> str:
    """The range of the 1-minute load averages recorded at the start and end of the training runs."""
    values = [v for m in runs if m.get("load") for v in (m["load"]["start"][0], m["load"]["end"][0])]
    missing = sum(1 for m in runs if not m.get("load"))
    text = f"{min(values):.1f}-{max(values):.1f}" if values else "not recorded"
    return text + (f" ({missing} run(s) without a record)" if missing and values else "")


def combined_warps(pairs: list[SemanticPair], by_class: dict[str, list[Warp]], pair_class_index: list[int]
                   ) -> list[Warp]:
    return [by_class[p.category][i] for p, i in zip(pairs, pair_class_index, strict=True)]


def paired(a: PCKResults, b: PCKResults, norm: str) -> dict[str, float]:
    """Per-pair comparison of b against a: mean difference, pairs better / worse / equal."""
    da = np.array([r.pck[norm][ALPHA] for r in a.rows])
    db = np.array([r.pck[norm][ALPHA] for r in b.rows])
    d = db - da
    return {"mean_difference": float(d.mean()), "better": int((d > 0).sum()), "worse": int((d < 0).sum()),
            "equal": int((d == 0).sum())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", type=Path, default=Path("/tmp/visloc_semantic_bench"))
    parser.add_argument("--data", type=Path, default=None, help="PF-WILLOW folder (default: $VISLOC_DATA/pf_willow)")
    parser.add_argument("--image-size", type=int, default=128)
    parser.add_argument("--transform", default="affine", help="affine, tps or two_stage")
    parser.add_argument("--pretrain-epochs", type=int, default=10)
    parser.add_argument("--pretrain-length", type=int, default=3200, help="synthetic pairs per pretraining epoch")
    parser.add_argument("--pretrain-lr", type=float, default=1e-3)
    parser.add_argument("--batch-size", type=int, default=32, help="pretraining batch")
    parser.add_argument("--finetune-epochs", type=int, default=4)
    parser.add_argument("--finetune-batch-size", type=int, default=16, help="real pairs per weak step")
    parser.add_argument("--finetune-lr", type=float, default=2e-4)
    parser.add_argument("--fold-size", type=int, default=2)
    parser.add_argument("--split", choices=("class", "category"), default="class",
                        help="class: folds of --fold-size sub-classes; category: one fold per object category "
                             "(writes semantic_category.md/.json)")
    parser.add_argument("--max-per-category", type=int, default=100)
    parser.add_argument("--control", action="store_true",
                        help="add two control rows: synthetic-only continued training, batch-norm adaptation only")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    parser.add_argument("--backbone-weights", type=Path, default=None,
                        help="initialise the tiny backbone from this file (e.g. the shipped retrieval encoder, "
                             "src/visloc/weights/retrieval_tiny_world.pt) instead of at random; the results go to "
                             "docs/results/<stem>_init.md/.json")
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        datefmt="%H:%M:%S")
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    load_before = load_average()
    t_start = time.perf_counter()
    root = args.data or data_dir() / "pf_willow"
    images = read_pf_willow(root)
    classes = sorted({im.category for im in images})
    folds = folds_of(classes, args.fold_size) if args.split == "class" else category_folds(classes)
    pairs = pf_willow_pairs(images)
    model = tiny_matcher_config(args.transform, args.image_size)
    if args.backbone_weights is not None:
        model = dataclasses.replace(model, backbone=BackboneConfig("tiny", str(args.backbone_weights)))
    loop = LoopConfig(device="cpu", progress=False, num_workers=0, seed=args.seed)

    # --- one synthetic pretraining -------------------------------------------------------------------------
    pre_config = TrainSemanticConfig(
        stage="pretrain", model=model, synthetic_length=args.pretrain_length, synthetic_val_length=256,
        loop=dataclasses.replace(
            loop, batch_size=args.batch_size, epochs=args.pretrain_epochs, lr=args.pretrain_lr,
            milestones=(max(1, round(0.8 * args.pretrain_epochs)),) if args.pretrain_epochs > 1 else ()))
    pre_dir = args.work / "pretrain"
    pre_metrics = run_once(pre_dir, pre_config)
    pre_model = pre_dir / "model.pt"

    # --- weak fine-tunings per fold ------------------------------------------------------------------------
    rows: dict[str, tuple[str, float | None]] = {label: (preset, None) for label, preset in WEAK_ROWS.items()}
    if args.control:
        rows.update(CONTROL_ROWS)
    fine: dict[str, dict[str, Any]] = {label: {"seconds": 0.0, "folds": []} for label in rows}
    all_runs = [pre_metrics]
    fold_warps: dict[str, dict[str, list[Warp]]] = {label: {} for label in rows}
    for f, test_classes in enumerate(folds):
        train_classes = tuple(c for c in classes if c not in test_classes)
        test_pairs = [p for p in pairs if p.category in test_classes]
        for label, (preset, lr) in rows.items():
            config = TrainSemanticConfig(
                stage="weak", model=model, init_from=str(pre_model), loss=LOSS_PRESETS[preset], data_root=str(root),
                classes=train_classes, max_per_category=args.max_per_category, pairs_seed=args.seed,
                val_fraction=0.1, cache_images=True,
                loop=dataclasses.replace(loop, batch_size=args.finetune_batch_size, epochs=args.finetune_epochs,
                                         lr=lr or args.finetune_lr))
            out = args.work / f"{'' if args.split == 'class' else 'category_'}fold{f}" / (preset if lr is None else f"{preset}_lr{lr:g}")
            metrics = run_once(out, config)
            all_runs.append(metrics)
            fine[label]["seconds"] += metrics["train_seconds"]
            fine[label]["folds"].append({"test_classes": test_classes, "train_classes": list(train_classes),
                                         "pairs": metrics["pairs"], "best_epoch": metrics["best_epoch"],
                                         "train_seconds": metrics["train_seconds"], "load": metrics["load"],
                                         "epochs": [{k: e[k] for k in ("epoch", "train_loss", "val_loss")}
                                                    for e in metrics["epochs"]]})
            matcher = load_matcher(out / "model.pt")
            warps = predict_warps(matcher, test_pairs, batch_size=32)
            for c in test_classes:
                fold_warps[label][c] = [w for p, w in zip(test_pairs, warps, strict=True) if p.category == c]

    # --- evaluation on every class (each from the fold that tests it) -----------------------------------------
    t_eval = time.perf_counter()
    results: dict[str, PCKResults] = {}
    results[IDENTITY_ROW], _ = evaluate_matcher(None, pairs, ALPHAS, NORMS)
    results[PRETRAIN_ROW], _ = evaluate_matcher(load_matcher(pre_model), pairs, ALPHAS, NORMS, batch_size=32)
    position: dict[str, int] = {}
    index_in_class = []
    for p in pairs:
        index_in_class.append(position.get(p.category, 0))
        position[p.category] = index_in_class[-1] + 1
    for label in rows:
        warps = combined_warps(pairs, fold_warps[label], index_in_class)
        results[label], _ = evaluate_matcher(None, pairs, ALPHAS, NORMS, warps=warps)
    eval_seconds = time.perf_counter() - t_eval
    total_seconds = time.perf_counter() - t_start
    compute = {"pretraining": pre_metrics["train_seconds"], "evaluation": eval_seconds,
               **{label: fine[label]["seconds"] for label in rows}}
    load_after = load_average()

    # --- report ----------------------------------------------------------------------------------------------
    seconds = {IDENTITY_ROW: 0.0, PRETRAIN_ROW: pre_metrics["train_seconds"]}
    seconds.update({label: fine[label]["seconds"] for label in rows})
    lines = [
        "# Semantic matching with weak supervision (Publications I and II) on PF-WILLOW", "",
        f"Produced by `python benchmarks/semantic.py{' --threads ' + str(args.threads) if args.threads else ''}"
        f"{' --control' if args.control else ''}"
        f"{' --backbone-weights ' + str(args.backbone_weights) if args.backbone_weights else ''}` on {os.cpu_count()} CPU cores shared with other jobs "
        f"({torch.get_num_threads()} torch thread(s)), {time.strftime('%Y-%m-%d')}. Training + evaluation: "
        f"{sum(compute.values()) / 60:.1f} min, of which the issue's rows (without the controls) "
        f"{sum(v for k, v in compute.items() if k not in CONTROL_ROWS) / 60:.1f} min; this invocation "
        f"{total_seconds / 60:.1f} min (finished runs in `--work` are reused). 1-minute load average at the start "
        f"and end of the training runs: {load_range(all_runs)}; `uptime` before this invocation `{load_before}`, "
        f"after `{load_after}`.", "",
        f"Protocol: one synthetic pretraining (random {args.transform} warps of the 18 scikit-image photographs; "
        "no PF-WILLOW image) shared by every fold; "
        + ("class-disjoint folds of PF-WILLOW's sorted classes " if args.split == "class"
           else "category-disjoint folds (no test class shares its object category with a training class) ")
        +
        f"({', '.join('[' + ', '.join(f) + ']' for f in folds)}): each fold fine-tunes the pretrained model on "
        "the weak pairs (flips + random same-class pairs, at most "
        f"{args.max_per_category} per class) of the other classes and is evaluated on its own classes' 90 "
        "ordered pairs each, so every class is tested once, by a model that never saw it. PCK@0.1: a target "
        "keypoint mapped into the source is correct within 0.1 L of its source keypoint; `bbox`: L = longer "
        "side of the source keypoint box (PF-WILLOW / CNNGeometric `pf`), `image`: L = longer side of the source "
        "image. Means are over classes (each class 90 pairs, so the mean over the 900 pairs is the same).", "",
        f"Model: `tiny` backbone trained from scratch (no ImageNet weights in this machine's torch hub cache) cut "
        f"at stride 16, {args.transform} regression, {args.image_size} x {args.image_size} px input, "
        f"regressor kernels {list(model.regressor.kernel_sizes)} channels {list(model.regressor.channels)}, "
        f"{pre_metrics['parameters']} parameters. Pretraining: {args.pretrain_epochs} epochs x "
        f"{args.pretrain_length} synthetic pairs, batch {args.batch_size}, Adam lr {args.pretrain_lr:g} (x0.1 "
        f"after {pre_config.loop.milestones or 'never'}). Fine-tuning: {args.finetune_epochs} epochs of the fold's "
        f"weak pairs (10 % held out for validation by the weak loss; model.pt = best validation epoch), batch "
        f"{args.finetune_batch_size} real pairs (each predicted in both directions; Pub I adds as many synthetic "
        f"pairs), Adam lr {args.finetune_lr:g}; loss weights 1 for every term.", "",
        "## PCK@0.1, mean over classes", "",
        "| method | bbox (%) | image (%) | training time (s, this CPU) |", "|---|---|---|---|",
    ]
    for label, res in results.items():
        t = seconds[label]
        note = "" if label in (IDENTITY_ROW,) else (" (shared)" if label == PRETRAIN_ROW else
                                                   f" ({len(folds)} folds; + pretraining)")
        lines.append(f"| {label} | {100 * res.mean_over_classes('bbox', ALPHA):.1f} | "
                     f"{100 * res.mean_over_classes('image', ALPHA):.1f} | {t:.0f}{note} |")
    for norm in NORMS:
        lines += ["", f"## PCK@0.1 per class, L = {norm}", "",
                  "| method | " + " | ".join(c for c in classes) + " | mean |",
                  "|---|" + "---|" * (len(classes) + 1)]
        for label, res in results.items():
            per = res.per_class(norm, ALPHA)
            lines.append(f"| {label} | " + " | ".join(f"{100 * per[c]:.1f}" for c in classes)
                         + f" | {100 * res.mean_over_classes(norm, ALPHA):.1f} |")
    lines += ["", "## Against synthetic pretraining only, pair by pair (PCK@0.1)", "",
              "| method | L | mean difference (points) | pairs better | worse | equal |", "|---|---|---|---|---|---|"]
    comparisons: dict[str, dict[str, Any]] = {}
    for label in rows:
        comparisons[label] = {}
        for norm in NORMS:
            c = paired(results[PRETRAIN_ROW], results[label], norm)
            comparisons[label][norm] = c
            lines.append(f"| {label} | {norm} | {100 * c['mean_difference']:+.1f} | {c['better']} | {c['worse']} | "
                         f"{c['equal']} |")
    lines += ["", "## Other thresholds (mean over classes, bbox / image)", "",
              "| method | " + " | ".join(f"PCK@{a:g}" for a in ALPHAS) + " |", "|---|" + "---|" * len(ALPHAS)]
    for label, res in results.items():
        lines.append(f"| {label} | " + " | ".join(
            f"{100 * res.mean_over_classes('bbox', a):.1f} / {100 * res.mean_over_classes('image', a):.1f}"
            for a in ALPHAS) + " |")
    stem = ("semantic" if args.split == "class" else "semantic_category") + (
        "_init" if args.backbone_weights is not None else "")
    lines += ["", f"Evaluation of all rows: {eval_seconds:.0f} s. Per-fold losses and pair counts: "
              f"`docs/results/{stem}.json`.", ""]
    text = "\n".join(lines)
    print(text)
    if not args.no_write:
        out = REPO / "docs" / "results"
        write_text(out / f"{stem}.md", text)
        write_json(out / f"{stem}.json", {
            "protocol": {"folds": folds, "alpha": ALPHA, "normalisations": list(NORMS), "data": str(root),
                         "pretraining_images": "scikit-image photographs (SyntheticWarpPairs default)"},
            "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
            "model": pre_metrics["model"], "parameters": pre_metrics["parameters"],
            "pretraining": {"train_seconds": pre_metrics["train_seconds"], "best_epoch": pre_metrics["best_epoch"],
                            "load": pre_metrics["load"],
                            "epochs": [{k: e[k] for k in ("epoch", "train_loss", "val_loss")}
                                       for e in pre_metrics["epochs"]]},
            "fine_tuning": fine, "results": {k: v.summary() for k, v in results.items()},
            "paired_against_pretraining": comparisons, "seconds": seconds, "eval_seconds": eval_seconds,
            "compute_seconds": compute,
            "total_seconds": total_seconds, "load_before": load_before, "load_after": load_after,
            "cpu_count": os.cpu_count(), "threads": torch.get_num_threads(),
        })


if __name__ == "__main__":
    main()
