"""Retrieval metrics on hand-computed cases; the expected numbers are worked out in the comments."""

from __future__ import annotations

import json
import math
import os
import pickle
from pathlib import Path

import numpy as np
import pytest

from visloc.errors import InputError
from visloc.evaluation.retrieval import (
    RetrievalResults,
    average_precision,
    label_map,
    oxford_map,
    read_labels_csv,
    read_netvlad_dbstruct,
    read_revisited_gnd,
    recall_at_n,
    revisited_map,
)

# ----------------------------------------------------------------------------------------------------
# average_precision


def test_ap_trapezoid_two_positives() -> None:
    # ranking P N P N, 2 positives at 0-based ranks 0 and 2:
    # j=0, r=0: p0 = 1, p1 = 1/1 = 1            -> (1 + 1)/2     = 1
    # j=1, r=2: p0 = 1/2, p1 = 2/3              -> (1/2 + 2/3)/2 = 7/12
    # AP = (1 + 7/12) / 2 = 19/24
    assert average_precision([True, False, True, False], 2) == pytest.approx(19 / 24)


def test_ap_plain() -> None:
    # plain AP = mean of precision at each positive = (1/1 + 2/3) / 2 = 5/6
    assert average_precision([True, False, True, False], 2, trapezoid=False) == pytest.approx(5 / 6)


def test_ap_junk_removed_before_scoring() -> None:
    # J P N J P -> junk removed -> P N P: the case above, 19/24
    pos = [False, True, False, False, True]
    junk = [True, False, False, True, False]
    assert average_precision(pos, 2, junk) == pytest.approx(19 / 24)


def test_ap_missing_positive_and_first_rank_not_positive() -> None:
    # N P with 2 positives in the database: one positive at r=1
    # j=0, r=1: p0 = 0/1 = 0, p1 = 1/2 -> 1/4; AP = (1/4) / 2 = 1/8
    assert average_precision([False, True], 2) == pytest.approx(1 / 8)
    # nothing retrieved: AP 0
    assert average_precision([False, False], 1) == 0.0
    # a perfect ranking: AP 1
    assert average_precision([True, True, False], 2) == pytest.approx(1.0)


def test_ap_rejects_bad_input() -> None:
    with pytest.raises(ValueError):
        average_precision([True], 0)
    with pytest.raises(ValueError):
        average_precision([True, True], 1)
    with pytest.raises(ValueError):
        average_precision([True, True], 2, [False])


# ----------------------------------------------------------------------------------------------------
# Oxford / revisited


def test_oxford_map() -> None:
    ranks = np.array([[3, 1, 0, 4, 2], [0, 1, 2, 3, 4], [4, 3, 2, 1, 0]])
    gnd = [
        # q0: junk 3 removed -> 1 0 4 2; positives {1, 4} at ranks 0, 2 -> 19/24
        {"good": [1], "ok": [4], "junk": [3]},
        # q1: positive 4 at r=4: p0 = 0/4 = 0, p1 = 1/5 -> (0 + 1/5)/2 = 1/10
        {"good": [4], "ok": [], "junk": []},
        # q2: no positive -> nan, left out of the mean
        {"good": [], "ok": [], "junk": [0]},
    ]
    res = oxford_map(ranks, gnd)
    # mAP = (19/24 + 1/10) / 2 = (95 + 12)/240 = 107/240
    assert res.protocols["oxford"]["mAP"] == pytest.approx(107 / 240)
    np.testing.assert_allclose(res.per_query["oxford"][:2], [19 / 24, 1 / 10])
    assert math.isnan(res.per_query["oxford"][2])
    assert res.to_json()["per_query"]["oxford"][2] is None


