"""Training of the pose regression networks: pair sampling, datasets, a generic loop, entry points.

* :mod:`~visloc.training.pairs` -- training pairs chosen by view overlap (depth-based visibility, pose
  fallback), Publication V pair files.
* :mod:`~visloc.training.data` -- :class:`RelPosePairs` and :class:`PoseNetImages` datasets with the
  published preprocessing, reproducible per ``(seed, epoch, index)``.
* :mod:`~visloc.training.loop` -- :func:`fit`: Adam, step schedule, validation, AMP on CUDA, DDP under
  torchrun, atomic checkpoints, exact resume, ``metrics.json``.
* :mod:`~visloc.training.relpose` / :mod:`~visloc.training.posenet` -- :func:`train_relpose` and
  :func:`train_posenet` with frozen configs (the :class:`LoopConfig` and :class:`TransformConfig` nested);
  :mod:`~visloc.training.cli` -- ``visloc train``, its options derived from the configs by
  :mod:`~visloc.training.config_cli`.
* :mod:`~visloc.training.semantic` / :mod:`~visloc.training.semantic_losses` -- :func:`train_semantic`
  and the losses of the semantic matchers (their models and data are :mod:`visloc.semantic`).

Heavy modules (torch, torchvision) load on first use of a name, so ``import visloc.training`` is cheap.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "PairSamplingConfig": "pairs",
    "RelPosePair": "pairs",
    "frame_overlap": "pairs",
    "pose_overlap": "pairs",
    "read_pair_file": "pairs",
    "sample_pairs": "pairs",
    "view_overlap": "pairs",
    "write_pair_file": "pairs",
    "PoseNetImages": "data",
    "RelPosePairs": "data",
    "TransformConfig": "data",
    "DistContext": "loop",
    "FitResult": "loop",
    "LoopConfig": "loop",
    "fit": "loop",
    "init_distributed": "loop",
    "resolve_device": "loop",
    "seed_everything": "loop",
    "load_checkpoint": "checkpoint",
    "save_checkpoint": "checkpoint",
    "TrainRelPoseConfig": "relpose",
    "tiny_relpose_config": "relpose",
    "train_relpose": "relpose",
    "TrainPoseNetConfig": "posenet",
    "tiny_posenet_config": "posenet",
    "train_posenet": "posenet",
    "TrainRetrievalConfig": "retrieval",
    "tiny_retrieval_config": "retrieval",
    "train_retrieval": "retrieval",
    "SemanticLossConfig": "semantic_losses",
    "semantic_loss": "semantic_losses",
    "TrainSemanticConfig": "semantic",
    "train_semantic": "semantic",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
