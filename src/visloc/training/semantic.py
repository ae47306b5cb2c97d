"""Training of the CNNGeometric semantic matchers (thesis chapter 2, Publications I and II).

:func:`train_semantic` runs one of two stages, each through :func:`visloc.training.loop.fit` (Adam, step
schedule, validation, AMP on CUDA, DDP under torchrun, atomic checkpoints with the config and package
versions, exact resume, ``metrics.json``):

* ``stage="pretrain"`` -- strong supervision from synthetic pairs
  (:class:`~visloc.semantic.data.SyntheticWarpPairs`: random affine / TPS / affine + TPS warps of
  photographs, CNNGeometric's ranges) with the grid loss (thesis eq. 2.1 on CNNGeometric's 20 x 20 grid),
  one direction, as CNNGeometric trains.
* ``stage="weak"`` -- fine-tuning (``init_from`` a ``model.pt``) on weakly labelled real pairs: a pair csv
  (:func:`~visloc.datasets.semantic.write_pairs_csv` format) or the Publication II pairs
  (:func:`~visloc.datasets.weak_pairs.make_weak_pairs`) of given classes of a PF-WILLOW-layout folder.
  The loss is a :class:`~visloc.training.semantic_losses.SemanticLossConfig`, every term in both
  directions (A <- B and B <- A):

  - Publication I (:data:`~visloc.training.semantic_losses.PUBLICATION_I`): the supervised grid loss on
    synthetic pairs (one synthetic pair per real pair in every step) + cyclic consistency on a grid of the
    real pairs (eq. 2.2). The thesis supervises a small *labelled* real set instead; with weak pairs only,
    the synthetic pairs supply ``L_s``;
  - Publication II (:data:`~visloc.training.semantic_losses.PUBLICATION_II_NN` /
    :data:`~visloc.training.semantic_losses.PUBLICATION_II_CHAMFER`): nearest-neighbour or Chamfer
    point-set loss between the keypoint *sets* (eq. 2.3 / 2.4; the annotation order is never used) +
    cyclic consistency on each image's keypoints.

Each step makes **one** forward pass: the pairs of both directions (and the synthetic pairs of Pub I) are
concatenated into one batch, so batch norm sees them together and DDP sees one forward per backward.

Direction convention (visloc-wide): the model's ``theta`` for ``(source A, target B)`` maps B's normalised
coordinates to A's (a sampling grid); losses name the two predictions ``theta_ab`` and ``theta_ba``
(:mod:`visloc.training.semantic_losses`).

Outputs in ``out_dir`` (rank 0): ``last.pt`` / ``best.pt`` (resumable), ``model.pt`` (best weights by the
validation loss, :func:`~visloc.models.checkpoint.save_model`; :func:`~visloc.models.checkpoint.load_model`
rebuilds it), ``metrics.json``; the weak stage also writes ``pairs_train.csv`` / ``pairs_val.csv``.

Validation: pretraining evaluates a fixed synthetic set (other seed than training); the weak stage holds
out ``val_fraction`` of the weak pairs (drawn with ``pairs_seed``) and evaluates the same weak loss on them
-- no keypoint correspondence is used for model selection.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import Dataset

from ..datasets.semantic import KeypointImage, SemanticPair, read_pairs_csv, read_pf_willow, write_pairs_csv
from ..datasets.weak_pairs import DEFAULT_MAX_PER_CATEGORY, make_weak_pairs
from ..errors import ConfigError, InputError
from ..geometry.warps import Warp
from ..io.atomic import write_json
from ..models.checkpoint import read_checkpoint, save_model
from ..models.weights import load_state_into
from ..registry import config_to_dict
from ..semantic.data import KeypointPairs, KeypointPairsConfig, SyntheticWarpConfig, SyntheticWarpPairs
from ..semantic.models import (
    MatcherConfig,
    as_warp,
    build_matcher,
    matcher_config,
    model_config_of,
    network_name,
    transform_of,
)
from .checkpoint import load_checkpoint
from .config_cli import ConfigOptions
from .loop import (
    DistContext,
    LoopConfig,
    fit,
    init_distributed,
    seed_everything,
    shutdown_distributed,
)
from .semantic_losses import (
    PUBLICATION_I,
    PUBLICATION_II_CHAMFER,
    PUBLICATION_II_NN,
    SemanticLossConfig,
    grid_loss,
    semantic_loss,
)

logger = logging.getLogger(__name__)

STAGES = ("pretrain", "weak")
#: Named loss settings (``visloc train semantic --loss``).
LOSS_PRESETS: dict[str, SemanticLossConfig] = {
    "supervised": SemanticLossConfig(supervised=1.0, symmetric=False),
    "pub1": PUBLICATION_I,
    "pub2_nn": PUBLICATION_II_NN,
    "pub2_chamfer": PUBLICATION_II_CHAMFER,
}
#: The loss of each stage when the config does not set one.
DEFAULT_LOSS = {"pretrain": "supervised", "weak": "pub2_chamfer"}
MODEL_FILE = "model.pt"
TRAIN_PAIRS = "pairs_train.csv"
VAL_PAIRS = "pairs_val.csv"
#: Offset between the seeds of the training and validation synthetic pairs.
_VAL_SEED_OFFSET = 1_000_003


# --- the training config ------------------------------------------------------------------------------


@dataclass(frozen=True)
class TrainSemanticConfig:
    """Everything that determines a semantic-matching training run.

    Attributes:
        stage: ``"pretrain"`` (synthetic pairs, supervised grid loss) or ``"weak"`` (weakly labelled real
            pairs, the ``loss`` preset).
        model: the matcher (:func:`matcher_config`, :func:`tiny_matcher_config`); ``None``: the
            architecture stored in ``init_from`` (or :func:`matcher_config`'s default without it).
        init_from: a ``model.pt`` whose weights start the run (the pretrained model of a weak stage); its
            state dict must fit ``model`` (``train_fe`` / ``reg_factor`` / weights policy may differ).
        loss: the loss weights; ``None``: ``supervised`` for pretraining, Publication II Chamfer + cyclic
            for the weak stage. Pretraining accepts the supervised term only. In the weak stage
            ``supervised > 0`` adds synthetic pairs supervised by the grid loss (Publication I).
        synthetic: synthetic pair generation; ``None``: CNNGeometric's ranges with the model's transform
            kind and image size (which a given config must match).
        synthetic_images: photographs for the synthetic pairs (files, or folders searched for
            jpg/jpeg/png); empty: the scikit-image photographs of the embedded world (no download).
        synthetic_length: synthetic pairs per pretraining epoch.
        synthetic_val_length: synthetic validation pairs (pretraining; fixed draws).
        data_root: weak stage: a PF-WILLOW-layout folder (``<class>/<image>.png`` + ``.mat`` keypoints);
            the pair csv names images relative to it. Without ``.mat`` files, images have no keypoints
            (enough for the Publication I loss only).
        pairs_csv: weak stage: the training pairs (visloc pair csv, e.g. ``visloc semantic weak-pairs``);
            ``None``: :func:`~visloc.datasets.weak_pairs.make_weak_pairs` of ``classes``.
        classes: weak stage: classes whose pairs are used (empty: all); with ``pairs_csv`` it filters it.
        max_per_category: random pairs per class of :func:`make_weak_pairs` (Pub II: 100).
        include_flips: add the flip pair of every image (:func:`make_weak_pairs`).
        pairs_seed: seed of the random pairs and of the validation hold-out.
        val_fraction: share of the weak pairs held out for validation (0: no validation).
        random_crop: WeakAlign's random crop of the real training images.
        cache_images: keep decoded real images in memory (per worker; small data sets such as PF-WILLOW).
        loop: optimisation settings; here 16 pairs per step and process (weak: real pairs, each predicted
            in both directions), 20 epochs, Adam at lr 1e-3 (CNNGeometric's) and seed 1 (CNNGeometric's;
            it also draws the synthetic pairs). Mixed precision covers the forward pass only (losses in
            float32).
    """

    stage: str = "pretrain"
    model: MatcherConfig | None = None
    init_from: str | None = None
    loss: SemanticLossConfig | None = None
    synthetic: SyntheticWarpConfig | None = None
    synthetic_images: tuple[str, ...] = ()
    synthetic_length: int = 2000
    synthetic_val_length: int = 200
    data_root: str | None = None
    pairs_csv: str | None = None
    classes: tuple[str, ...] = ()
    max_per_category: int = DEFAULT_MAX_PER_CATEGORY
    include_flips: bool = True
    pairs_seed: int = 0
    val_fraction: float = 0.1
    random_crop: bool = False
    cache_images: bool = False
    loop: LoopConfig = LoopConfig(epochs=20, batch_size=16, seed=1)

    def __post_init__(self) -> None:
        for name in ("synthetic_images", "classes"):
            object.__setattr__(self, name, tuple(str(v) for v in getattr(self, name)))
        for name in ("init_from", "data_root", "pairs_csv"):
            value = getattr(self, name)
            if value is not None:
                object.__setattr__(self, name, str(value))
        if self.stage not in STAGES:
            raise ConfigError(f"unknown stage {self.stage!r}; known: {', '.join(STAGES)}")
        if self.synthetic_length < 1 or self.synthetic_val_length < 0:
            raise ConfigError("synthetic_length must be >= 1 and synthetic_val_length >= 0")
        if not 0.0 <= self.val_fraction < 1.0:
            raise ConfigError(f"val_fraction must be in [0, 1), got {self.val_fraction}")
        loss = self.resolved_loss
        if self.stage == "pretrain":
            extra = {t: loss.weight(t) for t in ("cyclic", "nearest_neighbour", "chamfer") if loss.weight(t) > 0}
            if extra or loss.supervised <= 0:
                raise ConfigError(f"pretraining uses the supervised grid loss only; the loss has {extra or 'none'} "
                                  "(cyclic / point-set terms need real pairs: stage='weak')")
        elif self.data_root is None:
            raise ConfigError("the weak stage needs data_root (the images of the weak pairs)")
        if self.model is not None and self.synthetic is not None:
            self._check_synthetic(self.model)

    def _check_synthetic(self, model: MatcherConfig) -> None:
        s = self.synthetic
        assert s is not None
        size = (model.image_size, model.image_size)
        if s.kind != transform_of(model) or tuple(s.output_size) != size or not s.normalize:
            raise ConfigError(f"synthetic pairs ({s.kind}, {tuple(s.output_size)}, normalize={s.normalize}) do not "
                              f"fit the model ({transform_of(model)}, {size}, ImageNet-normalised inputs)")

    @property
    def resolved_loss(self) -> SemanticLossConfig:
        return self.loss if self.loss is not None else LOSS_PRESETS[DEFAULT_LOSS[self.stage]]

    def synthetic_for(self, model: MatcherConfig) -> SyntheticWarpConfig:
        """The synthetic pair settings used with ``model``."""
        if self.synthetic is not None:
            self._check_synthetic(model)
            return self.synthetic
        return SyntheticWarpConfig(kind=transform_of(model), output_size=(model.image_size, model.image_size))

    def to_dict(self) -> dict[str, Any]:
        """Plain-data form embedded in checkpoints and ``metrics.json``."""
        out = {"task": "semantic", **config_to_dict(self)}
        if self.model is not None:
            out["model"] = {"network": network_name(self.model), **out["model"]}
        return out


#: The options of ``visloc train semantic`` derived from :class:`TrainSemanticConfig`, named after the
#: fields but for these (:mod:`visloc.training.config_cli`). The matcher, the loss and the synthetic pair
#: settings are not among them: the command spells the model with a few options resolved against
#: ``--init`` and the loss as a preset name.
SEMANTIC_OPTIONS = ConfigOptions(TrainSemanticConfig(), names={
    "init_from": "init",
    "synthetic_images": "synthetic_image",
    "data_root": "data",
    "pairs_csv": "pairs",
    "classes": "class",
    "include_flips": "flips",
}, exclude=("model", "loss", "synthetic"))


# --- datasets as tuples of tensors (what loop.fit moves to the device) ----------------------------------


class SyntheticTuples(Dataset):
    """:class:`SyntheticWarpPairs` items as ``(source, target, theta)``."""

    def __init__(self, pairs: SyntheticWarpPairs) -> None:
        self.pairs = pairs

    def set_epoch(self, epoch: int) -> None:
        self.pairs.set_epoch(epoch)

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, ...]:
        item = self.pairs[index]
        return item["source"], item["target"], item["theta"]


class WeakTuples(Dataset):
    """Real pairs as ``(source, target, source_points, source_mask, target_points, target_mask)``, followed
    by a synthetic ``(source, target, theta)`` when ``synthetic`` is given (sample ``index`` of both; the
    synthetic set must be at least as long)."""

    def __init__(self, real: KeypointPairs, synthetic: SyntheticWarpPairs | None = None) -> None:
        if synthetic is not None and len(synthetic) < len(real):
            raise ConfigError(f"{len(synthetic)} synthetic pairs for {len(real)} real pairs")
        self.real, self.synthetic = real, synthetic

    def set_epoch(self, epoch: int) -> None:
        self.real.set_epoch(epoch)
        if self.synthetic is not None:
            self.synthetic.set_epoch(epoch)

    def __len__(self) -> int:
        return len(self.real)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, ...]:
        r = self.real[index]
        out = (r["source"], r["target"], r["source_points"], r["source_mask"], r["target_points"], r["target_mask"])
        if self.synthetic is not None:
            s = self.synthetic[index]
            out = (*out, s["source"], s["target"], s["theta"])
        return out


# --- losses -------------------------------------------------------------------------------------------


def synthetic_warp(theta: torch.Tensor, transform: str) -> Warp:
    """The ground-truth :class:`Warp` of a batch of synthetic theta ``(B, 6 | 18 | 24)``."""
    if transform == "two_stage":
        return Warp(affine=theta[:, :6], tps=theta[:, 6:])
    return Warp.from_theta(theta, transform)


def slice_warp(warp: Warp, start: int, stop: int) -> Warp:
    """Pairs ``start:stop`` of a batched :class:`Warp`."""
    return Warp(affine=None if warp.affine is None else warp.affine[start:stop],
                tps=None if warp.tps is None else warp.tps[start:stop], reg_factor=warp.reg_factor)


def _loss_free(device: torch.device) -> torch.autocast:
    return torch.autocast(device.type, enabled=False)


def pretrain_loss(model: nn.Module, batch: Sequence[torch.Tensor], config: MatcherConfig,
                  grid_size: int = 20) -> torch.Tensor:
    """CNNGeometric's grid loss of one synthetic batch ``(source, target, theta)`` (one direction)."""
    source, target, theta = batch[:3]
    pred = as_warp(model(source, target), config)
    with _loss_free(source.device):
        return grid_loss(pred, synthetic_warp(theta.float(), transform_of(config)), grid_size=grid_size)


def weak_loss_terms(model: nn.Module, batch: Sequence[torch.Tensor], config: MatcherConfig,
                    loss: SemanticLossConfig) -> dict[str, torch.Tensor]:
    """The weak-stage loss of one :class:`WeakTuples` batch, by term (unweighted) and ``"total"``.

    One forward pass over ``[A; B; S_src]`` -> ``[B; A; S_tgt]``: ``theta_ab`` (source A, target B),
    ``theta_ba`` and the synthetic predictions. The supervised term (weight ``loss.supervised``) is the grid
    loss of the synthetic pairs; every other term is :func:`semantic_loss` on the real pairs with their
    keypoints as sets (``correspondences=False``).
    """
    a, b, pa, ma, pb, mb = batch[:6]
    n = a.shape[0]
    real_terms = any(loss.weight(t) > 0 for t in ("cyclic", "nearest_neighbour", "chamfer"))
    synthetic = loss.supervised > 0
    if synthetic and len(batch) < 9:
        raise ConfigError("the supervised term of the weak stage needs synthetic pairs in the batch")
    sources, targets = ([a, b], [b, a]) if real_terms else ([], [])
    if synthetic:
        sources.append(batch[6])
        targets.append(batch[7])
    warp = as_warp(model(torch.cat(sources), torch.cat(targets)), config)
    terms: dict[str, torch.Tensor] = {}
    total = []
    with _loss_free(a.device):
        if real_terms:
            real = dataclasses.replace(loss, supervised=0.0)
            out = semantic_loss(real, slice_warp(warp, 0, n), slice_warp(warp, n, 2 * n), points_a=pa.float(),
                                points_b=pb.float(), mask_a=ma, mask_b=mb)
            total.append(out.pop("total"))
            terms.update(out)
        if synthetic:
            start = 2 * n if real_terms else 0
            gt = synthetic_warp(batch[8].float(), transform_of(config))
            terms["supervised"] = grid_loss(slice_warp(warp, start, start + n), gt, grid_size=loss.grid_size)
            total.append(loss.supervised * terms["supervised"])
    terms["total"] = torch.stack(total).sum()
    return terms


# --- data ---------------------------------------------------------------------------------------------

_IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")


def image_files(entries: Sequence[str]) -> list[str]:
    """Files of ``entries``: files as given, folders searched recursively for jpg / jpeg / png (sorted).

    Raises:
        InputError: a missing entry, or a folder without images.
    """
    out: list[str] = []
    for entry in entries:
        path = Path(entry).expanduser()
        if path.is_file():
            out.append(str(path))
        elif path.is_dir():
            found = sorted(p for p in path.rglob("*") if p.suffix.lower() in _IMAGE_SUFFIXES and p.is_file())
            if not found:
                raise InputError(path, "folder holds no jpg / jpeg / png images")
            out.extend(str(p) for p in found)
        else:
            raise InputError(path, "synthetic-pair image or folder does not exist")
    return out


def _keypoint_images(root: Path) -> list[KeypointImage] | None:
    """The PF-WILLOW-layout images of ``root``, or ``None`` when it has no ``.mat`` keypoint files."""
    if not root.is_dir():
        raise InputError(root, "data folder does not exist")
    return read_pf_willow(root) if any(root.glob("*/*.mat")) else None


def split_pairs(pairs: Sequence[SemanticPair], val_fraction: float, seed: int
                ) -> tuple[list[SemanticPair], list[SemanticPair]]:
    """Hold out ``round(val_fraction * n)`` pairs (at least one when the fraction is positive and there
    are two or more pairs), drawn with ``seed``; both lists keep the input order."""
    n = len(pairs)
    k = min(n - 1, max(1, round(val_fraction * n))) if val_fraction > 0 and n >= 2 else 0
    held = set(np.random.default_rng(seed).choice(n, size=k, replace=False).tolist()) if k else set()
    return [p for i, p in enumerate(pairs) if i not in held], [p for i, p in enumerate(pairs) if i in held]


def weak_pairs_of(config: TrainSemanticConfig) -> tuple[list[SemanticPair], bool]:
    """The weak pairs of a config (csv or :func:`make_weak_pairs`) and whether they carry keypoints.

    Raises:
        InputError: a missing folder or csv, or a csv naming images that are not in the folder.
        ConfigError: unknown classes, no pairs, or keypoints needed but absent.
    """
    assert config.data_root is not None
    root = Path(config.data_root).expanduser()
    images = _keypoint_images(root)
    if config.pairs_csv is not None:
        pairs = read_pairs_csv(config.pairs_csv, root, images)
        known = sorted({p.category for p in pairs})
    else:
        if images is None:
            raise InputError(root, "no <class>/<image>.mat keypoint files: give a pairs csv to train on")
        known = sorted({im.category for im in images})
        wanted = set(config.classes) or set(known)
        pairs = make_weak_pairs([im for im in images if im.category in wanted], (), config.max_per_category,
                                config.pairs_seed, config.include_flips)
    unknown = sorted(set(config.classes) - set(known))
    if unknown:
        raise ConfigError(f"unknown class(es) {unknown}; the data has {known}")
    if config.classes:
        pairs = [p for p in pairs if p.category in set(config.classes)]
    if not pairs:
        raise ConfigError("no weak training pairs")
    has_points = images is not None and any(
        len(p.source.keypoints) and len(p.target.keypoints) for p in pairs)
    loss = config.resolved_loss
    needs_points = loss.nearest_neighbour > 0 or loss.chamfer > 0 or (loss.cyclic > 0 and loss.cyclic_on == "keypoints")
    if needs_points and not has_points:
        raise ConfigError("the loss needs keypoints (NN / Chamfer / cyclic on keypoints) but the pairs have none; "
                          "use a PF-WILLOW-layout folder with .mat files or the 'pub1' loss")
    return pairs, has_points


def _datasets(config: TrainSemanticConfig, model: MatcherConfig, out_dir: Path, ctx: DistContext
              ) -> tuple[Dataset, Dataset | None, dict[str, int]]:
    synthetic = config.synthetic_for(model)
    photos = image_files(config.synthetic_images) if config.synthetic_images else None
    if config.stage == "pretrain":
        train = SyntheticTuples(SyntheticWarpPairs(photos, synthetic, config.synthetic_length, config.loop.seed))
        val = None
        if config.synthetic_val_length > 0:
            val = SyntheticTuples(SyntheticWarpPairs(photos, synthetic, config.synthetic_val_length,
                                                     config.loop.seed + _VAL_SEED_OFFSET))
        return train, val, {"synthetic_train": config.synthetic_length, "synthetic_val": config.synthetic_val_length}
    pairs, _ = weak_pairs_of(config)
    train_pairs, val_pairs = split_pairs(pairs, config.val_fraction, config.pairs_seed)
    if ctx.is_main:
        assert config.data_root is not None
        write_pairs_csv(out_dir / TRAIN_PAIRS, train_pairs, config.data_root)
        if val_pairs:
            write_pairs_csv(out_dir / VAL_PAIRS, val_pairs, config.data_root)
    size = (model.image_size, model.image_size)
    most = max(len(im.keypoints) for p in pairs for im in (p.source, p.target))
    real_cfg = KeypointPairsConfig(output_size=size, max_keypoints=max(1, most), random_crop=config.random_crop)
    val_cfg = dataclasses.replace(real_cfg, random_crop=False)
    with_synthetic = config.resolved_loss.supervised > 0

    def make(ps: list[SemanticPair], cfg: KeypointPairsConfig, seed: int) -> WeakTuples:
        synth = SyntheticWarpPairs(photos, synthetic, len(ps), seed) if with_synthetic else None
        return WeakTuples(KeypointPairs(ps, cfg, config.loop.seed, config.cache_images), synth)

    train = make(train_pairs, real_cfg, config.loop.seed)
    val = make(val_pairs, val_cfg, config.loop.seed + _VAL_SEED_OFFSET) if val_pairs else None
    return train, val, {"train": len(train_pairs), "val": len(val_pairs)}


# --- the entry point ----------------------------------------------------------------------------------


def resolve_model(config: TrainSemanticConfig) -> MatcherConfig:
    """``config.model``, else the architecture of ``init_from``, else :func:`matcher_config`'s default."""
    if config.model is not None:
        return config.model
    if config.init_from is not None:
        return model_config_of(config.init_from)
    return matcher_config()


def _initial_model(config: TrainSemanticConfig, model_config: MatcherConfig) -> nn.Module:
    if config.init_from is None:
        return build_matcher(model_config)
    model = build_matcher(model_config, load_weights=False)
    path = Path(config.init_from).expanduser()
    load_state_into(model, read_checkpoint(path)["state_dict"], path, f"semantic matcher {transform_of(model_config)!r}")
    return model


def train_semantic(out_dir: str | Path, config: TrainSemanticConfig = TrainSemanticConfig(),
                   resume: bool = False) -> dict[str, Any]:
    """Run one training stage of a semantic matcher (see the module docstring).

    Start it as a plain call for one process, or under ``torchrun`` for distributed data parallel
    training (each process calls this function; only rank 0 writes).

    Args:
        out_dir: output folder (created).
        config: the run.
        resume: continue from ``out_dir/last.pt`` (the config must be the same but for
            :data:`~visloc.training.loop.RESUME_MAY_CHANGE`).

    Returns:
        The metrics written to ``out_dir/metrics.json``: per-epoch losses and seconds, parameter count,
        best epoch, pair counts, the resolved model config and the model file.

    Raises:
        InputError: missing data / init checkpoint, weights that do not fit, ImageNet weights asked for but
            not in the torch hub cache (before any file is written).
        ConfigError: inconsistent settings or a resume with a changed config.
    """
    out_dir = Path(out_dir)
    ctx = init_distributed(config.loop.device)
    try:
        model_config = resolve_model(config)
        loss = config.resolved_loss
        seed_everything(config.loop.seed)
        model = _initial_model(config, model_config)
        if ctx.is_main:
            out_dir.mkdir(parents=True, exist_ok=True)
        ctx.barrier()
        train_set, val_set, counts = _datasets(config, model_config, out_dir, ctx)
        if ctx.is_main:
            logger.info("semantic %s training: %s, %d process(es) on %s", config.stage, counts, ctx.world_size,
                        ctx.device)

        if config.stage == "pretrain":
            def loss_fn(net: nn.Module, batch: Sequence[torch.Tensor]) -> torch.Tensor:
                return pretrain_loss(net, batch, model_config, loss.grid_size)
        else:
            def loss_fn(net: nn.Module, batch: Sequence[torch.Tensor]) -> torch.Tensor:
                return weak_loss_terms(net, batch, model_config, loss)["total"]

        run_config = config.to_dict()
        result = fit(model, loss_fn, train_set, val_set, out_dir, config.loop, run_config=run_config,
                     resume=resume, ctx=ctx, run_defaults=type(config)().to_dict())
        metrics = {"task": "semantic", "stage": config.stage, **result.metrics, "pairs": counts,
                   "model": {"network": network_name(model_config), **config_to_dict(model_config)},
                   "loss": config_to_dict(loss), "init_from": config.init_from,
                   "train_seconds": float(sum(e["seconds"] for e in result.metrics["epochs"])),
                   "model_file": str(out_dir / MODEL_FILE)}
        if ctx.is_main:
            model.load_state_dict(load_checkpoint(result.best_checkpoint)["model"])
            summary = {k: metrics[k] for k in ("best_epoch", "best_loss", "best_metric", "parameters", "stage")}
            summary.update(preprocess={"image_size": model_config.image_size}, epochs=len(metrics["epochs"]),
                           loss=metrics["loss"], pairs=counts)
            save_model(out_dir / MODEL_FILE, model.cpu(), model_config, metrics=summary)
            write_json(out_dir / "metrics.json", metrics)
        ctx.barrier()
        return metrics
    finally:
        shutdown_distributed(ctx)


__all__ = [
    "DEFAULT_LOSS",
    "LOSS_PRESETS",
    "STAGES",
    "SyntheticTuples",
    "TrainSemanticConfig",
    "WeakTuples",
    "image_files",
    "pretrain_loss",
    "resolve_model",
    "slice_warp",
    "split_pairs",
    "synthetic_warp",
    "train_semantic",
    "weak_loss_terms",
    "weak_pairs_of",
]
