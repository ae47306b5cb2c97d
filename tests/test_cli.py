"""The command line, end to end on a tiny embedded world (every command calls the public functions)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from visloc.cli import app
from visloc.demo import run_demo

from .localization.conftest import TINY_MAP, TINY_WORLD

pytestmark = pytest.mark.e2e
runner = CliRunner()


def _ok(args: list[str]) -> str:
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output + repr(result.exception)
    return result.output


def test_world_map_localize_evaluate(tmp_path: Path) -> None:
    world = tmp_path / "world"
    sets = [f"{k}={getattr(TINY_WORLD, k)}" for k in ("train_traversals", "frames_per_train_traversal",
                                                        "frames_per_test_traversal", "width", "height", "focal")]
    _ok(["world", "make", str(world), "--scenes", "2", "--seed", "3", *[arg for s in sets for arg in ("--set", s)]])
    assert json.loads((world / "dataset.json").read_text())["depth_registered"] is True
    _ok(["map", "build", str(world), "--out", str(tmp_path / "map"), "--extractor-set", "max_keypoints=1024"])
    _ok(["localize", str(tmp_path / "map"), str(world), "--out", str(tmp_path / "poses.txt")])
    out = _ok(["evaluate", "localization", str(tmp_path / "poses.txt"), "--gt", str(world),
               "--report", str(tmp_path / "report"), "--map", str(tmp_path / "map")])
    results = json.loads((tmp_path / "results.json").read_text())
    assert set(results["scenes"]) == {"kitchen", "office"}
    assert results["overall"]["5cm_5deg"] >= 0.9 and "overall" in out
    assert (tmp_path / "report" / "report.html").is_file()


def test_bad_input_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    result = runner.invoke(app, ["map", "build", str(tmp_path / "empty"), "--out", str(tmp_path / "map")])
    assert result.exit_code != 0
    assert "empty" in str(result.exception) and str(tmp_path / "empty") in str(result.exception)


def test_models_lists_registered_components() -> None:
    out = _ok(["models"])
    assert "sift" in out and "aliked" in out and "vlad" in out and "nn" in out


def test_demo_writes_results_and_report(tmp_path: Path) -> None:
    outputs = run_demo(tmp_path / "demo", TINY_WORLD, TINY_MAP, progress=False)
    results = json.loads((tmp_path / "demo" / "results.json").read_text())
    for scene, stats in results["scenes"].items():
        assert stats["median_t_m"] < 0.01 and stats["median_R_deg"] < 0.3, scene
    html = outputs.report.read_text()
    assert "topview_kitchen.png" in html and "retrieval_" in html and "matches_" in html
    for src in (tmp_path / "demo" / "figures").glob("*.png"):
        assert src.stat().st_size > 1000
