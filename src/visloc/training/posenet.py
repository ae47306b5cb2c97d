"""Training of the PoseNet baseline: one absolute-pose regressor per scene.

:func:`train_posenet` trains :class:`~visloc.models.posenet.PoseNet` on the training-split frames of ONE
scene with ``MSE(centre) + beta * MSE(q)`` (:func:`~visloc.models.posenet.posenet_loss`), validating on
the same scene's ``val_split`` frames, through :func:`visloc.training.loop.fit` (devices, DDP,
checkpoints, resume and ``metrics.json`` as there). The preprocessing is the relative-pose network's
(:mod:`visloc.training.data`). Outputs in ``out_dir``: ``last.pt``, ``best.pt``, ``model.pt``
(:func:`~visloc.models.checkpoint.save_model`) and ``metrics.json``.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..datasets import load_frames
from ..errors import ConfigError
from ..models.backbones import BackboneConfig
from ..models.posenet import PoseNet, PoseNetConfig, posenet_loss
from ..registry import config_to_dict
from .config_cli import ConfigOptions
from .data import PoseNetImages, TransformConfig
from .loop import (
    LoopConfig,
    LossFn,
    fit,
    init_distributed,
    seed_everything,
    shutdown_distributed,
)
from .relpose import HOLDOUT, MODEL_FILE, finalize, holdout_split

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainPoseNetConfig:
    """Everything that determines a PoseNet training run (for one scene).

    Attributes:
        model: the network.
        train_split: split of the training images.
        val_split: ``"holdout"`` (default: every ``val_every``-th training frame of each sequence is held
            out for validation), a split name (its frames of the same scene), or ``None``.
        val_every: hold-out period of ``"holdout"`` validation.
        transform: image preprocessing (the relative-pose network's).
        beta: weight of the quaternion term (Kendall et al. used 120-750 indoors with positions in metres).
        cache_images: keep resized images in memory (per worker).
        loop: optimisation settings; here 32 images per step and process, 30 epochs, Adam at lr 1e-3 x0.1
            after epoch 20 and 2 DataLoader workers per process.
    """

    model: PoseNetConfig = PoseNetConfig()
    train_split: str = "train"
    val_split: str | None = HOLDOUT
    val_every: int = 10
    transform: TransformConfig = TransformConfig()
    beta: float = 250.0
    cache_images: bool = False
    loop: LoopConfig = LoopConfig(epochs=30, batch_size=32, milestones=(20,), num_workers=2)

    def to_dict(self, scene: str) -> dict[str, Any]:
        """Plain-data form embedded in checkpoints and ``metrics.json``."""
        return {"task": "posenet", "scene": scene, **config_to_dict(self)}


#: The options of ``visloc train posenet``: one per leaf field of :class:`TrainPoseNetConfig`, named after
#: the field but for these (:mod:`visloc.training.config_cli`).
POSENET_OPTIONS = ConfigOptions(TrainPoseNetConfig(), names={
    "model.backbone.name": "backbone",
    "transform.random_crop": "random_crop/centre_crop",
})


def tiny_posenet_config(**overrides: Any) -> TrainPoseNetConfig:
    """A CPU-sized setting: the ``tiny`` encoder from random initialisation at 128 px (crop 112).

    ``overrides`` as on the command line, by option name (``epochs=5``, ``crop=64``), or whole top-level
    fields (``model=...``): :meth:`~visloc.training.config_cli.ConfigOptions.replace`.
    """
    model = PoseNetConfig(BackboneConfig("tiny", "none", allow_random_init=True), hidden=256)
    tiny = POSENET_OPTIONS.replace(TrainPoseNetConfig(model=model), resize=128, crop=112)
    return POSENET_OPTIONS.replace(tiny, **overrides)


def _loss(beta: float) -> LossFn:
    def loss_fn(model: nn.Module, batch: list[torch.Tensor]) -> torch.Tensor:
        img, c, q = batch
        c_pred, q_pred = model(img)
        return posenet_loss(c_pred.float(), q_pred.float(), c, q, beta)

    return loss_fn


def train_posenet(
    data_root: str | Path,
    out_dir: str | Path,
    scene: str,
    config: TrainPoseNetConfig = TrainPoseNetConfig(),
    resume: bool = False,
) -> dict[str, Any]:
    """Train a PoseNet on one scene of a 7-Scenes-layout data set.

    Args:
        data_root: the data set.
        out_dir: output folder (created).
        scene: the scene (PoseNet needs one model per scene).
        config: the training run.
        resume: continue from ``out_dir/last.pt``.

    Returns:
        The metrics written to ``out_dir/metrics.json``.

    Raises:
        ConfigError: an unknown scene, or inconsistent settings.
        InputError: a missing data set or absent ImageNet weights (checked before any work).
    """
    data_root, out_dir = Path(data_root), Path(out_dir)
    ctx = init_distributed(config.loop.device)
    try:
        seed_everything(config.loop.seed)
        model = PoseNet(config.model)
        train_frames = load_frames(data_root, split=config.train_split)
        if scene not in train_frames.scenes:
            raise ConfigError(f"unknown scene {scene!r}; scenes of {data_root}: {train_frames.scenes}")
        frames = [f for f in train_frames.frames if f.scene == scene and f.pose is not None]
        val = []
        if config.val_split == HOLDOUT:
            kept, held = holdout_split(dataclasses.replace(train_frames, frames=frames), config.val_every)
            frames, val = kept.frames, held.frames
        elif config.val_split:
            val = [f for f in load_frames(data_root, split=config.val_split).frames
                   if f.scene == scene and f.pose is not None]
        common = {"transform": config.transform, "seed": config.loop.seed, "cache_images": config.cache_images}
        train_set = PoseNetImages(frames, train=True, **common)
        val_set = PoseNetImages(val, train=False, **common) if val else None
        for ds in (train_set, val_set):
            if ds is not None:
                ds.preload()  # with cache_images: fill the cache once, shared by forked workers
        if ctx.is_main:
            out_dir.mkdir(parents=True, exist_ok=True)
            logger.info("posenet training on %s: %d training images, %d validation images, %d process(es) on %s",
                        scene, len(frames), len(val), ctx.world_size, ctx.device)
        ctx.barrier()
        result = fit(model, _loss(config.beta), train_set, val_set, out_dir, config.loop,
                     run_config=config.to_dict(scene), resume=resume, ctx=ctx,
                     run_defaults=type(config)().to_dict(scene))
        metrics = {"task": "posenet", "scene": scene, **result.metrics,
                   "images": {"train": len(frames), "val": len(val)}, "model_file": str(out_dir / MODEL_FILE)}
        if ctx.is_main:
            finalize(model, config.model, result.best_checkpoint, out_dir, metrics, config.transform)
        ctx.barrier()
        return metrics
    finally:
        shutdown_distributed(ctx)
