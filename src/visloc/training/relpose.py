"""Training of the Siamese relative-pose network (Publication V).

:func:`train_relpose` samples training pairs by view overlap from every training scene
(:mod:`visloc.training.pairs`), validation pairs that look like test-time pairs (database image from
the training split, query from ``val_split``), and trains :class:`~visloc.models.relpose.RelPoseNet`
with ``MSE(t) + beta * MSE(q)`` through :func:`visloc.training.loop.fit`.

Outputs in ``out_dir`` (rank 0 only): ``pairs_train.txt`` / ``pairs_val.txt`` (Publication V format, with
JSON sidecars), ``last.pt`` / ``best.pt`` (resumable training checkpoints), ``model.pt`` (the best
weights, written with :func:`visloc.models.checkpoint.save_model`, so
:func:`~visloc.models.checkpoint.load_model` rebuilds it) and ``metrics.json``.

**Learning rate.** The Lua original used Adam at lr 0.1 with steps at epochs 31/51/81/111/151/201
(x0.1 each) for up to 250 epochs from ImageNet weights; the PyTorch port Adam at 1e-3 halved every
15,000 iterations. lr 0.1 makes Adam diverge here from random initialisation; the default is the port's
1e-3 with one x0.1 step after 2/3 of the epochs. Use ``milestones=(30, 50, 80, 110, 150, 200)``,
``epochs=250`` and ``lr=0.1`` to mimic the original schedule.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..datasets import Frame, FrameSet, load_frames
from ..errors import ConfigError
from ..models.backbones import BackboneConfig
from ..models.checkpoint import save_model
from ..models.relpose import RelPoseConfig, RelPoseNet, relpose_loss
from ..registry import config_to_dict
from .checkpoint import load_checkpoint
from .config_cli import ConfigOptions
from .data import RelPosePairs, TransformConfig
from .loop import (
    DistContext,
    LoopConfig,
    LossFn,
    fit,
    init_distributed,
    seed_everything,
    shutdown_distributed,
)
from .pairs import (
    PairSamplingConfig,
    RelPosePair,
    read_pair_file,
    sample_pairs,
    sampling_metadata,
    scene_ids_of,
    write_pair_file,
)

logger = logging.getLogger(__name__)

HOLDOUT = "holdout"
TRAIN_PAIRS = "pairs_train.txt"
VAL_PAIRS = "pairs_val.txt"
MODEL_FILE = "model.pt"


@dataclass(frozen=True)
class TrainRelPoseConfig:
    """Everything that determines a relative-pose training run.

    Attributes:
        model: the network (encoder, head, translation frame of the labels).
        train_split: split whose frames form the training pairs.
        val_split: where validation queries come from: ``"holdout"`` (default) holds out every
            ``val_every``-th frame of each training sequence, which is then used only as a validation query
            (paired with the remaining training frames of its scene), so model selection never sees the
            test split; a split name (e.g. ``"test"``) pairs that split's frames with the training frames
            instead (then the selected ``model.pt`` has seen that split's losses); ``None`` disables
            validation.
        val_every: hold-out period of ``"holdout"`` validation.
        exclude_scenes: scenes left out of training and validation (leave-one-scene-out benchmarks).
        pairs: overlap band, per-scene cap and seed of the training pairs.
        val_pairs_per_scene: cap on the validation pairs of one scene.
        train_pairs_file: an existing Publication V pair file to train on instead of sampling (names
            relative to the data root; labels must be in ``model.translation_frame``).
        val_pairs_file: the same for validation.
        transform: image preprocessing (Pub V: resize 256, crop 224, jitter 0.4, random crops).
        swap_prob: probability of swapping a training pair (with the exact swapped label).
        beta: weight of the quaternion term of the loss (Pub V: 1).
        cache_images: keep the resized images in memory (per worker; for small data sets).
        loop: optimisation settings; here 64 pairs per step and process (Pub V; the port: 32), 30 epochs,
            Adam at lr 1e-3 (see the module docstring) x0.1 after epoch 20, seed 333 (the Lua original's)
            and 2 DataLoader workers per process.
    """

    model: RelPoseConfig = RelPoseConfig()
    train_split: str = "train"
    val_split: str | None = HOLDOUT
    val_every: int = 10
    exclude_scenes: tuple[str, ...] = ()
    pairs: PairSamplingConfig = PairSamplingConfig()
    val_pairs_per_scene: int = 500
    train_pairs_file: str | None = None
    val_pairs_file: str | None = None
    transform: TransformConfig = TransformConfig()
    swap_prob: float = 0.5
    beta: float = 1.0
    cache_images: bool = False
    loop: LoopConfig = LoopConfig(epochs=30, batch_size=64, milestones=(20,), seed=333, num_workers=2)

    def __post_init__(self) -> None:
        object.__setattr__(self, "exclude_scenes", tuple(self.exclude_scenes))
        if not 0.0 <= self.swap_prob <= 1.0:
            raise ConfigError(f"swap_prob must be in [0, 1], got {self.swap_prob}")
        if self.val_pairs_per_scene < 1:
            raise ConfigError(f"val_pairs_per_scene must be positive, got {self.val_pairs_per_scene}")

    def to_dict(self) -> dict[str, Any]:
        """Plain-data form embedded in checkpoints and ``metrics.json``."""
        return {"task": "relpose", **config_to_dict(self)}


#: The options of ``visloc train relpose``: one per leaf field of :class:`TrainRelPoseConfig`, named after
#: the field but for these (:mod:`visloc.training.config_cli`).
RELPOSE_OPTIONS = ConfigOptions(TrainRelPoseConfig(), names={
    "model.backbone.name": "backbone",
    "exclude_scenes": "exclude_scene",
    "pairs.max_pairs_per_scene": "pairs_per_scene",
    "train_pairs_file": "train_pairs",
    "val_pairs_file": "val_pairs",
    "transform.random_crop": "random_crop/centre_crop",
    "loop.seed": "seed",
})


def tiny_relpose_config(**overrides: Any) -> TrainRelPoseConfig:
    """A CPU-sized setting: the ``tiny`` encoder from random initialisation at 128 px (crop 112), 32 pairs
    per step.

    ``overrides`` as on the command line, by option name (``epochs=5``, ``crop=64``, ``pairs_seed=1``), or
    whole top-level fields (``model=...``): :meth:`~visloc.training.config_cli.ConfigOptions.replace`.
    """
    model = RelPoseConfig(BackboneConfig("tiny", "none", allow_random_init=True))
    tiny = RELPOSE_OPTIONS.replace(TrainRelPoseConfig(model=model), resize=128, crop=112, batch_size=32)
    return RELPOSE_OPTIONS.replace(tiny, **overrides)


def holdout_split(frames: FrameSet, every: int) -> tuple[FrameSet, FrameSet]:
    """Split off every ``every``-th frame of each sequence (by sorted name) as validation queries."""
    if every < 2:
        raise ConfigError(f"val_every must be at least 2, got {every}")
    by_sequence: dict[str, list[Frame]] = {}
    for f in sorted(frames.frames, key=lambda f: f.name):
        by_sequence.setdefault(str(Path(f.name).parent), []).append(f)
    held = {f.name for seq in by_sequence.values() for f in seq[every // 2 :: every]}
    keep = [f for f in frames.frames if f.name not in held]
    val = [f for f in frames.frames if f.name in held]
    return (dataclasses.replace(frames, frames=keep, skipped=list(frames.skipped)),
            dataclasses.replace(frames, frames=val, skipped=[]))


def _image_paths(*frame_sets: FrameSet) -> dict[str, Path]:
    return {f.name: f.image_path for fs in frame_sets for f in fs.frames}


def _make_pairs(
    data_root: Path, out_dir: Path, config: TrainRelPoseConfig, ctx: DistContext, resume: bool
) -> tuple[list[RelPosePair], list[RelPosePair], dict[str, Path]]:
    """Training and validation pairs: sampled (or read) by rank 0, written to ``out_dir``, then read by all."""
    frame_ = config.model.translation_frame
    all_train = load_frames(data_root, split=config.train_split)
    ids = scene_ids_of(all_train)
    if config.val_split == HOLDOUT:
        train_frames, val_frames = holdout_split(all_train, config.val_every)
    else:
        train_frames = all_train
        val_frames = load_frames(data_root, split=config.val_split) if config.val_split else None
    paths = _image_paths(all_train, *([val_frames] if val_frames else []))
    jobs = [(TRAIN_PAIRS, config.train_pairs_file, config.pairs, None)]
    if val_frames is not None or config.val_pairs_file:
        val_sampling = dataclasses.replace(config.pairs, max_pairs_per_scene=config.val_pairs_per_scene)
        jobs.append((VAL_PAIRS, config.val_pairs_file, val_sampling, val_frames))
    if ctx.is_main:
        for file_name, given, sampling, queries in jobs:
            target = out_dir / file_name
            if given is not None:
                pairs = read_pair_file(given, frame_)
                meta: dict[str, Any] = {"translation_frame": frame_, "source": str(given)}
            elif resume and target.is_file():
                continue
            else:
                pairs = sample_pairs(train_frames, sampling, exclude_scenes=config.exclude_scenes,
                                     translation_frame=frame_, scene_ids=ids, queries=queries)
                meta = sampling_metadata(sampling, frame_, config.exclude_scenes, ids)
            if not pairs and file_name == TRAIN_PAIRS:
                raise ConfigError("no training pairs: widen the overlap band or add frames")
            if not pairs:
                logger.warning("no validation pairs in the overlap band: training without validation")
            write_pair_file(target, pairs, meta)
    ctx.barrier()
    train = read_pair_file(out_dir / TRAIN_PAIRS, frame_)
    val = read_pair_file(out_dir / VAL_PAIRS, frame_) if len(jobs) > 1 else []
    return train, val, paths


def _loss(beta: float) -> LossFn:
    def loss_fn(model: nn.Module, batch: list[torch.Tensor]) -> torch.Tensor:
        img_db, img_query, t, q = batch
        t_pred, q_pred = model(img_db, img_query)
        return relpose_loss(t_pred.float(), q_pred.float(), t, q, beta)

    return loss_fn


def relative_pose_errors(model: nn.Module, batch: list[torch.Tensor]) -> dict[str, torch.Tensor]:
    """Per-pair errors of the regressed relative pose: ``cm`` (distance between the regressed and the true
    translation label, metres x 100) and ``deg`` (angle between the regressed and the true rotation)."""
    img_db, img_query, t, q = batch
    t_pred, q_pred = model(img_db, img_query)
    q_pred = torch.nn.functional.normalize(q_pred.float(), dim=-1)
    q_true = torch.nn.functional.normalize(q.float(), dim=-1)
    cos_half = (q_pred * q_true).sum(-1).abs().clamp(max=1.0)
    return {"cm": 100.0 * torch.linalg.vector_norm(t_pred.float() - t.float(), dim=-1),
            "deg": torch.rad2deg(2.0 * torch.arccos(cos_half))}


def train_relpose(
    data_root: str | Path, out_dir: str | Path, config: TrainRelPoseConfig = TrainRelPoseConfig(), resume: bool = False
) -> dict[str, Any]:
    """Train a relative-pose network on the scenes of a 7-Scenes-layout data set.

    Start it as a plain call for one process, or under ``torchrun --nproc_per_node N`` for distributed
    data parallel training (each process calls this function; only rank 0 writes).

    Args:
        data_root: the data set (7-Scenes / University layout, e.g. the embedded world).
        out_dir: output folder (created).
        config: the training run.
        resume: continue from ``out_dir/last.pt`` (and reuse the pair files there).

    Returns:
        The metrics written to ``out_dir/metrics.json``: per-epoch losses and seconds, parameter count,
        best epoch, pair counts and the model file.

    Raises:
        InputError: a missing data set, or ImageNet weights asked for but absent from the cache (the
            model is built first, so this fails before any work).
        ConfigError: inconsistent settings, an unknown excluded scene, no pairs in the band, or a resume
            with a changed config.
    """
    data_root, out_dir = Path(data_root), Path(out_dir)
    ctx = init_distributed(config.loop.device)
    try:
        seed_everything(config.loop.seed)
        model = RelPoseNet(config.model)
        if ctx.is_main:
            out_dir.mkdir(parents=True, exist_ok=True)
        ctx.barrier()
        train_pairs, val_pairs, paths = _make_pairs(data_root, out_dir, config, ctx, resume)
        common = {"translation_frame": config.model.translation_frame, "transform": config.transform,
                  "seed": config.loop.seed, "cache_images": config.cache_images}
        train_set = RelPosePairs(paths, train_pairs, train=True, swap_prob=config.swap_prob, **common)
        val_set = RelPosePairs(paths, val_pairs, train=False, **common) if val_pairs else None
        for ds in (train_set, val_set):
            if ds is not None:
                ds.preload()  # with cache_images: fill the cache once, shared by forked workers
        if ctx.is_main:
            logger.info("relpose training: %d training pairs, %d validation pairs, %d process(es) on %s",
                        len(train_set), len(val_pairs), ctx.world_size, ctx.device)
        result = fit(model, _loss(config.beta), train_set, val_set, out_dir, config.loop,
                     run_config=config.to_dict(), resume=resume, ctx=ctx,
                     run_defaults=type(config)().to_dict(), errors_fn=relative_pose_errors)
        metrics = {"task": "relpose", **result.metrics, "pairs": {"train": len(train_pairs), "val": len(val_pairs)},
                   "model_file": str(out_dir / MODEL_FILE)}
        if ctx.is_main:
            finalize(model, config.model, result.best_checkpoint, out_dir, metrics, config.transform)
        ctx.barrier()
        return metrics
    finally:
        shutdown_distributed(ctx)


def finalize(model: nn.Module, model_config: Any, best: Path, out_dir: Path, metrics: dict[str, Any],
             transform: TransformConfig) -> None:
    """Write the best weights as ``model.pt`` (:func:`~visloc.models.checkpoint.save_model`) and ``metrics.json``.

    The evaluation preprocessing (``resize``, ``crop``) is stored with the weights, so inference feeds the
    network the images it was trained on."""
    from ..io.atomic import write_json

    model.load_state_dict(load_checkpoint(best)["model"])
    summary = {k: metrics[k] for k in ("best_epoch", "best_loss", "best_metric", "parameters") if k in metrics}
    summary["preprocess"] = {"resize": transform.resize, "crop": transform.crop}
    save_model(out_dir / MODEL_FILE, model.cpu(), model_config, metrics={**summary, "epochs": len(metrics["epochs"])})
    write_json(out_dir / "metrics.json", metrics)
