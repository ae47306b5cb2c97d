"""The model shipped inside the package: loadable offline, small, its metrics recorded next to it."""

from __future__ import annotations

import json

import pytest

from visloc.models.checkpoint import load_model, read_checkpoint
from visloc.models.relpose import RelPoseNet
from visloc.retrieval.relpose import DEFAULT_MODEL
from visloc.settings import shipped_model


def test_shipped_relpose_model_loads_offline_and_is_small() -> None:
    path = shipped_model(DEFAULT_MODEL)
    assert path.is_file(), "run scripts/train_shipped_relpose.sh"
    assert path.stat().st_size < 8 * 1024 * 1024
    model = load_model(path)
    assert isinstance(model, RelPoseNet) and model.config.backbone.name == "tiny"
    checkpoint = read_checkpoint(path)
    assert checkpoint["metrics"]["preprocess"] == {"resize": 128, "crop": 112}
    assert {"visloc", "torch"} <= set(checkpoint["versions"])


def test_shipped_metrics_sit_next_to_the_weights() -> None:
    metrics = json.loads(shipped_model(DEFAULT_MODEL).with_suffix(".json").read_text())
    assert metrics["command"] == "scripts/train_shipped_relpose.sh"
    assert metrics["parameters"] == sum(p.numel() for p in load_model(shipped_model(DEFAULT_MODEL)).parameters())
    epochs = metrics["per_epoch"]
    assert len(epochs) == metrics["epochs"] and epochs[-1]["val_loss"] < epochs[0]["val_loss"]
    assert metrics["best_val_loss"] == pytest.approx(min(e["val_loss"] for e in epochs))
