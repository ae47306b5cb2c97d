"""``visloc train dense`` and ``visloc evaluate matching`` through typer: results against numbers computed
directly, run folders, and bad input as a one-line error with exit code 2 naming the file."""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from visloc import cli
from visloc.cli import app
from visloc.datasets.stereo import stereo_motorcycle_pair
from visloc.datasets.synthetic import WorldConfig, make_world
from visloc.io.h5 import names_to_pair
from visloc.models.checkpoint import load_model, read_checkpoint
from visloc.models.correlation import ConsensusConfig
from visloc.models.dense import DenseMatcher
from visloc.training.checkpoint import load_checkpoint
from visloc.training.dense_data import WorldPairConfig, WorldViewPairs
from visloc.training.pairs import PairSamplingConfig

runner = CliRunner()
VISLOC = Path(sys.executable).with_name("visloc")
TRAIN = ["--image-size", "64", "--synthetic-pairs", "16", "--val-pairs", "8", "--epochs", "1", "--batch-size", "8",
         "--device", "cpu", "--no-progress"]


def _ok(*args: str | Path):
    result = runner.invoke(app, [str(a) for a in args])
    assert result.exit_code == 0, (result.output, repr(result.exception))
    return result


def _exit_2(monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, *args: str | Path) -> str:
    """Run ``visloc ARGS`` as the installed program does (``visloc.cli.main``); it must exit with code 2.
    Returns the logged error."""
    caplog.clear()
    monkeypatch.setattr(sys, "argv", ["visloc", *(str(a) for a in args)])
    with caplog.at_level(logging.ERROR, logger="visloc"), pytest.raises(SystemExit) as done:
        cli.main()
    assert done.value.code == 2, caplog.text
    return caplog.text


def _identity_aepe(target_map: np.ndarray, mask: np.ndarray) -> float:
    """Mean end-point error of "nothing moved" (same-size images: target pixel (x, y) -> source (x, y))."""
    h, w = mask.shape
    v, u = np.mgrid[0:h, 0:w].astype(np.float64)
    err = np.hypot(u - target_map[0].astype(np.float64), v - target_map[1].astype(np.float64))
    return float(err[mask].mean())


# --- visloc evaluate matching -------------------------------------------------------------------------------


def test_identity_on_the_motorcycle_matches_the_direct_computation(tmp_path: Path) -> None:
    out = tmp_path / "identity.json"
    result = _ok("evaluate", "matching", "--model", "identity", "--motorcycle", "--out", out)
    saved = json.loads(out.read_text())
    assert saved["model"] == "identity" and set(saved) == {"model", "motorcycle"}
    pair = stereo_motorcycle_pair()
    mask = pair.mask[0]
    expected = _identity_aepe(pair.correspondence, mask)
    # identity on a rectified pair: the end-point error of a left pixel is its disparity
    assert expected == pytest.approx(float(pair.disparity[mask].astype(np.float64).mean()), rel=1e-5)
    motorcycle = saved["motorcycle"]
    assert motorcycle["mean_aepe"] == pytest.approx(expected, rel=1e-9)
    [row] = motorcycle["rows"]
    assert row["name"] == "stereo_motorcycle" and row["valid_pixels"] == int(mask.sum())
    err = np.abs(pair.disparity[mask].astype(np.float64))
    for t in ("1.0", "3.0", "5.0"):
        assert motorcycle["pooled_pck"][t] == pytest.approx(float((err <= float(t)).mean()), abs=1e-4)
    assert f"| motorcycle | 1 | {expected:.2f} |" in result.output and str(out) in result.output


