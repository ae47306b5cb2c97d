"""Image encoders: ``(B, 3, H, W)`` ImageNet-normalised images -> global descriptor ``(B, D)``.

Select them by name from :data:`backbones` through a :class:`BackboneConfig`::

    encoder = build_backbone(BackboneConfig("resnet18", weights="imagenet"))
    desc = encoder(images)          # (B, 512): global average pooling of the last feature map

``resnet34`` (Publication V's encoder), ``resnet18``, ``mobilenet_v2`` and ``vgg16`` (DGC-Net's and
NetVLAD's encoder, convolutional part only) are torchvision networks with the classifier removed;
``tiny`` is a small CNN for training from scratch on a CPU. Where the weights come from is decided by
:class:`BackboneConfig` (see :mod:`visloc.models.weights`): nothing is ever downloaded here. All ops are
convolutions, batch norm and pooling, so a model moved to ``channels_last`` runs in that memory format
throughout. :func:`pyramid_taps` gives a backbone's feature maps at several strides (dense matching).
"""

from __future__ import annotations

import dataclasses
import itertools
import os
import warnings
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from ..errors import ConfigError, InputError
from ..registry import Registry
from .registry import networks
from .weights import IMAGENET_WEIGHTS, imagenet_cache_path, load_state_dict_file, load_state_into

#: ImageNet channel statistics (RGB, images in [0, 1]) that every backbone expects to be removed.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class BackboneConfig:
    """Attributes:
    name: a registered backbone: ``resnet34``, ``resnet18``, ``mobilenet_v2``, ``vgg16`` or ``tiny``.
    weights: ``"imagenet"`` (torchvision's, from the torch hub cache only), ``"none"`` (random
        initialisation, needs ``allow_random_init``) or the path of a state-dict file (or of a visloc
        model whose encoder has this architecture, e.g. a trained relpose ``model.pt``: fine-tuning).
    allow_random_init: permit random initialisation: with ``weights="none"``, or as the fallback
        (with a warning) when the ImageNet weights are not in the cache.
    """

    name: str = "resnet18"
    weights: str = "imagenet"
    allow_random_init: bool = False

    def __post_init__(self) -> None:
        if isinstance(self.weights, os.PathLike):  # keep configs plain data (checkpoints, JSON sidecars)
            object.__setattr__(self, "weights", os.fspath(self.weights))
        if not isinstance(self.weights, str) or not self.weights:
            raise ConfigError(
                f"backbone weights must be 'imagenet', 'none' or a file path, got {self.weights!r}"
            )


#: The image encoders. Factories are called as ``factory(config, load_weights=True)``.
backbones: Registry[Backbone] = Registry("backbone")


def imagenet_normalize(images: torch.Tensor) -> torch.Tensor:
    """Remove the ImageNet mean and scale by its standard deviation.

    Args:
        images: ``(B, 3, H, W)`` RGB in ``[0, 1]``.

    Returns:
        ``(B, 3, H, W)`` normalised images.
    """
    mean = images.new_tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = images.new_tensor(IMAGENET_STD).view(1, 3, 1, 1)
    return (images - mean) / std


