#!/usr/bin/env bash
# Train the relative-pose model shipped in src/visloc/weights/ and record its metrics next to it.
# CPU only, about 20 minutes on 2 cores. Usage: scripts/train_shipped_relpose.sh [WORK_DIR]
#
# Two stages on the default embedded world, scene 'conference' held out:
#  1. Publication V's network (original head on the global descriptor) from random initialisation;
#  2. the correlation head (visloc's extension), its encoder starting from stage 1's, on the evaluation's
#     centre crop and pairs in the overlap band of retrieved neighbours.
# Stage 1 gives the encoder a retrieval descriptor; trained alone, the correlation head leaves the pooled
# descriptor weak (docs/relocalization.md).
set -euo pipefail
cd "$(dirname "$0")/.."
WORK=${1:-/tmp/visloc_shipped_relpose}
COMMON=(--translation-frame camera --resize 128 --crop 112 --batch-size 32 --seed 333
        --exclude-scene conference --cache-images --num-workers 0 --no-progress)
visloc world make "$WORK/world"   # the default embedded world (seed 0), the one `visloc demo` makes
# one torch thread: two threads on two shared cores were 5-10x slower here
OMP_NUM_THREADS=1 visloc train relpose --data "$WORK/world" --out "$WORK/relpose_base" "${COMMON[@]}" \
    --backbone tiny --weights none --allow-random-init --epochs 30 --milestones 20
OMP_NUM_THREADS=2 visloc train relpose --data "$WORK/world" --out "$WORK/relpose" "${COMMON[@]}" \
    --backbone tiny --weights "$WORK/relpose_base/model.pt" \
    --head correlation --hidden 256 --centre-crop --min-overlap 0.5 --max-overlap 0.98 --epochs 20 --milestones 14
python - "$WORK/relpose_base" "$WORK/relpose" <<'PY'
import json, shutil, sys
from pathlib import Path
base, run = Path(sys.argv[1]), Path(sys.argv[2])
dest = Path("src/visloc/weights")
shutil.copyfile(run / "model.pt", dest / "relpose_tiny_world.pt")
m, b = (json.loads((d / "metrics.json").read_text()) for d in (run, base))
seconds = {name: round(sum(e["seconds"] for e in x["epochs"]), 1) for name, x in (("base", b), ("correlation", m))}
summary = {
    "command": "scripts/train_shipped_relpose.sh",
    "data": "embedded world, default WorldConfig (seed 0), training split, scene 'conference' held out",
    "architecture": "tiny encoder, correlation head (stride 8, 14x14) + pooled descriptors, hidden 256",
    "parameters": m["parameters"],
    "epochs": len(m["epochs"]),
    "best_epoch": m["best_epoch"],
    "best_val_loss": m["best_loss"],
    "validation": "held-out training frames (every 10th of each sequence), never the test split",
    "train_seconds": round(sum(seconds.values()), 1),
    "train_seconds_per_stage": seconds,
    "base_stage": {"parameters": b["parameters"], "epochs": len(b["epochs"]), "best_val_loss": b["best_loss"]},
    "per_epoch": [{k: e[k] for k in ("epoch", "train_loss", "val_loss")} for e in m["epochs"]],
    "versions": m.get("versions"),
    "localization": "see docs/results/relpose.md (python benchmarks/relpose.py)",
}
(dest / "relpose_tiny_world.json").write_text(json.dumps(summary, indent=2) + "\n")
print(f"wrote {dest / 'relpose_tiny_world.pt'} and its metrics")
PY
