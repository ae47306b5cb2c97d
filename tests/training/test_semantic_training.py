"""Semantic-matching training (tiny backbone, 64 px): pretraining lowers the grid loss, exact resume, the weak
stage's data and losses."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from visloc.datasets.semantic import SemanticPair, pf_willow_pairs, read_pairs_csv, read_pf_willow
from visloc.errors import ConfigError, InputError
from visloc.geometry.warps import Warp
from visloc.models.checkpoint import load_model, read_checkpoint
from visloc.models.cnngeometric import GeometricMatcher
from visloc.semantic.data import KeypointPairs, KeypointPairsConfig, SyntheticWarpConfig, SyntheticWarpPairs
from visloc.semantic.models import build_matcher, tiny_matcher_config
from visloc.training.checkpoint import load_checkpoint
from visloc.training.loop import LoopConfig
from visloc.training.semantic import (
    LOSS_PRESETS,
    SEMANTIC_OPTIONS,
    SyntheticTuples,
    TrainSemanticConfig,
    WeakTuples,
    pretrain_loss,
    split_pairs,
    synthetic_warp,
    train_semantic,
    weak_loss_terms,
)
from visloc.training.semantic_losses import grid_loss

SIZE = 64
MODEL = tiny_matcher_config("affine", SIZE)  # 4x4 features, one 3x3 regressor convolution


@pytest.fixture(scope="module")
def willow(tmp_path_factory: pytest.TempPathFactory, pf_willow_factory) -> Path:
    return pf_willow_factory(tmp_path_factory.mktemp("willow") / "willow", ("bird(A)", "cup(B)"),
                             base_hw=(24, 32), step_hw=(2, 3))


def photos(root: Path) -> tuple[str, ...]:
    return tuple(str(p) for p in sorted(root.rglob("*.png")))[:3]


def fast(willow: Path, **overrides) -> TrainSemanticConfig:
    base = TrainSemanticConfig(model=MODEL, synthetic_images=photos(willow), synthetic_length=8,
                               synthetic_val_length=4,
                               loop=LoopConfig(batch_size=4, epochs=1, seed=1, device="cpu", progress=False))
    return SEMANTIC_OPTIONS.replace(base, **overrides)


# --- losses on batches ------------------------------------------------------------------------------------


def test_a_few_pretraining_steps_lower_the_grid_loss_on_a_fixed_batch(willow: Path) -> None:
    torch.manual_seed(0)
    model = build_matcher(MODEL)
    data = SyntheticTuples(SyntheticWarpPairs(photos(willow), SyntheticWarpConfig(output_size=(SIZE, SIZE)), 4))
    batch = [torch.stack(x) for x in zip(*(data[i] for i in range(4)), strict=True)]
    identity = grid_loss(Warp.from_theta(torch.tensor([[1.0, 0, 0, 0, 1, 0]]).expand(4, 6), "affine"),
                         synthetic_warp(batch[2], "affine"))
    model.eval()
    with torch.no_grad():
        before = float(pretrain_loss(model, batch, MODEL))
    assert before == pytest.approx(float(identity), rel=1e-5), "identity_init: the untrained model is the identity"
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    model.train()
    for _ in range(6):
        loss = pretrain_loss(model, batch, MODEL)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval()
    with torch.no_grad():
        after = float(pretrain_loss(model, batch, MODEL))
    assert after < 0.9 * before


def test_weak_loss_is_zero_for_identical_images_with_identity_predictions(willow: Path) -> None:
    """Flip-free self pairs: the identity model's NN, Chamfer and cyclic terms vanish exactly."""
    images = read_pf_willow(willow)
    pairs = [SemanticPair(im, im, im.category) for im in images[:2]]
    data = WeakTuples(KeypointPairs(pairs, KeypointPairsConfig(output_size=(SIZE, SIZE))))
    batch = [torch.stack(x) for x in zip(*(data[i] for i in range(2)), strict=True)]
    model = build_matcher(MODEL).eval()
    for name in ("pub2_nn", "pub2_chamfer"):
        with torch.no_grad():
            terms = weak_loss_terms(model, batch, MODEL, LOSS_PRESETS[name])
        assert float(terms["total"]) == pytest.approx(0.0, abs=1e-10), name
    with pytest.raises(ConfigError, match="synthetic pairs"):
        weak_loss_terms(model, batch, MODEL, LOSS_PRESETS["pub1"])


# --- train_semantic -----------------------------------------------------------------------------------------


def test_pretraining_writes_a_loadable_model(willow: Path, tmp_path: Path) -> None:
    metrics = train_semantic(tmp_path, fast(willow))
    assert {p.name for p in tmp_path.iterdir()} == {"last.pt", "best.pt", "model.pt", "metrics.json"}
    assert metrics["stage"] == "pretrain" and metrics["pairs"] == {"synthetic_train": 8, "synthetic_val": 4}
    model = load_model(tmp_path / "model.pt")
    assert isinstance(model, GeometricMatcher) and model.config == MODEL
    for k, v in model.state_dict().items():
        assert torch.equal(v, load_checkpoint(tmp_path / "best.pt")["model"][k]), k
    saved = read_checkpoint(tmp_path / "model.pt")["metrics"]
    assert saved["preprocess"] == {"image_size": SIZE} and saved["stage"] == "pretrain"
    on_disk = json.loads((tmp_path / "metrics.json").read_text())
    assert on_disk["config"]["task"] == "semantic" and on_disk["config"]["model"]["network"] == "cnngeometric"
    assert {"torch", "visloc"} <= set(on_disk["versions"])


