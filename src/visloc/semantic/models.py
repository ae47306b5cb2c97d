"""The semantic matchers by transform kind: configs, builders, and their output as a :class:`Warp`.

A matcher is a CNNGeometric :class:`~visloc.models.cnngeometric.GeometricMatcher` (``"affine"`` or
``"tps"``) or WeakAlign's two-stage :class:`~visloc.models.cnngeometric.TwoStageMatcher`
(``"two_stage"``: affine, then TPS). Its output for ``(source A, target B)`` maps B's normalised
coordinates to A's (:mod:`visloc.geometry.warps`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..errors import ConfigError, InputError
from ..geometry.warps import Warp
from ..models.backbones import BackboneConfig
from ..models.checkpoint import config_from_dict, read_checkpoint
from ..models.cnngeometric import (
    GeometricMatcher,
    GeometricMatcherConfig,
    RegressorConfig,
    TwoStageMatcher,
    TwoStageMatcherConfig,
)
from ..models.registry import networks

#: Transform kinds of the matcher (``two_stage``: WeakAlign's affine then TPS).
TRANSFORMS = ("affine", "tps", "two_stage")
#: Names of the matchers in :data:`~visloc.models.registry.networks`.
MATCHER_NETWORKS = ("cnngeometric", "cnngeometric_two_stage")

MatcherConfig = GeometricMatcherConfig | TwoStageMatcherConfig


def transform_of(config: MatcherConfig) -> str:
    """``"affine"``, ``"tps"`` or ``"two_stage"``."""
    return "two_stage" if isinstance(config, TwoStageMatcherConfig) else config.kind


def network_name(config: MatcherConfig) -> str:
    """The :data:`~visloc.models.registry.networks` name of the matcher of ``config``."""
    return "cnngeometric_two_stage" if isinstance(config, TwoStageMatcherConfig) else "cnngeometric"


def matcher_config(
    transform: str = "affine",
    backbone: BackboneConfig = BackboneConfig(name="resnet34"),
    image_size: int = 240,
    train_fe: bool = False,
    regressor: RegressorConfig = RegressorConfig(),
    reg_factor: float = 0.0,
) -> MatcherConfig:
    """The matcher config of a transform kind (one regressor config for both stages of ``two_stage``).

    Raises:
        ConfigError: unknown transform, or a regressor that does not fit the feature size.
    """
    common = {"backbone": backbone, "image_size": image_size, "train_fe": train_fe, "reg_factor": reg_factor}
    if transform == "two_stage":
        return TwoStageMatcherConfig(affine_regressor=regressor, tps_regressor=regressor, **common)
    if transform not in TRANSFORMS:
        raise ConfigError(f"unknown transform {transform!r}; known: {', '.join(TRANSFORMS)}")
    return GeometricMatcherConfig(kind=transform, regressor=regressor, **common)


def tiny_matcher_config(transform: str = "affine", image_size: int = 128, **overrides: Any) -> MatcherConfig:
    """A CPU-sized matcher: the ``tiny`` backbone trained from scratch (``train_fe``), cut at stride 16,
    and a regressor that fits ``image_size / 16`` features (kernels 5, 3 for 8-11 px features; 3 below)."""
    side = -(-image_size // 16)
    kernels = (7, 5) if side >= 13 else (5, 3) if side >= 8 else (3,) if side >= 3 else (1,)
    channels = (128, 64)[: len(kernels)]
    options: dict[str, Any] = {
        "backbone": BackboneConfig("tiny", "none", allow_random_init=True),
        "train_fe": True,
        "regressor": RegressorConfig(kernels, channels),
        **overrides,
    }
    return matcher_config(transform, image_size=image_size, **options)


def model_config_of(path: str | Path) -> MatcherConfig:
    """The architecture stored in a ``model.pt`` (:func:`~visloc.models.checkpoint.save_model`).

    Raises:
        InputError: not a checkpoint of a semantic matcher.
    """
    checkpoint = read_checkpoint(path)
    options = dict(checkpoint["config"])
    name = options.pop("model")
    if name not in MATCHER_NETWORKS:
        raise InputError(path, f"holds a {name!r} network, not a semantic matcher (cnngeometric)")
    try:
        return config_from_dict(networks.entry(name).config_cls, options)
    except ConfigError as e:
        raise InputError(path, f"checkpoint config cannot be used: {e}") from None


def build_matcher(config: MatcherConfig, load_weights: bool = True) -> nn.Module:
    """:class:`GeometricMatcher` or :class:`TwoStageMatcher` of ``config``."""
    if isinstance(config, TwoStageMatcherConfig):
        return TwoStageMatcher(config, load_weights=load_weights)
    return GeometricMatcher(config, load_weights=load_weights)


def as_warp(output: torch.Tensor | Warp, config: MatcherConfig) -> Warp:
    """A matcher's output as a float32 :class:`Warp` (theta tensors ``(B, 6 | 18)`` of single-stage models
    wrapped)."""
    if isinstance(output, Warp):
        return Warp(affine=None if output.affine is None else output.affine.float(),
                    tps=None if output.tps is None else output.tps.float(), reg_factor=output.reg_factor)
    assert isinstance(config, GeometricMatcherConfig)
    return Warp.from_theta(output.float(), config.kind, config.reg_factor)


__all__ = [
    "MATCHER_NETWORKS",
    "TRANSFORMS",
    "MatcherConfig",
    "as_warp",
    "build_matcher",
    "matcher_config",
    "model_config_of",
    "network_name",
    "tiny_matcher_config",
    "transform_of",
]
