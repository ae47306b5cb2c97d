"""Matcher configs by transform kind, the architecture stored in a checkpoint, and outputs as warps."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from visloc.errors import ConfigError, InputError
from visloc.geometry.warps import Warp
from visloc.models.backbones import BackboneConfig
from visloc.models.checkpoint import save_model
from visloc.models.cnngeometric import GeometricMatcher, TwoStageMatcher
from visloc.models.posenet import PoseNet, PoseNetConfig
from visloc.semantic.models import (
    TRANSFORMS,
    as_warp,
    build_matcher,
    matcher_config,
    model_config_of,
    network_name,
    tiny_matcher_config,
    transform_of,
)


@pytest.mark.parametrize("transform", TRANSFORMS)
def test_configs_build_the_matcher_of_their_kind(transform: str) -> None:
    config = tiny_matcher_config(transform, 64)
    assert transform_of(config) == transform
    model = build_matcher(config)
    assert isinstance(model, TwoStageMatcher if transform == "two_stage" else GeometricMatcher)
    assert network_name(config) == ("cnngeometric_two_stage" if transform == "two_stage" else "cnngeometric")
    with torch.no_grad():
        warp = as_warp(model.eval()(torch.rand(2, 3, 64, 64), torch.rand(2, 3, 64, 64)), config)
    assert isinstance(warp, Warp) and warp.kind == transform and warp.batch_size == 2
    assert all(t is None or t.dtype == torch.float32 for t in (warp.affine, warp.tps))


def test_unknown_transform_is_refused() -> None:
    with pytest.raises(ConfigError, match="unknown transform 'homography'"):
        matcher_config("homography")


def test_model_config_of_reads_the_architecture_of_a_checkpoint(tmp_path: Path) -> None:
    config = tiny_matcher_config("tps", 64)
    path = save_model(tmp_path / "model.pt", build_matcher(config), config)
    assert model_config_of(path) == config
    tiny = BackboneConfig("tiny", "none", allow_random_init=True)
    posenet = PoseNet(PoseNetConfig(backbone=tiny, hidden=8))
    other = save_model(tmp_path / "posenet.pt", posenet, posenet.config)
    with pytest.raises(InputError, match=r"posenet\.pt: holds a 'posenet' network, not a semantic matcher"):
        model_config_of(other)