def test_resume_gives_the_same_weights_as_an_uninterrupted_run(willow: Path, tmp_path: Path) -> None:
    config = fast(willow, epochs=2, synthetic_length=4, synthetic_val_length=0)
    train_semantic(tmp_path / "straight", config)
    train_semantic(tmp_path / "split", SEMANTIC_OPTIONS.replace(config, epochs=1))
    train_semantic(tmp_path / "split", config, resume=True)
    a, b = load_checkpoint(tmp_path / "straight" / "last.pt"), load_checkpoint(tmp_path / "split" / "last.pt")
    assert a["epoch"] == b["epoch"] == 2
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k
    with pytest.raises(ConfigError, match="cannot resume"):
        train_semantic(tmp_path / "split", SEMANTIC_OPTIONS.replace(config, lr=0.5), resume=True)


def test_weak_stage_starts_from_the_checkpoint_and_uses_only_its_classes(willow: Path, tmp_path: Path) -> None:
    train_semantic(tmp_path / "pre", fast(willow))
    init = tmp_path / "pre" / "model.pt"
    config = fast(willow, stage="weak", model=None, init_from=str(init), data_root=str(willow), classes=("cup(B)",),
                  loss=LOSS_PRESETS["pub2_nn"], lr=1e-12, val_fraction=0.2)
    metrics = train_semantic(tmp_path / "weak", config)
    # cup(B): 3 flip pairs + 3 random pairs; 20 % (1 pair) held out
    assert metrics["pairs"] == {"train": 5, "val": 1}
    pairs = read_pairs_csv(tmp_path / "weak" / "pairs_train.csv", willow)
    assert len(pairs) == 5 and {p.category for p in pairs} == {"cup(B)"}
    assert metrics["model"]["image_size"] == SIZE and metrics["init_from"] == str(init)
    start = load_model(init).state_dict()
    end = load_model(tmp_path / "weak" / "model.pt").state_dict()
    for k, v in start.items():  # lr 1e-12: the weights stay at the initialisation (BN statistics move)
        if "running" not in k and "num_batches" not in k:
            assert torch.allclose(v.float(), end[k].float(), atol=1e-6), k


def test_publication_i_weak_stage_mixes_synthetic_and_real_pairs(willow: Path, tmp_path: Path) -> None:
    config = fast(willow, stage="weak", data_root=str(willow), loss=LOSS_PRESETS["pub1"], val_fraction=0.0,
                  max_per_category=1, include_flips=False)
    metrics = train_semantic(tmp_path, config)
    assert metrics["pairs"] == {"train": 2, "val": 0} and not (tmp_path / "pairs_val.csv").exists()
    assert np.isfinite(metrics["epochs"][0]["train_loss"])


def test_configs_that_cannot_work_are_refused(willow: Path, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="supervised grid loss only"):
        TrainSemanticConfig(loss=LOSS_PRESETS["pub2_chamfer"])
    with pytest.raises(ConfigError, match="needs data_root"):
        TrainSemanticConfig(stage="weak")
    with pytest.raises(ConfigError, match="do not fit the model"):
        TrainSemanticConfig(model=MODEL, synthetic=SyntheticWarpConfig(kind="tps", output_size=(SIZE, SIZE)))
    with pytest.raises(ConfigError, match="unknown class"):
        train_semantic(tmp_path / "a", fast(willow, stage="weak", data_root=str(willow), classes=("dog",)))
    no_points = tmp_path / "plain"
    (no_points / "x").mkdir(parents=True)
    for name in ("a.png", "b.png"):
        Image.new("RGB", (20, 16)).save(no_points / "x" / name)
    csv = no_points / "pairs.csv"
    csv.write_text("source_image,target_image,class,flip\nx/a.png,x/b.png,x,0\nx/b.png,x/a.png,x,0\n")
    with pytest.raises(ConfigError, match="needs keypoints"):
        train_semantic(tmp_path / "b", fast(willow, stage="weak", data_root=str(no_points), pairs_csv=str(csv)))
    train_semantic(tmp_path / "pre", fast(willow))
    with pytest.raises(InputError, match="do not fit"):
        train_semantic(tmp_path / "c", fast(willow, stage="weak", model=tiny_matcher_config("tps", 96),
                                            init_from=str(tmp_path / "pre" / "model.pt"), data_root=str(willow)))


def test_split_pairs_is_seeded_and_disjoint(willow: Path) -> None:
    pairs = pf_willow_pairs(read_pf_willow(willow))  # 2 classes x 3 x 2 = 12
    train, val = split_pairs(pairs, 0.25, seed=3)
    assert len(val) == 3 and len(train) == 9 and not {id(p) for p in train} & {id(p) for p in val}
    assert [id(p) for p in split_pairs(pairs, 0.25, seed=3)[1]] == [id(p) for p in val]
    assert split_pairs(pairs, 0.0, seed=3) == (pairs, [])
