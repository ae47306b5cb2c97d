"""``visloc train``: command-line front ends of :func:`~visloc.training.relpose.train_relpose`,
:func:`~visloc.training.posenet.train_posenet`, :func:`~visloc.training.retrieval.train_retrieval`,
:func:`~visloc.training.semantic.train_semantic` and :func:`~visloc.training.dense.train_dense`.

The options of each command are derived from its config (:mod:`visloc.training.config_cli`): one per leaf
field of :class:`~visloc.training.relpose.TrainRelPoseConfig`, :class:`~visloc.training.posenet.TrainPoseNetConfig`
or :class:`~visloc.training.semantic.TrainSemanticConfig` (``loop.epochs`` is ``--epochs``, ``pairs.seed``
``--pairs-seed``; :data:`~visloc.training.relpose.RELPOSE_OPTIONS` lists the renamed ones), with the
config's default and its docstring as help, plus ``--set KEY=VALUE`` for any of them by dotted path. The
others are written here: the data and output folders, ``--resume``, PoseNet's ``--scene`` and the semantic
matcher's model options and loss preset. For several processes start the same command under torchrun, e.g.::

    torchrun --nproc_per_node 2 -m visloc.training.cli relpose --data WORLD --out runs/relpose ...
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Annotated

import typer

from ..models.backbones import BackboneConfig
from ..semantic.models import TRANSFORMS
from .dense import DENSE_OPTIONS, TrainDenseConfig
from .posenet import POSENET_OPTIONS, TrainPoseNetConfig
from .relpose import RELPOSE_OPTIONS, TrainRelPoseConfig
from .retrieval import RETRIEVAL_OPTIONS, TrainRetrievalConfig
from .semantic import LOSS_PRESETS, SEMANTIC_OPTIONS, TrainSemanticConfig

train_app = typer.Typer(help="Train the pose regression, image retrieval and semantic matching networks.", no_args_is_help=True)

Data = Annotated[Path, typer.Option(help="Data set root in 7-Scenes/University layout (e.g. `visloc world make`).")]
Out = Annotated[Path, typer.Option(help="Output folder: checkpoints last.pt/best.pt, model.pt, metrics.json.")]
Resume = Annotated[bool, typer.Option(
    help="Continue from OUT/last.pt with the same settings (only --epochs, --device, --num-workers and "
         "--progress may change).")]
Overwrite = Annotated[bool, typer.Option(help="Replace a training run already in OUT (default: refuse it).")]

#: Files whose presence means a folder holds a training run.
RUN_FILES = ("last.pt", "best.pt", "model.pt", "metrics.json")


def claim_run_folder(out: Path, resume: bool, overwrite: bool) -> None:
    """Refuse to start a new run in a folder that holds one, unless it is resumed or replaced on purpose.

    Raises:
        InputError: ``out`` holds a run and neither ``resume`` nor ``overwrite`` is set, or both are.
    """
    from ..errors import InputError

    if resume and overwrite:
        raise InputError(out, "--resume and --overwrite contradict each other; choose one")
    found = [name for name in RUN_FILES if (out / name).is_file()]
    if found and not (resume or overwrite):
        raise InputError(out, f"holds a training run ({', '.join(found)}); pass --resume to continue it or "
                              "--overwrite to replace it, or choose another --out")


@RELPOSE_OPTIONS.command(train_app, "relpose")
def relpose(config: TrainRelPoseConfig, data: Data, out: Out, resume: Resume = False,
            overwrite: Overwrite = False) -> None:
    """Train the Siamese relative-pose network (Publication V) on pairs sampled by view overlap."""
    from .relpose import train_relpose

    claim_run_folder(out, resume, overwrite)
    _report(train_relpose(data, out, config, resume=resume))


@POSENET_OPTIONS.command(train_app, "posenet")
def posenet(
    config: TrainPoseNetConfig,
    data: Data,
    out: Out,
    scene: Annotated[str, typer.Option(help="The scene to train on (PoseNet needs one model per scene).")],
    resume: Resume = False,
    overwrite: Overwrite = False,
) -> None:
    """Train a PoseNet absolute-pose regressor on one scene (the baseline of Publication V)."""
    from .posenet import train_posenet

    claim_run_folder(out, resume, overwrite)
    _report(train_posenet(data, out, scene, config, resume=resume))


@RETRIEVAL_OPTIONS.command(train_app, "retrieval")
def retrieval(
    config: TrainRetrievalConfig,
    out: Out,
    data: Annotated[Path | None, typer.Option(
        help="Posed data set with depth in 7-Scenes/University layout (e.g. `visloc world make`); may be left "
             "out when --photos is given.")] = None,
    resume: Resume = False,
    overwrite: Overwrite = False,
) -> None:
    """Train an image-retrieval network (global descriptors) with hard-negative mining, on posed frames
    (positives by view overlap) and/or photo folders (positives are random views of one photo)."""
    import os

    from ..errors import ConfigError, InputError
    from .retrieval import train_retrieval

    if data is None and not config.photos:
        raise ConfigError("nothing to train on: give --data (a posed data set), --photos FOLDER, or both")
    if data is not None and not data.expanduser().is_dir():
        raise InputError(data, "data set folder not found (--data)")
    claim_run_folder(out, resume, overwrite)
    metrics = train_retrieval(data, out, config, resume=resume)
    _report(metrics)
    if metrics.get("best_recall_at_1") is not None and int(os.environ.get("RANK", "0")) == 0:
        typer.echo(f"validation Recall@1 of the best epoch: {metrics['best_recall_at_1']:.3f}")


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
    from ..semantic.models import matcher_config, model_config_of, tiny_matcher_config, transform_of

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


@SEMANTIC_OPTIONS.command(train_app, "semantic")
def semantic(
    config: TrainSemanticConfig,
    out: Out,
    transform: Annotated[str | None, typer.Option(
        help=f"Transform regressed: {', '.join(TRANSFORMS)} (WeakAlign's affine then TPS). Default: from --init, "
             "else affine.", rich_help_panel="model options")] = None,
    backbone: Annotated[str | None, typer.Option(
        help="Feature extractor, cut at stride 16: resnet34 (default), resnet18, mobilenet_v2 or tiny (CPU-sized; "
             "trained from scratch).", rich_help_panel="model options")] = None,
    weights: Annotated[str | None, typer.Option(
        help="Backbone initialisation: 'imagenet' (torch hub cache only, never downloaded), 'none' (random; "
             "needs --allow-random-init) or a state-dict file.", rich_help_panel="model options")] = None,
    allow_random_init: Annotated[bool | None, typer.Option(
        "--allow-random-init/--no-allow-random-init",
        help="Permit random backbone initialisation (or the fallback when ImageNet weights are missing).",
        rich_help_panel="model options")] = None,
    train_fe: Annotated[bool | None, typer.Option(
        "--train-fe/--freeze-fe",
        help="Train the feature extractor too (CNNGeometric: frozen; always train a randomly initialised one).",
        rich_help_panel="model options")] = None,
    image_size: Annotated[int | None, typer.Option(
        help="Side of the square network input (CNNGeometric: 240; tiny default: 128).",
        rich_help_panel="model options")] = None,
    kernels: Annotated[str | None, typer.Option(
        help="Regressor convolution kernels, comma-separated (CNNGeometric: 7,5 for 15x15 features).",
        rich_help_panel="model options")] = None,
    channels: Annotated[str | None, typer.Option(
        help="Regressor convolution channels, comma-separated (CNNGeometric: 128,64).",
        rich_help_panel="model options")] = None,
    reg_factor: Annotated[float | None, typer.Option(
        help="TPS kernel regulariser of the predicted warp.", rich_help_panel="model options")] = None,
    loss: Annotated[str | None, typer.Option(
        help="Loss preset: supervised (pretraining), pub1 (synthetic grid loss + cyclic on a grid of the real "
             "pairs), pub2_nn / pub2_chamfer (nearest-neighbour / Chamfer between keypoint sets + cyclic on the "
             "keypoints). Default: supervised for pretrain, pub2_chamfer for weak.")] = None,
    resume: Resume = False,
    overwrite: Overwrite = False,
) -> None:
    """Train a CNNGeometric semantic matcher: synthetic pretraining, or weak fine-tuning (Publications I, II).

    Without model options the architecture is --init's (or the default: ResNet-34, affine, 240 px)."""
    from .semantic import train_semantic

    if loss is not None and loss not in LOSS_PRESETS:
        raise typer.BadParameter(f"unknown loss {loss!r}; known: {', '.join(LOSS_PRESETS)}", param_hint="'--loss'")
    init = Path(config.init_from) if config.init_from is not None else None
    model = semantic_model_config(init, transform, backbone, weights, allow_random_init, train_fe, image_size,
                                  kernels, channels, reg_factor)
    config = dataclasses.replace(config, model=model, loss=LOSS_PRESETS[loss] if loss else None)
    claim_run_folder(out, resume, overwrite)
    _report(train_semantic(out, config, resume=resume))


@DENSE_OPTIONS.command(train_app, "dense")
def dense(
    config: TrainDenseConfig,
    out: Out,
    data: Annotated[Path | None, typer.Option(
        help="Posed data set with registered depth (e.g. `visloc world make`, either preset): its view pairs, "
             "with exact maps from depth and poses, are trained on besides the synthetic warps.")] = None,
    consensus: Annotated[str, typer.Option(
        help="NC-Net neighbourhood consensus after the global correlation: none, or KERNELS/CHANNELS "
             "(e.g. 3,3/16,1; prefix asym: for the one-directional variant).",
        rich_help_panel="model options")] = "none",
    resume: Resume = False,
    overwrite: Overwrite = False,
) -> None:
    """Train the dense correspondence network (Publication IV: DGC-Net with NC and the universal decoder) on
    synthetic warps of photographs and/or view pairs of a posed data set."""
    from .dense import consensus_from_text, train_dense

    model = dataclasses.replace(config.model, consensus=consensus_from_text(consensus))
    config = dataclasses.replace(config, model=model)
    claim_run_folder(out, resume, overwrite)
    metrics = train_dense(data, out, config, resume=resume)
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
