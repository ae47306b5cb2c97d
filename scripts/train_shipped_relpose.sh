#!/usr/bin/env bash
# Train the relative-pose model shipped in src/visloc/weights/ and record its metrics next to it.
# CPU only, about 20-30 minutes on 2 cores (one torch thread). Usage: scripts/train_shipped_relpose.sh [WORK_DIR]
set -euo pipefail
cd "$(dirname "$0")/.."
WORK=${1:-/tmp/visloc_shipped_relpose}
visloc world make "$WORK/world"   # the default embedded world (seed 0), the one `visloc demo` makes
# the correlation head (visloc's extension) on the evaluation's centre crop, pairs in the overlap band of
# retrieved neighbours; one torch thread (two threads on two shared cores were 5-10x slower here)
OMP_NUM_THREADS=1 visloc train relpose --data "$WORK/world" --out "$WORK/relpose" \
    --backbone tiny --weights none --allow-random-init --translation-frame camera \
    --head correlation --hidden 256 --centre-crop --min-overlap 0.5 --max-overlap 0.98 \
    --resize 128 --crop 112 --batch-size 32 --epochs 30 --milestones 20 --seed 333 \
    --exclude-scene conference --cache-images --num-workers 0 --no-progress
python - "$WORK/relpose" <<'PY'
import json, shutil, sys
from pathlib import Path
run = Path(sys.argv[1])
dest = Path("src/visloc/weights")
shutil.copyfile(run / "model.pt", dest / "relpose_tiny_world.pt")
m = json.loads((run / "metrics.json").read_text())
summary = {
    "command": "scripts/train_shipped_relpose.sh",
    "data": "embedded world, default WorldConfig (seed 0), training split, scene 'conference' held out",
    "parameters": m["parameters"],
    "epochs": len(m["epochs"]),
    "best_epoch": m["best_epoch"],
    "best_val_loss": m["best_loss"],
    "validation": "held-out training frames (every 10th of each sequence), never the test split",
    "train_seconds": round(sum(e["seconds"] for e in m["epochs"]), 1),
    "per_epoch": [{k: e[k] for k in ("epoch", "train_loss", "val_loss")} for e in m["epochs"]],
    "versions": m.get("versions"),
    "localization": "see docs/results/relpose.md (python benchmarks/relpose.py)",
}
(dest / "relpose_tiny_world.json").write_text(json.dumps(summary, indent=2) + "\n")
print(f"wrote {dest / 'relpose_tiny_world.pt'} and its metrics")
PY
