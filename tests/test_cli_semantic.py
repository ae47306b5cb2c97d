"""``visloc semantic weak-pairs``, ``visloc train semantic`` and ``visloc evaluate semantic`` through typer."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import typer.main
from typer.testing import CliRunner

from visloc.cli import app
from visloc.datasets.semantic import pf_willow_pairs, read_pairs_csv, read_pf_willow, write_pairs_csv
from visloc.models.checkpoint import load_model
from visloc.models.cnngeometric import TwoStageMatcher

runner = CliRunner()


@pytest.fixture(scope="module")
def willow(tmp_path_factory: pytest.TempPathFactory, pf_willow_factory) -> Path:
    return pf_willow_factory(tmp_path_factory.mktemp("cli_willow") / "willow", ("bird(A)", "cup(B)", "cup(C)"),
                             seed=1)


def invoke(*args: str):
    result = runner.invoke(app, [str(a) for a in args])
    assert result.exit_code == 0, (result.output, result.exception)
    return result


def test_weak_pairs_writes_flips_and_capped_random_pairs_without_test_leaks(willow: Path, tmp_path: Path) -> None:
    images = read_pf_willow(willow)
    test = [p for p in pf_willow_pairs(images) if p.category == "cup(B)"][:1]  # im0 -> im1
    write_pairs_csv(tmp_path / "test.csv", test, willow)
    out = tmp_path / "weak.csv"
    result = invoke("semantic", "weak-pairs", "--data", willow, "--out", out, "--class", "cup(B)", "--class",
                    "bird(A)", "--max-per-category", "2", "--test-pairs", tmp_path / "test.csv")
    pairs = read_pairs_csv(out, willow, images)
    # per class: 3 flips + min(2, C(3,2) minus the leaking test pair)
    assert len(pairs) == 10 and "6 flip pairs, 4 random pairs" in result.output
    assert {p.category for p in pairs} == {"cup(B)", "bird(A)"}
    leak = {test[0].source.path, test[0].target.path}
    assert all({p.source.path, p.target.path} != leak for p in pairs)
    bad = runner.invoke(app, ["semantic", "weak-pairs", "--data", str(willow), "--out", str(out), "--class", "dog"])
    assert bad.exit_code != 0 and "unknown class" in bad.output


def test_train_pretrain_then_weak_then_evaluate(willow: Path, tmp_path: Path) -> None:
    pre, weak = tmp_path / "pre", tmp_path / "weak"
    photos = sorted(willow.rglob("*.png"))[:2]
    invoke("train", "semantic", "--out", pre, "--stage", "pretrain", "--transform", "two_stage", "--backbone", "tiny",
           "--image-size", "64", "--synthetic-image", photos[0], "--synthetic-image", photos[1],
           "--synthetic-length", "2", "--synthetic-val-length", "2", "--batch-size", "2", "--epochs", "1",
           "--device", "cpu", "--no-progress")
    model = load_model(pre / "model.pt")
    assert isinstance(model, TwoStageMatcher) and model.config.image_size == 64 and model.config.train_fe
    csv = tmp_path / "weak.csv"
    invoke("semantic", "weak-pairs", "--data", willow, "--out", csv, "--class", "cup(C)")
    result = invoke("train", "semantic", "--out", weak, "--stage", "weak", "--init", pre / "model.pt",
                    "--data", willow, "--pairs", csv, "--loss", "pub2_chamfer", "--batch-size", "4", "--epochs", "1",
                    "--lr", "1e-4", "--device", "cpu", "--no-progress")
    assert "best epoch 1" in result.output
    metrics = json.loads((weak / "metrics.json").read_text())
    assert metrics["stage"] == "weak" and metrics["model"]["network"] == "cnngeometric_two_stage"
    assert metrics["loss"]["chamfer"] == 1.0 and metrics["pairs"]["train"] + metrics["pairs"]["val"] == 6

    out = tmp_path / "eval.json"
    result = invoke("evaluate", "semantic", "--data", willow, "--model", weak / "model.pt", "--out", out,
                    "--class", "bird(A)", "--alpha", "0.1", "--figures", tmp_path / "fig", "--num-figures", "1",
                    "--device", "cpu")
    saved = json.loads(out.read_text())
    assert saved["num_pairs"] == 6 and set(saved["summary"]) == {"bbox", "image"}
    assert set(saved["summary"]["bbox"]["0.1"]["per_class"]) == {"bird(A)"}
    assert len(list((tmp_path / "fig").glob("*.png"))) == 1 and "PCK@0.1" in result.output


def test_evaluate_identity_matches_the_hand_computed_pck(willow: Path, tmp_path: Path) -> None:
    out = tmp_path / "identity.json"
    invoke("evaluate", "semantic", "--data", willow, "--model", "identity", "--out", out, "--alpha", "0.2",
           "--normalisation", "bbox")
    saved = json.loads(out.read_text())
    pairs = pf_willow_pairs(read_pf_willow(willow))
    assert saved["num_pairs"] == len(pairs) == 18
    per_pair = []
    for row, pair in zip(saved["pairs"], pairs, strict=True):
        (hs, ws), (ht, wt) = pair.source.image_size_hw, pair.target.image_size_hw
        pred = pair.target_keypoints * np.array([(ws - 1) / (wt - 1), (hs - 1) / (ht - 1)])
        src = pair.source_keypoints
        expected = np.mean(np.linalg.norm(pred - src, axis=1) <= 0.2 * (src.max(0) - src.min(0)).max())
        assert row["pck"]["bbox"]["0.2"] == pytest.approx(expected)
        per_pair.append(expected)
    assert saved["summary"]["bbox"]["0.2"]["mean_over_pairs"] == pytest.approx(np.mean(per_pair))


def test_every_semantic_cli_option_is_explained() -> None:
    group = typer.main.get_command(app)
    ctx = typer.Context(group)
    train = group.get_command(ctx, "train")  # imported on first use
    commands = [train.get_command(ctx, "semantic"), group.commands["evaluate"].commands["semantic"],
                group.commands["semantic"].commands["weak-pairs"]]
    for command in commands:
        assert command.help
        for param in command.params:
            assert getattr(param, "help", None), f"{command.name} --{param.name} has no help"


def test_the_shipped_models_numbers_are_marked_in_sample(willow: Path, tmp_path: Path) -> None:
    out = tmp_path / "shipped.json"
    output = invoke("evaluate", "semantic", "--data", willow, "--model", "shipped", "--out", out, "--class",
                    "bird(A)").output
    assert "in-sample" in output and "in-sample" in json.loads(out.read_text())["note"]
    identity = invoke("evaluate", "semantic", "--data", willow, "--model", "identity", "--out", tmp_path / "i.json")
    assert "in-sample" not in identity.output
