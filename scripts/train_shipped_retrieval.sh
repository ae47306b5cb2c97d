#!/usr/bin/env bash
# Train the image-retrieval network shipped in src/visloc/weights/ (retrieval_tiny_world.pt, the default
# model of the `cnn` global descriptor) and record its metrics next to it.
# CPU only, about 20 minutes on 2 shared cores (one torch thread). Usage:
# scripts/train_shipped_retrieval.sh [WORK_DIR]
#
# Data: the rooms of the `hard` embedded world (seed 0) captured densely: three training traversals of 20
# frames per room (the hard preset's map database has two of 8, on other paths); every 5th frame of each
# training sequence is held out as a validation query (Recall@1 selects the best epoch); no test traversal
# frame is ever used (the night-like light, moved objects and occluders are seen only through the
# augmentations: colour jitter, a night-like exposure, edge boards and random erasing). Model: tiny backbone from random initialisation, GeM, learned whitening to 128
# dimensions (initialised by PCA), about 2.5 MB. Contrastive loss (margin 0.7), 5 hard negatives per tuple
# re-mined before every epoch, 256 px images (the longer side; stored with the model, the `cnn`
# descriptor's default image size).
set -euo pipefail
cd "$(dirname "$0")/.."
WORK=${1:-/tmp/visloc_shipped_retrieval}
visloc world make "$WORK/world" --preset hard --set train_traversals=3 --set frames_per_train_traversal=20
# one torch thread: two threads on two shared cores were much slower here
OMP_NUM_THREADS=1 visloc train retrieval --data "$WORK/world" --out "$WORK/retrieval" --overwrite \
    --backbone tiny --weights none --allow-random-init --pooling gem --whitening-dim 128 \
    --image-size 256 --loss contrastive --margin 0.7 --num-negatives 5 --val-every 5 \
    --night-prob 0.5 --edge-occluder-prob 0.4 --edge-occluder-max 0.5 \
    --epochs 30 --milestones 22 --batch-size 8 --lr 1e-3 --seed 0 \
    --cache-images --num-workers 0 --device cpu --no-progress
python - "$WORK/retrieval" <<'PY'
import json, shutil, sys
from pathlib import Path
run = Path(sys.argv[1])
dest = Path("src/visloc/weights")
shutil.copyfile(run / "model.pt", dest / "retrieval_tiny_world.pt")
m = json.loads((run / "metrics.json").read_text())
c = m["config"]
summary = {
    "command": "scripts/train_shipped_retrieval.sh",
    "data": "embedded world, hard preset (seed 0) with 3 training traversals of 20 frames per room, training split only",
    "architecture": f"tiny encoder from scratch, {c['model']['pooling']} pooling, learned whitening to "
                    f"{c['model']['whitening_dim']} dimensions (PCA-initialised)",
    "image_size": c["image_size"],
    "loss": f"{c['loss']} (margin {c['margin']}), {c['mining']['num_negatives']} hard negatives per tuple",
    "parameters": m["parameters"],
    "epochs": len(m["epochs"]),
    "best_epoch": m["best_epoch"],
    "best_val_recall_at_1": m["best_recall_at_1"],
    "validation": f"held-out training frames (every {c['val_every']}th of each sequence, "
                  f"{m['images']['val_queries']} queries) against the other training frames; never the test split",
    "images": m["images"],
    "train_seconds": round(sum(e["seconds"] for e in m["epochs"]), 1),
    "per_epoch": [{k: e[k] for k in ("epoch", "train_loss", "val_recall_at_1")} for e in m["epochs"]],
    "versions": m.get("versions"),
    "retrieval": "see docs/results/retrieval.md (python benchmarks/retrieval.py)",
}
(dest / "retrieval_tiny_world.json").write_text(json.dumps(summary, indent=2) + "\n")
size = (dest / "retrieval_tiny_world.pt").stat().st_size
print(f"wrote {dest / 'retrieval_tiny_world.pt'} ({size / 2**20:.1f} MiB) and its metrics")
PY