def count_parameters(module: nn.Module, trainable_only: bool = False) -> int:
    """Number of parameters (all of them, or only those with ``requires_grad``)."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad or not trainable_only)


class Backbone(nn.Module):
    """Base class: ``feature_map`` then global average pooling.

    Attributes:
        config: the :class:`BackboneConfig` it was built from (``name`` set to the registered name).
        out_dim: descriptor size ``D``.
        stride: total downsampling of :meth:`feature_map`.
        initialised_from: ``"imagenet:<file>"``, ``"file:<file>"`` or ``"random"``.
        body: the network whose state dict the weight files hold (torchvision names for torchvision
            backbones).
    """

    out_dim: int
    stride: int = 32
    #: Keys of torchvision ImageNet files that the encoder does not use (the classifier).
    ignored_prefixes: tuple[str, ...] = ()

    def __init__(self, name: str, config: BackboneConfig, body: nn.Module, out_dim: int) -> None:
        super().__init__()
        self.config = dataclasses.replace(config, name=name) if config.name != name else config
        self.body = body
        self.out_dim = out_dim
        self.initialised_from = "random"

    def feature_map(self, images: torch.Tensor) -> torch.Tensor:
        """Last convolutional feature map.

        Args:
            images: ``(B, 3, H, W)`` ImageNet-normalised.

        Returns:
            ``(B, D, ceil(H / stride), ceil(W / stride))`` (up to rounding of the strided layers).
        """
        raise NotImplementedError

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Global descriptor.

        Args:
            images: ``(B, 3, H, W)`` float, ImageNet-normalised (:func:`imagenet_normalize`).

        Returns:
            ``(B, D)`` global-average-pooled features, ``D = out_dim`` (not normalised).
        """
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"expected images of shape (B, 3, H, W), got {tuple(images.shape)}")
        return self.feature_map(images).mean(dim=(2, 3))

    def load_weights(self) -> None:
        """Initialise the weights as :attr:`config` says (called once by the factory)."""
        config = self.config
        if config.weights == "none":
            if not config.allow_random_init:
                raise ConfigError(
                    f"backbone {config.name!r}: weights='none' means random initialisation, which must be "
                    "asked for explicitly with allow_random_init=True (or give weights='imagenet' or a file)"
                )
            return
        if config.weights == "imagenet":
            if config.name not in IMAGENET_WEIGHTS:
                raise ConfigError(
                    f"backbone {config.name!r} has no ImageNet weights: use weights=<state-dict file> or "
                    "weights='none' with allow_random_init=True"
                )
            path = imagenet_cache_path(config.name)
            if not path.is_file():
                missing = f"ImageNet weights of backbone {config.name!r} are not in the torch hub cache"
                if config.allow_random_init:
                    warnings.warn(f"{path}: {missing}; starting from random weights", stacklevel=3)
                    return
                raise InputError(
                    path,
                    f"{missing} (visloc never downloads implicitly). Alternatives: fetch them once while "
                    f"online with visloc.models.download_weights({config.name!r}) or copy the file here; "
                    "pass weights=<path of a state-dict file>; or set allow_random_init=True to train from "
                    "random initialisation",
                )
            self._load_file(path)
            self.initialised_from = f"imagenet:{path}"
            return
        path = Path(config.weights).expanduser()
        self._load_file(path)
        self.initialised_from = f"file:{path}"

    def _load_file(self, path: Path) -> None:
        state = load_state_dict_file(path, submodule="encoder")
        if state and all(k.startswith("body.") for k in state):  # saved from a visloc Backbone
            state = {k[len("body.") :]: v for k, v in state.items()}
        state = {k: v for k, v in state.items() if not k.startswith(self.ignored_prefixes)}
        load_state_into(self.body, state, path, f"backbone {self.config.name!r}")


# --- torchvision backbones -------------------------------------------------------------------------


class ResNetBackbone(Backbone):
    """torchvision ResNet without ``fc``; the descriptor is the pooled ``layer4`` output."""

    ignored_prefixes = ("fc.",)

    def __init__(self, name: str, config: BackboneConfig) -> None:
        import torchvision.models

        body = getattr(torchvision.models, name)(weights=None)
        out_dim = body.fc.in_features
        body.fc = nn.Identity()
        super().__init__(name, config, body, out_dim)

    def feature_map(self, images: torch.Tensor) -> torch.Tensor:
        b = self.body
        x = b.maxpool(b.relu(b.bn1(b.conv1(images))))
        return b.layer4(b.layer3(b.layer2(b.layer1(x))))


class MobileNetV2Backbone(Backbone):
    """torchvision MobileNetV2 without the classifier; descriptor ``(B, 1280)``."""

    ignored_prefixes = ("classifier.",)

    def __init__(self, name: str, config: BackboneConfig) -> None:
        import torchvision.models

        body = torchvision.models.mobilenet_v2(weights=None)
        out_dim = body.last_channel
        body.classifier = nn.Identity()
        super().__init__(name, config, body, out_dim)

    def feature_map(self, images: torch.Tensor) -> torch.Tensor:
        return self.body.features(images)


