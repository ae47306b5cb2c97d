"""CNNGeometric (Rocco et al., CVPR 2017) and its two-stage WeakAlign variant, as implemented upstream.

Pipeline for a (source, target) pair of ``image_size`` x ``image_size`` images (240 by default):

1. a shared feature extractor: a :mod:`~visloc.models.backbones` network truncated at stride 16
   (ResNet after ``layer3``, ``tiny`` after its 4th stride-2 stage, MobileNetV2 after ``features[13]``),
   so a 240 input gives 15x15 features; frozen unless ``train_fe`` (the original trains only the
   regressor). Upstream uses VGG-16 ``pool4`` or ResNet-101 ``layer3``; those are not in the backbone
   registry, the default here is ResNet-34 ``layer3`` (256 channels);
2. per-location L2 normalisation, ``f / sqrt(sum_c f^2 + 1e-6)`` (eps inside the square root);
3. the "3D" correlation ``(B, hs*ws, ht, wt)`` of :func:`feature_correlation`; ReLU, then the same L2
   normalisation along the ``hs*ws`` channel axis;
4. the regressor: ``[conv k x k (valid) + BN + ReLU]`` per entry of ``kernel_sizes`` / ``channels``
   (default conv7 225->128, conv5 128->64: 15 -> 9 -> 5), then linear ``64*5*5 -> 6`` (affine) or ``18``
   (TPS).

theta maps target normalised coordinates to source ones (:mod:`visloc.geometry.warps`). The two-stage model
(:class:`TwoStageMatcher`) regresses an affine theta, warps the source image with it, and regresses a TPS
between the warped source and the target with a second regressor on the shared features; the pair is a
:class:`~visloc.geometry.warps.Warp` (points mapped TPS first, then affine).

Inputs are ImageNet-normalised **outside** the model (:func:`~visloc.models.backbones.imagenet_normalize`),
as for every backbone. Zero padding of the warped source is therefore the ImageNet mean colour, as upstream.

Deviations from upstream, on purpose: a frozen feature extractor is also kept in eval mode by ``train()``
(upstream's ResNet-101 feature extractor updated its BatchNorm statistics although its weights were frozen),
and ``identity_init`` (default on) starts the final linear layer at zero weights and the identity theta as
bias, so an untrained model predicts the identity (upstream: PyTorch's default initialisation).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ConfigError
from ..geometry.warps import THETA_DIM, Warp, identity_theta, warp_source_to_target
from .backbones import Backbone, BackboneConfig, build_backbone, stride_split, stride_trunk  # noqa: F401  (re-exported)
from .registry import networks

#: Upstream's epsilon of the feature / correlation L2 normalisation (inside the square root).
L2_EPS = 1e-6


# --- pure helpers ------------------------------------------------------------------------------------


def feature_l2_norm(features: torch.Tensor, eps: float = L2_EPS) -> torch.Tensor:
    """Normalise along the channel axis: ``f / sqrt(sum_c f^2 + eps)`` (upstream's ``featureL2Norm``).

    Args:
        features: ``(B, C, H, W)``.

    Returns:
        ``(B, C, H, W)``.
    """
    return features / torch.sqrt(features.pow(2).sum(dim=1, keepdim=True) + eps)


def feature_correlation(source: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """CNNGeometric's "3D" correlation: every source location against every target location.

    Channel ordering (upstream's): channel ``k`` is the source location with row ``k % hs`` and column
    ``k // hs`` (``k = row + hs * col``, columns slowest); the spatial dimensions are the target grid::

        out[b, col_s * hs + row_s, row_t, col_t] = <source[b, :, row_s, col_s], target[b, :, row_t, col_t]>

    Args:
        source: ``(B, C, hs, ws)`` features of the source image.
        target: ``(B, C, ht, wt)`` features of the target image.

    Returns:
        ``(B, hs * ws, ht, wt)``.
    """
    if source.ndim != 4 or target.ndim != 4 or source.shape[:2] != target.shape[:2]:
        raise ValueError(
            f"expected (B, C, h, w) features, got {tuple(source.shape)} and {tuple(target.shape)}"
        )
    b, c, hs, ws = source.shape
    ht, wt = target.shape[-2:]
    src = source.transpose(2, 3).reshape(b, c, ws * hs)  # column-major flattening of the source grid
    return torch.bmm(src.transpose(1, 2), target.reshape(b, c, ht * wt)).view(b, hs * ws, ht, wt)


# --- configs -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RegressorConfig:
    """Attributes:
    kernel_sizes: kernel of each valid (unpadded) convolution (upstream: 7, 5).
    channels: output channels of each convolution (upstream: 128, 64); the first input has
        ``feature_size ** 2`` channels (225 for 15x15 features).
    batch_norm: BatchNorm after each convolution (upstream: yes).
    """

    kernel_sizes: tuple[int, ...] = (7, 5)
    channels: tuple[int, ...] = (128, 64)
    batch_norm: bool = True

    def __post_init__(self) -> None:
        if not self.kernel_sizes or len(self.kernel_sizes) != len(self.channels):
            raise ConfigError(
                f"regressor needs as many kernel sizes as channels (at least one), got {self.kernel_sizes} "
                f"and {self.channels}"
            )
        if min(self.kernel_sizes) < 1 or min(self.channels) < 1:
            raise ConfigError(f"regressor kernel sizes and channels must be positive: {self}")

    def output_size(self, feature_size: int) -> int:
        """Spatial size after the valid convolutions (15 -> 9 -> 5 for the defaults)."""
        return feature_size - sum(k - 1 for k in self.kernel_sizes)


def _check_common(stride: int, image_size: int, regressors: tuple[RegressorConfig, ...]) -> None:
    if stride < 1 or stride & (stride - 1):
        raise ConfigError(f"feature_stride must be a power of 2, got {stride}")
    if image_size < stride:
        raise ConfigError(f"image_size {image_size} is smaller than the feature stride {stride}")
    feature_size = -(-image_size // stride)
    for regressor in regressors:
        if regressor.output_size(feature_size) < 1:
            raise ConfigError(
                f"regressor kernels {regressor.kernel_sizes} do not fit {feature_size}x{feature_size} "
                "features "
                f"(image_size {image_size}, stride {stride})"
            )


@dataclass(frozen=True)
class GeometricMatcherConfig:
    """Attributes:
    backbone: feature extractor and its weights policy (default ResNet-34 with ImageNet weights from the
        torch hub cache; ``BackboneConfig("tiny", "none", allow_random_init=True)`` for CPU tests).
    kind: ``"affine"`` (theta ``(B, 6)``) or ``"tps"`` (``(B, 18)``).
    feature_stride: where the backbone is cut (16: 240 -> 15x15 features).
    image_size: side of the square input images (240); fixes the regressor's linear layer.
    train_fe: train the feature extractor too (upstream default: frozen).
    regressor: the regression head.
    normalize_features: L2-normalise the features before correlating (upstream: yes).
    normalize_matches: ReLU + L2-normalise the correlation (upstream: yes).
    identity_init: final linear layer starts at zero weights and the identity theta as bias.
    reg_factor: TPS kernel regulariser of the predicted transform (:meth:`GeometricMatcher.warp`).
    """

    backbone: BackboneConfig = BackboneConfig(name="resnet34")
    kind: str = "affine"
    feature_stride: int = 16
    image_size: int = 240
    train_fe: bool = False
    regressor: RegressorConfig = RegressorConfig()
    normalize_features: bool = True
    normalize_matches: bool = True
    identity_init: bool = True
    reg_factor: float = 0.0

    def __post_init__(self) -> None:
        if self.kind not in THETA_DIM:
            raise ConfigError(f"unknown transform kind {self.kind!r}; known: {', '.join(THETA_DIM)}")
        _check_common(self.feature_stride, self.image_size, (self.regressor,))

    @property
    def feature_size(self) -> int:
        """Side of the feature maps, ``ceil(image_size / feature_stride)`` (15)."""
        return -(-self.image_size // self.feature_stride)


@dataclass(frozen=True)
class TwoStageMatcherConfig:
    """Attributes: as :class:`GeometricMatcherConfig`, with one regressor per stage:
    affine_regressor: stage 1 (affine on the original pair).
    tps_regressor: stage 2 (TPS between the affinely warped source and the target).
    reg_factor: TPS kernel regulariser of the predicted warp (WeakAlign's weak loss uses 0.2).
    """

    backbone: BackboneConfig = BackboneConfig(name="resnet34")
    feature_stride: int = 16
    image_size: int = 240
    train_fe: bool = False
    affine_regressor: RegressorConfig = RegressorConfig()
    tps_regressor: RegressorConfig = RegressorConfig()
    normalize_features: bool = True
    normalize_matches: bool = True
    identity_init: bool = True
    reg_factor: float = 0.0

    def __post_init__(self) -> None:
        _check_common(self.feature_stride, self.image_size, (self.affine_regressor, self.tps_regressor))

    @property
    def feature_size(self) -> int:
        """Side of the feature maps, ``ceil(image_size / feature_stride)`` (15)."""
        return -(-self.image_size // self.feature_stride)


# --- modules -----------------------------------------------------------------------------------------


class FeatureExtractor(nn.Module):
    """A backbone truncated at ``stride`` (:func:`stride_trunk`); frozen (weights and BN statistics) unless
    ``trainable``.

    Attributes:
        trunk: the truncated network.
        channels: output channels.
        initialised_from: the backbone's weight origin (``"imagenet:<file>"``, ``"file:<file>"`` or
            ``"random"``).
    """

    def __init__(
        self, backbone: BackboneConfig, stride: int, trainable: bool, load_weights: bool = True
    ) -> None:
        super().__init__()
        full = build_backbone(backbone, load_weights=load_weights)
        self.trunk, self.channels = stride_trunk(full, stride)
        self.initialised_from = full.initialised_from
        self.trainable = trainable
        if not trainable:
            for p in self.trunk.parameters():
                p.requires_grad_(False)
            self.trunk.eval()

    def train(self, mode: bool = True) -> FeatureExtractor:
        super().train(mode)
        if not self.trainable:
            self.trunk.eval()
        return self

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """``(B, 3, H, W)`` ImageNet-normalised -> ``(B, channels, H / stride, W / stride)`` (rounded up)."""
        return self.trunk(images)


class FeatureRegression(nn.Module):
    """Correlation ``(B, s*s, s, s)`` -> theta ``(B, output_dim)``: valid convs + BN + ReLU, then linear.

    Args:
        feature_size: ``s``.
        output_dim: 6 (affine) or 18 (TPS).
        config: kernels, channels, batch norm.
        identity: if given, the linear layer starts at zero weights with this ``(output_dim,)`` bias.
    """

    def __init__(
        self,
        feature_size: int,
        output_dim: int,
        config: RegressorConfig,
        identity: torch.Tensor | None = None,
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        c_in = feature_size * feature_size
        for k, c_out in zip(config.kernel_sizes, config.channels, strict=True):
            layers.append(nn.Conv2d(c_in, c_out, kernel_size=k, padding=0))
            if config.batch_norm:
                layers.append(nn.BatchNorm2d(c_out))
            layers.append(nn.ReLU(inplace=True))
            c_in = c_out
        self.conv = nn.Sequential(*layers)
        side = config.output_size(feature_size)
        self.linear = nn.Linear(c_in * side * side, output_dim)
        if identity is not None:
            with torch.no_grad():
                self.linear.weight.zero_()
                self.linear.bias.copy_(identity)

    def forward(self, correlation: torch.Tensor) -> torch.Tensor:
        return self.linear(self.conv(correlation).flatten(1))


class _MatcherBase(nn.Module):
    """Shared feature extraction and correlation."""

    config: GeometricMatcherConfig | TwoStageMatcherConfig

    def _build_features(self, load_weights: bool) -> None:
        c = self.config
        self.features = FeatureExtractor(c.backbone, c.feature_stride, c.train_fe, load_weights)

    def extract(self, images: torch.Tensor) -> torch.Tensor:
        """Features of the images, L2-normalised per location if ``normalize_features``.

        Args:
            images: ``(B, 3, S, S)`` ImageNet-normalised, ``S = image_size``.

        Returns:
            ``(B, C, s, s)``, ``s = feature_size``.
        """
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"expected images of shape (B, 3, H, W), got {tuple(images.shape)}")
        features = self.features(images)
        s = self.config.feature_size
        if features.shape[-2:] != (s, s):
            raise ValueError(
                f"images of size {tuple(images.shape[-2:])} give {tuple(features.shape[-2:])} features; the "
                f"regressor needs {s}x{s}: resize the images to {self.config.image_size} pixels square"
            )
        return feature_l2_norm(features) if self.config.normalize_features else features

    def correlate(self, source_features: torch.Tensor, target_features: torch.Tensor) -> torch.Tensor:
        """:func:`feature_correlation`, then ReLU + L2 along the channels if ``normalize_matches``.

        Returns:
            ``(B, s*s, s, s)``.
        """
        correlation = feature_correlation(source_features, target_features)
        return feature_l2_norm(F.relu(correlation)) if self.config.normalize_matches else correlation


@networks.register("cnngeometric", GeometricMatcherConfig)
class GeometricMatcher(_MatcherBase):
    """Single-stage CNNGeometric: ``forward(source, target) -> theta`` (target -> source).

    Args:
        config: the architecture.
        load_weights: initialise the feature extractor as ``config.backbone.weights`` says; ``False`` builds
            the architecture only (for loading a checkpoint).

    With ``identity_init`` an untrained model returns the identity theta for every pair.

    Example:
        >>> tiny = BackboneConfig("tiny", "none", allow_random_init=True)
        >>> net = GeometricMatcher(GeometricMatcherConfig(backbone=tiny, kind="tps"))
        >>> net(torch.rand(2, 3, 240, 240), torch.rand(2, 3, 240, 240)).shape
        torch.Size([2, 18])
    """

    def __init__(
        self, config: GeometricMatcherConfig = GeometricMatcherConfig(), load_weights: bool = True
    ) -> None:
        super().__init__()
        self.config = config
        self._build_features(load_weights)
        identity = identity_theta(config.kind)[0] if config.identity_init else None
        self.regressor = FeatureRegression(
            config.feature_size, THETA_DIM[config.kind], config.regressor, identity
        )

    def forward(self, source: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """theta of each pair.

        Args:
            source: ``(B, 3, S, S)`` ImageNet-normalised source images.
            target: ``(B, 3, S, S)`` ImageNet-normalised target images.

        Returns:
            ``(B, 6)`` or ``(B, 18)``: target normalised coordinates -> source normalised coordinates.
        """
        return self.regressor(self.correlate(self.extract(source), self.extract(target)))

    def warp(self, source: torch.Tensor, target: torch.Tensor) -> Warp:
        """The prediction as a :class:`~visloc.geometry.warps.Warp` (with ``config.reg_factor``)."""
        return Warp.from_theta(self(source, target), self.config.kind, self.config.reg_factor)


@networks.register("cnngeometric_two_stage", TwoStageMatcherConfig)
class TwoStageMatcher(_MatcherBase):
    """WeakAlign's two-stage CNNGeometric: affine, then TPS on the affinely warped source.

    Stage 1 regresses ``theta_affine`` from the correlation of (source, target). The source image is warped
    with it onto the target lattice (bilinear, zeros outside, gradients flow into ``theta_affine``); stage 2
    regresses ``theta_tps`` from the correlation of (warped source, target) with its own regressor on the
    shared features. Target points map to the source by ``A o TPS``.

    Args:
        config: the architecture.
        load_weights: as :class:`GeometricMatcher`.
    """

    def __init__(
        self, config: TwoStageMatcherConfig = TwoStageMatcherConfig(), load_weights: bool = True
    ) -> None:
        super().__init__()
        self.config = config
        self._build_features(load_weights)
        s = config.feature_size
        init = config.identity_init
        self.affine_regressor = FeatureRegression(
            s, THETA_DIM["affine"], config.affine_regressor, identity_theta("affine")[0] if init else None
        )
        self.tps_regressor = FeatureRegression(
            s, THETA_DIM["tps"], config.tps_regressor, identity_theta("tps")[0] if init else None
        )

    def forward(self, source: torch.Tensor, target: torch.Tensor) -> Warp:
        """The two-stage transform of each pair.

        Args:
            source: ``(B, 3, S, S)`` ImageNet-normalised source images.
            target: ``(B, 3, S, S)`` ImageNet-normalised target images.

        Returns:
            ``Warp(affine=(B, 6), tps=(B, 18), reg_factor=config.reg_factor)``.
        """
        target_features = self.extract(target)
        theta_affine = self.affine_regressor(self.correlate(self.extract(source), target_features))
        warped = warp_source_to_target(source, theta_affine, "affine", size=tuple(target.shape[-2:]))
        theta_tps = self.tps_regressor(self.correlate(self.extract(warped), target_features))
        return Warp(affine=theta_affine, tps=theta_tps, reg_factor=self.config.reg_factor)

    def warp(self, source: torch.Tensor, target: torch.Tensor) -> Warp:
        """Same as calling the model (for symmetry with :meth:`GeometricMatcher.warp`)."""
        return self(source, target)
