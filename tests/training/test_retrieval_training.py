"""Retrieval training (tiny backbone, 64 px, a 2-room world at 96x72): the losses and the mining by hand,
positives by view overlap, photo views, the written model as the ``cnn`` global descriptor, exact resume,
photo-only training and the command line."""

from __future__ import annotations

import json
import logging
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import typer.main
from PIL import Image
from typer.testing import CliRunner

from visloc.datasets import load_frames
from visloc.datasets.synthetic import WorldConfig, make_world
from visloc.errors import ConfigError, InputError
from visloc.models.checkpoint import load_model, read_checkpoint
from visloc.models.retrieval_net import RetrievalNet, RetrievalNetConfig
from visloc.training.checkpoint import load_checkpoint
from visloc.training.cli import train_app
from visloc.training.retrieval import (
    RETRIEVAL_OPTIONS,
    AugmentConfig,
    ImageStore,
    OverlapConfig,
    OverlapTable,
    RetrievalTuples,
    TrainRetrievalConfig,
    contrastive_loss,
    edge_occluder,
    mine_hard_negatives,
    night_view,
    photo_view,
    tiny_retrieval_config,
    train_retrieval,
    triplet_loss,
    tuple_loss,
)

SIZE = 64
#: Two rooms, 2 training traversals of 8 frames each, at 96x72: made in about 2 s.
WORLD = WorldConfig(num_scenes=2, train_traversals=2, frames_per_train_traversal=8, frames_per_test_traversal=3,
                    width=96, height=72, focal=78.75, seed=3)
FAST = tiny_retrieval_config(
    epochs=2, image_size=SIZE, batch_size=4, queries_per_epoch=8, num_negatives=2, val_every=4,
    whitening_dim=16, cache_images=True, device="cpu", progress=False, seed=1,
)


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_world(tmp_path_factory.mktemp("world") / "world", WORLD, progress=False)


def _write_photos(folder: Path, n: int = 5, seed: int = 0) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for i in range(n):
        Image.fromarray(rng.integers(0, 256, (40 + 4 * i, 56, 3), dtype=np.uint8)).save(folder / f"p{i}.png")
    return folder