def test_trained_model_evaluates_and_the_run_folder_is_protected(tmp_path: Path, monkeypatch, caplog) -> None:
    run = tmp_path / "run"
    result = _ok("train", "dense", "--out", run, *TRAIN)
    assert {"last.pt", "best.pt", "model.pt", "metrics.json"} <= {p.name for p in run.iterdir()}
    assert "best epoch 1" in result.output
    assert isinstance(load_model(run / "model.pt"), DenseMatcher)
    assert read_checkpoint(run / "model.pt")["metrics"]["preprocess"]["image_size"] == 64
    config = json.loads((run / "metrics.json").read_text())["config"]
    assert (config["image_size"], config["synthetic_pairs"], config["val_pairs"]) == (64, 16, 8)
    assert config["loop"]["epochs"] == 1 and config["model"]["consensus"] is None

    # a second run into the same folder is refused (exit 2, the folder named), nothing is touched
    before = (run / "model.pt").read_bytes()
    message = _exit_2(monkeypatch, caplog, "train", "dense", "--out", run, *TRAIN)
    assert str(run) in message and "--overwrite" in message and "--resume" in message
    assert (run / "model.pt").read_bytes() == before
    # --resume continues to the new epoch count
    more = [a if a != "1" else "2" for a in TRAIN]  # --epochs 2, the rest unchanged
    assert more[more.index("--epochs") + 1] == "2"
    _ok("train", "dense", "--out", run, *more, "--resume")
    assert load_checkpoint(run / "last.pt")["epoch"] == 2

    # the written model through the evaluation command
    out = tmp_path / "model.json"
    _ok("evaluate", "matching", "--model", run / "model.pt", "--motorcycle", "--out", out)
    row = json.loads(out.read_text())["motorcycle"]["rows"][0]
    assert row["valid_pixels"] == int(stereo_motorcycle_pair().mask.sum())
    assert math.isfinite(row["aepe"]) and 0.0 < row["aepe"] < 741  # an error inside the image


def test_train_dense_consensus_option(tmp_path: Path, monkeypatch, caplog) -> None:
    message = _exit_2(monkeypatch, caplog, "train", "dense", "--out", tmp_path / "bad", *TRAIN, "--consensus", "bad")
    assert "--consensus" in message and "'bad'" in message
    assert not (tmp_path / "bad" / "last.pt").exists()
    run = tmp_path / "nc"
    _ok("train", "dense", "--out", run, *TRAIN, "--consensus", "asym:3/1", "--coarse-size", "4x4",
        "--synthetic-pairs", "8", "--val-pairs", "0")
    model = load_model(run / "model.pt")
    assert model.config.consensus == ConsensusConfig(kernel_sizes=(3,), channels=(1,), symmetric=False)
    assert model.config.coarse_size == (4, 4) and model.consensus is not None


@pytest.mark.real_data
def test_sift_homography_on_the_real_evd_pairs(real_data: Path, tmp_path: Path) -> None:
    evd = real_data / "evd_homography"
    if not evd.is_dir():
        pytest.skip(f"evd_homography not found under {real_data}")
    out = tmp_path / "evd.json"
    _ok("evaluate", "matching", "--model", "sift-homography", "--evd", evd, "--out", out)
    saved = json.loads(out.read_text())["evd"]
    assert len(saved["rows"]) == 15
    assert {r["name"] for r in saved["rows"]} == {p.stem for p in (evd / "h").glob("*.txt")}
    assert all(r["valid_pixels"] > 0 for r in saved["rows"])
    finite = [r["aepe"] for r in saved["rows"] if math.isfinite(r["aepe"])]
    assert saved["mean_aepe"] == pytest.approx(float(np.mean(finite)))
    assert 0.0 <= saved["pooled_pck"]["1.0"] <= saved["pooled_pck"]["3.0"] <= saved["pooled_pck"]["5.0"] <= 1.0


WORLD = WorldConfig(num_scenes=2, train_traversals=1, frames_per_train_traversal=6, frames_per_test_traversal=6,
                    width=160, height=120, focal=131.25, seed=3)


def test_identity_on_world_view_pairs_matches_the_direct_computation(tmp_path: Path) -> None:
    world = make_world(tmp_path / "world", WORLD, progress=False)
    out = tmp_path / "world.json"
    _ok("evaluate", "matching", "--model", "identity", "--world", world, "--world-pairs", "3", "--out", out)
    saved = json.loads(out.read_text())["world"]
    # the documented selection: test split, overlap 0.3-0.9, at most 3 pairs per scene, images at 320 x 240
    sampling = dataclasses.replace(PairSamplingConfig(), max_pairs_per_scene=3)
    pairs = WorldViewPairs(world, WorldPairConfig(output_size=(240, 320), split="test", sampling=sampling))
    assert 2 <= len(pairs) <= 6 and len(saved["rows"]) == len(pairs)
    expected = []
    for i, row in enumerate(saved["rows"]):
        item = pairs[i]
        assert row["name"] == f"{item['target_name']}<-{item['source_name']}"
        assert 0.3 <= row["overlap"] <= 0.9 and row["view_angle_deg"] >= 0.0
        mask = item["mask"][0].numpy().astype(bool)
        assert row["valid_pixels"] == int(mask.sum())
        expected.append(_identity_aepe(item["map"].numpy(), mask))
        assert row["aepe"] == pytest.approx(expected[-1], rel=1e-6)
    assert saved["mean_aepe"] == pytest.approx(float(np.mean(expected)), rel=1e-6)


