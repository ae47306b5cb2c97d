#!/usr/bin/env bash
# Train the NetVLAD variant of the retrieval network for the comparison in docs/results/retrieval.md (the
# "NetVLAD (trained)" row of `python benchmarks/retrieval.py --netvlad-model WORK/netvlad/model.pt`). Not
# shipped: the same recipe, data and seed as scripts/train_shipped_retrieval.sh, with NetVLAD pooling
# (16 clusters initialised from data, then learned whitening to 128 dimensions) instead of GeM.
# CPU only, about 15 minutes on 2 shared cores. Usage: scripts/train_retrieval_netvlad.sh [WORK_DIR]
set -euo pipefail
cd "$(dirname "$0")/.."
WORK=${1:-/tmp/visloc_retrieval_netvlad}
[ -f "$WORK/world/dataset.json" ] || \
    visloc world make "$WORK/world" --preset hard --set train_traversals=3 --set frames_per_train_traversal=20
OMP_NUM_THREADS=1 visloc train retrieval --data "$WORK/world" --out "$WORK/netvlad" --overwrite \
    --backbone tiny --weights none --allow-random-init --pooling netvlad --netvlad-clusters 16 \
    --whitening-dim 128 --image-size 256 --loss contrastive --margin 0.7 --num-negatives 5 --val-every 5 \
    --night-prob 0.5 --edge-occluder-prob 0.4 --edge-occluder-max 0.5 \
    --epochs 30 --milestones 22 --batch-size 8 --lr 1e-3 --seed 0 \
    --cache-images --num-workers 0 --device cpu --no-progress
echo "model: $WORK/netvlad/model.pt"
