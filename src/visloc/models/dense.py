"""DGC-Net-style dense correspondence network with optional NC-Net consensus and the universal decoder
(Publication IV).

``DenseMatcher(config)(source, target)`` maps every pixel of the target image to its match in the source
image (:mod:`visloc.geometry.flow` conventions). Pipeline:

1. both images (ImageNet-normalised, any size, source and target may differ) are resized bilinearly
   (``align_corners=False``, antialiased) to the nearest multiple of 16 of each side (at least 16); an image
   already at such a size is used as is;
2. one shared encoder gives a feature pyramid (:func:`~visloc.models.backbones.pyramid_taps`) at stride 16
   and at every ``refine_strides`` level; frozen (weights and BatchNorm statistics) unless ``train_encoder``;
3. coarse level: both stride-16 maps are reduced to ``coarse_size`` by **adaptive average pooling** (so the
   4-D stage has a fixed size; a map smaller than ``coarse_size`` has its cells repeated), L2-normalised per
   location and correlated (:func:`~visloc.models.correlation.global_correlation`, source cells row-major in
   the channels, ``k = ys * wc + xs``; DGC-Net's own layout is column-major -- no DGC-Net weights are loaded,
   so only the convention matters). With ``consensus`` the 4-D volume is ReLU'd (NC-Net correlates
   non-negative features; MobileNetV2's linear bottlenecks are not) and filtered by NC-Net's
   :class:`~visloc.models.correlation.ConsensusBlock`. Then ReLU + L2 along the channels (DGC-Net), and the
   coarse decoder (``CMDTop``) regresses the normalised grid from ``[correlation | zero grid]``;
4. every refinement level (stride ``s``, decreasing): the previous grid is upsampled bilinearly to the
   level's lattice, the **source** features are sampled with it (``grid_sample``, zeros outside), and the
   level decoder regresses the full grid (no residual, as DGC-Net; ``residual``: a correction added to the
   upsampled grid; ``local_radius``: the local cost volume of the warped source and target features is an
   extra input, as PWC-Net) -- ``dgc``: one
   :class:`~visloc.models.dense_decoders.PairDecoder` per level with DGC-Net's dilations; ``ucmd``: one
   :class:`~visloc.models.dense_decoders.BlockwisePairDecoder` shared by all levels;
5. matchability (DGCM-Net): a head on the finest level's ``[warped source, target]`` features (the input of
   the finest decoder, as DGC-Net) -> one logit per cell, upsampled bilinearly to the target size;
   block-wise for ``ucmd`` so that it also ignores the encoder's width;
6. the finest grid becomes the full-resolution map of the **original** target size in **original** source
   pixels (:func:`grid_to_correspondence`, exact conversions of :mod:`visloc.geometry.flow`).

Stride 1 exists only for ``vgg16``: with other encoders a requested stride-1 level is dropped and the
stride-2 grid is upsampled (:attr:`DenseMatcher.level_strides` says what runs). ``decoder_state_dict`` /
``load_decoder_state_dict`` move everything but the encoder; with ``ucmd`` it fits any encoder.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from collections.abc import Mapping
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ConfigError
from ..geometry.flow import normalized_to_pixel, pixel_to_normalized, resize_map
from .backbones import BackboneConfig, build_backbone, pyramid_strides, pyramid_taps
from .correlation import (
    ConsensusBlock,
    ConsensusConfig,
    corr4d_to_3d,
    correlation_4d,
    feature_l2_norm,
    local_correlation,
)
from .dense_decoders import (
    DGC_DILATIONS,
    MATCHABILITY_CHANNELS,
    BlockwisePairDecoder,
    ConvDecoder,
    PairDecoder,
    cmdtop_plan,
)
from .registry import networks

#: Side multiple the images are resized to (the coarsest feature stride).
SIZE_MULTIPLE = 16
#: Stride of the features the coarse correlation is computed from.
COARSE_STRIDE = 16
DECODERS = ("dgc", "ucmd")


def _as_int_tuple(value: object, name: str) -> tuple[int, ...]:
    if not isinstance(value, (tuple, list)) or not all(
        isinstance(v, int) and not isinstance(v, bool) for v in value
    ):
        raise ConfigError(f"{name} must be a tuple of integers, got {value!r}")
    return tuple(value)


@dataclass(frozen=True)
class DenseMatcherConfig:
    """Attributes:
    backbone: the encoder and its weights policy (default ``tiny``, random initialisation allowed through
        its own flags; ``vgg16`` with ImageNet weights is DGC-Net's).
    train_encoder: train the encoder too (DGC-Net: frozen).
    coarse_size: ``(hc, wc)`` grid of the global correlation (DGC-Net: 15x15 on 240x240 images).
    consensus: NC-Net neighbourhood consensus after the global correlation; ``None``: plain DGC-Net.
    decoder: ``"dgc"`` (one decoder per level) or ``"ucmd"`` (one block-wise decoder for all levels).
    refine_strides: total strides of the levels refined after the coarse one, decreasing, from
        ``16, 8, 4, 2, 1`` (DGC-Net: 8, 4, 2, 1); stride 1 is dropped for encoders without it.
    decoder_channels: block widths before ``width`` scaling (DGC-Net: 128, 96, 64, 32; ``dgc`` needs
        four, one per DGC-Net dilation). The coarse decoder uses DGC-Net's ``CMDTop`` plan (first width
        doubled).
    width: multiplier of all decoder / matchability widths (rounded, at least 1).
    block_channels: UCMD's block size ``N'`` (16).
    matchability: add DGCM-Net's matchability head.
    residual: refinement levels predict a correction added to the upsampled grid (PWC-Net) instead of the
        whole grid (DGC-Net, ``False``).
    local_radius: ``r > 0`` gives every refinement decoder the local cost volume of the warped source and the
        target features (L2-normalised, :func:`~visloc.models.correlation.local_correlation`,
        ``(2r+1)^2`` extra channels, independent of the encoder's width); ``0``: DGC-Net's plain
        concatenation.
    """

    backbone: BackboneConfig = BackboneConfig("tiny", weights="none", allow_random_init=True)
    train_encoder: bool = False
    coarse_size: tuple[int, int] = (15, 15)
    consensus: ConsensusConfig | None = None
    decoder: str = "dgc"
    refine_strides: tuple[int, ...] = (8, 4, 2, 1)
    decoder_channels: tuple[int, ...] = (128, 96, 64, 32)
    width: float = 1.0
    block_channels: int = 16
    matchability: bool = True
    residual: bool = False
    local_radius: int = 0

    def __post_init__(self) -> None:
        if not isinstance(self.backbone, BackboneConfig):
            raise ConfigError(f"backbone must be a BackboneConfig, got {self.backbone!r}")
        for flag in ("train_encoder", "matchability", "residual"):
            if not isinstance(getattr(self, flag), bool):
                raise ConfigError(f"{flag} must be a bool, got {getattr(self, flag)!r}")
        coarse = _as_int_tuple(self.coarse_size, "coarse_size")
        if len(coarse) != 2 or min(coarse) < 1:
            raise ConfigError(f"coarse_size must be a positive (height, width), got {self.coarse_size!r}")
        object.__setattr__(self, "coarse_size", coarse)
        consensus = self.consensus
        if isinstance(consensus, Mapping):  # a checkpoint's JSON-like config
            values = {k: tuple(v) if isinstance(v, list) else v for k, v in consensus.items()}
            consensus = ConsensusConfig(**values)
            object.__setattr__(self, "consensus", consensus)
        if consensus is not None and not isinstance(consensus, ConsensusConfig):
            raise ConfigError(f"consensus must be a ConsensusConfig or None, got {consensus!r}")
        if self.decoder not in DECODERS:
            raise ConfigError(f"unknown dense decoder {self.decoder!r}; known: {', '.join(DECODERS)}")
        strides = _as_int_tuple(self.refine_strides, "refine_strides")
        if not strides or any(s not in DGC_DILATIONS for s in strides) or any(
            b >= a for a, b in itertools.pairwise(strides)
        ):
            raise ConfigError(
                f"refine_strides must be decreasing values from {tuple(DGC_DILATIONS)} (at least one), got "
                f"{self.refine_strides!r}"
            )
        object.__setattr__(self, "refine_strides", strides)
        channels = _as_int_tuple(self.decoder_channels, "decoder_channels")
        if not channels or min(channels) < 1:
            raise ConfigError(f"decoder_channels must be positive (at least one), got {channels}")
        if self.decoder == "dgc" and len(channels) != 4:
            raise ConfigError(
                f"the dgc decoder needs 4 decoder_channels (one per DGC-Net dilation), got {channels}"
            )
        object.__setattr__(self, "decoder_channels", channels)
        if isinstance(self.width, bool) or not isinstance(self.width, (int, float)) or not (
            math.isfinite(self.width) and self.width > 0
        ):
            raise ConfigError(f"width must be a positive number, got {self.width!r}")
        if isinstance(self.block_channels, bool) or not isinstance(self.block_channels, int) or (
            self.block_channels < 1
        ):
            raise ConfigError(f"block_channels must be a positive integer, got {self.block_channels!r}")
        if isinstance(self.local_radius, bool) or not isinstance(self.local_radius, int) or self.local_radius < 0:
            raise ConfigError(f"local_radius must be an integer >= 0, got {self.local_radius!r}")

    def scaled(self, channels: tuple[int, ...]) -> tuple[int, ...]:
        """``channels`` times :attr:`width`, rounded, at least 1."""
        return tuple(max(1, round(c * self.width)) for c in channels)


@dataclass(frozen=True)
class DenseOutput:
    """What :class:`DenseMatcher` returns.

    Attributes:
        grids: per level, coarse to fine, ``(B, 2, h_l, w_l)`` normalised source coordinates over the
            level's target lattice (``grid_sample`` convention; what the training loss compares; the lattices
            are those of the internally resized target).
        level_strides: the feature stride of each level (the first, 16, is pooled to ``coarse_size``).
        correspondence: ``(B, 2, Ht, Wt)`` target pixel -> source pixel (original sizes).
        matchability_logits: ``(B, 1, Ht, Wt)`` or ``None``.
        confidence: ``sigmoid(matchability_logits)`` or ``None``.
    """

    grids: list[torch.Tensor]
    level_strides: tuple[int, ...]
    correspondence: torch.Tensor
    matchability_logits: torch.Tensor | None
    confidence: torch.Tensor | None


def grid_to_correspondence(
    grid: torch.Tensor, source_hw: tuple[int, int], target_hw: tuple[int, int]
) -> torch.Tensor:
    """A normalised grid over any lattice of the target -> the pixel map of the full-size target.

    The grid's lattice is taken as the target resampled with the ``align_corners=False`` convention
    (resized with :func:`~visloc.geometry.flow.resize_map`, exact for affine maps).

    Args:
        grid: ``(B, 2, h, w)`` normalised source coordinates.
        source_hw: ``(Hs, Ws)`` of the source the pixels should refer to.
        target_hw: ``(Ht, Wt)`` of the output lattice.

    Returns:
        ``(B, 2, Ht, Wt)`` in source pixels.
    """
    return resize_map(normalized_to_pixel(grid, source_hw), target_hw, source_hw, source_hw)


def correspondence_to_grid(
    corr: torch.Tensor, source_hw: tuple[int, int], grid_hw: tuple[int, int]
) -> torch.Tensor:
    """Inverse of :func:`grid_to_correspondence`: a pixel map (e.g. ground truth) -> a level's grid.

    Args:
        corr: ``(B, 2, Ht, Wt)`` in pixels of a ``source_hw`` source.
        source_hw: ``(Hs, Ws)``.
        grid_hw: ``(h, w)`` of the level.

    Returns:
        ``(B, 2, h, w)`` normalised.
    """
    return pixel_to_normalized(resize_map(corr, grid_hw, source_hw, source_hw), source_hw)


def internal_size(hw: tuple[int, int]) -> tuple[int, int]:
    """Each side rounded to the nearest multiple of 16 (halves up), at least 16."""
    h, w = (max(SIZE_MULTIPLE, math.floor(s / SIZE_MULTIPLE + 0.5) * SIZE_MULTIPLE) for s in hw)
    return h, w


def _resize_images(images: torch.Tensor) -> torch.Tensor:
    size = internal_size((images.shape[-2], images.shape[-1]))
    if size == tuple(images.shape[-2:]):
        return images
    return F.interpolate(images, size=size, mode="bilinear", align_corners=False, antialias=True)


def _sample(features: torch.Tensor, grid: torch.Tensor) -> torch.Tensor:
    """``features`` ``(B, C, hs, ws)`` at the normalised ``grid`` ``(B, 2, h, w)`` -> ``(B, C, h, w)``."""
    return F.grid_sample(features, grid.permute(0, 2, 3, 1), mode="bilinear", padding_mode="zeros",
                         align_corners=False)


@networks.register("dense", DenseMatcherConfig)
class DenseMatcher(nn.Module):
    """DGC-Net / DGCM-Net with optional neighbourhood consensus and the universal decoder.

    Args:
        config: the architecture.
        load_weights: initialise the encoder as ``config.backbone.weights`` says; ``False`` builds the
            architecture only (for loading a checkpoint).

    Attributes:
        level_strides: the strides that run: 16 (coarse) then the refined ones.
        encoder: the :class:`~visloc.models.backbones.FeaturePyramid`.
        consensus: the NC block or ``None``; coarse_decoder, refine (a ``ModuleDict`` by stride for
            ``dgc``, one module for ``ucmd``), matchability_head (or ``None``).

    Example:
        >>> net = DenseMatcher(DenseMatcherConfig(decoder="ucmd", refine_strides=(8, 4)))
        >>> out = net(torch.rand(1, 3, 100, 130), torch.rand(1, 3, 90, 120))
        >>> out.correspondence.shape
        torch.Size([1, 2, 90, 120])
    """

    def __init__(self, config: DenseMatcherConfig = DenseMatcherConfig(), load_weights: bool = True) -> None:
        super().__init__()
        self.config = config
        backbone = build_backbone(config.backbone, load_weights=load_weights)
        self.initialised_from = backbone.initialised_from
        available = pyramid_strides(backbone)
        refine = tuple(s for s in config.refine_strides if s != 1 or 1 in available)
        self.level_strides = (COARSE_STRIDE, *refine)
        self.encoder = pyramid_taps(backbone, tuple(sorted(set(self.level_strides))))
        self.feature_channels = dict(zip(self.encoder.strides, self.encoder.channels, strict=True))
        if not config.train_encoder:
            for p in self.encoder.parameters():
                p.requires_grad_(False)
            self.encoder.eval()
        self.consensus = ConsensusBlock(config.consensus) if config.consensus is not None else None
        widths = config.scaled(config.decoder_channels)
        top_widths, top_dilations = cmdtop_plan(widths)
        hc, wc = config.coarse_size
        self.coarse_decoder = ConvDecoder(hc * wc + 2, top_widths, top_dilations)
        self.refine: nn.Module
        extra = 2 + (2 * config.local_radius + 1) ** 2 if config.local_radius else 2
        if config.decoder == "ucmd":
            dilations = tuple(range(1, len(widths) + 1))
            self.refine = BlockwisePairDecoder(config.block_channels, extra, widths, dilations)
        else:
            levels = {}
            for s in refine:
                plan = DGC_DILATIONS[s]
                w, d = cmdtop_plan(widths) if plan is None else (widths, plan)
                levels[str(s)] = PairDecoder(self.feature_channels[s], extra, w, d)
            self.refine = nn.ModuleDict(levels)
        self.matchability_head: nn.Module | None = None
        if config.matchability:
            m_widths = config.scaled(MATCHABILITY_CHANNELS)
            ones = (1,) * len(m_widths)
            if config.decoder == "ucmd":
                self.matchability_head = BlockwisePairDecoder(config.block_channels, 0, m_widths, ones, 1, 1)
            else:
                finest = self.feature_channels[refine[-1]]
                self.matchability_head = PairDecoder(finest, 0, m_widths, ones, 1, 1)

    def train(self, mode: bool = True) -> DenseMatcher:
        super().train(mode)
        if not self.config.train_encoder:
            self.encoder.eval()
        return self

    # --- decoder transfer -------------------------------------------------------------------------------

    def decoder_state_dict(self) -> dict[str, torch.Tensor]:
        """Every weight but the encoder's (consensus, coarse decoder, refinement, matchability)."""
        return {k: v for k, v in self.state_dict().items() if not k.startswith("encoder.")}

    def load_decoder_state_dict(self, state: Mapping[str, torch.Tensor]) -> None:
        """Load :meth:`decoder_state_dict` of another model (with ``ucmd``, its encoder may differ).

        Raises:
            ConfigError: the weights do not fit (missing / unexpected keys, other shapes).
        """
        own = self.decoder_state_dict()
        missing = sorted(set(own) - set(state))
        unexpected = sorted(set(state) - set(own))
        wrong = sorted(k for k in own if k in state and tuple(state[k].shape) != tuple(own[k].shape))
        if missing or unexpected or wrong:
            raise ConfigError(
                f"decoder weights do not fit this dense matcher: missing {missing[:4]}, unexpected "
                f"{unexpected[:4]}, wrong shape {wrong[:4]} (a dgc decoder depends on the encoder's widths)"
            )
        self.load_state_dict(dict(state), strict=False)  # only the encoder's keys are left out

    # --- forward ----------------------------------------------------------------------------------------

    def coarse_correlation(
        self, source_features: torch.Tensor, target_features: torch.Tensor
    ) -> torch.Tensor:
        """The coarse decoder's correlation input from the stride-16 features.

        Args:
            source_features: ``(B, C, hs, ws)``.
            target_features: ``(B, C, ht, wt)``.

        Returns:
            ``(B, hc*wc, hc, wc)``: pooled, L2-normalised, correlated, [consensus,] ReLU + L2 over channels.
        """
        size = self.config.coarse_size
        src = feature_l2_norm(F.adaptive_avg_pool2d(source_features, size))
        tgt = feature_l2_norm(F.adaptive_avg_pool2d(target_features, size))
        corr4d = correlation_4d(src, tgt)
        if self.consensus is not None:
            corr4d = self.consensus(F.relu(corr4d))
        return feature_l2_norm(F.relu(corr4d_to_3d(corr4d)))

    def _refine_level(self, stride: int) -> nn.Module:
        return self.refine if self.config.decoder == "ucmd" else self.refine[str(stride)]

    def forward(self, source: torch.Tensor, target: torch.Tensor) -> DenseOutput:
        """Dense correspondences of each pair.

        Args:
            source: ``(B, 3, Hs, Ws)`` ImageNet-normalised source images.
            target: ``(B, 3, Ht, Wt)`` ImageNet-normalised target images (any size).

        Returns:
            :class:`DenseOutput`; ``correspondence`` is ``(B, 2, Ht, Wt)`` in source pixels.
        """
        for name, images in (("source", source), ("target", target)):
            if images.ndim != 4 or images.shape[1] != 3:
                raise ValueError(f"expected {name} images of shape (B, 3, H, W), got {tuple(images.shape)}")
        if source.shape[0] != target.shape[0]:
            raise ValueError(f"batch sizes differ: {source.shape[0]} and {target.shape[0]}")
        source_hw, target_hw = tuple(source.shape[-2:]), tuple(target.shape[-2:])
        with torch.set_grad_enabled(torch.is_grad_enabled() and self.config.train_encoder):
            src_maps = dict(zip(self.encoder.strides, self.encoder(_resize_images(source)), strict=True))
            tgt_maps = dict(zip(self.encoder.strides, self.encoder(_resize_images(target)), strict=True))
        corr = self.coarse_correlation(src_maps[COARSE_STRIDE], tgt_maps[COARSE_STRIDE])
        b, _, hc, wc = corr.shape
        grid = self.coarse_decoder(torch.cat([corr, corr.new_zeros(b, 2, hc, wc)], dim=1))
        grids = [grid]
        warped = tgt = grid
        for stride in self.level_strides[1:]:
            tgt = tgt_maps[stride]
            grid = F.interpolate(grid, size=tgt.shape[-2:], mode="bilinear", align_corners=False)
            warped = _sample(src_maps[stride], grid)
            extra = grid
            if self.config.local_radius:
                cost = local_correlation(feature_l2_norm(warped), feature_l2_norm(tgt), self.config.local_radius)
                extra = torch.cat([grid, cost], dim=1)
            update = self._refine_level(stride)(warped, tgt, extra)
            grid = grid + update if self.config.residual else update
            grids.append(grid)
        logits = confidence = None
        if self.matchability_head is not None:
            logits = F.interpolate(self.matchability_head(warped, tgt), size=target_hw, mode="bilinear",
                                   align_corners=False)
            confidence = torch.sigmoid(logits)
        return DenseOutput(
            grids=grids,
            level_strides=self.level_strides,
            correspondence=grid_to_correspondence(grid, source_hw, target_hw),
            matchability_logits=logits,
            confidence=confidence,
        )