class VGG16Features(nn.Module):
    """torchvision's VGG-16 ``features`` (13 conv3x3 + ReLU, 5 max-pools), no ``avgpool`` / ``classifier``.

    Built with torchvision's own ``make_layers`` and initialised as torchvision's ``VGG`` (Kaiming-normal
    ``fan_out`` convolutions, zero biases), so state-dict keys (``features.0.weight`` ...) are torchvision's
    and its ImageNet file loads (the classifier keys are ignored). The max-pools use ``ceil_mode=True``:
    ``ceil(H / 32)`` output rows as the other backbones (no change for sizes divisible by 32).
    """

    def __init__(self) -> None:
        super().__init__()
        from torchvision.models.vgg import cfgs, make_layers

        self.features = make_layers(cfgs["D"], batch_norm=False)
        for m in self.features.modules():
            if isinstance(m, nn.MaxPool2d):
                m.ceil_mode = True
            elif isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.features(images)


class VGG16Backbone(Backbone):
    """torchvision VGG-16 convolutional part (:class:`VGG16Features`); descriptor ``(B, 512)`` (``pool5``).

    Its feature pyramid (:func:`pyramid_taps`) is DGC-Net's ``VGGPyramid``: stride 1 = ``conv1_1`` + ReLU,
    stride ``2^k`` = the output of ``pool_k`` (64, 64, 128, 256, 512 channels at strides 1 .. 16).
    """

    ignored_prefixes = ("classifier.",)
    #: stride -> number of ``features`` layers up to the tap (DGC-Net's level boundaries).
    pyramid_cuts: tuple[tuple[int, int], ...] = ((1, 2), (2, 5), (4, 10), (8, 17), (16, 24), (32, 31))

    def __init__(self, name: str, config: BackboneConfig) -> None:
        super().__init__(name, config, VGG16Features(), 512)

    def feature_map(self, images: torch.Tensor) -> torch.Tensor:
        return self.body(images)


# --- tiny: a small CNN for CPU training from scratch -------------------------------------------------


def _conv_bn_relu(c_in: int, c_out: int, stride: int) -> list[nn.Module]:
    return [
        nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False),
        nn.BatchNorm2d(c_out),
        nn.ReLU(inplace=True),
    ]


class TinyCNN(nn.Module):
    """Five stride-2 stages of 3x3 conv-BN-ReLU; stages 2-4 add a stride-1 3x3 conv-BN-ReLU.

    Widths 16-32-64-128-256: about 587k parameters (2.3 MB float32), receptive field 119 px, 2-3 ms per
    128x128 image on 2 CPU cores. Kaiming initialisation as torchvision's ResNets.
    """

    widths = (16, 32, 64, 128, 256)
    double = (1, 2, 3)

    def __init__(self) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        c_in = 3
        for i, width in enumerate(self.widths):
            layers += _conv_bn_relu(c_in, width, 2)
            if i in self.double:
                layers += _conv_bn_relu(width, width, 1)
            c_in = width
        self.features = nn.Sequential(*layers)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.features(images)


class TinyBackbone(Backbone):
    """:class:`TinyCNN` with global average pooling; descriptor ``(B, 256)``."""

    def __init__(self, name: str, config: BackboneConfig) -> None:
        body = TinyCNN()
        super().__init__(name, config, body, body.widths[-1])

    def feature_map(self, images: torch.Tensor) -> torch.Tensor:
        return self.body(images)


# --- named taps -------------------------------------------------------------------------------------


def _module_stride(module: nn.Module) -> int:
    """Largest stride of the convolutions / poolings inside ``module`` (1 if none)."""
    stride = 1
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.MaxPool2d, nn.AvgPool2d)):
            s = m.stride if isinstance(m.stride, int) else m.stride[0]
            stride = max(stride, int(s))
    return stride


def _body_children(backbone: Backbone, purpose: str) -> list[tuple[str, nn.Module]]:
    """The body's layers in running order: ResNet's named stages, or the ``features`` sequence."""
    body = backbone.body
    resnet_names = ("conv1", "bn1", "relu", "maxpool", "layer1", "layer2", "layer3", "layer4")
    if all(hasattr(body, n) for n in resnet_names):
        return [(n, getattr(body, n)) for n in resnet_names]
    if isinstance(getattr(body, "features", None), nn.Sequential):
        return list(body.features.named_children())
    raise ConfigError(
        f"backbone {backbone.config.name!r}: no known way to {purpose} (supported: "
        "torchvision ResNets and backbones with a 'features' sequence)"
    )


