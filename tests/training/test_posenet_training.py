"""PoseNet training on one scene of the tiny world (tiny encoder, 64 px crops)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from visloc.errors import ConfigError
from visloc.models.backbones import BackboneConfig
from visloc.models.checkpoint import load_model
from visloc.models.posenet import PoseNet, PoseNetConfig
from visloc.training.checkpoint import load_checkpoint
from visloc.training.cli import train_app
from visloc.training.posenet import tiny_posenet_config, train_posenet

MODEL = PoseNetConfig(BackboneConfig("tiny", "none", allow_random_init=True), hidden=128, dropout=0.0)
FAST = tiny_posenet_config(model=MODEL, epochs=3, lr=3e-3, milestones=(), resize=72, crop=64, batch_size=8,
                           num_workers=0, beta=10.0, cache_images=True, progress=False, seed=2)


def test_posenet_trains_on_one_scene(tiny_world: Path, tiny_world_config, tmp_path: Path) -> None:
    out = tmp_path / "posenet"
    metrics = train_posenet(tiny_world, out, "office", FAST)
    rows = metrics["epochs"]
    assert len(rows) == 3
    assert rows[-1]["train_loss"] < rows[0]["train_loss"]
    # "holdout" validation: frames 5, 15, ... of each training sequence are held out, never trained on
    n = tiny_world_config.frames_per_train_traversal
    held = tiny_world_config.train_traversals * len(range(FAST.val_every // 2, n, FAST.val_every))
    total = tiny_world_config.train_traversals * n
    assert metrics["images"] == {"train": total - held, "val": held} and metrics["scene"] == "office"
    assert load_model(out / "model.pt") is not None
    on_disk = json.loads((out / "metrics.json").read_text())
    assert on_disk["config"]["scene"] == "office" and on_disk["config"]["task"] == "posenet"
    model = load_model(out / "model.pt")
    assert isinstance(model, PoseNet) and model.config == MODEL
    best = load_checkpoint(out / "best.pt")["model"]
    assert all(torch.equal(v, best[k]) for k, v in model.state_dict().items())


def test_unknown_scene_is_an_error(tiny_world: Path, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="unknown scene 'attic'"):
        train_posenet(tiny_world, tmp_path / "x", "attic", FAST)


def test_cli_posenet(tiny_world: Path, tmp_path: Path) -> None:
    out = tmp_path / "cli"
    args = ["posenet", "--data", str(tiny_world), "--out", str(out), "--scene", "kitchen", "--backbone", "tiny",
            "--weights", "none", "--allow-random-init", "--hidden", "32", "--epochs", "1", "--resize", "40",
            "--crop", "32", "--batch-size", "8", "--num-workers", "0", "--val-split", "none", "--no-progress"]
    result = CliRunner().invoke(train_app, args)
    assert result.exit_code == 0, result.output
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["best_metric"] == "train_loss" and metrics["images"]["val"] == 0
