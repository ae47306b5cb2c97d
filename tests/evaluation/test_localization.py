"""Localization metrics against hand-computed errors, medians and shares."""

from __future__ import annotations

import json
import logging
import math

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from visloc.errors import InputError
from visloc.evaluation import (
    DEFAULT_THRESHOLDS,
    LocalizationResults,
    default_scene_of,
    evaluate_localization,
    evaluate_localization_files,
    threshold_key,
)
from visloc.geometry import Pose
from visloc.io.poses import write_poses


def rot(axis, deg: float) -> np.ndarray:
    axis = np.asarray(axis, dtype=np.float64)
    return Rotation.from_rotvec(np.radians(deg) * axis / np.linalg.norm(axis)).as_matrix()


def gt_pose(seed: int) -> Pose:
    rng = np.random.default_rng(seed)
    R_wc = Rotation.random(random_state=seed).as_matrix()
    return Pose.from_world_from_cam(R_wc, rng.uniform(-3, 3, size=3))


def perturbed(gt: Pose, dt: float, dR: float, seed: int = 0) -> Pose:
    """A pose whose centre is ``dt`` from ``gt``'s and whose rotation differs by ``dR`` degrees."""
    rng = np.random.default_rng(seed)
    direction = rng.normal(size=3)
    axis = rng.normal(size=3)
    center = gt.center + dt * direction / np.linalg.norm(direction)
    R = rot(axis, dR) @ gt.R
    return Pose(R, -R @ center)


# --- single query -------------------------------------------------------------------------------------
def test_three_cm_and_two_degrees():
    gt = gt_pose(1)
    # centre moved by exactly 3 cm along world x, rotation changed by exactly 2 degrees about (1, 2, 3)
    center = gt.center + np.array([0.03, 0.0, 0.0])
    R = rot([1, 2, 3], 2.0) @ gt.R
    est = Pose(R, -R @ center)
    res = evaluate_localization({"q.png": est}, {"q.png": gt})
    err = res.per_query["q.png"]
    assert err is not None
    assert err.t_m == pytest.approx(0.03, abs=1e-12)
    assert err.R_deg == pytest.approx(2.0, abs=1e-9)
    assert err.scene == "all"
    # 3 cm / 2 deg: outside 1cm_1deg and 2cm_2deg, inside the others
    expect = {"1cm_1deg": 0, "2cm_2deg": 0, "5cm_5deg": 1, "25cm_2deg": 1, "50cm_5deg": 1, "5m_10deg": 1}
    assert res.overall.recall == expect


def test_rotation_error_is_relative_rotation_not_translation_vector():
    """Rotating the camera in place changes t but not the centre: t_err must stay 0."""
    gt = gt_pose(2)
    R = rot([0, 0, 1], 30.0) @ gt.R
    est = Pose(R, -R @ gt.center)
    err = evaluate_localization({"q": est}, {"q": gt}).per_query["q"]
    assert err.t_m == pytest.approx(0.0, abs=1e-9)
    assert err.R_deg == pytest.approx(30.0, abs=1e-9)


# --- a set of queries with known errors ---------------------------------------------------------------
ERRORS_A = [(0.005, 0.5), (0.015, 1.5), (0.04, 4.0), (0.2, 1.9), None]  # None: not localized
ERRORS_B = [(0.01, 1.0), None, None]


def make_case():
    truth, est = {}, {}
    for scene, errors in (("a", ERRORS_A), ("b", ERRORS_B)):
        for k, e in enumerate(errors):
            name = f"{scene}/seq-01/frame-{k:03d}.png"
            truth[name] = gt_pose(100 * ord(scene) + k)
            if e is not None:
                est[name] = perturbed(truth[name], e[0], e[1], seed=k)
    return est, truth


@pytest.fixture
def case_results() -> LocalizationResults:
    est, truth = make_case()
    return evaluate_localization(est, truth)


def test_per_scene_medians_and_counts(case_results):
    a, b = case_results.scenes["a"], case_results.scenes["b"]
    assert list(case_results.scenes) == ["a", "b"]
    assert (a.num_queries, a.num_localized) == (5, 4)
    # sorted t: 0.005 0.015 0.04 0.2 inf ; sorted R: 0.5 1.5 1.9 4 inf
    assert a.median_t_m == pytest.approx(0.04)
    assert a.median_R_deg == pytest.approx(1.9)
    # two of three failed: the median is a failure
    assert (b.num_queries, b.num_localized) == (3, 1)
    assert math.isinf(b.median_t_m) and math.isinf(b.median_R_deg)


