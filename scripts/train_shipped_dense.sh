#!/usr/bin/env bash
# Train the dense matcher shipped in src/visloc/weights/ (dense_tiny_world.pt, the default model of
# `visloc match/localize --matcher dense`) and record its metrics next to it; with `all`, also the variants
# that benchmarks/dense.py compares, trained with the same recipe.
# CPU only, about 13 minutes per model on 2 shared cores (30 with NC). Usage:
#   scripts/train_shipped_dense.sh [WORK_DIR] [all]
#
# Recipe: the default embedded world (seed 0; its training traversals only, never the test traversal) gives
# 600 view pairs per epoch with exact maps from depth and poses, and 200 synthetic homography / affine / TPS
# warps of scikit-image's photographs; 160 x 160 images, 10 epochs, Adam 1e-3 (x0.1 after epoch 8),
# batch 8. Model: the `tiny` encoder initialised from the shipped retrieval network and trained along,
# 15 x 15 global correlation, DGC-Net's per-level decoders (half width) with residual refinement at
# strides 8, 4, 2, matchability head (the best of the variants in docs/results/dense.md).
# Variants (`all`): the universal decoder (UCMD, N' = 16, half width); UCMD + NC-Net consensus
# (3,3 / 16,1); MobileNetV2 encoder (random initialisation: no ImageNet weights here) with UCMD.
set -euo pipefail
cd "$(dirname "$0")/.."
WORK=${1:-/tmp/visloc_shipped_dense}
MODE=${2:-shipped}
[ -f "$WORK/world/dataset.json" ] || visloc world make "$WORK/world"   # the world `visloc demo` makes
RECIPE=(--data "$WORK/world" --image-size 160 --synthetic-pairs 200 --world-pairs 600 --val-pairs 64
        --epochs 10 --milestones 8 --batch-size 8 --lr 1e-3 --seed 0 --residual --device cpu --no-progress)
TINY=(--backbone tiny --weights src/visloc/weights/retrieval_tiny_world.pt)
train() {  # NAME OPTIONS...
    local name=$1; shift
    if [ -f "$WORK/$name/model.pt" ]; then echo "$name: done ($WORK/$name/model.pt)"; return; fi
    OMP_NUM_THREADS=2 visloc train dense "${RECIPE[@]}" --out "$WORK/$name" --overwrite "$@"
}
train dgc "${TINY[@]}" --decoder dgc
if [ "$MODE" = all ]; then
    train ucmd "${TINY[@]}" --decoder ucmd
    train ucmd_nc "${TINY[@]}" --decoder ucmd --consensus 3,3/16,1
    train mobilenet_ucmd --decoder ucmd --backbone mobilenet_v2 --weights none --allow-random-init
fi
python - "$WORK/dgc" <<'PY'
import json, shutil, sys
from pathlib import Path
run = Path(sys.argv[1])
dest = Path("src/visloc/weights")
shutil.copyfile(run / "model.pt", dest / "dense_tiny_world.pt")
m = json.loads((run / "metrics.json").read_text())
summary = {
    "command": "scripts/train_shipped_dense.sh",
    "data": "embedded world, default WorldConfig (seed 0), training traversals: 600 view pairs per epoch "
            "(exact maps from depth and poses) + 200 synthetic warps of scikit-image photographs",
    "architecture": "tiny encoder (from retrieval_tiny_world.pt, trained along), 15x15 global correlation, "
                    "DGC-Net per-level decoders (width 0.5), residual refinement at strides 8, 4, 2, "
                    "matchability head",
    "image_size": m["config"]["image_size"],
    "parameters": m["parameters"],
    "epochs": len(m["epochs"]),
    "best_epoch": m["best_epoch"],
    "best_val_loss": m["best_loss"],
    "validation": "64 synthetic warps of another seed (median AEPE per epoch below)",
    "train_seconds": round(sum(e["seconds"] for e in m["epochs"]), 1),
    "per_epoch": [{k: e.get(k) for k in ("epoch", "train_loss", "val_loss", "val_median_aepe_px")}
                  for e in m["epochs"]],
    "versions": m.get("versions"),
    "evaluation": "docs/results/dense.md (python benchmarks/dense.py)",
}
(dest / "dense_tiny_world.json").write_text(json.dumps(summary, indent=2) + "\n")
print(f"wrote {dest / 'dense_tiny_world.pt'} and its metrics")
PY
