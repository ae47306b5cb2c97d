"""PCK@alpha: hand-computed cases for every reference length, masks, aggregation and the JSON output."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from visloc.datasets.semantic import KeypointImage, SemanticPair, mirror_keypoints
from visloc.errors import ConfigError
from visloc.evaluation.semantic import (
    bbox_reference_length,
    correct_keypoints,
    evaluate_pck,
    image_reference_length,
    pair_pck,
    pck,
)

REF = np.array([[10.0, 10.0], [20.0, 10.0], [30.0, 10.0], [40.0, 10.0]])
# distances 0, 3, 5, 10 (along x, y, a 3-4-5 triangle, x)
PRED = REF + np.array([[0.0, 0.0], [0.0, 3.0], [3.0, 4.0], [10.0, 0.0]])


def test_pck_threshold_is_inclusive():
    assert correct_keypoints(PRED, REF, 0.1, 50.0).tolist() == [True, True, True, False]
    assert pck(PRED, REF, 0.1, 50.0) == 0.75
    assert pck(PRED, REF, 0.05, 50.0) == 0.25  # threshold 2.5: only the exact point
    assert pck(PRED, REF, 0.2, 50.0) == 1.0


def test_pck_mask_and_nan_predictions():
    mask = np.array([False, True, False, True])
    assert pck(PRED, REF, 0.1, 50.0, mask) == 0.5  # points 1 (ok) and 3 (wrong)
    assert correct_keypoints(PRED, REF, 0.1, 50.0, mask).tolist() == [False, True, False, False]
    assert math.isnan(pck(PRED, REF, 0.1, 50.0, np.zeros(4, bool)))
    pred = PRED.copy()
    pred[0] = np.nan
    assert pck(pred, REF, 0.1, 50.0) == 0.5  # a missing prediction counts as wrong
    with pytest.raises(ValueError, match="mask must have shape"):
        pck(PRED, REF, 0.1, 50.0, np.ones(3, bool))


def test_reference_lengths():
    kps = np.array([[0.0, 0.0], [4.0, 0.0], [2.0, 10.0], [100.0, 100.0]])
    assert bbox_reference_length(kps[:3]) == 10.0
    assert bbox_reference_length(kps, np.array([True, True, True, False])) == 10.0
    assert bbox_reference_length(kps) == 100.0
    assert math.isnan(bbox_reference_length(np.zeros((0, 2))))
    assert image_reference_length((30, 40)) == 40.0


def test_pair_pck_bbox_image_and_scnet_by_hand():
    img = KeypointImage("s.png", "c", REF, (100, 50))  # H = 100, W = 50
    lengths, values = pair_pck(PRED, REF, img, (0.1,), ("bbox", "image", "scnet"))
    assert lengths == {"bbox": 30.0, "image": 100.0, "scnet": 224.0}
    assert values["bbox"][0.1] == 0.5  # threshold 3: distances 0 and 3
    assert values["image"][0.1] == 1.0  # threshold 10
    # scnet: dx scaled by 224/50, dy by 224/100; threshold 22.4
    #   (0, 3) -> 6.72 ok; (3, 4) -> |(13.44, 8.96)| = 16.15 ok; (10, 0) -> 44.8 wrong
    assert values["scnet"][0.1] == 0.75


def test_object_bbox_normalisation_needs_a_box():
    with_box = KeypointImage("s.png", "c", REF, (100, 50), bbox_xyxy=[0, 0, 20, 40])
    lengths, values = pair_pck(PRED, REF, with_box, (0.1,), ("object_bbox",))
    assert lengths == {"object_bbox": 40.0} and values["object_bbox"][0.1] == 0.5
    with pytest.raises(ConfigError, match="object box"):
        pair_pck(PRED, REF, KeypointImage("s.png", "c", REF, (100, 50)), (0.1,), ("object_bbox",))


def test_identity_on_identical_images_gives_one():
    img = KeypointImage("a.png", "cat", REF, (60, 80))
    res = evaluate_pck([SemanticPair(img, img, "cat")], lambda p: p.target_keypoints,
                       normalisations=("bbox", "image", "scnet"))
    assert all(res.mean_over_pairs(n, a) == 1.0 for n in res.normalisations for a in res.alphas)


def test_flip_pair_compares_in_the_frames_shown():
    img = KeypointImage("a.png", "cat", REF, (60, 80))
    pair = SemanticPair(img, img, "cat", flip=True)  # target = mirrored source
    perfect = evaluate_pck([pair], lambda p: mirror_keypoints(p.target_keypoints, 80))
    assert perfect.mean_over_pairs("bbox", 0.05) == 1.0
    unmirrored = evaluate_pck([pair], lambda p: p.target_keypoints)  # forgets to mirror back
    # x errors |x - (79 - x)| for x = 10, 20, 30, 40: 59, 39, 19, 1; threshold 0.15 * 80 = 12
    assert unmirrored.rows[0].pck["image"][0.15] == 0.25


def test_direction_picks_the_comparison_image():
    offset = np.array([0.0, 5.0])  # bbox L: 30 in the source, 60 in the target
    src = KeypointImage("s.png", "c", REF, (100, 50))
    tgt = KeypointImage("t.png", "c", REF * 2, (300, 400))
    pair = SemanticPair(src, tgt, "c")
    t2s = evaluate_pck([pair], lambda p: p.source_keypoints + offset, alphas=(0.1,))
    assert t2s.rows[0].reference_length == {"bbox": 30.0, "image": 100.0}
    assert t2s.mean_over_pairs("image", 0.1) == 1.0 and t2s.mean_over_pairs("bbox", 0.1) == 0.0
    s2t = evaluate_pck([pair], lambda p: p.target_keypoints + offset, alphas=(0.1,), direction="source_to_target")
    assert s2t.rows[0].reference_length == {"bbox": 60.0, "image": 400.0}
    assert s2t.mean_over_pairs("bbox", 0.1) == 1.0


def test_per_class_and_two_means():
    def pair(cat, name):
        return SemanticPair(KeypointImage(f"{name}s.png", cat, REF, (100, 100)),
                            KeypointImage(f"{name}t.png", cat, REF, (100, 100)), cat)

    pairs = [pair("a", "1"), pair("a", "2"), pair("b", "3")]
    shift = {"1s.png": 0.0, "2s.png": 5.0, "3s.png": 50.0}  # L(bbox) = 30, alpha 0.1 -> threshold 3
    wrong_half = np.array([[0.0], [0.0], [1.0], [1.0]])

    def predict(p):
        return p.source_keypoints + wrong_half * [shift[p.source.path.name], 0.0]

    res = evaluate_pck(pairs, predict, alphas=(0.1,), normalisations=("bbox",))
    assert [r.pck["bbox"][0.1] for r in res.rows] == [1.0, 0.5, 0.5]
    assert res.per_class("bbox", 0.1) == {"a": 0.75, "b": 0.5}
    assert res.mean_over_pairs("bbox", 0.1) == pytest.approx(2.0 / 3.0)
    assert res.mean_over_classes("bbox", 0.1) == pytest.approx(0.625)


def test_json_output(tmp_path):
    img = KeypointImage("a.png", "cat", REF, (60, 80))
    empty = KeypointImage("e.png", "dog", np.zeros((0, 2)), (60, 80))
    pairs = [SemanticPair(img, img, "cat"), SemanticPair(empty, empty, "dog")]
    res = evaluate_pck(pairs, lambda p: p.target_keypoints, alphas=(0.05, 0.1))
    out = res.write_json(tmp_path / "res" / "pck.json")
    data = json.loads(out.read_text())  # strict JSON (no NaN)
    assert data["protocol"]["direction"] == "target_to_source" and data["protocol"]["comparison_image"] == "source"
    assert data["num_pairs"] == 2 and len(data["pairs"]) == 2
    assert data["pairs"][0]["pck"]["bbox"] == {"0.05": 1.0, "0.1": 1.0}
    assert data["pairs"][1]["pck"]["image"]["0.1"] is None and data["pairs"][1]["num_points"] == 0
    summary = data["summary"]["bbox"]["0.1"]
    assert summary == {"mean_over_pairs": 1.0, "mean_over_classes": 1.0, "per_class": {"cat": 1.0}, "num_pairs": 1}
    assert sorted(p.name for p in out.parent.iterdir()) == ["pck.json"]


def test_evaluate_pck_errors():
    img = KeypointImage("a.png", "cat", REF, (60, 80))
    pair = SemanticPair(img, img, "cat")
    with pytest.raises(ConfigError, match="unknown PCK normalisation"):
        evaluate_pck([pair], lambda p: p.target_keypoints, normalisations=("box",))
    with pytest.raises(ConfigError, match="unknown direction"):
        evaluate_pck([pair], lambda p: p.target_keypoints, direction="both")
    with pytest.raises(ConfigError, match="alphas"):
        evaluate_pck([pair], lambda p: p.target_keypoints, alphas=(0.0,))
    with pytest.raises(ValueError, match="returned shape"):
        evaluate_pck([pair], lambda p: p.target_keypoints[:2])
    other = KeypointImage("b.png", "cat", REF[:3], (60, 80))
    with pytest.raises(ValueError, match="4 source and 3 target keypoints"):
        evaluate_pck([SemanticPair(img, other, "cat")], lambda p: p.target_keypoints)
    with pytest.raises(KeyError, match="not evaluated"):
        evaluate_pck([pair], lambda p: p.target_keypoints).mean_over_pairs("scnet", 0.1)