def stride_split(backbone: Backbone, stride: int = 16) -> tuple[nn.Sequential, nn.Sequential, int]:
    """Split ``backbone``'s body at total stride ``stride``: the layers up to it and the layers after it.

    Supported: torchvision ResNets (``conv1 .. layer4``; stride 16 = after ``layer3``, as upstream's
    ResNet-101 feature extractor) and backbones whose body is a ``features`` sequence (``tiny``: after its
    4th stride-2 stage; ``mobilenet_v2``: after ``features[13]``). Modules are shared, not copied, so weights
    loaded into ``backbone`` are kept; the names in the returned sequences are the body's own. Running the
    two parts in turn gives ``backbone.feature_map``.

    Args:
        backbone: a built :class:`~visloc.models.backbones.Backbone`.
        stride: total downsampling wanted (a power of 2 the backbone reaches).

    Returns:
        The layers up to ``stride`` (every stride-1 layer right after the cut included), the remaining
        layers, and the number of output channels of the first part.
    """
    children = _body_children(backbone, f"truncate it at stride {stride}")
    total, cut = 1, 0
    for _, module in children:
        s = _module_stride(module)
        if total * s > stride:
            break
        total *= s
        cut += 1
    if total != stride:
        raise ConfigError(
            f"backbone {backbone.config.name!r} has no cut at stride {stride} (reaches {total})"
        )
    kept = children[:cut]
    convs = [m for _, module in kept for m in module.modules() if isinstance(m, nn.Conv2d)]
    return nn.Sequential(OrderedDict(kept)), nn.Sequential(OrderedDict(children[cut:])), convs[-1].out_channels


def stride_trunk(backbone: Backbone, stride: int = 16) -> tuple[nn.Sequential, int]:
    """The layers of ``backbone`` up to total stride ``stride`` (see :func:`stride_split`).

    Returns:
        The truncated network and its number of output channels.
    """
    trunk, _, channels = stride_split(backbone, stride)
    return trunk, channels


#: Names of the intermediate taps of every backbone: the output of the last layer at that total stride.
TAPS = ("stride4", "stride8", "stride16", "stride32")


def tap_stride(tap: str) -> int:
    """Total stride of a named tap (``"stride16"`` -> 16).

    Raises:
        ConfigError: not one of :data:`TAPS`.
    """
    if tap not in TAPS:
        raise ConfigError(f"unknown backbone tap {tap!r}; taps: {', '.join(TAPS)}")
    return int(tap[len("stride"):])


def split_at_tap(backbone: Backbone, tap: str) -> tuple[nn.Sequential, nn.Sequential, int]:
    """``backbone`` split at a named tap: the layers up to it, the layers after it, the tap's channels.

    Running the two parts in turn gives ``backbone.feature_map`` (modules are shared, not copied).
    """
    return stride_split(backbone, tap_stride(tap))


# --- feature pyramids --------------------------------------------------------------------------------


def _pyramid_cuts(backbone: Backbone) -> dict[int, int]:
    """Total stride -> number of body layers (:func:`_body_children`) up to the pyramid tap at that stride.

    A backbone class may fix them (``pyramid_cuts``, e.g. VGG-16's DGC-Net levels); otherwise the tap at
    stride ``s`` follows the last layer whose total stride is ``s`` (as :func:`stride_split`).
    """
    fixed = getattr(type(backbone), "pyramid_cuts", None)
    if fixed is not None:
        return dict(fixed)
    cuts: dict[int, int] = {}
    total = 1
    for i, (_, module) in enumerate(_body_children(backbone, "build a feature pyramid")):
        total *= _module_stride(module)
        cuts[total] = i + 1
    return cuts


def pyramid_strides(backbone: Backbone) -> tuple[int, ...]:
    """The total strides at which :func:`pyramid_taps` can tap ``backbone``, increasing.

    Stride 1 exists only for backbones with full-resolution layers (``vgg16``); ``tiny``, ``mobilenet_v2``
    and the ResNets start with a strided convolution, so their pyramids start at stride 2.
    """
    return tuple(sorted(_pyramid_cuts(backbone)))