def test_revisited_map_easy_medium_hard() -> None:
    ranks = np.array([[0, 1, 2, 3, 4, 5], [5, 4, 3, 2, 1, 0]])
    gnd = [
        {"easy": [1, 4], "hard": [0], "junk": [2]},
        {"easy": [5], "hard": [], "junk": []},
    ]
    res = revisited_map(ranks, gnd, kappas=(1, 5, 10))
    p = res.protocols
    # q0 Easy: positives {1,4}, ignored {2 junk, 0 hard}: 1 3 4 5 -> positives at r=0,2 -> AP 19/24;
    #   1-based positions [1, 3]: P@1 = 1/1; P@5 at min(3, 5)=3 -> 2/3; P@10 -> 2/3
    # q0 Medium: positives {0,1,4}, ignored {2}: 0 1 3 4 5 -> r = 0, 1, 3:
    #   j0: (1+1)/2 = 1; j1: (1/1 + 2/2)/2 = 1; j2: (2/3 + 3/4)/2 = 17/24 -> AP = (2 + 17/24)/3 = 65/72;
    #   positions [1, 2, 4]: P@1 = 1; P@5 at 4 -> 3/4; P@10 -> 3/4
    # q0 Hard: positive {0}, ignored {2, 1, 4}: 0 3 5 -> AP 1, P@k = 1
    # q1: Easy and Medium: positive 5 first -> AP 1, P@k 1; Hard: no positive -> nan, left out
    assert p["easy"]["mAP"] == pytest.approx((19 / 24 + 1) / 2)  # 43/48
    assert p["easy"]["mP@1"] == pytest.approx(1.0)
    assert p["easy"]["mP@5"] == pytest.approx((2 / 3 + 1) / 2)  # 5/6
    assert p["easy"]["mP@10"] == pytest.approx(5 / 6)
    assert p["medium"]["mAP"] == pytest.approx((65 / 72 + 1) / 2)  # 137/144
    assert p["medium"]["mP@5"] == pytest.approx((3 / 4 + 1) / 2)  # 7/8
    assert p["hard"]["mAP"] == pytest.approx(1.0)
    assert p["hard"]["mP@5"] == pytest.approx(1.0)
    assert math.isnan(res.per_query["hard"][1])
    table = res.format_table()
    assert "easy" in table and "89.58" in table  # 43/48 = 89.583 %
    json.dumps(res.to_json())


def test_revisited_map_checks_shapes() -> None:
    with pytest.raises(ValueError):
        revisited_map(np.zeros((2, 3), dtype=int), [{"easy": [0], "hard": [], "junk": []}])
    with pytest.raises(ValueError):
        revisited_map(np.zeros(3, dtype=int), [{"easy": [0], "hard": [], "junk": []}])


# ----------------------------------------------------------------------------------------------------
# revisitop ground-truth pickle


def _gnd_dict(arrays: bool) -> dict:
    conv = np.array if arrays else list
    return {
        "imlist": ["a", "b", "c", "d"],
        "qimlist": ["q0", "q1"],
        "gnd": [
            {"bbx": [1.0, 2.0, 30.5, 40.0], "easy": conv([0, 1]), "hard": conv([2]), "junk": conv([3])},
            {
                "bbx": None,
                "easy": conv([3]),
                "hard": conv([]) if not arrays else np.array([], np.int64),
                "junk": conv([0]),
            },
        ],
    }


@pytest.mark.parametrize("arrays", [False, True])
@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_read_revisited_gnd(tmp_path: Path, arrays: bool, protocol: int) -> None:
    path = tmp_path / "gnd_roxford5k.pkl"
    path.write_bytes(pickle.dumps(_gnd_dict(arrays), protocol=protocol))
    gnd = read_revisited_gnd(path)
    assert gnd["imlist"] == ["a", "b", "c", "d"]
    assert gnd["qimlist"] == ["q0", "q1"]
    assert gnd["gnd"][0] == {"bbx": [1.0, 2.0, 30.5, 40.0], "easy": [0, 1], "hard": [2], "junk": [3]}
    assert gnd["gnd"][1]["hard"] == [] and gnd["gnd"][1]["bbx"] is None
    # the result feeds revisited_map directly
    res = revisited_map(np.array([[0, 1, 2, 3], [3, 2, 1, 0]]), gnd["gnd"])
    assert res.protocols["easy"]["mAP"] == pytest.approx(1.0)


