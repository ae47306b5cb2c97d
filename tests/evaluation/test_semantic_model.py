"""PCK of a matcher against hand-computed values: the identity baseline, and a model through its own warps."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from visloc.datasets.semantic import SemanticPair, pf_willow_pairs, read_pf_willow
from visloc.evaluation.semantic import evaluate_pck
from visloc.evaluation.semantic_model import evaluate_matcher
from visloc.semantic.data import KeypointPairs, KeypointPairsConfig
from visloc.semantic.models import build_matcher, tiny_matcher_config
from visloc.semantic.predict import predict_warps, transfer_target_keypoints
from visloc.settings import data_dir

SIZE = 64


@pytest.fixture(scope="module")
def willow(tmp_path_factory: pytest.TempPathFactory, pf_willow_factory) -> Path:
    return pf_willow_factory(tmp_path_factory.mktemp("willow") / "willow", ("bird(A)", "cup(B)"),
                             base_hw=(24, 32), step_hw=(2, 3))


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