class FeaturePyramid(nn.Module):
    """Consecutive stages of a backbone, one feature map per tapped stride.

    Attributes:
        stages: the stage modules (shared with the backbone, not copied); stage ``i`` ends at ``strides[i]``.
        strides: total stride of each output, increasing.
        channels: channels of each output.
    """

    def __init__(
        self, stages: list[nn.Sequential], strides: tuple[int, ...], channels: tuple[int, ...]
    ) -> None:
        super().__init__()
        self.stages = nn.ModuleList(stages)
        self.strides = strides
        self.channels = channels

    def forward(self, images: torch.Tensor) -> list[torch.Tensor]:
        """Feature maps of the images.

        Args:
            images: ``(B, 3, H, W)`` ImageNet-normalised.

        Returns:
            ``[(B, channels[i], ceil(H / strides[i]), ceil(W / strides[i]))]`` (exact for ``H``, ``W``
            divisible by the largest stride).
        """
        out: list[torch.Tensor] = []
        x = images
        for stage in self.stages:
            x = stage(x)
            out.append(x)
        return out


def pyramid_taps(backbone: Backbone, strides: tuple[int, ...] = (2, 4, 8, 16)) -> FeaturePyramid:
    """A :class:`FeaturePyramid` that returns ``backbone``'s features at the given total strides.

    The tap at stride ``s`` is the output of the last layer at that stride (:func:`stride_split`'s cut:
    ``tiny``: 16, 32, 64, 128 channels at strides 2-16; ``mobilenet_v2``: 16, 24, 32, 96; ResNet-18/34:
    64 (after ``conv1``'s ReLU), 64, 128, 256), except VGG-16, whose taps are DGC-Net's (``conv1_1`` at
    stride 1, then the outputs of ``pool1`` .. ``pool4``: 64, 64, 128, 256, 512). Layers after the last tap
    are left out. Modules are shared, so weights loaded into ``backbone`` are used.

    Args:
        backbone: a built backbone.
        strides: increasing total strides, each in :func:`pyramid_strides`.

    Raises:
        ConfigError: a stride the backbone does not have (e.g. 1 for ``tiny``), or not increasing.
    """
    cuts = _pyramid_cuts(backbone)
    if not strides or any(b <= a for a, b in itertools.pairwise(strides)):
        raise ConfigError(f"pyramid strides must be increasing (at least one), got {strides}")
    missing = [s for s in strides if s not in cuts]
    if missing:
        raise ConfigError(
            f"backbone {backbone.config.name!r} has no pyramid level at stride(s) {missing} "
            f"(available: {sorted(cuts)})"
        )
    children = _body_children(backbone, "build a feature pyramid")
    stages, channels, start = [], [], 0
    for s in strides:
        kept = children[start : cuts[s]]
        stages.append(nn.Sequential(OrderedDict(kept)))
        convs = [m for _, module in children[: cuts[s]] for m in module.modules() if isinstance(m, nn.Conv2d)]
        channels.append(convs[-1].out_channels)
        start = cuts[s]
    return FeaturePyramid(stages, tuple(strides), tuple(channels))


# --- registration ------------------------------------------------------------------------------------


def _register(name: str, cls: type[Backbone]) -> None:
    def factory(config: BackboneConfig, load_weights: bool = True) -> Backbone:
        backbone = cls(name, config)
        if load_weights:
            backbone.load_weights()
        return backbone

    factory.__name__ = f"build_{name}"
    backbones.register(name, BackboneConfig)(factory)


_register("resnet18", ResNetBackbone)
_register("resnet34", ResNetBackbone)
_register("mobilenet_v2", MobileNetV2Backbone)
_register("tiny", TinyBackbone)
_register("vgg16", VGG16Backbone)


@networks.register("backbone", BackboneConfig)
def build_backbone(config: BackboneConfig, load_weights: bool = True) -> Backbone:
    """The backbone ``config.name`` with its weights set as ``config.weights`` says.

    Args:
        config: which encoder and which weights.
        load_weights: ``False`` builds the architecture only (random weights, no file is read), for
            callers that load a full state dict afterwards.

    Raises:
        ConfigError: unknown name, ImageNet weights asked for ``tiny``, random init not allowed.
        InputError: a weights file (or the expected cache file) is missing, unreadable or does not
            fit the architecture; the message names the file.
    """
    return backbones.entry(config.name).factory(config, load_weights)