def test_per_scene_shares(case_results):
    a = case_results.scenes["a"].recall
    assert a == pytest.approx(
        {
            "1cm_1deg": 0.2,
            "2cm_2deg": 0.4,
            "5cm_5deg": 0.6,
            "25cm_2deg": 0.6,
            "50cm_5deg": 0.8,
            "5m_10deg": 0.8,
        }
    )
    b = case_results.scenes["b"].recall
    # (1 cm, 1 deg) lies exactly on the finest threshold: within
    assert b == pytest.approx({k: 1 / 3 for k in b})


def test_overall(case_results):
    o = case_results.overall
    assert (o.num_queries, o.num_localized) == (8, 5)
    # t: 0.005 0.01 0.015 0.04 | 0.2 inf inf inf -> (0.04 + 0.2) / 2 ; R: ... 1.9 | 4 ... -> 2.95
    assert o.median_t_m == pytest.approx(0.12)
    assert o.median_R_deg == pytest.approx(2.95)
    assert o.recall["1cm_1deg"] == pytest.approx(2 / 8)
    assert o.recall["25cm_2deg"] == pytest.approx(4 / 8)
    assert o.recall["5m_10deg"] == pytest.approx(5 / 8)
    assert case_results.failed == [
        "a/seq-01/frame-004.png",
        "b/seq-01/frame-001.png",
        "b/seq-01/frame-002.png",
    ]


def test_even_count_with_half_failed_has_infinite_median():
    gt = {f"q{k}": gt_pose(k) for k in range(4)}
    est = {"q0": perturbed(gt["q0"], 0.1, 1.0), "q1": perturbed(gt["q1"], 0.3, 3.0)}
    res = evaluate_localization(est, gt)
    assert math.isinf(res.overall.median_t_m)
    est["q2"] = perturbed(gt["q2"], 0.2, 2.0)
    res = evaluate_localization(est, gt)
    assert res.overall.median_t_m == pytest.approx(0.25)
    assert res.overall.median_R_deg == pytest.approx(2.5)


def test_all_failed():
    res = evaluate_localization({}, {"x/q": gt_pose(0)})
    assert res.overall.num_localized == 0
    assert math.isinf(res.overall.median_t_m)
    assert all(v == 0 for v in res.overall.recall.values())
    assert res.to_json()["per_query"] == {"x/q": None}


# --- threshold boundaries -----------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("dt", "dR", "within"),
    [
        (0.05, 5.0, True),  # exactly on both bounds
        (0.05, 0.0, True),
        (0.0, 5.0, True),
        (0.0501, 0.0, False),
        (0.0, 5.01, False),
        (0.049, 5.01, False),  # t inside but R outside: AND, not OR
    ],
)
def test_threshold_boundaries(dt, dR, within):
    gt = Pose.identity()
    R = rot([0, 0, 1], dR)
    est = Pose(R, -R @ np.array([dt, 0.0, 0.0]))
    res = evaluate_localization({"q": est}, {"q": gt}, thresholds=[(0.05, 5.0)])
    assert res.overall.recall == {"5cm_5deg": 1.0 if within else 0.0}


def test_threshold_keys():
    assert [threshold_key(t, r) for t, r in DEFAULT_THRESHOLDS] == [
        "1cm_1deg",
        "2cm_2deg",
        "5cm_5deg",
        "25cm_2deg",
        "50cm_5deg",
        "5m_10deg",
    ]
    assert threshold_key(0.005, 0.5) == "0.5cm_0.5deg"
    assert threshold_key(0.0025, 0.25) == "0.25cm_0.25deg"
    assert threshold_key(0.1, 1) == "10cm_1deg"
    assert threshold_key(1.0, 1) == "1m_1deg"
    assert threshold_key(2.5, 3) == "2.5m_3deg"
    # 0.07 * 100 is 7.000000000000001 in floating point: the key must still read 7cm
    assert threshold_key(0.07, 7) == "7cm_7deg"


def test_custom_thresholds_keep_order():
    gt = {"q": Pose.identity()}
    res = evaluate_localization(gt, gt, thresholds=[(0.005, 0.5), (0.25, 2)])
    assert list(res.overall.recall) == ["0.5cm_0.5deg", "25cm_2deg"]
    assert res.threshold_keys == ["0.5cm_0.5deg", "25cm_2deg"]


@pytest.mark.parametrize(
    "bad", [[(0.0, 1.0)], [(0.1, -1.0)], [(math.inf, 1.0)], [(0.1, 1.0, 2.0)], [(0.01, 1), (0.01, 1)]]
)
def test_invalid_thresholds(bad):
    with pytest.raises(ValueError):
        evaluate_localization({}, {"q": Pose.identity()}, thresholds=bad)


def test_empty_truth():
    with pytest.raises(ValueError, match="ground truth"):
        evaluate_localization({"q": Pose.identity()}, {})


