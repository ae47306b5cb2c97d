"""Relative-pose training end to end on the tiny world (tiny encoder, 64 px crops)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import torch
import typer.main
from typer.testing import CliRunner

from visloc.errors import ConfigError, InputError
from visloc.models.backbones import BackboneConfig
from visloc.models.checkpoint import load_model
from visloc.models.relpose import RelPoseConfig, RelPoseNet
from visloc.training.checkpoint import load_checkpoint
from visloc.training.cli import train_app
from visloc.training.pairs import PairSamplingConfig, read_pair_file
from visloc.training.relpose import RELPOSE_OPTIONS, TrainRelPoseConfig, tiny_relpose_config, train_relpose

#: Dropout off and a narrow head, so that a few epochs on 48 pairs reliably lower the loss.
MODEL = RelPoseConfig(BackboneConfig("tiny", "none", allow_random_init=True), hidden=256, dropout=0.0)
FAST = tiny_relpose_config(
    model=MODEL, epochs=4, lr=1e-3, milestones=(3,), resize=72, crop=64, batch_size=8, num_workers=0,
    pairs=PairSamplingConfig(max_pairs_per_scene=24), val_pairs_per_scene=8, cache_images=True,
    progress=False, seed=1,
)


@pytest.fixture(scope="module")
def run(tiny_world: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("relpose") / "run"
    return out, train_relpose(tiny_world, out, FAST)


def test_training_lowers_the_loss(run) -> None:
    _, metrics = run
    rows = metrics["epochs"]
    assert len(rows) == 4
    assert rows[-1]["train_loss"] < rows[0]["train_loss"]
    assert min(r["val_loss"] for r in rows[1:]) < rows[0]["val_loss"]
    assert [r["lr"] for r in rows] == pytest.approx([1e-3, 1e-3, 1e-3, 1e-4])
    # validation reports the relative-pose errors a user reads, not only a loss
    assert all(r["val_median_cm"] >= 0 and 0 <= r["val_median_deg"] <= 180 for r in rows)


def test_relative_pose_errors_by_hand() -> None:
    from visloc.training.relpose import relative_pose_errors

    half = np.sqrt(0.5)
    t_pred = torch.tensor([[0.03, 0.04, 0.0], [1.0, 0.0, 0.0]])
    q_pred = torch.tensor([[1.0, 0.0, 0.0, 0.0], [2 * half, 0.0, 0.0, 2 * half]])  # unnormalised: 90 deg about z

    def model(img_db, img_query):
        return t_pred, q_pred

    batch = [None, None, torch.tensor([[0.0, 0.0, 0.0], [1.0, 0.0, 0.0]]), torch.tensor([[-1.0, 0, 0, 0], [1.0, 0, 0, 0]])]
    errors = relative_pose_errors(model, batch)
    np.testing.assert_allclose(errors["cm"].numpy(), [5.0, 0.0], atol=1e-5)
    np.testing.assert_allclose(errors["deg"].numpy(), [0.0, 90.0], atol=1e-3)  # q and -q are one rotation


def test_outputs_and_final_model(run) -> None:
    out, metrics = run
    assert {p.name for p in out.iterdir()} >= {
        "pairs_train.txt", "pairs_train.txt.json", "pairs_val.txt", "pairs_val.txt.json",
        "last.pt", "best.pt", "model.pt", "metrics.json",
    }
    assert metrics["pairs"] == {"train": 48, "val": 16}
    on_disk = json.loads((out / "metrics.json").read_text())
    assert on_disk["task"] == "relpose" and on_disk["parameters"] == metrics["parameters"] > 0
    assert on_disk["config"]["model"]["backbone"]["name"] == "tiny"
    assert len(read_pair_file(out / "pairs_train.txt", "camera")) == 48

    model = load_model(out / "model.pt")
    assert isinstance(model, RelPoseNet) and model.config == MODEL
    best = load_checkpoint(out / "best.pt")
    assert best["epoch"] == metrics["best_epoch"]
    for k, v in model.state_dict().items():
        assert torch.equal(v, best["model"][k]), k
    raw = torch.load(out / "model.pt", map_location="cpu", weights_only=True)
    assert raw["metrics"]["best_epoch"] == metrics["best_epoch"]


def test_resume_gives_the_same_weights_as_an_uninterrupted_run(tiny_world: Path, tmp_path: Path) -> None:
    config = RELPOSE_OPTIONS.replace(FAST, epochs=2, pairs=PairSamplingConfig(max_pairs_per_scene=12),
                                     val_pairs_per_scene=4)
    train_relpose(tiny_world, tmp_path / "straight", config)
    train_relpose(tiny_world, tmp_path / "split", RELPOSE_OPTIONS.replace(config, epochs=1))
    last = tmp_path / "split" / "last.pt"
    assert load_checkpoint(last)["epoch"] == 1
    # as written by an older visloc: the loop and transform settings at the top level of the config (the
    # layout before they were nested), and before two settings existed (they are at their defaults here)
    ckpt = torch.load(last, map_location="cpu", weights_only=False)
    saved = ckpt["config"]
    assert set(saved["loop"]) >= {"epochs", "lr", "seed"} and set(saved["transform"]) >= {"crop", "random_crop"}
    flat = {k: v for k, v in saved.items() if k not in ("loop", "transform")}
    flat.update(saved["loop"], **saved["transform"])
    del flat["model"]["correlation_grid"], flat["random_crop"]
    ckpt["config"] = flat
    torch.save(ckpt, last)
    train_relpose(tiny_world, tmp_path / "split", config, resume=True)
    a = load_checkpoint(tmp_path / "straight" / "last.pt")
    b = load_checkpoint(tmp_path / "split" / "last.pt")
    assert b["epoch"] == 2
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k
    assert a["optimizer"]["state"][0]["exp_avg"].equal(b["optimizer"]["state"][0]["exp_avg"])
    assert [r["train_loss"] for r in a["history"]] == [r["train_loss"] for r in b["history"]]


def test_missing_imagenet_weights_fail_fast(tiny_world: Path, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(torch.hub, "_hub_dir", str(tmp_path / "empty_hub"))
    config = dataclasses.replace(FAST, model=RelPoseConfig(BackboneConfig("resnet18", "imagenet")))
    out = tmp_path / "run"
    with pytest.raises(InputError, match="not in the torch hub cache"):
        train_relpose(tiny_world, out, config)
    assert not out.exists(), "nothing is written before the model exists"
    result = CliRunner().invoke(train_app, ["relpose", "--data", str(tiny_world), "--out", str(out),
                                            "--backbone", "resnet18", "--weights", "imagenet"])
    assert result.exit_code != 0 and isinstance(result.exception, InputError)


def test_cli_relpose_with_an_excluded_scene(tiny_world: Path, tmp_path: Path) -> None:
    out = tmp_path / "cli"
    args = ["relpose", "--data", str(tiny_world), "--out", str(out), "--backbone", "tiny", "--weights", "none",
            "--allow-random-init", "--hidden", "64", "--epochs", "1", "--resize", "40", "--crop", "32",
            "--pairs-per-scene", "6", "--val-pairs-per-scene", "4", "--batch-size", "4", "--num-workers", "0",
            "--milestones", "", "--exclude-scene", "kitchen", "--translation-frame", "world", "--no-progress",
            "--cache-images"]
    result = CliRunner().invoke(train_app, args)
    assert result.exit_code == 0, result.output
    assert "best epoch 1" in result.output
    pairs = read_pair_file(out / "pairs_train.txt", "world")
    assert pairs and all(not p.db.startswith("kitchen/") for p in pairs)
    assert all(not p.db.startswith("kitchen/") for p in read_pair_file(out / "pairs_val.txt"))
    config = json.loads((out / "metrics.json").read_text())["config"]
    assert config["exclude_scenes"] == ["kitchen"] and config["loop"]["milestones"] == []
    assert load_model(out / "model.pt").config.translation_frame == "world"
    # a finished run is not replaced by accident: a new run into the folder needs --resume or --overwrite
    before = (out / "model.pt").read_bytes()
    again = CliRunner().invoke(train_app, args)
    assert isinstance(again.exception, InputError) and "--overwrite" in str(again.exception)
    assert (out / "model.pt").read_bytes() == before
    assert CliRunner().invoke(train_app, [*args, "--overwrite"]).exit_code == 0
    both = CliRunner().invoke(train_app, [*args, "--overwrite", "--resume"])
    assert isinstance(both.exception, InputError) and "contradict" in str(both.exception)


def test_every_cli_option_is_explained() -> None:
    group = typer.main.get_command(train_app)
    for name in ("relpose", "posenet"):
        command = group.commands[name]  # type: ignore[attr-defined]
        assert command.help
        for param in command.params:
            assert getattr(param, "help", None), f"{name} --{param.name} has no help"


def test_config_defaults_follow_the_publication() -> None:
    config = TrainRelPoseConfig()
    t, loop = config.transform, config.loop
    assert (t.resize, t.crop, t.jitter, t.random_crop, config.swap_prob, config.beta) == (256, 224, 0.4, True, 0.5, 1.0)
    assert (loop.batch_size, loop.epochs, loop.lr, loop.milestones, loop.seed) == (64, 30, 1e-3, (20,), 333)
    assert config.model.backbone.name == "resnet34" and config.model.head == "original"
    assert config.to_dict()["task"] == "relpose"


@pytest.mark.slow
def test_trained_model_beats_the_mean_label_on_validation_pairs(tiny_world: Path, tmp_path: Path) -> None:
    """Learning, not just fitting: after 16 epochs on every in-band pair of the tiny world (original
    head, dropout 0.5), the validation loss is well below that of always predicting the mean label."""
    import numpy as np

    config = tiny_relpose_config(epochs=16, lr=1e-3, milestones=(12,), resize=72, crop=64, batch_size=16,
                                 num_workers=0, cache_images=True, progress=False, seed=1)
    metrics = train_relpose(tiny_world, tmp_path, config)
    train, val = read_pair_file(tmp_path / "pairs_train.txt"), read_pair_file(tmp_path / "pairs_val.txt")
    t_mean = np.mean([p.t for p in train], axis=0)
    q_mean = np.mean([p.q for p in train], axis=0)
    baseline = np.mean([np.mean((np.array(p.t) - t_mean) ** 2) + np.mean((np.array(p.q) - q_mean) ** 2)
                        for p in val])
    assert metrics["best_loss"] < 0.8 * baseline


def test_holdout_validation_never_trains_on_its_queries(tiny_world: Path) -> None:
    from visloc.datasets import load_frames
    from visloc.training.relpose import holdout_split

    frames = load_frames(tiny_world, split="train")
    train, val = holdout_split(frames, every=4)
    assert not {f.name for f in train.frames} & {f.name for f in val.frames}
    assert len(train.frames) + len(val.frames) == len(frames.frames)
    # frame 2, 6, 10 of every sequence (every 4th, starting at every // 2)
    assert {int(f.name.rsplit("frame-", 1)[1][:6]) for f in val.frames} == {2, 6, 10}
    with pytest.raises(ConfigError):
        holdout_split(frames, every=1)