class _Evil:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple:
        return (os.system, (f"touch {self.marker}",))


def test_read_revisited_gnd_refuses_malicious_pickle(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    path = tmp_path / "gnd_evil.pkl"
    data = _gnd_dict(False)
    data["gnd"][0]["easy"] = _Evil(marker)
    path.write_bytes(pickle.dumps(data))
    with pytest.raises(InputError) as info:
        read_revisited_gnd(path)
    assert info.value.path == path
    assert "system" in info.value.problem
    assert not marker.exists()
    # top-level payload too
    path.write_bytes(pickle.dumps(_Evil(marker)))
    with pytest.raises(InputError):
        read_revisited_gnd(path)
    assert not marker.exists()


def test_read_revisited_gnd_refuses_objects_and_bad_layout(tmp_path: Path) -> None:
    path = tmp_path / "g.pkl"
    data = _gnd_dict(False)
    data["gnd"][0]["easy"] = np.array([0, 1], dtype=object)
    path.write_bytes(pickle.dumps(data))
    with pytest.raises(InputError, match="object array"):
        read_revisited_gnd(path)
    path.write_bytes(pickle.dumps({"imlist": []}))
    with pytest.raises(InputError, match="imlist"):
        read_revisited_gnd(path)
    path.write_bytes(b"not a pickle")
    with pytest.raises(InputError):
        read_revisited_gnd(path)
    with pytest.raises(InputError, match="not found"):
        read_revisited_gnd(tmp_path / "missing.pkl")


# ----------------------------------------------------------------------------------------------------
# Recall@N


def test_recall_at_n() -> None:
    db = np.array([[0.0, 0.0], [100.0, 0.0], [10.0, 0.0], [200.0, 0.0]])
    queries = np.array([[0.0, 0.0], [500.0, 0.0]])
    # q0: within 25 m are db0 (0 m) and db2 (10 m); ranking 1 3 2 0 -> first correct at position 3
    # q1: nothing within 25 m -> never correct (but counted in the denominator)
    ranks = np.array([[1, 3, 2, 0], [0, 1, 2, 3]])
    res = recall_at_n(ranks, queries, db, threshold_m=25.0, ns=(1, 2, 3, 4))
    # R@1 = R@2 = 0/2; R@3 = R@4 = 1/2
    assert res.protocols["recall"] == {"R@1": 0.0, "R@2": 0.0, "R@3": 0.5, "R@4": 0.5}
    assert res.per_query["recall"][0] == 3 and math.isnan(res.per_query["recall"][1])
    assert res.config["num_without_positive"] == 1
    # the threshold is inclusive: at 10 m db2 (exactly 10 m) is correct
    assert (
        recall_at_n(ranks[:1], queries[:1], db, threshold_m=10.0, ns=(3,)).protocols["recall"]["R@3"] == 1.0
    )


def test_recall_at_n_panorama_dedup() -> None:
    db = np.array([[100.0, 0], [100.0, 0], [300.0, 0], [0.0, 0], [0.0, 0]])
    groups = ["A", "A", "B", "C", "C"]
    ranks = np.array([[0, 1, 2, 3, 4]])
    q = np.array([[0.0, 0.0]])
    # without de-duplication the first correct (db3) is at position 4 -> R@3 = 0
    assert recall_at_n(ranks, q, db, ns=(3,)).protocols["recall"]["R@3"] == 0.0
    # distinct panoramas: A (db0), B (db2), C (db3) -> correct at position 3 -> R@3 = 1
    res = recall_at_n(ranks, q, db, ns=(1, 3), db_groups=groups)
    assert res.protocols["recall"] == {"R@1": 0.0, "R@3": 1.0}
    assert res.per_query["recall"][0] == 3


def test_recall_at_n_checks() -> None:
    with pytest.raises(ValueError):
        recall_at_n(np.array([[5]]), np.zeros((1, 2)), np.zeros((2, 2)))
    with pytest.raises(ValueError):
        recall_at_n(np.array([[0]]), np.zeros((2, 2)), np.zeros((2, 2)))


def test_read_netvlad_dbstruct(tmp_path: Path) -> None:
    scipy_io = pytest.importorskip("scipy.io")
    path = tmp_path / "tiny_test.mat"
    db_names = np.array(
        ["000/000000_pitch1_yaw1.jpg", "000/000000_pitch1_yaw2.jpg", "001/000001.jpg"], dtype=object
    )
    q_names = np.array(["q/0001.jpg", "q/0002.jpg"], dtype=object)
    utm_db = np.array([[585001.0, 585001.0, 585100.0], [4477001.0, 4477001.0, 4477050.0]])  # 2 x N
    utm_q = np.array([[585010.0, 585300.0], [4477001.0, 4477001.0]])
    scipy_io.savemat(path, {"dbStruct": {
        "whichSet": "test", "dbImageFns": db_names, "utmDb": utm_db, "qImageFns": q_names, "utmQ": utm_q,
        "numImages": 3, "numQueries": 2, "posDistThr": 25.0, "posDistSqThr": 625.0,
    }})  # fmt: skip
    s = read_netvlad_dbstruct(path)
    assert s.which_set == "test"
    assert s.db_images == list(db_names) and s.query_images == list(q_names)
    np.testing.assert_allclose(s.db_positions, utm_db.T)
    np.testing.assert_allclose(s.query_positions, utm_q.T)
    assert s.pos_dist_thr == 25.0
    # q0 is 9 m from db0/db1; q1 is 200+ m from everything
    res = recall_at_n(
        np.array([[2, 0, 1], [0, 1, 2]]), s.query_positions, s.db_positions, s.pos_dist_thr, ns=(1, 2)
    )
    assert res.protocols["recall"] == {"R@1": 0.0, "R@2": 0.5}

    bad = tmp_path / "bad.mat"
    scipy_io.savemat(bad, {"dbStruct": {"dbImageFns": db_names}})
    with pytest.raises(InputError, match="qImage"):
        read_netvlad_dbstruct(bad)
    with pytest.raises(InputError):
        read_netvlad_dbstruct(tmp_path / "none.mat")


# ----------------------------------------------------------------------------------------------------
# labels


def test_label_map_exclude_self() -> None:
    labels = ["a", "a", "b"]
    ranks = np.array([[0, 2, 1], [1, 0, 2], [2, 0, 1]])
    # q0 (a): self removed -> 2 1; positive {1} at r=1: p0 = 0/1, p1 = 1/2 -> AP = 1/4
    # q1 (a): self removed -> 0 2; positive {0} at r=0 -> AP 1
    # q2 (b): no other b -> nan, left out
    res = label_map(ranks, labels, labels, exclude_self=True)
    assert res.protocols["labels"]["mAP"] == pytest.approx((1 / 4 + 1) / 2)  # 0.625
    assert math.isnan(res.per_query["labels"][2])
    assert res.config["num_without_positive"] == 1
    # plain AP: q0 = 1/2 (precision 1/2 at its only positive) -> (1/2 + 1)/2 = 3/4
    assert label_map(ranks, labels, labels, exclude_self=True, trapezoid=False).protocols["labels"][
        "mAP"
    ] == pytest.approx(0.75)


def test_label_map_separate_queries() -> None:
    # query b against db a a b ranked 0 2 1: positive {2} at r=1 -> (0 + 1/2)/2 = 1/4
    res = label_map(np.array([[0, 2, 1]]), ["a", "a", "b"], ["b"])
    assert res.protocols["labels"]["mAP"] == pytest.approx(0.25)
    with pytest.raises(ValueError):
        label_map(np.array([[0, 2, 1]]), ["a", "a", "b"], ["b"], exclude_self=True)


def test_read_labels_csv(tmp_path: Path) -> None:
    path = tmp_path / "labels.csv"
    path.write_text("path,landmark,extra\nx/1.jpg,x,1\ny/2.jpg,y,2\n")
    assert read_labels_csv(path) == {"x/1.jpg": "x", "y/2.jpg": "y"}
    path.write_text("name,label\nx/1.jpg,x\n")
    with pytest.raises(InputError, match="header"):
        read_labels_csv(path)
    path.write_text("path,landmark\nx/1.jpg,x\nx/1.jpg,y\n")
    with pytest.raises(InputError, match="duplicate"):
        read_labels_csv(path)


def test_label_map_on_landmarks_mini(real_data: Path) -> None:
    csv_path = real_data / "landmarks_mini" / "labels.csv"
    if not csv_path.is_file():
        pytest.skip(f"{csv_path} not found")
    labels_by_path = read_labels_csv(csv_path)
    names = list(labels_by_path)
    labels = [labels_by_path[n] for n in names]
    assert len(names) >= 10 and len(set(labels)) >= 2
    n = len(names)
    idx = np.arange(n)
    lab = np.array(labels)
    # oracle: self, then the same landmark, then the rest -> every query has AP 1
    oracle = np.stack(
        [np.concatenate([[i], idx[(lab == lab[i]) & (idx != i)], idx[lab != lab[i]]]) for i in idx]
    )
    res = label_map(oracle, labels, labels, exclude_self=True)
    assert res.protocols["labels"]["mAP"] == pytest.approx(1.0)
    # worst: the same landmark last -> AP < 1 for every query with a positive
    worst = np.stack(
        [np.concatenate([[i], idx[lab != lab[i]], idx[(lab == lab[i]) & (idx != i)]]) for i in idx]
    )
    res_w = label_map(worst, labels, labels, exclude_self=True, trapezoid=False)
    # plain AP of a query with m positives after n-1-m negatives: mean_j (j+1)/(n-1-m+j+1)
    for i in range(n):
        m = int((lab == lab[i]).sum()) - 1
        if m == 0:
            assert math.isnan(res_w.per_query["labels"][i])
            continue
        expected = np.mean([(j + 1) / (n - 1 - m + j + 1) for j in range(m)])
        assert res_w.per_query["labels"][i] == pytest.approx(expected)


def test_results_json_and_table(tmp_path: Path) -> None:
    res = RetrievalResults(
        protocols={"easy": {"mAP": 0.5, "mP@1": 1.0}, "hard": {"mAP": math.nan}},
        per_query={"easy": np.array([0.5, math.nan])},
        num_queries=2,
    )
    data = res.to_json()
    assert data["protocols"]["hard"]["mAP"] is None
    assert data["per_query"]["easy"] == [0.5, None]
    table = res.format_table().splitlines()
    assert table[0].split(" | ")[0].strip() == "protocol"
    assert "50.00" in table[2] and "100.00" in table[2] and "-" in table[3]
    out = res.write(tmp_path / "r.json")
    assert json.loads(out.read_text())["num_queries"] == 2


def test_pairs_file_against_labels_by_hand(tmp_path) -> None:
    from visloc.evaluation.retrieval import evaluate_pairs_with_labels

    labels = {"a1": "a", "a2": "a", "a3": "a", "b1": "b", "b2": "b", "c1": "c"}
    pairs = tmp_path / "pairs.txt"
    # a1 ranks a2 (hit), b1, a3 (hit), 2 positives. Trapezoids: the first hit at rank 0 spans precision 1 -> 1;
    # the second at rank 2 spans precision 1/2 (before it) -> 2/3 (with it): AP = (1 + (1/2 + 2/3) / 2) / 2 = 0.7917
    # b1 ranks a1, a2 and never b2: 1 positive never retrieved -> AP 0
    # c1 has no other image with its label -> nan, left out
    pairs.write_text("a1 a2\na1 b1\na1 a3\nb1 a1\nb1 a2\nc1 a1\n")
    results = evaluate_pairs_with_labels(pairs, labels)
    np.testing.assert_allclose(results.per_query["labels"][:2], [(1 + (1 / 2 + 2 / 3) / 2) / 2, 0.0])
    assert np.isnan(results.per_query["labels"][2])
    assert results.protocols["labels"]["mAP"] == pytest.approx((1 + (1 / 2 + 2 / 3) / 2) / 4)
