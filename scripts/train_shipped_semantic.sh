#!/usr/bin/env bash
# Train the semantic matcher shipped in src/visloc/weights/ (semantic_tiny.pt) and record its metrics next to it.
#
#   1. synthetic pretraining (tiny backbone from scratch, affine, 128 px; the settings of benchmarks/semantic.py),
#      skipped when PRETRAINED (a model.pt, e.g. the benchmark's WORK/pretrain/model.pt) is given;
#   2. weak fine-tuning with the Publication II loss on the weak pairs of all PF-WILLOW classes, when
#      $VISLOC_DATA/pf_willow exists (otherwise the pretrained model is shipped; the json says which).
#
# CPU only: about 10 minutes on 2 cores (1 without the pretraining). On a machine shared with other jobs,
# OMP_NUM_THREADS=1 is much faster. Usage: scripts/train_shipped_semantic.sh [WORK_DIR] [PRETRAINED]
set -euo pipefail
cd "$(dirname "$0")/.."
WORK=${1:-/tmp/visloc_shipped_semantic}
PRE=${2:-}
LOSS=pub2_chamfer
DATA=$(python -c "from visloc.settings import data_dir; print(data_dir() / 'pf_willow')")
mkdir -p "$WORK"
if [ -z "$PRE" ]; then
    visloc train semantic --out "$WORK/pretrain" --stage pretrain --transform affine --backbone tiny \
        --image-size 128 --synthetic-length 3200 --synthetic-val-length 256 --batch-size 32 --epochs 10 \
        --milestones 8 --lr 1e-3 --seed 1 --device cpu --num-workers 0 --no-progress
    PRE="$WORK/pretrain/model.pt"
fi
if [ -d "$DATA" ]; then
    visloc semantic weak-pairs --data "$DATA" --out "$WORK/weak_pairs.csv" --max-per-category 100 --seed 1
    visloc train semantic --out "$WORK/weak" --stage weak --init "$PRE" --data "$DATA" \
        --pairs "$WORK/weak_pairs.csv" --loss "$LOSS" --val-fraction 0.1 --pairs-seed 1 --batch-size 16 \
        --epochs 4 --lr 2e-4 --seed 1 --device cpu --num-workers 0 --cache-images --no-progress
    FINAL="$WORK/weak"
else
    echo "PF-WILLOW not found at $DATA: shipping the synthetic pretraining only"
    FINAL=$(dirname "$PRE")
fi
python - "$(dirname "$PRE")" "$FINAL" "$DATA" "$LOSS" <<'PY'
import json, shutil, sys
from pathlib import Path
pre, final, loss = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[4]
dest = Path("src/visloc/weights")
shutil.copyfile(final / "model.pt", dest / "semantic_tiny.pt")

def stage(run: Path) -> dict:
    m = json.loads((run / "metrics.json").read_text())
    settings = ("loss", "synthetic_length", "batch_size", "epochs", "lr", "milestones", "seed", "val_fraction",
                "max_per_category", "pairs_seed")
    config = {**m["config"], **m["config"]["loop"]}  # the loop settings are nested under "loop"
    return {"stage": m["stage"], "settings": {k: config[k] for k in settings}, "pairs": m["pairs"],
            "epochs": len(m["epochs"]), "best_epoch": m["best_epoch"], "best_val_loss": m["best_loss"],
            "train_seconds": round(m["train_seconds"], 1),
            "per_epoch": [{k: e[k] for k in ("epoch", "train_loss", "val_loss")} for e in m["epochs"]]}

last = json.loads((final / "metrics.json").read_text())
weak = final != pre
summary = {
    "command": "scripts/train_shipped_semantic.sh",
    "data": ("synthetic pretraining (random affine warps of the scikit-image photographs), then weak fine-tuning "
             f"with the Publication II loss {loss} on the weak pairs (flips + up to 100 random same-class pairs) "
             "of all 10 PF-WILLOW classes ($VISLOC_DATA/pf_willow); its PF-WILLOW PCK is therefore not a held-out "
             "number: "
             "see docs/results/semantic.md for the class-disjoint comparison"
             if weak else "synthetic pretraining only (random affine warps of the scikit-image photographs); "
             "PF-WILLOW was not available, so there is no weak fine-tuning"),
    "weak_fine_tuning": weak,
    "model": last["model"],
    "parameters": last["parameters"],
    "preprocess": {"image_size": last["model"]["image_size"]},
    "stages": [stage(pre)] + ([stage(final)] if weak else []),
    "train_seconds": round(sum(s["train_seconds"] for s in [stage(pre)] + ([stage(final)] if weak else [])), 1),
    "versions": last.get("versions"),
    "evaluation": "visloc evaluate semantic --model shipped --data PF_WILLOW --out results.json",
}
(dest / "semantic_tiny.json").write_text(json.dumps(summary, indent=2) + "\n")
print(f"wrote {dest / 'semantic_tiny.pt'} and its metrics")
PY