# --- scenes -------------------------------------------------------------------------------------------
def test_default_scene_of():
    assert default_scene_of("chess/seq-03/frame-000000.color.png") == "chess"
    assert default_scene_of("KingsCollege/seq2/frame00001.png") == "KingsCollege"
    assert default_scene_of("frame-000000.png") == "all"


def test_scene_split_by_prefix_and_custom_scene_of():
    truth = {"chess/q1": gt_pose(1), "chess/q2": gt_pose(2), "fire/q1": gt_pose(3), "lone.png": gt_pose(4)}
    est = {"chess/q1": truth["chess/q1"], "fire/q1": perturbed(truth["fire/q1"], 1.0, 20.0)}
    res = evaluate_localization(est, truth)
    assert sorted(res.scenes) == ["all", "chess", "fire"]
    assert res.scenes["chess"].num_queries == 2 and res.scenes["chess"].num_localized == 1
    assert res.scenes["fire"].recall["5m_10deg"] == 0.0
    assert res.per_query["fire/q1"].scene == "fire"

    res = evaluate_localization(est, truth, scene_of=lambda n: "big" if n.startswith("chess") else "small")
    assert {s: st.num_queries for s, st in res.scenes.items()} == {"big": 2, "small": 2}


def test_extra_estimates_are_ignored_with_warning(caplog):
    truth = {"a/q": gt_pose(1)}
    est = {"a/q": truth["a/q"], "q-without-prefix": gt_pose(2)}
    with caplog.at_level(logging.WARNING, logger="visloc.evaluation.localization"):
        res = evaluate_localization(est, truth)
    assert res.ignored_estimates == ("q-without-prefix",)
    assert res.overall.num_queries == 1 and res.overall.recall["1cm_1deg"] == 1.0
    assert "q-without-prefix" not in res.per_query
    assert any("no ground truth" in r.message for r in caplog.records)


# --- serialisation and files --------------------------------------------------------------------------
def test_json_layout_and_round_trip(case_results, tmp_path):
    data = case_results.to_json()
    text = json.dumps(data, allow_nan=False)  # no inf / NaN may reach JSON
    assert set(data) == {"scenes", "overall", "per_query", "ignored_estimates", "config"}
    assert data["scenes"]["b"]["median_t_m"] is None and data["scenes"]["b"]["median_R_deg"] is None
    assert data["scenes"]["a"]["median_t_m"] == pytest.approx(0.04)
    assert data["scenes"]["a"]["5cm_5deg"] == pytest.approx(0.6)
    assert data["per_query"]["b/seq-01/frame-001.png"] is None
    assert data["per_query"]["b/seq-01/frame-000.png"]["scene"] == "b"
    assert data["config"]["threshold_keys"][0] == "1cm_1deg"

    back = LocalizationResults.from_json(json.loads(text))
    assert back.to_json() == data
    assert math.isinf(back.scenes["b"].median_t_m)

    path = case_results.write(tmp_path / "out" / "results.json")
    assert LocalizationResults.from_json(json.loads(path.read_text())).to_json() == data
    assert [p.name for p in path.parent.iterdir()] == ["results.json"]  # no temporary left behind


def test_format_table(case_results):
    table = case_results.format_table()
    lines = table.splitlines()
    assert lines[0].split(" | ")[0].strip() == "scene"
    assert "1cm_1deg" in lines[0] and "5m_10deg" in lines[0]
    row_a = [c.strip() for c in lines[2].split("|")]
    assert row_a == ["a", "5", "4", "4.000", "1.900", "20.0", "40.0", "60.0", "60.0", "80.0", "80.0"]
    row_b = [c.strip() for c in lines[3].split("|")]
    assert row_b[:5] == ["b", "3", "1", "inf", "inf"]
    overall = [c.strip() for c in lines[-1].split("|")]
    assert overall[:5] == ["overall", "8", "5", "12.000", "2.950"]


def test_evaluate_files(tmp_path):
    est, truth = make_case()
    est_path, gt_path = tmp_path / "poses.txt", tmp_path / "gt.txt"
    write_poses(est_path, est)
    write_poses(gt_path, truth)
    from_files = evaluate_localization_files(est_path, gt_path)
    from_mapping = evaluate_localization_files(est_path, truth)
    direct = evaluate_localization(est, truth)
    assert from_files.config["ground_truth"] == str(gt_path)
    for res in (from_files, from_mapping):
        assert res.config["estimates"] == str(est_path)
        assert res.scenes["a"].recall == direct.scenes["a"].recall
        assert res.overall.median_t_m == pytest.approx(direct.overall.median_t_m, abs=1e-8)

    empty = tmp_path / "empty.txt"
    empty.write_text("# nothing\n")
    with pytest.raises(InputError, match="no poses"):
        evaluate_localization_files(est_path, empty)
    with pytest.raises(InputError):
        evaluate_localization_files(tmp_path / "missing.txt", truth)