@pytest.fixture(scope="module")
def photos(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _write_photos(tmp_path_factory.mktemp("photos") / "photos")


@pytest.fixture(scope="module")
def run(world: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("retrieval") / "run"
    return out, train_retrieval(world, out, FAST)


def _unit(deg: float) -> list[float]:
    return [math.cos(math.radians(deg)), math.sin(math.radians(deg))]


# --- losses -------------------------------------------------------------------------------------------


def test_contrastive_loss_by_hand() -> None:
    a = torch.tensor([[1.0, 0.0]])
    p = torch.tensor([[0.6, 0.8]])  # d(a, p)^2 = 0.4^2 + 0.8^2 = 0.8
    n = torch.tensor([[[1.0, 0.0], [0.6, -0.8], [-1.0, 0.0]]])  # d = 0, sqrt(0.8) > 0.7, 2
    # 1/2 * 0.8 + 1/2 * (0.7 - 0)^2 + 0 + 0
    assert float(contrastive_loss(a, p, n, margin=0.7)[0]) == pytest.approx(0.4 + 0.245, abs=1e-5)
    # a negative at 60 degrees: d = 1; with margin 1.5 it costs 1/2 * 0.5^2
    n60 = torch.tensor([[_unit(60)]])
    assert float(contrastive_loss(a, a, n60, margin=1.5)[0]) == pytest.approx(0.125, abs=1e-6)


def test_triplet_loss_by_hand() -> None:
    a = torch.tensor([[1.0, 0.0]])
    p = torch.tensor([[0.6, 0.8]])  # d(a, p)^2 = 0.8
    n = torch.tensor([[[1.0, 0.0], [0.8, -0.6], [0.0, 1.0], [-1.0, 0.0]]])  # d^2 = 0, 0.4, 2, 4
    # (0.1 + 0.8 - 0) + (0.1 + 0.8 - 0.4) + 0 + 0
    assert float(triplet_loss(a, p, n, margin=0.1)[0]) == pytest.approx(0.9 + 0.5)


def test_tuple_loss_averages_over_tuples() -> None:
    # tuple 1: a = p, negative opposite -> 0; tuple 2: p at 90 deg (1/2 * 2), negative = a (1/2 * 0.7^2)
    d = torch.tensor([[[1.0, 0.0], [1.0, 0.0], [-1.0, 0.0]],
                      [[0.0, 1.0], [1.0, 0.0], [0.0, 1.0]]])
    assert float(tuple_loss(d, "contrastive", 0.7)) == pytest.approx((0.0 + 1.0 + 0.245) / 2)
    assert float(tuple_loss(d, "triplet", 0.1)) == pytest.approx((0.0 + 2.1) / 2)
    with pytest.raises(ValueError, match="2 \\+ K"):
        tuple_loss(d[:, :2])


# --- mining -------------------------------------------------------------------------------------------


def test_mine_hard_negatives_picks_the_most_similar_allowed_items() -> None:
    queries = torch.tensor([_unit(0), _unit(90)])
    pool = torch.tensor([_unit(10), _unit(20), _unit(80), _unit(100), _unit(180)])
    allowed = np.array([[False, True, True, True, True],    # query 0: not item 0 (its positive)
                        [True, True, False, False, False]])  # query 1: only items 0 and 1
    chosen = mine_hard_negatives(queries, pool, allowed, k=2)
    # query 0: item 1 (20 deg) then item 2 (80 deg); query 1: item 1 (70 deg away) then item 0 (80 deg)
    np.testing.assert_array_equal(chosen, [[1, 2], [1, 0]])
    padded = mine_hard_negatives(queries, pool, allowed, k=4)
    np.testing.assert_array_equal(padded[1], [1, 0, -1, -1])  # only two allowed items
    np.testing.assert_array_equal(padded[0], [1, 2, 3, 4])


def test_overlap_positives_are_frames_of_the_same_scene(world: Path) -> None:
    frames = load_frames(world, split="train").frames
    config = FAST
    table = OverlapTable(frames, config.overlap)
    names = [f.name for f in frames]
    block = table.block(names, names)
    np.testing.assert_allclose(block, block.T)
    np.testing.assert_allclose(np.diag(block), 1.0)
    from visloc.training.retrieval import _as_image

    images = [_as_image(f) for f in frames]
    tuples = RetrievalTuples(images, table, RetrievalNet(config.model), config, (48, 64), ImageStore(False))
    assert len(tuples.positives) > len(frames) // 2
    for q, positives in tuples.positives.items():
        for p in positives:
            assert p != q and images[p].scene == images[q].scene
            assert table(images[q].key, images[p].key) >= config.overlap.positive_overlap
    # negatives: every frame of the other room, and only the non-overlapping frames of the query's own room
    queries = sorted(tuples.positives)
    mask = tuples.negatives_mask(queries, list(range(len(images))))
    for row, q in zip(mask, queries, strict=True):
        for j, ok in enumerate(row):
            if images[j].scene != images[q].scene:
                assert ok
            else:
                assert ok == (j != q and table(images[q].key, images[j].key) <= config.overlap.negative_overlap)


# --- photo views -------------------------------------------------------------------------------------


def test_photo_view_shape_determinism_and_geometry() -> None:
    h, w = 60, 80
    ramp = np.zeros((3, h, w), np.uint8)
    ramp[0] = np.round(np.arange(w) * 255 / (w - 1))[None, :]  # red = x
    ramp[1] = np.round(np.arange(h) * 255 / (h - 1))[:, None]  # green = y
    img = torch.from_numpy(ramp)
    view, hom = photo_view(img, (24, 32), torch.Generator().manual_seed(5), AugmentConfig())
    again, hom2 = photo_view(img, (24, 32), torch.Generator().manual_seed(5), AugmentConfig())
    other, _ = photo_view(img, (24, 32), torch.Generator().manual_seed(6), AugmentConfig())
    assert view.shape == (3, 24, 32) and view.dtype == torch.float32
    assert torch.equal(view, again) and np.array_equal(hom, hom2) and not torch.equal(view, other)
    assert 0.0 <= float(view.min()) and float(view.max()) <= 1.0
    # each view pixel shows the photo where the homography sends its centre (inside the photo)
    ys, xs = np.mgrid[0:24, 0:32]
    pts = hom @ np.stack([xs.ravel() + 0.5, ys.ravel() + 0.5, np.ones(xs.size)])
    sx, sy = pts[0] / pts[2], pts[1] / pts[2]
    assert sx.min() >= -1e-6 and sx.max() <= w + 1e-6 and sy.min() >= -1e-6 and sy.max() <= h + 1e-6
    red = np.clip((sx - 0.5) / (w - 1), 0, 1).reshape(24, 32)
    green = np.clip((sy - 0.5) / (h - 1), 0, 1).reshape(24, 32)
    np.testing.assert_allclose(view[0].numpy(), red, atol=1.5 / 255)
    np.testing.assert_allclose(view[1].numpy(), green, atol=1.5 / 255)


# --- training runs -----------------------------------------------------------------------------------


def test_training_run_writes_a_model_the_cnn_descriptor_uses(run) -> None:
    from visloc.retrieval.cnn import CNNDescriptor, CNNDescriptorConfig

    out, metrics = run
    assert {p.name for p in out.iterdir()} >= {"last.pt", "best.pt", "model.pt", "metrics.json"}
    assert len(metrics["epochs"]) == 2 and metrics["task"] == "retrieval"
    assert metrics["images"]["frames"] > 0 and metrics["images"]["val_queries"] > 0
    for row in metrics["epochs"]:
        assert 0.0 <= row["val_recall_at_1"] <= 1.0
        assert row["val_recall_at_1"] == pytest.approx(1.0 - row["val_loss"])
    assert metrics["best_recall_at_1"] == pytest.approx(1.0 - metrics["best_loss"])
    on_disk = json.loads((out / "metrics.json").read_text())
    assert on_disk["config"]["image_size"] == SIZE and on_disk["best_epoch"] == metrics["best_epoch"]

    checkpoint = read_checkpoint(out / "model.pt")
    assert checkpoint["metrics"]["preprocess"]["image_size"] == FAST.image_size
    model = load_model(out / "model.pt")
    assert isinstance(model, RetrievalNet) and model.config == FAST.model
    best = load_checkpoint(out / "best.pt")
    for k, v in model.state_dict().items():
        assert torch.equal(v, best["model"][k]), k

    size = checkpoint["metrics"]["preprocess"]["image_size"]
    descriptor = CNNDescriptor(CNNDescriptorConfig(model=str(out / "model.pt"), image_size=size))
    image = np.random.default_rng(0).integers(0, 256, (72, 96, 3), dtype=np.uint8)
    d = descriptor(image)
    q = descriptor.describe_query(image, (10, 10, 60, 50))
    for v in (d, q):
        assert v.shape == (FAST.model.whitening_dim,) and v.dtype == np.float32
        assert float(np.linalg.norm(v)) == pytest.approx(1.0, abs=1e-5)
    # the descriptor is the network's own output at the stored image size
    from visloc.models.preprocess import long_side_tensor

    with torch.no_grad():
        expected = model(long_side_tensor(image, size)[None])[0].numpy()
    np.testing.assert_allclose(d, expected, atol=1e-5)


def test_resume_gives_the_same_weights_as_an_uninterrupted_run(world: Path, photos: Path, tmp_path: Path) -> None:
    config = RETRIEVAL_OPTIONS.replace(FAST, photos=(str(photos),))
    straight = train_retrieval(world, tmp_path / "straight", config)
    train_retrieval(world, tmp_path / "split", RETRIEVAL_OPTIONS.replace(config, epochs=1))
    assert load_checkpoint(tmp_path / "split" / "last.pt")["epoch"] == 1
    resumed = train_retrieval(world, tmp_path / "split", config, resume=True)
    a = load_checkpoint(tmp_path / "straight" / "last.pt")
    b = load_checkpoint(tmp_path / "split" / "last.pt")
    assert b["epoch"] == 2
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k
    assert a["optimizer"]["state"][0]["exp_avg"].equal(b["optimizer"]["state"][0]["exp_avg"])
    for key in ("train_loss", "val_loss"):
        assert [r[key] for r in straight["epochs"]] == [r[key] for r in resumed["epochs"]]
    assert resumed["images"]["photos"] == 5
    # a changed setting cannot be resumed
    with pytest.raises(ConfigError, match="cannot resume"):
        train_retrieval(world, tmp_path / "split", RETRIEVAL_OPTIONS.replace(config, margin=0.5), resume=True)


def test_photo_folders_alone_train_without_validation(photos: Path, tmp_path: Path) -> None:
    config = tiny_retrieval_config(epochs=2, image_size=48, batch_size=2, num_negatives=2, whitening_dim=4,
                                   loss="triplet", margin=0.1, photos=(str(photos),), photo_repeats=2,
                                   device="cpu", progress=False, seed=2)
    metrics = train_retrieval(None, tmp_path / "run", config)
    assert metrics["images"] == {"frames": 0, "queries_with_positive": 0, "photos": 5, "tuples_per_epoch": 10,
                                 "val_queries": 0, "val_queries_without_positive": 0}
    assert metrics["best_metric"] == "train_loss" and metrics["best_recall_at_1"] is None
    assert all(r["val_loss"] is None and math.isfinite(r["train_loss"]) for r in metrics["epochs"])
    model = load_model(tmp_path / "run" / "model.pt")
    with torch.no_grad():
        assert model(torch.zeros(1, 3, 36, 48)).shape == (1, 4)
    with pytest.raises(ConfigError, match="nothing to train on"):
        train_retrieval(None, tmp_path / "none", tiny_retrieval_config())


def test_bad_inputs_name_the_path(world: Path, tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(InputError, match="photo folder holds no image") as err:
        train_retrieval(world, tmp_path / "a", RETRIEVAL_OPTIONS.replace(FAST, photos=(str(empty),)))
    assert err.value.path == empty
    with pytest.raises(InputError, match="photo folder not found"):
        train_retrieval(None, tmp_path / "a", RETRIEVAL_OPTIONS.replace(FAST, photos=(str(tmp_path / "no"),)))
    with pytest.raises(InputError) as err:
        train_retrieval(tmp_path / "missing", tmp_path / "a", FAST)
    assert err.value.path == tmp_path / "missing"
    assert not (tmp_path / "a").exists(), "nothing is written before the inputs are checked"


# --- command line ------------------------------------------------------------------------------------


def test_cli_retrieval(world: Path, photos: Path, tmp_path: Path) -> None:
    out = tmp_path / "cli"
    args = ["retrieval", "--data", str(world), "--photos", str(photos), "--out", str(out), "--epochs", "1",
            "--image-size", "48", "--batch-size", "4", "--queries-per-epoch", "6", "--num-negatives", "2",
            "--whitening-dim", "8", "--pooling", "mac", "--val-every", "4", "--exclude-scene", "office",
            "--cache-images", "--device", "cpu", "--no-progress", "--set", "overlap.positive_overlap=0.4"]
    result = CliRunner().invoke(train_app, args)
    assert result.exit_code == 0, result.output
    assert "best epoch 1" in result.output and "Recall@1" in result.output
    config = json.loads((out / "metrics.json").read_text())["config"]
    assert config["exclude_scenes"] == ["office"] and config["overlap"]["positive_overlap"] == 0.4
    assert config["photos"] == [str(photos)] and config["model"]["pooling"] == "mac"
    model = load_model(out / "model.pt")
    assert model.config == RetrievalNetConfig(pooling="mac", whitening_dim=8)
    assert read_checkpoint(out / "model.pt")["metrics"]["preprocess"] == {"image_size": 48}
    again = CliRunner().invoke(train_app, args)
    assert isinstance(again.exception, InputError) and "--overwrite" in str(again.exception)


def test_cli_bad_input_is_a_one_line_error_with_exit_code_2(tmp_path: Path, monkeypatch, caplog) -> None:
    from visloc import cli

    empty = tmp_path / "empty"
    empty.mkdir()
    cases = [
        (["--data", str(tmp_path / "missing")], f"{tmp_path / 'missing'}: data set folder not found"),
        (["--photos", str(empty)], f"{empty}: photo folder holds no image"),
        ([], "nothing to train on"),
    ]
    for extra, message in cases:
        caplog.clear()
        monkeypatch.setattr(sys, "argv", ["visloc", "train", "retrieval", "--out", str(tmp_path / "out"), *extra])
        with caplog.at_level(logging.ERROR, logger="visloc"), pytest.raises(SystemExit) as done:
            cli.main()
        assert done.value.code == 2
        assert message in caplog.text
    assert not (tmp_path / "out").exists()


def test_installed_command_exits_2_without_a_traceback(tmp_path: Path) -> None:
    visloc = Path(sys.executable).with_name("visloc")
    done = subprocess.run([str(visloc), "train", "retrieval", "--data", str(tmp_path / "nowhere"), "--out",
                           str(tmp_path / "out")], capture_output=True, text=True, timeout=120)
    assert done.returncode == 2, done.stderr
    assert f"{tmp_path / 'nowhere'}: data set folder not found" in done.stderr
    assert "Traceback" not in done.stderr + done.stdout


def test_every_cli_option_is_explained() -> None:
    command = typer.main.get_command(train_app).commands["retrieval"]  # type: ignore[attr-defined]
    assert command.help
    for param in command.params:
        assert getattr(param, "help", None), f"retrieval --{param.name} has no help"


def test_config_defaults_and_checks() -> None:
    config = TrainRetrievalConfig()
    assert (config.loss, config.margin, config.image_size) == ("contrastive", 0.7, 160)
    assert config.model.backbone.name == "tiny" and config.model.pooling == "gem" and config.model.whitening_dim == 128
    assert config.to_dict()["task"] == "retrieval"
    with pytest.raises(ConfigError, match="unknown loss"):
        tiny_retrieval_config(loss="hinge")
    with pytest.raises(ConfigError, match="negative_overlap"):
        OverlapConfig(positive_overlap=0.2, negative_overlap=0.3)


# --- night-like exposure and edge boards -------------------------------------------------------------


def _gradient_image(h: int = 48, w: int = 64) -> torch.Tensor:
    yy, xx = torch.meshgrid(torch.linspace(0.2, 0.8, h), torch.linspace(0.1, 0.9, w), indexing="ij")
    return torch.stack([xx, yy, 0.5 * (xx + yy)])


def test_night_view_is_dim_light_amplified_back_grainy_and_deterministic() -> None:
    img = _gradient_image()
    a = night_view(img, torch.Generator().manual_seed(3))
    b = night_view(img, torch.Generator().manual_seed(3))
    assert torch.equal(a, b) and a.shape == img.shape and a.min() >= 0 and a.max() <= 1
    assert not torch.equal(a, night_view(img, torch.Generator().manual_seed(4)))
    for seed in range(8):
        out = night_view(img, torch.Generator().manual_seed(seed))
        # exposed back towards the original brightness (gain <= 8 and clipping allow some loss)
        assert 0.4 * float(img.mean()) < float(out.mean()) < 1.3 * float(img.mean())
        # quantised at the dim level, then amplified: far fewer grey levels than 8 bits would allow
        levels = torch.unique(torch.round(out[0] * 255)).numel()
        assert levels < 200
        # noisy: neighbouring pixels of a smooth gradient differ by more than the gradient's own step
        assert (out[:, :, 1:] - out[:, :, :-1]).abs().mean() > (img[:, :, 1:] - img[:, :, :-1]).abs().mean()


def test_edge_occluder_covers_one_edge_only() -> None:
    img = _gradient_image()
    assert torch.equal(edge_occluder(img, 0.0, 0.5, torch.Generator().manual_seed(0)), img)
    sides = set()
    for seed in range(30):
        out = edge_occluder(img, 1.0, 0.5, torch.Generator().manual_seed(seed))
        changed = (out != img).any(dim=0)
        assert changed.any()
        rows, cols = torch.nonzero(changed, as_tuple=True)
        if int(cols.min()) == 0 and int(rows.min()) == 0 and int(rows.max()) == img.shape[1] - 1:
            side = "left" if int(cols.max()) < img.shape[2] // 2 + 1 else "?"
        elif int(cols.max()) == img.shape[2] - 1 and int(rows.min()) == 0:
            side = "right" if int(cols.min()) >= img.shape[2] // 2 - 1 else "?"
        else:
            side = "bottom" if int(rows.min()) >= img.shape[1] // 2 - 1 else "?"
        assert side != "?"  # a board at one edge, at most half the image (max_share 0.5)
        sides.add(side)
        # outside the board's bounding box the image is untouched
        box = torch.zeros_like(changed)
        box[int(rows.min()) : int(rows.max()) + 1, int(cols.min()) : int(cols.max()) + 1] = True
        assert torch.equal(out[:, ~box], img[:, ~box])
    assert sides == {"left", "right", "bottom"}
