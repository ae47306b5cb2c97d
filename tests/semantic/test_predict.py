"""Predictions of the packaged semantic matcher, and the matcher specs ``identity`` / ``shipped`` / a file."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from visloc.errors import InputError
from visloc.geometry.warps import Warp
from visloc.models.backbones import BackboneConfig
from visloc.models.checkpoint import save_model
from visloc.models.cnngeometric import GeometricMatcher, TwoStageMatcher
from visloc.models.posenet import PoseNet, PoseNetConfig
from visloc.semantic.data import SyntheticWarpConfig, SyntheticWarpPairs
from visloc.semantic.predict import SHIPPED_MODEL, load_matcher
from visloc.settings import shipped_model


def _truth(theta: torch.Tensor, kind: str) -> Warp:
    """The warp of synthetic theta ``(B, 6 | 18 | 24)`` (two-stage: the affine's 6, then the TPS's 18)."""
    if kind == "two_stage":
        return Warp(affine=theta[:, :6], tps=theta[:, 6:])
    return Warp.from_theta(theta, kind)


def _grid_error(pred: Warp, truth: Warp, n: int = 20) -> float:
    """Mean distance between where the two warps send an ``n`` x ``n`` grid of target points."""
    axis = torch.linspace(-1.0, 1.0, n)
    grid = torch.stack(torch.meshgrid(axis, axis, indexing="xy"), dim=-1).reshape(1, -1, 2)
    grid = grid.expand(truth.batch_size, -1, -1)
    return float((pred.target_to_source(grid) - truth.target_to_source(grid)).norm(dim=-1).mean())


def test_shipped_model_maps_a_synthetic_warp_closer_to_the_truth_than_the_identity() -> None:
    path = shipped_model(SHIPPED_MODEL)
    assert path.is_file(), "run scripts/train_shipped_semantic.sh"
    assert path.stat().st_size < 8 * 1024 * 1024
    model = load_matcher("shipped")
    assert isinstance(model, (GeometricMatcher, TwoStageMatcher))
    metrics = json.loads(path.with_suffix(".json").read_text())
    assert metrics["command"] == "scripts/train_shipped_semantic.sh"
    assert metrics["parameters"] == sum(p.numel() for p in model.parameters())
    config = model.config
    kind = "two_stage" if isinstance(model, TwoStageMatcher) else config.kind
    size = (config.image_size, config.image_size)
    data = SyntheticWarpPairs(None, SyntheticWarpConfig(kind=kind, output_size=size), length=6, seed=12345)
    batch = [data[i] for i in range(6)]
    source = torch.stack([b["source"] for b in batch])
    target = torch.stack([b["target"] for b in batch])
    truth = _truth(torch.stack([b["theta"] for b in batch]), kind)
    with torch.no_grad():
        out = model(source, target)
    pred = out if isinstance(out, Warp) else Warp.from_theta(out, config.kind)
    identity = Warp.from_theta(torch.tensor([[1.0, 0, 0, 0, 1, 0]]).expand(6, 6), "affine")
    assert _grid_error(pred, truth) < _grid_error(identity, truth)


def test_load_matcher_specs(tmp_path: Path) -> None:
    assert load_matcher("identity") is None
    with pytest.raises(InputError, match=r"absent\.pt: checkpoint not found"):
        load_matcher(tmp_path / "absent.pt")
    tiny = BackboneConfig("tiny", "none", allow_random_init=True)
    posenet = PoseNet(PoseNetConfig(backbone=tiny, hidden=8))
    path = save_model(tmp_path / "posenet.pt", posenet, posenet.config)
    with pytest.raises(InputError, match=r"posenet\.pt: holds a PoseNet, not a semantic matcher"):
        load_matcher(path)
