"""The command line, end to end on a tiny embedded world (every command calls the public functions)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from visloc.cli import app
from visloc.demo import run_demo

pytestmark = pytest.mark.e2e
runner = CliRunner()


def _ok(args: list[str]) -> str:
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output + repr(result.exception)
    return result.output


def test_world_map_localize_evaluate(tiny_world_config, tmp_path: Path) -> None:
    world = tmp_path / "world"
    sets = [f"{k}={getattr(tiny_world_config, k)}" for k in ("train_traversals", "frames_per_train_traversal",
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
    assert "pose estimator: essential, pnp, relpose, unified" in out
    from visloc.models.backbones import backbones
    from visloc.models.checkpoint import networks

    assert f"network: {', '.join(networks.names())}" in out and "dense" in networks.names()
    assert f"backbone: {', '.join(backbones.names())}" in out and "vgg16" in backbones.names()


def test_demo_writes_results_and_report(tiny_world_config, tiny_map_config, tmp_path: Path) -> None:
    outputs = run_demo(tmp_path / "demo", tiny_world_config, tiny_map_config, progress=False)
    results = json.loads((tmp_path / "demo" / "results.json").read_text())
    for scene, stats in results["scenes"].items():
        assert stats["median_t_m"] < 0.01 and stats["median_R_deg"] < 0.3, scene
    html = outputs.report.read_text()
    assert "topview_kitchen.png" in html and "retrieval_" in html and "matches_" in html
    for src in (tmp_path / "demo" / "figures").glob("*.png"):
        assert src.stat().st_size > 1000


def test_own_images_with_hloc_poses_and_camera_string(tiny_world: Path, tmp_path: Path) -> None:
    """A plain folder of images + an hloc pose file + one COLMAP camera string: the 'own data' path."""
    from visloc.datasets import load_frames
    from visloc.io.poses import read_poses, write_poses

    camera = json.loads((tiny_world / "dataset.json").read_text())["camera"]
    for split, folder in (("train", "db"), ("test", "query")):
        frames = load_frames(tiny_world, split=split)
        for f in frames.frames:
            dest = tmp_path / folder / f.name.replace("/", "_")
            dest.parent.mkdir(parents=True, exist_ok=True)
            dest.write_bytes(f.image_path.read_bytes())
        write_poses(tmp_path / f"{folder}_poses.txt", {n.replace("/", "_"): p for n, p in frames.poses().items()})
    _ok(["map", "build", str(tmp_path / "db"), "--out", str(tmp_path / "map"), "--poses",
         str(tmp_path / "db_poses.txt"), "--camera", camera])
    assert json.loads((tmp_path / "map" / "map.json").read_text())["points"] == "triangulate"
    _ok(["localize", str(tmp_path / "map"), str(tmp_path / "query"), "--camera", camera,
         "--out", str(tmp_path / "poses.txt")])
    assert len(read_poses(tmp_path / "poses.txt")) >= 10
    _ok(["evaluate", "localization", str(tmp_path / "poses.txt"), "--gt", str(tmp_path / "query_poses.txt")])
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["overall"]["median_t_m"] < 0.05 and results["overall"]["5cm_5deg"] >= 0.8


def test_demo_with_the_shipped_relpose_model(tiny_world_config, tiny_map_config, tmp_path: Path) -> None:
    """`visloc demo --method relpose` works offline with the model shipped in the package (on a world it
    never saw: this checks the wiring and the report, not accuracy)."""
    from visloc.localization import LocalizeConfig

    outputs = run_demo(tmp_path / "demo", tiny_world_config, tiny_map_config, LocalizeConfig(method="relpose"),
                       progress=False)
    results = json.loads((tmp_path / "demo" / "results.json").read_text())
    assert results["overall"]["num_localized"] == results["overall"]["num_queries"]  # always a pose
    assert results["overall"]["median_t_m"] < 5.0  # somewhere in the right room, not elsewhere
    assert (tmp_path / "demo" / "map_relpose" / "map.json").is_file()
    assert "topview_kitchen.png" in outputs.report.read_text()


def test_retrieve_match_localize_as_separate_steps(tiny_world: Path, tiny_map: Path, tmp_path: Path) -> None:
    pairs, feats, matches = tmp_path / "pairs.txt", tmp_path / "features.h5", tmp_path / "matches.h5"
    out = _ok(["retrieve", str(tiny_map), str(tiny_world), "--out", str(pairs), "--num", "5"])
    assert f"-> {pairs}" in out and (tmp_path / "pairs.txt.scores.json").is_file()
    out = _ok(["match", str(pairs), "--map", str(tiny_map), "--queries", str(tiny_world), "--features", str(feats),
               "--matches", str(matches)])
    assert "matched" in out and feats.is_file() and matches.is_file()
    _ok(["localize", str(tiny_map), str(tiny_world), "--out", str(tmp_path / "plain.txt")])
    _ok(["localize", str(tiny_map), str(tiny_world), "--out", str(tmp_path / "staged.txt"), "--pairs", str(pairs)])
    assert (tmp_path / "staged.txt").read_text() == (tmp_path / "plain.txt").read_text()
    _ok(["localize", str(tiny_map), str(tiny_world), "--out", str(tmp_path / "fed.txt"), "--method", "essential",
         "--pairs", str(pairs), "--features", str(feats), "--matches", str(matches)])
    _ok(["localize", str(tiny_map), str(tiny_world), "--out", str(tmp_path / "ess.txt"), "--method", "essential",
         "--pairs", str(pairs)])
    assert (tmp_path / "fed.txt").read_text() == (tmp_path / "ess.txt").read_text()
    # the report's figures read those files
    log = json.loads((tmp_path / "fed.txt.log.json").read_text())
    assert log["inputs"]["matches"] == str(matches) and log["config"]["estimator"]["min_inliers"] == 12


def test_match_two_images_with_a_plot(tiny_world: Path, tmp_path: Path) -> None:
    images = sorted((tiny_world / "kitchen" / "seq-01").glob("*.color.png"))[:2]
    out = _ok(["match", str(images[0]), str(images[1]), "--plot", str(tmp_path / "m.png")])
    assert "matches" in out and (tmp_path / "m.png").stat().st_size > 1000
    result = runner.invoke(app, ["match", str(images[0])])
    assert result.exit_code == 2 and "visloc match PAIRS" in result.output


def test_evaluate_retrieval_against_labels(tmp_path: Path) -> None:
    labels = tmp_path / "labels.csv"
    labels.write_text("path,landmark\na1,a\na2,a\nb1,b\nb2,b\n")
    pairs = tmp_path / "pairs.txt"
    pairs.write_text("a1 a2\na1 b1\nb1 a1\nb1 b2\n")  # AP 1 and, hand-computed, (0 + 1/2)/2 = 0.25 -> mAP 62.5 %
    out = _ok(["evaluate", "retrieval", str(pairs), "--labels", str(labels)])
    assert "62.50" in out
    saved = json.loads((tmp_path / "pairs.txt.results.json").read_text())
    assert saved["protocols"]["labels"]["mAP"] == pytest.approx(0.625)
    again = runner.invoke(app, ["evaluate", "retrieval", str(pairs), "--labels", str(labels)])
    assert again.exit_code != 0 and "--overwrite" in str(again.exception)