def with_decoder_of(encoder_model: DenseMatcher, decoder_model: DenseMatcher) -> DenseMatcher:
    """A matcher with ``encoder_model``'s encoder and ``decoder_model``'s decoder (consensus, coarse decoder,
    refinement, matchability), neither retrained: UCMD's claim that one decoder serves other encoders.

    Both must use the ``ucmd`` decoder with the same decoder settings; the levels are the decoder model's
    (the encoder must offer them).

    Raises:
        ConfigError: the decoders differ in kind or settings, or the encoder lacks a level.
    """
    dec, enc = decoder_model.config, encoder_model.config
    if dec.decoder != "ucmd" or enc.decoder != "ucmd":
        raise ConfigError("only the universal decoder (ucmd) moves between encoders; a dgc decoder's widths are "
                          "its encoder's")
    config = dataclasses.replace(dec, backbone=enc.backbone, train_encoder=False)
    combined = DenseMatcher(config, load_weights=False)
    if combined.level_strides != decoder_model.level_strides:
        raise ConfigError(f"the encoder {enc.backbone.name} offers levels {combined.level_strides}, the decoder "
                          f"needs {decoder_model.level_strides}")
    combined.encoder.load_state_dict(encoder_model.encoder.state_dict())
    combined.load_decoder_state_dict(decoder_model.decoder_state_dict())
    return combined.eval()


__all__ = [
    "DenseMatcher",
    "DenseMatcherConfig",
    "DenseOutput",
    "correspondence_to_grid",
    "grid_to_correspondence",
    "internal_size",
    "with_decoder_of",
]
