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


def test_shipped_dense_model_loads_offline_is_small_and_beats_identity_on_a_known_warp() -> None:
    """The default model of ``--matcher dense``: its metrics next to it, and on a real photograph warped by a
    known homography (truth computed independently) its map is much closer than "nothing moved"."""
    import cv2
    import numpy as np
    import skimage.data
    import torch

    from visloc.geometry.flow import homography_map
    from visloc.matching.dense import DenseNetworkMatcher
    from visloc.models.dense import DenseMatcher

    path = shipped_model("dense_tiny_world.pt")
    assert path.is_file(), "run scripts/train_shipped_dense.sh"
    assert path.stat().st_size < 8 * 1024 * 1024
    model = load_model(path)
    assert isinstance(model, DenseMatcher) and model.config.decoder == "dgc" and model.config.residual
    checkpoint = read_checkpoint(path)
    size = checkpoint["metrics"]["preprocess"]["image_size"]
    metrics = json.loads(path.with_suffix(".json").read_text())
    assert metrics["command"] == "scripts/train_shipped_dense.sh" and metrics["image_size"] == size
    assert metrics["parameters"] == sum(p.numel() for p in model.parameters())
    assert len(metrics["per_epoch"]) == metrics["epochs"]

    # one of scikit-image's photographs (the training draws random warps of them), under a fixed warp:
    # 6 degrees of rotation, a 25 px shift and some perspective
    photo = np.ascontiguousarray(skimage.data.coffee()[::2, ::2])  # (200, 300, 3)
    h, w = photo.shape[:2]
    a = np.deg2rad(6.0)
    H_st = np.array([[np.cos(a), -np.sin(a), 25.0], [np.sin(a), np.cos(a), 15.0], [1e-4, 5e-5, 1.0]])
    target = cv2.warpPerspective(photo, H_st, (w, h), flags=cv2.INTER_LINEAR)
    truth = homography_map(np.linalg.inv(H_st), (h, w), torch.float32)  # target pixel -> source pixel
    inside = (truth[0] > 8) & (truth[0] < w - 9) & (truth[1] > 8) & (truth[1] < h - 9)
    dense = DenseNetworkMatcher(path)(photo, target)
    ys, xs = torch.meshgrid(torch.arange(h, dtype=torch.float32), torch.arange(w, dtype=torch.float32),
                            indexing="ij")
    identity_err = torch.linalg.vector_norm(torch.stack([xs, ys]) - truth, dim=0)[inside].mean()
    err = torch.linalg.vector_norm(dense.map - truth, dim=0)[inside].mean()
    assert float(err) < 0.6 * float(identity_err), (float(err), float(identity_err))  # measured: 8.3 vs 30.2 px
