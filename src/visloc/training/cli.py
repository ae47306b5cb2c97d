"""``visloc train``: command-line front ends of :func:`~visloc.training.relpose.train_relpose` and
:func:`~visloc.training.posenet.train_posenet`.

Every option maps to a field of :class:`~visloc.training.relpose.TrainRelPoseConfig` or
:class:`~visloc.training.posenet.TrainPoseNetConfig` (defaults are the configs' defaults). For several
processes start the same command under torchrun, e.g.::

    torchrun --nproc_per_node 2 -m visloc.training.cli relpose --data WORLD --out runs/relpose ...
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated

import typer

from ..models.backbones import BackboneConfig
from ..models.posenet import PoseNetConfig
from ..models.relpose import RelPoseConfig
from .pairs import PairSamplingConfig
from .posenet import TrainPoseNetConfig
from .relpose import TrainRelPoseConfig

train_app = typer.Typer(help="Train the pose regression networks.", no_args_is_help=True)

_R = TrainRelPoseConfig()
_P = TrainPoseNetConfig()
_S = PairSamplingConfig()

# Options shared by both commands (Annotated types, so that each command states its own default).
Data = Annotated[Path, typer.Option(help="Data set root in 7-Scenes/University layout (e.g. `visloc world make`).")]
Out = Annotated[Path, typer.Option(help="Output folder: checkpoints last.pt/best.pt, model.pt, metrics.json.")]
Backbone = Annotated[str, typer.Option(help="Encoder: resnet34 (Pub V), resnet18, mobilenet_v2 or tiny (CPU-sized).")]
Weights = Annotated[str, typer.Option(
    help="Encoder initialisation: 'imagenet' (torch hub cache only, never downloaded), 'none' (random; "
         "needs --allow-random-init) or the path of a state-dict file.")]
AllowRandom = Annotated[bool, typer.Option(
    help="Permit random initialisation (with --weights none, or as a fallback when ImageNet weights are "
         "not in the cache).")]
TrainSplit = Annotated[str, typer.Option(help="Split of the training images.")]
ValSplit = Annotated[str, typer.Option(
    help="Validation queries: 'holdout' (every 10th training frame of each sequence, never trained on), "
         "a split name (e.g. 'test': model selection then sees that split), or 'none'.")]
Resize = Annotated[int, typer.Option(help="Shorter image side after resizing, in pixels (Pub V: 256).")]
Crop = Annotated[int, typer.Option(help="Side of the square crop fed to the network (Pub V: 224); <= --resize.")]
Jitter = Annotated[float, typer.Option(help="Colour-jitter strength for brightness/contrast/saturation (Pub V: 0.4).")]
BatchSize = Annotated[int, typer.Option(help="Samples per optimisation step and process.")]
Epochs = Annotated[int, typer.Option(help="Number of epochs (a resumed run continues up to it).")]
Lr = Annotated[float, typer.Option(help="Initial Adam learning rate.")]
WeightDecay = Annotated[float, typer.Option(help="Adam weight decay.")]
Milestones = Annotated[str, typer.Option(
    help="Comma-separated completed-epoch counts at which the learning rate is multiplied by --gamma "
         "(the Lua original's epochs 31,51,81,... are 30,50,80,...); '' for a constant rate.")]
Gamma = Annotated[float, typer.Option(help="Learning-rate decay factor at each milestone.")]
Seed = Annotated[int, typer.Option(help="Seed of initialisation, data order and augmentation.")]
Device = Annotated[str, typer.Option(help="auto (cuda, then mps, then cpu), cpu, cuda, cuda:N or mps.")]
Workers = Annotated[int, typer.Option(help="DataLoader worker processes per training process.")]
Amp = Annotated[bool, typer.Option(help="Mixed precision (float16 autocast + GradScaler); CUDA only.")]
ChannelsLast = Annotated[bool, typer.Option(help="Channels-last memory format (faster convolutions on CPU).")]
CacheImages = Annotated[bool, typer.Option(help="Keep resized images in memory (per worker; small data sets).")]
Resume = Annotated[bool, typer.Option(help="Continue from OUT/last.pt with the same settings.")]
Progress = Annotated[bool, typer.Option(help="Show progress bars (rank 0 only).")]


def _milestones(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(x) for x in text.replace(" ", "").split(",") if x)
    except ValueError:
        raise typer.BadParameter(f"expected comma-separated integers, got {text!r}") from None


def _split(text: str) -> str | None:
    return None if text.lower() in ("", "none") else text


def _grid(text: str) -> tuple[int, int]:
    """``"2x2"`` -> ``(2, 2)``."""
    try:
        rows, cols = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise typer.BadParameter(f"expected ROWSxCOLS such as 2x2, got {text!r}") from None
    return rows, cols


@train_app.command("relpose")
def relpose(
    data: Data,
    out: Out,
    backbone: Backbone = _R.model.backbone.name,
    weights: Weights = _R.model.backbone.weights,
    allow_random_init: AllowRandom = _R.model.backbone.allow_random_init,
    head: Annotated[str, typer.Option(
        help="Regression head: 'original' (Linear-BN-ReLU-Dropout, Lua code) or 'pytorch_port' "
             "(Linear-Dropout).")] = _R.model.head,
    hidden: Annotated[int, typer.Option(help="Width of the hidden layer of the head.")] = _R.model.hidden,
    dropout: Annotated[float | None, typer.Option(
        help="Dropout probability; default: the head's published value (0.5 original, 0.3 port).")] = None,
    translation_frame: Annotated[str, typer.Option(
        help="Frame of the translation label: 'camera' (query centre in the database camera frame; "
             "scene-agnostic) or 'world' (C_query - C_db, the original).")] = _R.model.translation_frame,
    pool_grid: Annotated[str, typer.Option(
        help="Cells of the encoder's average pooling, ROWSxCOLS: 1x1 is the original's global pooling; "
             "2x2 keeps a coarse layout.")] = "x".join(map(str, _R.model.pool_grid)),
    train_split: TrainSplit = _R.train_split,
    val_split: ValSplit = str(_R.val_split),
    exclude_scene: Annotated[list[str] | None, typer.Option(
        help="Scene left out of training and validation (repeat for several).")] = None,
    min_overlap: Annotated[float, typer.Option(help="Smallest view overlap of a training pair.")] = _S.min_overlap,
    max_overlap: Annotated[float, typer.Option(
        help="Largest view overlap of a training pair (excludes near-duplicates).")] = _S.max_overlap,
    pairs_per_scene: Annotated[int, typer.Option(help="Cap on the training pairs of one scene.")] = _S.max_pairs_per_scene,
    val_pairs_per_scene: Annotated[int, typer.Option(
        help="Cap on the validation pairs of one scene.")] = _R.val_pairs_per_scene,
    pairs_seed: Annotated[int, typer.Option(help="Seed of the pair sampling.")] = _S.seed,
    train_pairs: Annotated[Path | None, typer.Option(
        help="Train on this Publication V pair file (img1 img2 scene_id tx ty tz qw qx qy qz) instead of "
             "sampling pairs.")] = None,
    val_pairs: Annotated[Path | None, typer.Option(help="Validate on this pair file instead of sampling.")] = None,
    resize: Resize = _R.resize,
    crop: Crop = _R.crop,
    jitter: Jitter = _R.jitter,
    swap_prob: Annotated[float, typer.Option(
        help="Probability of swapping a training pair (the label is replaced by the exact swapped label).")]
    = _R.swap_prob,
    batch_size: BatchSize = _R.batch_size,
    epochs: Epochs = _R.epochs,
    lr: Lr = _R.lr,
    weight_decay: WeightDecay = _R.weight_decay,
    beta: Annotated[float, typer.Option(help="Weight of the quaternion term: MSE(t) + beta * MSE(q).")] = _R.beta,
    milestones: Milestones = ",".join(map(str, _R.milestones)),
    gamma: Gamma = _R.gamma,
    seed: Seed = _R.seed,
    device: Device = _R.device,
    num_workers: Workers = _R.num_workers,
    amp: Amp = _R.amp,
    channels_last: ChannelsLast = _R.channels_last,
    cache_images: CacheImages = _R.cache_images,
    resume: Resume = False,
    progress: Progress = _R.progress,
) -> None:
    """Train the Siamese relative-pose network (Publication V) on pairs sampled by view overlap."""
    from .relpose import train_relpose

    model = RelPoseConfig(BackboneConfig(backbone, weights, allow_random_init), head, hidden, dropout,
                          translation_frame, _grid(pool_grid))
    sampling = PairSamplingConfig(min_overlap=min_overlap, max_overlap=max_overlap,
                                  max_pairs_per_scene=pairs_per_scene, seed=pairs_seed)
    config = TrainRelPoseConfig(
        model=model, train_split=train_split, val_split=_split(val_split), exclude_scenes=tuple(exclude_scene or ()),
        pairs=sampling, val_pairs_per_scene=val_pairs_per_scene,
        train_pairs_file=str(train_pairs) if train_pairs else None,
        val_pairs_file=str(val_pairs) if val_pairs else None, resize=resize, crop=crop, jitter=jitter,
        swap_prob=swap_prob, batch_size=batch_size, epochs=epochs, lr=lr, weight_decay=weight_decay, beta=beta,
        milestones=_milestones(milestones), gamma=gamma, seed=seed, device=device, num_workers=num_workers,
        amp=amp, channels_last=channels_last, cache_images=cache_images, progress=progress,
    )
    metrics = train_relpose(data, out, config, resume=resume)
    _report(metrics)


@train_app.command("posenet")
def posenet(
    data: Data,
    out: Out,
    scene: Annotated[str, typer.Option(help="The scene to train on (PoseNet needs one model per scene).")],
    backbone: Backbone = _P.model.backbone.name,
    weights: Weights = _P.model.backbone.weights,
    allow_random_init: AllowRandom = _P.model.backbone.allow_random_init,
    hidden: Annotated[int, typer.Option(help="Width of the layer before the regressors.")] = _P.model.hidden,
    dropout: Annotated[float, typer.Option(help="Dropout probability after it.")] = _P.model.dropout,
    train_split: TrainSplit = _P.train_split,
    val_split: ValSplit = str(_P.val_split),
    resize: Resize = _P.resize,
    crop: Crop = _P.crop,
    jitter: Jitter = _P.jitter,
    batch_size: BatchSize = _P.batch_size,
    epochs: Epochs = _P.epochs,
    lr: Lr = _P.lr,
    weight_decay: WeightDecay = _P.weight_decay,
    beta: Annotated[float, typer.Option(
        help="Weight of the quaternion term: MSE(centre) + beta * MSE(q) (Kendall et al.: 120-750 indoors).")]
    = _P.beta,
    milestones: Milestones = ",".join(map(str, _P.milestones)),
    gamma: Gamma = _P.gamma,
    seed: Seed = _P.seed,
    device: Device = _P.device,
    num_workers: Workers = _P.num_workers,
    amp: Amp = _P.amp,
    channels_last: ChannelsLast = _P.channels_last,
    cache_images: CacheImages = _P.cache_images,
    resume: Resume = False,
    progress: Progress = _P.progress,
) -> None:
    """Train a PoseNet absolute-pose regressor on one scene (the baseline of Publication V)."""
    from .posenet import train_posenet

    config = TrainPoseNetConfig(
        model=PoseNetConfig(BackboneConfig(backbone, weights, allow_random_init), hidden, dropout),
        train_split=train_split, val_split=_split(val_split), resize=resize, crop=crop, jitter=jitter,
        batch_size=batch_size, epochs=epochs, lr=lr, weight_decay=weight_decay, beta=beta,
        milestones=_milestones(milestones), gamma=gamma, seed=seed, device=device, num_workers=num_workers,
        amp=amp, channels_last=channels_last, cache_images=cache_images, progress=progress,
    )
    metrics = train_posenet(data, out, scene, config, resume=resume)
    _report(metrics)


def _report(metrics: dict) -> None:
    import os

    if int(os.environ.get("RANK", "0")) != 0:
        return
    for row in metrics["epochs"]:
        val = "-" if row["val_loss"] is None else f"{row['val_loss']:.5f}"
        typer.echo(f"epoch {row['epoch']:3d}  train {row['train_loss']:.5f}  val {val}  {row['seconds']:.1f} s")
    typer.echo(f"best epoch {metrics['best_epoch']} ({metrics['best_metric']} {metrics['best_loss']:.5f}); "
               f"model: {metrics['model_file']}")


def main() -> None:
    """Run :data:`train_app` as a program (``python -m visloc.training.cli``, e.g. under torchrun)."""
    import sys

    from ..errors import VislocError

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        datefmt="%H:%M:%S")
    try:
        train_app()
    except VislocError as e:
        logging.getLogger("visloc").error("%s", e)
        sys.exit(2)


if __name__ == "__main__":
    main()