H_TRUE = np.array([[0.92, 0.06, 12.0], [-0.04, 1.08, -6.0], [1.5e-4, -2.0e-4, 1.0]])  # source -> target pixels


def _evd_folder(root: Path, source_wh: tuple[int, int], target_wh: tuple[int, int]) -> Path:
    rng = np.random.default_rng(0)
    for folder, (w, h) in (("1", source_wh), ("2", target_wh)):
        (root / folder).mkdir(parents=True)
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(root / folder / "pair.png")
    (root / "h").mkdir()
    (root / "h" / "pair.txt").write_text("\n".join(" ".join(repr(float(v)) for v in row) for row in H_TRUE))
    return root


@pytest.mark.parametrize("size", [240, 0])
def test_identity_on_an_evd_folder_matches_the_hand_computed_homography(tmp_path: Path, size: int) -> None:
    (ws, hs), (wt, ht) = source_wh, target_wh = (320, 200), (260, 300)
    evd = _evd_folder(tmp_path / "evd", source_wh, target_wh)
    out = tmp_path / "evd.json"
    _ok("evaluate", "matching", "--model", "identity", "--evd", evd, "--size", size, "--out", out)
    [row] = json.loads(out.read_text())["evd"]["rows"]
    # by hand, at the evaluated sizes (pixel centres s (x + 0.5) - 0.5 when resized)
    (ows, ohs), (owt, oht) = ((size, size), (size, size)) if size else (source_wh, target_wh)
    v, u = np.mgrid[0:oht, 0:owt].astype(np.float64)
    xt, yt = (u + 0.5) * wt / owt - 0.5, (v + 0.5) * ht / oht - 0.5
    p = np.linalg.inv(H_TRUE) @ np.stack([xt.ravel(), yt.ravel(), np.ones(xt.size)])
    xs = ((p[0] / p[2] + 0.5) * ows / ws - 0.5).reshape(oht, owt)
    ys = ((p[1] / p[2] + 0.5) * ohs / hs - 0.5).reshape(oht, owt)
    inside = (xs >= 0) & (xs <= ows - 1) & (ys >= 0) & (ys <= ohs - 1)
    # identity between the evaluated images: target pixel centres scaled onto the source
    ix, iy = (u + 0.5) * ows / owt - 0.5, (v + 0.5) * ohs / oht - 0.5
    assert row["valid_pixels"] == int(inside.sum())
    # the identity map is float32: agreement to its precision
    assert row["aepe"] == pytest.approx(float(np.hypot(ix - xs, iy - ys)[inside].mean()), rel=1e-6)


def _pairs_file(root: Path) -> Path:
    """A SuperGlue pairs file with two pairs of 320 x 240 images (images/ beside it)."""
    rng = np.random.default_rng(0)
    (root / "images").mkdir(parents=True)
    K = "300 0 159.5 0 300 119.5 0 0 1"
    T = "1 0 0 0.3 0 1 0 0 0 0 1 0.1 0 0 0 1"
    lines = []
    for i in range(2):
        for k in (0, 1):
            Image.fromarray(rng.integers(0, 256, (240, 320, 3), dtype=np.uint8)).save(root / "images" / f"{i}_{k}.png")
        lines.append(f"{i}_0.png {i}_1.png 0 0 {K} {K} {T}")
    (root / "pairs_with_gt.txt").write_text("\n".join(lines) + "\n")
    return root / "pairs_with_gt.txt"


