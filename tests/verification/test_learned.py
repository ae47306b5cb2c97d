"""The learned fusion: fitting, scoring, the JSON file, and its use in the second stage of the re-ranking."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from visloc.errors import ConfigError, InputError
from visloc.verification.learned import FEATURES, FusionModel, features, fit, load
from visloc.verification.rerank import RerankConfig, rerank
from visloc.verification.scores import PairVerification, fused_score


def _v(inliers: int, consistent: int, score: float) -> PairVerification:
    i = np.zeros(100, bool)
    i[:inliers] = True
    c = np.zeros(100, bool)
    c[:consistent] = True
    return PairVerification(100, i, c, score)


def _data(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Positives have many consistent inliers (300-1000), negatives few (0-30); the rest is noise."""
    rng = np.random.default_rng(seed)
    y = (np.arange(n) % 2).astype(float)
    c = np.where(y == 1, rng.uniform(300, 1000, n), rng.uniform(0, 30, n))
    x = np.stack([features(ci, ci + rng.uniform(100, 500), rng.uniform(0.6, 0.9), rng.uniform(0.8, 1.2))
                  for ci in c])
    return x, y


def _model(weights: tuple[float, ...], bias: float = 0.0) -> FusionModel:
    return FusionModel(FEATURES, (0.0,) * 4, (1.0,) * 4, weights, bias)


def test_fit_recovers_a_separable_rule_and_scores_rise_with_consistent_inliers() -> None:
    x, y = _data(200)
    model = fit(x, y)
    assert model.features == FEATURES
    assert np.mean((model.logits(x) > 0) == (y == 1)) == 1.0
    test_x, test_y = _data(100, seed=1)
    assert np.mean((model.logits(test_x) > 0) == (test_y == 1)) == 1.0
    w = np.asarray(model.weights)
    assert w[0] > 0 and abs(w[0]) == np.abs(w).max()
    scores = [model.score(c, 600, 0.8, 1.0) for c in (0, 10, 50, 100, 300, 600)]
    assert (np.diff(scores) > 0).all()
    assert model.score(100, 600, 0.8, 1.0) == pytest.approx(model.logits(features(100, 600, 0.8, 1.0)[None])[0])
    with pytest.raises(ValueError):
        fit(x, np.zeros(len(x)))  # one class only
    with pytest.raises(ValueError):
        fit(x[:, :3], y)


def test_save_load_round_trip_is_exact(tmp_path) -> None:
    x, y = _data(60)
    model = fit(x, y, l2=0.1)
    model = FusionModel(model.features, model.mean, model.std, model.weights, model.bias, {"note": "t", "n": 60})
    path = tmp_path / "m.json"
    model.save(path)
    back = load(path)
    assert back == model and back.metrics == model.metrics
    assert back.score(12, 80, 0.7, 1.1) == model.score(12, 80, 0.7, 1.1)


@pytest.mark.parametrize("text", ["{not json", "[]", json.dumps({"format": "visloc-fusion-logistic"}),
                                  json.dumps({"format": "visloc-fusion-logistic", "features": ["a", "b", "c", "d"],
                                              "mean": [0] * 4, "std": [1] * 4, "weights": [0] * 4, "bias": 0}),
                                  json.dumps({"format": "visloc-fusion-logistic", "features": list(FEATURES),
                                              "mean": [0] * 4, "std": [0] * 4, "weights": [0] * 4, "bias": 0})])
def test_a_malformed_file_is_an_input_error_naming_it(tmp_path, text: str) -> None:
    path = tmp_path / "bad_fusion.json"
    path.write_text(text)
    with pytest.raises(InputError) as e:
        load(path)
    assert e.value.path == path and "bad_fusion.json" in str(e.value)
    with pytest.raises(InputError):
        load(tmp_path / "missing.json")


def test_rerank_with_the_learned_fusion(tmp_path) -> None:
    verified = {"a": _v(10, 5, 0.01), "b": _v(50, 40, 0.30), "c": _v(80, 10, 0.05), "d": _v(40, 35, 0.30)}
    names, scores = ["a", "b", "c", "d"], [0.9, 0.5, 0.7, 0.95]
    # first stage by S: b, d (tie: retrieval order), c, a; the second stage re-sorts b, d, c
    ratio = tmp_path / "ratio.json"
    _model((1.0, -1.0, 0.0, 0.0)).save(ratio)  # log1p|C| - log1p|I|: b -0.22, d -0.13, c -2.0
    out = rerank(names, scores, verified.__getitem__,
                 RerankConfig(shortlist=4, first_stage="S", second_stage=3, fusion="learned", fusion_model=str(ratio)))
    assert [c.name for c in out] == ["d", "b", "c", "a"]
    assert out[0].fused == pytest.approx(math.log(36 / 41)) and out[3].fused is None
    near = tmp_path / "near.json"
    _model((0.0, 0.0, 0.0, -1.0)).save(near)  # -G: d (s 0.95), c (0.7), b (0.5)
    out = rerank(names, scores, verified.__getitem__,
                 RerankConfig(shortlist=4, first_stage="S", second_stage=3, fusion="learned", fusion_model=str(near)),
                 similarity=lambda n, v: 0.5)
    assert [c.name for c in out] == ["d", "c", "b", "a"]
    assert out[1].fused == pytest.approx(-math.sqrt(2 - 2 * 0.7)) and out[0].local_similarity == 0.5
    with pytest.raises(InputError):
        rerank(names, scores, verified.__getitem__,
               RerankConfig(shortlist=4, first_stage="S", second_stage=3, fusion="learned", fusion_model=str(tmp_path / "no.json")))
    with pytest.raises(ConfigError):
        fused_score(0.5, 0.5, 0.5, "learned")


def test_the_shipped_model_loads() -> None:
    model = load()
    assert model.features == FEATURES and len(model.weights) == 4
    assert model.weights[0] > 0  # more consistent inliers: more likely a correct image
    assert "held_out" in model.metrics
