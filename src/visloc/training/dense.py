"""Training of the dense correspondence network (``visloc train dense``, Publication IV's matcher).

:func:`train_dense` trains a :class:`~visloc.models.dense.DenseMatcher` through
:func:`visloc.training.loop.fit` (devices, AMP on CUDA, DDP under torchrun, checkpoints, exact resume,
``metrics.json``) on two kinds of pairs with exact ground-truth maps (:mod:`visloc.training.dense_data`):

* **synthetic warps of photographs** (DGC-Net's data): random homographies, affine transforms and TPS warps
  of the photos in ``photos`` (folders, searched recursively; by default the real photographs scikit-image
  ships), ``synthetic_pairs`` new draws per epoch (item ``i`` of epoch ``e`` is determined by ``(seed, e,
  i)``);
* **view pairs of a posed data set with depth** (``data``: the embedded world, either preset, or any
  7-Scenes-layout set with registered depth): frames of one scene whose view overlap is in the band of
  ``world.sampling``, the map from depth and poses (occluded and out-of-view pixels masked), at most
  ``world_pairs`` of them per epoch (0: all).

**Loss** (DGC-Net / DGCM-Net): at every level of the network, the masked L1 distance between the predicted
and the ground-truth normalised grids (the ground truth sampled at the level's pixel centres; a level pixel
counts only when every full-resolution pixel it covers is valid), summed over the levels with weight 1;
plus ``matchability_weight`` times the binary cross-entropy of the matchability logits against the
ground-truth validity mask.

**Validation**: ``val_pairs`` synthetic pairs drawn with another seed (never trained on), plus, with
``data``, the view pairs of ``val_split`` when it names a split (default ``None``: the world's test split is
never used for model selection). ``best.pt`` / ``model.pt`` is the epoch with the lowest validation loss; each
epoch also records the validation AEPE at full resolution (``val_median_aepe_px``, median over pairs).

Outputs in ``out_dir`` (rank 0): ``last.pt`` / ``best.pt`` (resumable), ``model.pt`` (the best weights;
``metrics["preprocess"]["image_size"]`` is the longer side the images were trained at, which
:class:`~visloc.matching.dense.DenseNetworkMatcher` uses by default) and ``metrics.json``.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import ConcatDataset, Dataset

from ..errors import ConfigError, InputError
from ..models.backbones import BackboneConfig
from ..models.checkpoint import save_model
from ..models.dense import DenseMatcher, DenseMatcherConfig
from ..models.preprocess import normalize
from ..registry import config_to_dict
from .checkpoint import load_checkpoint
from .config_cli import ConfigOptions
from .dense_data import SyntheticWarpPairs, WarpPairConfig, WorldPairConfig, WorldViewPairs
from .dense_losses import gt_grids_for_levels, matchability_loss, multilevel_l1_loss
from .loop import LoopConfig, fit, init_distributed, seed_everything, shutdown_distributed
from .relpose import MODEL_FILE

logger = logging.getLogger(__name__)

#: The CPU-sized default network: the ``tiny`` encoder trained with DGC-Net's per-level decoders (half width),
#: refined down to stride 2 (the map is upsampled to full resolution) with residual updates. Both choices are
#: measured (docs/results/dense.md): per-level decoders 8.1 px world AEPE against 11.0 px for the universal
#: decoder (``--decoder ucmd``, fewer parameters, fits any encoder); residual 24.3 against 26.7 px in a short
#: run (``--no-residual`` is DGC-Net's whole-grid regression).
DEFAULT_MODEL = DenseMatcherConfig(
    backbone=BackboneConfig("tiny", weights="none", allow_random_init=True), train_encoder=True,
    decoder="dgc", refine_strides=(8, 4, 2), width=0.5, residual=True)


@dataclass(frozen=True)
class TrainDenseConfig:
    """Everything that determines a dense-matcher training run.

    Attributes:
        model: the network (default: ``tiny`` encoder from random initialisation, trained; DGC-Net's
            per-level decoders at half width, levels 16 (coarse), 8, 4, 2, residual refinement).
        image_size: side of the square training images (DGC-Net: 240; a multiple of 16).
        photos: folders of photographs for the synthetic warps (empty: scikit-image's photographs).
        synthetic_pairs: synthetic pairs per epoch (0: none; then ``--data`` is needed).
        warp: synthetic pair generation (its ``output_size`` and ``seed`` are set from ``image_size`` and
            the loop seed).
        world_pairs: view pairs of ``--data`` per epoch, a seeded random subset each epoch (0: all).
        world: view-pair selection (its ``output_size`` is set from ``image_size``).
        val_pairs: synthetic validation pairs (another seed; 0: none).
        val_split: a split of ``--data`` whose view pairs also validate (``None``: none).
        matchability_weight: weight of the matchability loss (when the model has the head).
        loop: optimisation settings: 16 pairs per step and process, 20 epochs, Adam at lr 1e-3 x0.1 after
            epoch 15.
    """

    model: DenseMatcherConfig = DEFAULT_MODEL
    image_size: int = 240
    photos: tuple[str, ...] = ()
    synthetic_pairs: int = 2000
    warp: WarpPairConfig = WarpPairConfig()
    world_pairs: int = 0
    world: WorldPairConfig = WorldPairConfig()
    val_pairs: int = 256
    val_split: str | None = None
    matchability_weight: float = 1.0
    loop: LoopConfig = LoopConfig(epochs=20, batch_size=16, lr=1e-3, milestones=(15,), seed=0)

    def __post_init__(self) -> None:
        object.__setattr__(self, "photos", tuple(str(p) for p in self.photos))
        if self.image_size < 32 or self.image_size % 16:
            raise ConfigError(f"image_size must be a multiple of 16 of at least 32, got {self.image_size}")
        for name in ("synthetic_pairs", "world_pairs", "val_pairs"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.matchability_weight < 0:
            raise ConfigError(f"matchability_weight must be >= 0, got {self.matchability_weight}")

    def to_dict(self) -> dict[str, Any]:
        """Plain-data form embedded in checkpoints and ``metrics.json``."""
        return {"task": "dense", **config_to_dict(self)}


#: The options of ``visloc train dense`` (:mod:`visloc.training.config_cli`); the consensus block is set by
#: ``--consensus`` (see :func:`consensus_from_text`), the kind probabilities by ``--set``.
DENSE_OPTIONS = ConfigOptions(TrainDenseConfig(), names={
    "model.backbone.name": "backbone",
    "loop.seed": "seed",
    "world.exclude_scenes": "exclude_scene",
}, exclude=("model.consensus", "warp.output_size", "world.output_size", "warp.seed", "warp.kind_probabilities",
            "world.scenes"))


class _Pairs(Dataset):
    """Adapter: a dense-data dict -> ``(source, target, map, mask)`` tensors, images ImageNet-normalised;
    ``subset`` draws a seeded random subset of ``limit`` items per epoch."""

    def __init__(self, data: Dataset, limit: int = 0, seed: int = 0) -> None:
        self.data, self.limit, self.seed = data, limit, seed
        self.indices = list(range(len(data)))
        self.set_epoch(0)

    def set_epoch(self, epoch: int) -> None:
        if hasattr(self.data, "set_epoch"):
            self.data.set_epoch(epoch)
        if self.limit and self.limit < len(self.data):
            g = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
            self.indices = torch.randperm(len(self.data), generator=g)[: self.limit].tolist()

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, ...]:
        item = self.data[self.indices[index]]
        return normalize(item["source"]), normalize(item["target"]), item["map"], item["mask"].float()


class _Concat(ConcatDataset):
    def set_epoch(self, epoch: int) -> None:
        for d in self.datasets:
            d.set_epoch(epoch)


def _datasets(data: Path | None, config: TrainDenseConfig) -> tuple[Dataset, Dataset | None, dict[str, int]]:
    size = (config.image_size, config.image_size)
    seed = config.loop.seed
    train, val, counts = [], [], {}
    photos = _photo_list(config.photos) if config.photos else None
    if config.synthetic_pairs:
        warp = dataclasses.replace(config.warp, output_size=size, seed=seed)
        train.append(_Pairs(SyntheticWarpPairs(photos, warp, config.synthetic_pairs)))
        counts["synthetic_per_epoch"] = config.synthetic_pairs
    if config.val_pairs:
        warp = dataclasses.replace(config.warp, output_size=size, seed=seed + 7919)
        val.append(_Pairs(SyntheticWarpPairs(photos, warp, config.val_pairs)))
        counts["val_synthetic"] = config.val_pairs
    if data is not None:
        world = dataclasses.replace(config.world, output_size=size)
        pairs = WorldViewPairs(data, world)
        train.append(_Pairs(pairs, config.world_pairs, seed))
        counts["world_pairs_available"] = len(pairs)
        counts["world_per_epoch"] = len(train[-1])
        if config.val_split:
            vpairs = WorldViewPairs(data, dataclasses.replace(world, split=config.val_split))
            val.append(_Pairs(vpairs))
            counts["val_world"] = len(vpairs)
    if not train:
        raise ConfigError("nothing to train on: synthetic_pairs is 0 and no --data was given")
    if config.val_split and data is None:
        raise ConfigError(f"val_split={config.val_split!r} names a split of --data, but no --data was given")
    return _Concat(train), (_Concat(val) if val else None), counts


def _photo_list(folders: tuple[str, ...]) -> list[str]:
    """Every image under the ``--photos`` folders (:func:`~visloc.io.images.list_images`)."""
    from ..io.images import list_images

    files: list[str] = []
    for folder in folders:
        root = Path(folder).expanduser()
        if not root.is_dir():
            raise InputError(root, "photo folder not found (--photos)")
        files += [str(p) for p in list_images(root)]
    return files


def dense_loss(config: TrainDenseConfig):
    """``loss_fn(model, batch)`` of :func:`~visloc.training.loop.fit` (see the module docstring)."""

    def loss_fn(model: nn.Module, batch: list[torch.Tensor]) -> torch.Tensor:
        source, target, gt_map, mask = batch
        out = model(source, target)
        sizes = [tuple(g.shape[-2:]) for g in out.grids]
        levels = gt_grids_for_levels(gt_map, mask > 0.5, sizes, tuple(source.shape[-2:]))
        total, _ = multilevel_l1_loss([g.float() for g in out.grids], levels)
        if out.matchability_logits is not None and config.matchability_weight > 0:
            total = total + config.matchability_weight * matchability_loss(out.matchability_logits.float(), mask)
        return total

    return loss_fn


def _aepe_errors(model: nn.Module, batch: list[torch.Tensor]) -> dict[str, torch.Tensor]:
    """Per-pair full-resolution AEPE (px) over valid pixels, for ``fit``'s validation medians."""
    source, target, gt_map, mask = batch
    corr = model(source, target).correspondence.float()
    err = torch.linalg.vector_norm(corr - gt_map, dim=1, keepdim=True)
    valid = mask > 0.5
    per = (err * valid).sum(dim=(1, 2, 3)) / valid.sum(dim=(1, 2, 3)).clamp(min=1)
    return {"aepe_px": per}


def train_dense(data: str | Path | None, out_dir: str | Path, config: TrainDenseConfig = TrainDenseConfig(),
                resume: bool = False) -> dict[str, Any]:
    """Train a dense matcher (see the module docstring); returns the metrics written to ``metrics.json``.

    Args:
        data: a posed data set with registered depth (view pairs), or ``None`` for synthetic pairs only.
        out_dir: the run folder.
        config: the run.
        resume: continue from ``out_dir/last.pt``.

    Raises:
        ConfigError: bad settings or nothing to train on; InputError: a missing data or photo folder.
    """
    out_dir = Path(out_dir)
    data = None if data is None else Path(data).expanduser()
    if data is not None and not data.is_dir():
        raise InputError(data, "data set folder not found (--data)")
    ctx = init_distributed(config.loop.device)
    try:
        seed_everything(config.loop.seed)
        model = DenseMatcher(config.model)
        train_set, val_set, counts = _datasets(data, config)
        logger.info("dense training: %s", counts)
        t0 = time.perf_counter()
        result = fit(model, dense_loss(config), train_set, val_set, out_dir, config.loop,
                     run_config=config.to_dict(), resume=resume, ctx=ctx,
                     run_defaults=type(config)().to_dict(), errors_fn=_aepe_errors)
        metrics = {"task": "dense", **result.metrics, "pairs": counts,
                   "wall_seconds": round(time.perf_counter() - t0, 1), "model_file": str(out_dir / MODEL_FILE),
                   "level_strides": list(model.level_strides)}
        if ctx.is_main:
            finalize(model, config, result.best_checkpoint, out_dir, metrics)
        ctx.barrier()
        return metrics
    finally:
        shutdown_distributed(ctx)


def finalize(model: nn.Module, config: TrainDenseConfig, best: Path, out_dir: Path, metrics: dict[str, Any]) -> None:
    """Write the best weights as ``model.pt`` (with ``metrics["preprocess"] = {"image_size": S}``) and
    ``metrics.json``."""
    from ..io.atomic import write_json

    model.load_state_dict(load_checkpoint(best)["model"])
    summary = {k: metrics[k] for k in ("best_epoch", "best_loss", "parameters") if k in metrics}
    summary["preprocess"] = {"image_size": config.image_size}
    save_model(out_dir / MODEL_FILE, model.cpu(), config.model, metrics={**summary, "epochs": len(metrics["epochs"])})
    write_json(out_dir / "metrics.json", metrics)


def consensus_from_text(text: str):
    """``--consensus``: ``none``, or NC-Net's layers as ``KERNELS/CHANNELS`` (``3,3/16,1``; ``sym`` prefix
    optional: ``asym:3,3/16,1`` for the one-directional variant)."""
    from ..models.correlation import ConsensusConfig

    text = text.strip().lower()
    if text in ("", "none"):
        return None
    symmetric = True
    if ":" in text:
        mode, text = text.split(":", 1)
        if mode not in ("sym", "asym"):
            raise ConfigError(f"--consensus: mode must be sym or asym, got {mode!r}")
        symmetric = mode == "sym"
    try:
        kernels, channels = (tuple(int(v) for v in part.split(",") if v) for part in text.split("/"))
    except ValueError:
        raise ConfigError(f"--consensus: expected none or KERNELS/CHANNELS such as 3,3/16,1, got {text!r}") from None
    return ConsensusConfig(kernel_sizes=kernels, channels=channels, symmetric=symmetric)


__all__ = ["DEFAULT_MODEL", "DENSE_OPTIONS", "TrainDenseConfig", "consensus_from_text", "dense_loss", "train_dense"]