def test_scannet_pairs_take_max_matches_from_the_dense_map(tmp_path: Path) -> None:
    pairs = _pairs_file(tmp_path / "scannet")
    out = tmp_path / "pose.json"
    result = _ok("evaluate", "matching", "--model", "identity", "--scannet", pairs, "--max-matches", "100",
                 "--out", out)
    saved = json.loads(out.read_text())
    assert set(saved) == {"model", "scannet"}  # no flow data set was asked for
    rows = saved["scannet"]["pairs"]
    assert [r["name"] for r in rows] == ["0_0.png 0_1.png", "1_0.png 1_1.png"]
    assert [r["matches"] for r in rows] == [100, 100]  # 80 x 60 cells of 4 px, all inside: capped at 100
    assert set(saved["scannet"]["auc"]) == {"5.0", "10.0", "20.0"} and "ScanNet pose AUC" in result.output


# --- bad input ----------------------------------------------------------------------------------------------


def test_missing_model_or_evd_and_an_existing_out_exit_2_naming_the_file(tmp_path: Path, monkeypatch,
                                                                         caplog) -> None:
    out = tmp_path / "r.json"
    missing_model = tmp_path / "nonexistent.pt"
    message = _exit_2(monkeypatch, caplog, "evaluate", "matching", "--model", missing_model, "--motorcycle",
                      "--out", out)
    assert f"{missing_model}: dense model not found" in message
    missing_evd = tmp_path / "nonexistent"
    message = _exit_2(monkeypatch, caplog, "evaluate", "matching", "--model", "identity", "--evd", missing_evd,
                      "--out", out)
    assert str(missing_evd) in message and "does not exist" in message
    assert not out.exists()
    out.write_text("earlier results\n")
    message = _exit_2(monkeypatch, caplog, "evaluate", "matching", "--model", "identity", "--motorcycle",
                      "--out", out)
    assert str(out) in message and "--overwrite" in message
    assert out.read_text() == "earlier results\n"
    _ok("evaluate", "matching", "--model", "identity", "--motorcycle", "--out", out, "--overwrite")
    assert "motorcycle" in json.loads(out.read_text())


def test_no_data_option_is_a_usage_error(tmp_path: Path) -> None:
    result = runner.invoke(app, ["evaluate", "matching", "--model", "identity", "--out", str(tmp_path / "r.json")])
    assert result.exit_code == 2, (result.output, repr(result.exception))
    assert "--motorcycle" in result.output and "--evd" in result.output
    assert not (tmp_path / "r.json").exists()


def test_installed_command_exits_2_without_a_traceback(tmp_path: Path) -> None:
    missing = tmp_path / "nonexistent.pt"
    done = subprocess.run([str(VISLOC), "evaluate", "matching", "--model", str(missing), "--motorcycle", "--out",
                           str(tmp_path / "r.json")], capture_output=True, text=True, timeout=120)
    assert done.returncode == 2, done.stderr
    assert f"{missing}: dense model not found" in done.stderr
    assert "Traceback" not in done.stderr + done.stdout


# --- visloc match IMG0 IMG1 --matcher dense ------------------------------------------------------------------


def test_match_two_images_with_the_dense_matcher_writes_hloc_files(tmp_path: Path, monkeypatch, caplog) -> None:
    import h5py

    run = tmp_path / "run"
    _ok("train", "dense", "--out", run, *TRAIN)
    pair = stereo_motorcycle_pair()
    a, b = tmp_path / "left.png", tmp_path / "right.png"
    Image.fromarray(pair.left[:200, :300]).save(a)
    Image.fromarray(pair.right[:200, :300]).save(b)
    out = tmp_path / "out"
    result = _ok("match", a, b, "--matcher", "dense", "--model", run / "model.pt", "--out", out,
                 "--max-matches", "50", "--plot", tmp_path / "m.png")
    assert "50 dense matches" in result.output and (tmp_path / "m.png").is_file()
    with h5py.File(out / "features.h5") as f, h5py.File(out / "matches.h5") as m:
        assert f["left.png/keypoints"].shape == f["right.png/keypoints"].shape == (50, 2)
        assert f["left.png/image_size"][()].tolist() == [300, 200]
        np.testing.assert_array_equal(m["left.png/right.png/matches0"][()], np.arange(50))
    message = _exit_2(monkeypatch, caplog, "match", a, b, "--matcher", "dense", "--model", tmp_path / "no.pt",
                      "--out", out)
    assert "no.pt" in message
    result = runner.invoke(app, ["match", str(a), str(b), "--matcher", "dense"])
    assert result.exit_code == 2 and "--model" in result.output


# --- visloc localize / match PAIRS --matcher dense ----------------------------------------------------------


