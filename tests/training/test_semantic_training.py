"""Semantic-matching training (tiny backbone, 64 px): pretraining lowers the grid loss, exact resume, the weak
stage's data and losses, evaluation glue against hand-computed PCK, and the shipped model."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from visloc.datasets.semantic import SemanticPair, pf_willow_pairs, read_pairs_csv, read_pf_willow
from visloc.errors import ConfigError, InputError
from visloc.evaluation.semantic import evaluate_pck
from visloc.evaluation.semantic_model import (
    SHIPPED_MODEL,
    evaluate_matcher,
    load_matcher,
    predict_warps,
    transfer_target_keypoints,
)
from visloc.geometry.warps import Warp
from visloc.models.cnngeometric import GeometricMatcher, TwoStageMatcher
from visloc.models.weights import load_model, read_checkpoint
from visloc.settings import data_dir, shipped_model
from visloc.training.checkpoint import load_checkpoint
from visloc.training.semantic import (
    LOSS_PRESETS,
    SyntheticTuples,
    TrainSemanticConfig,
    WeakTuples,
    build_matcher,
    pretrain_loss,
    split_pairs,
    synthetic_warp,
    tiny_matcher_config,
    train_semantic,
    weak_loss_terms,
)
from visloc.training.semantic_data import (
    KeypointPairs,
    KeypointPairsConfig,
    SyntheticWarpConfig,
    SyntheticWarpPairs,
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
                               synthetic_val_length=4, batch_size=4, epochs=1, device="cpu", progress=False)
    return dataclasses.replace(base, **overrides)


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
    train_semantic(tmp_path / "split", dataclasses.replace(config, epochs=1))
    train_semantic(tmp_path / "split", config, resume=True)
    a, b = load_checkpoint(tmp_path / "straight" / "last.pt"), load_checkpoint(tmp_path / "split" / "last.pt")
    assert a["epoch"] == b["epoch"] == 2
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k
    with pytest.raises(ConfigError, match="cannot resume"):
        train_semantic(tmp_path / "split", dataclasses.replace(config, lr=0.5), resume=True)


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


# --- evaluation glue ---------------------------------------------------------------------------------------


def _identity_by_hand(pair: SemanticPair) -> np.ndarray:
    """Identity theta: the same relative position, x_s = x_t (W_s - 1) / (W_t - 1)."""
    (hs, ws), (ht, wt) = pair.source.image_size_hw, pair.target.image_size_hw
    return pair.target_keypoints * np.array([(ws - 1) / (wt - 1), (hs - 1) / (ht - 1)])


def _pck_by_hand(pair: SemanticPair, predicted: np.ndarray, alpha: float, norm: str) -> float:
    src = pair.source_keypoints
    L = (src.max(0) - src.min(0)).max() if norm == "bbox" else max(pair.source.image_size_hw)
    return float(np.mean(np.linalg.norm(predicted - src, axis=1) <= alpha * L))


def test_identity_evaluation_matches_the_hand_computed_pck(willow: Path) -> None:
    pairs = pf_willow_pairs(read_pf_willow(willow))
    results, warps = evaluate_matcher(None, pairs, alphas=(0.1, 0.3))
    assert len(warps) == len(pairs)
    for row, pair in zip(results.rows, pairs, strict=True):
        pred = _identity_by_hand(pair)
        np.testing.assert_allclose(transfer_target_keypoints(warps[row.index], pair), pred, atol=1e-9)
        for norm in ("bbox", "image"):
            for a in (0.1, 0.3):
                assert row.pck[norm][a] == pytest.approx(_pck_by_hand(pair, pred, a, norm)), (norm, a)


def test_a_trained_model_is_evaluated_through_its_own_warps(willow: Path) -> None:
    torch.manual_seed(0)
    model = build_matcher(tiny_matcher_config("two_stage", SIZE)).eval()
    with torch.no_grad():  # move the prediction away from the identity
        model.affine_regressor.linear.bias.add_(torch.tensor([0.1, 0.0, 0.05, 0.0, -0.1, 0.0]))
    pairs = pf_willow_pairs(read_pf_willow(willow))[:5]
    warps = predict_warps(model, pairs, batch_size=2)
    assert all(w.kind == "two_stage" and w.batch_size == 1 for w in warps)
    data = KeypointPairs(pairs, KeypointPairsConfig(output_size=(SIZE, SIZE)))
    with torch.no_grad():
        item = data[3]
        direct = model(item["source"][None], item["target"][None])
    torch.testing.assert_close(warps[3].affine, direct.affine.double())
    results, _ = evaluate_matcher(model, pairs, alphas=(0.1,), warps=warps)
    expected = evaluate_pck(pairs, lambda p: transfer_target_keypoints(warps[pairs.index(p)], p), (0.1,))
    assert [r.pck for r in results.rows] == [r.pck for r in expected.rows]


@pytest.mark.real_data
def test_identity_pck_on_pf_willow_equals_the_hand_computed_one() -> None:
    root = data_dir() / "pf_willow"
    if not root.is_dir():
        pytest.skip(f"PF-WILLOW not found under {data_dir()}")
    pairs = [p for p in pf_willow_pairs(read_pf_willow(root)) if p.category == "duck(S)"][:4]
    results, _ = evaluate_matcher(None, pairs, alphas=(0.1,))
    for row, pair in zip(results.rows, pairs, strict=True):
        for norm in ("bbox", "image"):
            assert row.pck[norm][0.1] == pytest.approx(_pck_by_hand(pair, _identity_by_hand(pair), 0.1, norm))
    assert results.mean_over_pairs("bbox", 0.1) == pytest.approx(
        np.mean([_pck_by_hand(p, _identity_by_hand(p), 0.1, "bbox") for p in pairs]))


# --- the shipped model --------------------------------------------------------------------------------------


def test_shipped_model_maps_a_synthetic_warp_closer_to_the_truth_than_the_identity() -> None:
    path = shipped_model(SHIPPED_MODEL)
    assert path.is_file(), "run scripts/train_shipped_semantic.sh"
    assert path.stat().st_size < 8 * 1024 * 1024
    model = load_matcher("shipped")
    assert isinstance(model, (GeometricMatcher, TwoStageMatcher))
    metrics = json.loads(path.with_suffix(".json").read_text())
    assert metrics["command"] == "scripts/train_shipped_semantic.sh"
    assert metrics["parameters"] == sum(p.numel() for p in model.parameters())
    config = model.config
    kind = "two_stage" if isinstance(model, TwoStageMatcher) else config.kind
    size = (config.image_size, config.image_size)
    data = SyntheticWarpPairs(None, SyntheticWarpConfig(kind=kind, output_size=size), length=6, seed=12345)
    batch = [data[i] for i in range(6)]
    source = torch.stack([b["source"] for b in batch])
    target = torch.stack([b["target"] for b in batch])
    truth = synthetic_warp(torch.stack([b["theta"] for b in batch]), kind)
    with torch.no_grad():
        out = model(source, target)
    pred = out if isinstance(out, Warp) else Warp.from_theta(out, config.kind)
    identity = Warp.from_theta(torch.tensor([[1.0, 0, 0, 0, 1, 0]]).expand(6, 6), "affine")
    assert float(grid_loss(pred, truth)) < float(grid_loss(identity, truth))
