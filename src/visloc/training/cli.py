"""``visloc train``: command-line front ends of :func:`~visloc.training.relpose.train_relpose`,
:func:`~visloc.training.posenet.train_posenet` and :func:`~visloc.training.semantic.train_semantic`.

Every option maps to a field of :class:`~visloc.training.relpose.TrainRelPoseConfig`,
:class:`~visloc.training.posenet.TrainPoseNetConfig` or :class:`~visloc.training.semantic.TrainSemanticConfig`
(defaults are the configs' defaults). For several processes start the same command under torchrun, e.g.::

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
from .semantic import LOSS_PRESETS, TRANSFORMS, TrainSemanticConfig

train_app = typer.Typer(help="Train the pose regression and semantic matching networks.", no_args_is_help=True)

_R = TrainRelPoseConfig()
_P = TrainPoseNetConfig()
_S = PairSamplingConfig()
_M = TrainSemanticConfig()

# Options shared by both commands (Annotated types, so that each command states its own default).
Data = Annotated[Path, typer.Option(help="Data set root in 7-Scenes/University layout (e.g. `visloc world make`).")]
Out = Annotated[Path, typer.Option(help="Output folder: checkpoints last.pt/best.pt, model.pt, metrics.json.")]
Backbone = Annotated[str, typer.Option(help="Encoder: resnet34 (Pub V), resnet18, mobilenet_v2 or tiny (CPU-sized).")]
Weights = Annotated[str, typer.Option(
    help="Encoder initialisation: 'imagenet' (torch hub cache only, never downloaded), 'none' (random; "
         "needs --allow-random-init), the path of a state-dict file, or a visloc model.pt whose encoder "
         "starts this one (fine-tuning).")]
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
        help="Regression head: 'original' (Linear-BN-ReLU-Dropout, Lua code), 'pytorch_port' "
             "(Linear-Dropout) or 'correlation' (visloc: regress from the two feature maps' correlation "
             "volume).")] = _R.model.head,
    hidden: Annotated[int, typer.Option(help="Width of the hidden layer of the head.")] = _R.model.hidden,
    dropout: Annotated[float | None, typer.Option(
        help="Dropout probability; default: the head's published value (0.5 original, 0.3 port).")] = None,
    translation_frame: Annotated[str, typer.Option(
        help="Frame of the translation label: 'camera' (query centre in the database camera frame; "
             "scene-agnostic) or 'world' (C_query - C_db, the original).")] = _R.model.translation_frame,
    pool_grid: Annotated[str, typer.Option(
        help="Cells of the encoder's average pooling, ROWSxCOLS: 1x1 is the original's global pooling; "
             "2x2 keeps a coarse layout.")] = "x".join(map(str, _R.model.pool_grid)),
    correlation_stride: Annotated[int, typer.Option(
        help="Correlation head: stride of the correlated feature maps.")] = _R.model.correlation_stride,
    correlation_grid: Annotated[str, typer.Option(
        help="Correlation head: ROWSxCOLS the feature maps are pooled to (their size at the training "
             "crop: 14x14 for 112 px at stride 8).")] = "x".join(map(str, _R.model.correlation_grid)),
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
    random_crop: Annotated[bool, typer.Option(
        "--random-crop/--centre-crop",
        help="Random training crops (Publication V) or the evaluation's centre crop (keeps the small image "
             "shifts between near views meaningful).")] = True,
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
                          translation_frame, _grid(pool_grid), correlation_stride, _grid(correlation_grid))
    sampling = PairSamplingConfig(min_overlap=min_overlap, max_overlap=max_overlap,
                                  max_pairs_per_scene=pairs_per_scene, seed=pairs_seed)
    config = TrainRelPoseConfig(
        model=model, train_split=train_split, val_split=_split(val_split), exclude_scenes=tuple(exclude_scene or ()),
        pairs=sampling, val_pairs_per_scene=val_pairs_per_scene,
        train_pairs_file=str(train_pairs) if train_pairs else None,
        val_pairs_file=str(val_pairs) if val_pairs else None, resize=resize, crop=crop, jitter=jitter,
        random_crop=random_crop, swap_prob=swap_prob, batch_size=batch_size, epochs=epochs, lr=lr, weight_decay=weight_decay, beta=beta,
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


def _ints(text: str, what: str) -> tuple[int, ...]:
    try:
        values = tuple(int(x) for x in text.replace(" ", "").split(",") if x)
    except ValueError:
        raise typer.BadParameter(f"{what}: expected comma-separated integers, got {text!r}") from None
    if not values:
        raise typer.BadParameter(f"{what}: give at least one integer")
    return values


def semantic_model_config(
    init: Path | None,
    transform: str | None = None,
    backbone: str | None = None,
    weights: str | None = None,
    allow_random_init: bool | None = None,
    train_fe: bool | None = None,
    image_size: int | None = None,
    kernels: str | None = None,
    channels: str | None = None,
    reg_factor: float | None = None,
):
    """The matcher config of ``visloc train semantic``: the architecture of ``init`` (or the defaults:
    ResNet-34 ImageNet, affine, 240 px; ``tiny`` backbones train from scratch with a regressor that fits
    the image size), with the options given replaced. ``None`` when nothing is given and ``init`` is:
    the run then takes the architecture from ``init``."""
    from ..models.cnngeometric import RegressorConfig, TwoStageMatcherConfig
    from .semantic import matcher_config, model_config_of, tiny_matcher_config, transform_of

    given = {k: v for k, v in {"transform": transform, "backbone": backbone, "weights": weights,
                                "allow_random_init": allow_random_init, "train_fe": train_fe,
                                "image_size": image_size, "kernels": kernels, "channels": channels,
                                "reg_factor": reg_factor}.items() if v is not None}
    if init is not None and not given:
        return None
    if init is not None:
        base = model_config_of(init)
    elif (backbone or "") == "tiny":
        base = tiny_matcher_config(transform or "affine", image_size or 128)
    else:
        base = matcher_config(transform or "affine")
    regressor = base.affine_regressor if isinstance(base, TwoStageMatcherConfig) else base.regressor
    if kernels is not None or channels is not None:
        k = _ints(kernels, "--kernels") if kernels is not None else regressor.kernel_sizes
        c = _ints(channels, "--channels") if channels is not None else regressor.channels
        regressor = RegressorConfig(k, c, regressor.batch_norm)
    b = base.backbone
    backbone_config = BackboneConfig(backbone or b.name, weights or b.weights,
                                     b.allow_random_init if allow_random_init is None else allow_random_init)
    return matcher_config(
        transform or transform_of(base), backbone_config, image_size or base.image_size,
        base.train_fe if train_fe is None else train_fe, regressor,
        base.reg_factor if reg_factor is None else reg_factor,
    )


@train_app.command("semantic")
def semantic(
    out: Out,
    stage: Annotated[str, typer.Option(
        help="'pretrain': synthetic warps of photographs, supervised grid loss; 'weak': fine-tune --init on "
             "weakly labelled real pairs with --loss.")] = _M.stage,
    init: Annotated[Path | None, typer.Option(
        help="model.pt whose weights start the run (the pretrained model of the weak stage); its architecture "
             "is used unless model options are given.")] = None,
    transform: Annotated[str | None, typer.Option(
        help=f"Transform regressed: {', '.join(TRANSFORMS)} (WeakAlign's affine then TPS). Default: from --init, "
             "else affine.")] = None,
    backbone: Annotated[str | None, typer.Option(
        help="Feature extractor, cut at stride 16: resnet34 (default), resnet18, mobilenet_v2 or tiny (CPU-sized; "
             "trained from scratch).")] = None,
    weights: Annotated[str | None, typer.Option(
        help="Backbone initialisation: 'imagenet' (torch hub cache only, never downloaded), 'none' (random; "
             "needs --allow-random-init) or a state-dict file.")] = None,
    allow_random_init: Annotated[bool | None, typer.Option(
        "--allow-random-init/--no-allow-random-init",
        help="Permit random backbone initialisation (or the fallback when ImageNet weights are missing).")] = None,
    train_fe: Annotated[bool | None, typer.Option(
        "--train-fe/--freeze-fe",
        help="Train the feature extractor too (CNNGeometric: frozen; always train a randomly initialised one).")]
    = None,
    image_size: Annotated[int | None, typer.Option(
        help="Side of the square network input (CNNGeometric: 240; tiny default: 128).")] = None,
    kernels: Annotated[str | None, typer.Option(
        help="Regressor convolution kernels, comma-separated (CNNGeometric: 7,5 for 15x15 features).")] = None,
    channels: Annotated[str | None, typer.Option(
        help="Regressor convolution channels, comma-separated (CNNGeometric: 128,64).")] = None,
    reg_factor: Annotated[float | None, typer.Option(help="TPS kernel regulariser of the predicted warp.")] = None,
    loss: Annotated[str | None, typer.Option(
        help="Loss preset: supervised (pretraining), pub1 (synthetic grid loss + cyclic on a grid of the real "
             "pairs), pub2_nn / pub2_chamfer (nearest-neighbour / Chamfer between keypoint sets + cyclic on the "
             "keypoints). Default: supervised for pretrain, pub2_chamfer for weak.")] = None,
    data: Annotated[Path | None, typer.Option(
        help="Weak stage: PF-WILLOW-layout folder (<class>/<image>.png + .mat keypoints); pair csv names are "
             "relative to it.")] = None,
    pairs: Annotated[Path | None, typer.Option(
        help="Weak stage: training pairs csv (`visloc semantic weak-pairs`); default: the Publication II weak "
             "pairs of --class.")] = None,
    class_: Annotated[list[str] | None, typer.Option(
        "--class", help="Weak stage: class whose pairs are used (repeat; default all).")] = None,
    max_per_category: Annotated[int, typer.Option(
        help="Random weak pairs per class (Publication II: 100).")] = _M.max_per_category,
    flips: Annotated[bool, typer.Option(help="Add the flip pair of every image to the weak pairs.")]
    = _M.include_flips,
    pairs_seed: Annotated[int, typer.Option(help="Seed of the weak pairs and of the validation hold-out.")]
    = _M.pairs_seed,
    val_fraction: Annotated[float, typer.Option(
        help="Weak stage: share of the pairs held out for validation (model selection by the weak loss).")]
    = _M.val_fraction,
    random_crop: Annotated[bool, typer.Option(help="WeakAlign's random crop of real training images.")]
    = _M.random_crop,
    synthetic_image: Annotated[list[Path] | None, typer.Option(
        help="Photograph or folder for the synthetic pairs (repeat; default: the scikit-image photographs).")]
    = None,
    synthetic_length: Annotated[int, typer.Option(help="Synthetic pairs per pretraining epoch.")]
    = _M.synthetic_length,
    synthetic_val_length: Annotated[int, typer.Option(help="Synthetic validation pairs (pretraining).")]
    = _M.synthetic_val_length,
    batch_size: BatchSize = _M.batch_size,
    epochs: Epochs = _M.epochs,
    lr: Lr = _M.lr,
    weight_decay: WeightDecay = _M.weight_decay,
    milestones: Milestones = ",".join(map(str, _M.milestones)),
    gamma: Gamma = _M.gamma,
    seed: Seed = _M.seed,
    device: Device = _M.device,
    num_workers: Workers = _M.num_workers,
    amp: Amp = _M.amp,
    channels_last: ChannelsLast = _M.channels_last,
    cache_images: CacheImages = _M.cache_images,
    resume: Resume = False,
    progress: Progress = _M.progress,
) -> None:
    """Train a CNNGeometric semantic matcher: synthetic pretraining, or weak fine-tuning (Publications I, II)."""
    from .semantic import train_semantic

    if loss is not None and loss not in LOSS_PRESETS:
        raise typer.BadParameter(f"unknown loss {loss!r}; known: {', '.join(LOSS_PRESETS)}")
    model = semantic_model_config(init, transform, backbone, weights, allow_random_init, train_fe, image_size,
                                  kernels, channels, reg_factor)
    config = TrainSemanticConfig(
        stage=stage, model=model, init_from=str(init) if init else None,
        loss=LOSS_PRESETS[loss] if loss else None,
        synthetic_images=tuple(str(p) for p in synthetic_image or ()), synthetic_length=synthetic_length,
        synthetic_val_length=synthetic_val_length, data_root=str(data) if data else None,
        pairs_csv=str(pairs) if pairs else None, classes=tuple(class_ or ()), max_per_category=max_per_category,
        include_flips=flips, pairs_seed=pairs_seed, val_fraction=val_fraction, random_crop=random_crop,
        batch_size=batch_size, epochs=epochs, lr=lr, weight_decay=weight_decay, milestones=_milestones(milestones),
        gamma=gamma, seed=seed, device=device, num_workers=num_workers, amp=amp, channels_last=channels_last,
        cache_images=cache_images, progress=progress,
    )
    metrics = train_semantic(out, config, resume=resume)
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