@pytest.mark.e2e
def test_localize_and_match_pairs_with_the_dense_matcher(tiny_world: Path, tiny_map: Path, tmp_path: Path,
                                                         monkeypatch, caplog) -> None:
    import h5py

    run = tmp_path / "run"
    _ok("train", "dense", "--out", run, *TRAIN, "--residual", "--local-radius", "1")
    out = tmp_path / "poses.txt"
    result = _ok("localize", tiny_map, tiny_world, "--split", "test", "--out", out, "--matcher", "dense",
                 "--model", run / "model.pt", "--num-retrieved", "2")
    assert "queries" in result.output
    log = json.loads((tmp_path / "poses.txt.log.json").read_text())
    assert log["config"]["matching"]["matcher"] == "dense"
    assert log["config"]["matching"]["dense"]["model"] == str(run / "model.pt")
    with h5py.File(tmp_path / "poses.txt.features.h5") as f, h5py.File(tmp_path / "poses.txt.matches.h5") as m:
        assert f.attrs["extractor"] == "dense"
        for r in log["results"]:  # matches0 indexes the query's own (invented) keypoints, one block per image
            n = f[r["name"]]["keypoints"].shape[0]
            assert f[r["name"]]["descriptors"].shape == (0, n)
            counts = [int((m[names_to_pair(r["name"], db)]["matches0"][()] >= 0).sum()) for db in r["retrieved"]]
            assert counts == r["matches"] and sum(counts) == n

    # a pairs file: query -> map image, matched densely
    pairs = tmp_path / "pairs.txt"
    first = log["results"][0]
    pairs.write_text("".join(f"{first['name']} {db}\n" for db in first["retrieved"]))
    feats, matches = tmp_path / "q.h5", tmp_path / "m.h5"
    result = _ok("match", pairs, "--map", tiny_map, "--queries", tiny_world, "--split", "test", "--features", feats,
                 "--matches", matches, "--matcher", "dense", "--model", run / "model.pt")
    assert "matched 2 new of 2 pairs" in result.output
    with h5py.File(matches) as m, h5py.File(feats) as f:
        n = f[first["name"]]["keypoints"].shape[0]
        counts = [int((m[names_to_pair(first["name"], db)]["matches0"][()] >= 0).sum()) for db in first["retrieved"]]
        assert sum(counts) == n

    # a missing model exits 2 naming it, before any work
    message = _exit_2(monkeypatch, caplog, "localize", tiny_map, tiny_world, "--split", "test", "--out",
                      tmp_path / "p2.txt", "--matcher", "dense", "--model", tmp_path / "none.pt")
    assert "none.pt" in message and not (tmp_path / "p2.txt").exists()
    result = runner.invoke(app, ["localize", str(tiny_map), str(tiny_world), "--out", str(tmp_path / "p3.txt"),
                                 "--matcher", "sparse"])
    assert result.exit_code == 2 and "unknown matcher 'sparse'" in result.output


def test_decoder_from_runs_another_models_decoder(tmp_path: Path, monkeypatch, caplog) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    _ok("train", "dense", "--out", a, *TRAIN, "--decoder", "ucmd")
    _ok("train", "dense", "--out", b, *TRAIN, "--decoder", "ucmd", "--backbone", "mobilenet_v2", "--seed", "3")
    out = tmp_path / "swap.json"
    _ok("evaluate", "matching", "--model", b / "model.pt", "--decoder-from", a / "model.pt", "--motorcycle",
        "--out", out)
    saved = json.loads(out.read_text())
    assert saved["decoder_from"] == str(a / "model.pt")
    own = tmp_path / "own.json"
    _ok("evaluate", "matching", "--model", b / "model.pt", "--motorcycle", "--out", own)
    assert saved["motorcycle"]["mean_aepe"] != json.loads(own.read_text())["motorcycle"]["mean_aepe"]
    dgc = tmp_path / "dgc"
    _ok("train", "dense", "--out", dgc, *TRAIN, "--decoder", "dgc", "--decoder-channels", "8,8,8,8")
    message = _exit_2(monkeypatch, caplog, "evaluate", "matching", "--model", b / "model.pt", "--decoder-from",
                      dgc / "model.pt", "--motorcycle", "--out", tmp_path / "bad.json")
    assert "dgc" in message and "ucmd" in message
