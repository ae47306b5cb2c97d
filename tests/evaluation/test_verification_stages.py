"""Per-stage rankings of a hand-built ``visloc verify`` log and their Recall@N / mAP, worked out by hand:

* ``qa``: the positive ``a1`` is 2nd in retrieval, the first stage moves it to 1st, the second keeps it;
* ``qb``: ``b1`` is 1st in retrieval, the first stage drops it to 2nd, the second stage restores it;
* ``qc``: ``c1`` is 7th in retrieval, beyond the shortlist (3), so 7th after every stage.

Recall@1: retrieval 1/3 (qb), first stage 1/3 (qa), second stage 2/3 (qa, qb); Recall@5 2/3 and Recall@10
3/3 everywhere. One positive per query: AP = 1 at rank 1, (0 + 1/2) / 2 = 1/4 at rank 2, (0 + 1/7) / 2 = 1/14
at rank 7 (Oxford trapezoid).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from visloc.datasets.base import Frame
from visloc.errors import InputError
from visloc.evaluation.place_recall import PlaceGroundTruth
from visloc.evaluation.verification_stages import (
    evaluate_stages,
    format_stage_table,
    label_scorer,
    place_results,
    place_scorer,
    stage_rankings,
    stages_to_json,
    verification_log_path,
)
from visloc.geometry.camera import Camera

LABELS = {"qa": "a", "qb": "b", "qc": "c", "a1": "a", "b1": "b", "c1": "c",
          **{f"x{i}": "x" for i in range(1, 7)}}
DATABASE = ["a1", "b1", "c1", *(f"x{i}" for i in range(1, 7))]
#: per query: the retrieval list, the first-stage order of its first 3, the final order of the whole list
RUNS = {
    "qa": (["x1", "a1", "x2", "x3", "x4", "x5", "x6"], ["a1", "x1", "x2"], ["a1", "x1", "x2"]),
    "qb": (["b1", "x1", "x2", "x3", "x4", "x5", "x6"], ["x1", "b1", "x2"], ["b1", "x1", "x2"]),
    "qc": (["x1", "x2", "x3", "x4", "x5", "x6", "c1"], ["x3", "x2", "x1"], ["x2", "x3", "x1"]),
}


def write_log(path: Path, second_stage: int = 2, runs: dict = RUNS) -> Path:
    """A ``.verification.json`` as ``visloc verify`` writes it (shortlist 3): candidates in the final order."""
    results = {}
    for query, (retrieval, first, final_head) in runs.items():
        final = final_head + retrieval[len(final_head):]
        results[query] = [{"name": n, "retrieval_score": 1.0 - retrieval.index(n) / 10,
                           "retrieval_rank": retrieval.index(n),
                           "first_stage_rank": first.index(n) if n in first else None,
                           "matches": 10, "inliers": 5, "consistent": 4, "S": 0.5, "S_L": None, "G": 0.1,
                           "S_F": None, "final": 0.5} for n in final]
    config = {"rerank": {"shortlist": 3, "first_stage": "S", "second_stage": second_stage, "fusion": "monotone"}}
    path.write_text(json.dumps({"signature": {"pairs": "p.txt", "map": "m", "config": config},
                                "results": results, "skipped": []}))
    return path


def test_rankings_of_each_stage(tmp_path: Path) -> None:
    log = write_log(tmp_path / "out.txt.verification.json")
    rankings = stage_rankings(tmp_path / "out.txt")  # the pairs file OUT resolves to OUT.verification.json
    assert list(rankings) == ["retrieval", "first stage", "second stage"]
    assert list(rankings["retrieval"]) == ["qa", "qb", "qc"]
    assert rankings["retrieval"]["qa"] == ["x1", "a1", "x2", "x3", "x4", "x5", "x6"]
    assert rankings["first stage"]["qa"] == ["a1", "x1", "x2", "x3", "x4", "x5", "x6"]
    assert rankings["first stage"]["qc"] == ["x3", "x2", "x1", "x4", "x5", "x6", "c1"]
    assert rankings["second stage"]["qc"] == ["x2", "x3", "x1", "x4", "x5", "x6", "c1"]
    assert stage_rankings(log) == rankings  # the log itself
    assert verification_log_path(log) == log


def test_no_second_stage_is_left_out(tmp_path: Path) -> None:
    runs = {q: (r, f, f) for q, (r, f, _) in RUNS.items()}
    rankings = stage_rankings(write_log(tmp_path / "o.verification.json", second_stage=0, runs=runs))
    assert list(rankings) == ["retrieval", "first stage"]


def test_recall_and_map_per_stage_with_labels(tmp_path: Path) -> None:
    rankings = stage_rankings(write_log(tmp_path / "o.verification.json"))
    stages = evaluate_stages(rankings, label_scorer(LABELS, DATABASE))
    assert list(stages["retrieval"]) == ["R@1", "R@5", "R@10", "mAP"]
    expected = {"retrieval": (1 / 3, (1 / 4 + 1 + 1 / 14) / 3),
                "first stage": (1 / 3, (1 + 1 / 4 + 1 / 14) / 3),
                "second stage": (2 / 3, (1 + 1 + 1 / 14) / 3)}
    for stage, (r1, m) in expected.items():
        assert stages[stage] == pytest.approx({"R@1": r1, "R@5": 2 / 3, "R@10": 1.0, "mAP": m}), stage
    table = format_stage_table(stages).splitlines()
    assert table[0] == "| stage | R@1 | R@5 | R@10 | mAP |"
    assert table[4] == f"| second stage | 66.67 | 66.67 | 100.00 | {100 * (2 + 1 / 14) / 3:.2f} |"


def _frame(name: str) -> Frame:
    return Frame(name, Path(name), Camera("PINHOLE", 64, 48, (50.0, 50.0, 32.0, 24.0)))


def test_place_recall_per_stage(tmp_path: Path) -> None:
    # place truth: qa's correct image is a1, qb's b1, qc's c1; a fourth query qd is in no ranking (a miss)
    db = [_frame(n) for n in DATABASE]
    truth = PlaceGroundTruth([_frame(q) for q in ("qa", "qb", "qc", "qd")], db, [{0}, {1}, {2}, set()])
    rankings = stage_rankings(write_log(tmp_path / "o.verification.json"))
    stages = evaluate_stages(rankings, place_scorer(truth))
    assert stages["retrieval"] == pytest.approx({"R@1": 1 / 4, "R@5": 2 / 4, "R@10": 3 / 4})
    assert stages["second stage"] == pytest.approx({"R@1": 2 / 4, "R@5": 2 / 4, "R@10": 3 / 4})
    results = place_results(rankings["retrieval"], truth)
    assert results.protocols["place"] == stages["retrieval"]
    assert results.per_query["place"][:3].tolist() == [2.0, 1.0, 7.0] and math.isnan(results.per_query["place"][3])


def test_stages_json_and_table_show_nan() -> None:
    stages = {"retrieval": {"R@1": 0.5, "mAP": math.nan}}
    assert stages_to_json(stages) == {"retrieval": {"R@1": 0.5, "mAP": None}}
    assert format_stage_table(stages).splitlines()[2] == "| retrieval | 50.00 | - |"


@pytest.mark.parametrize(("text", "problem"), [
    (None, "not found"),
    ("{not json", "not a readable JSON"),
    ('["a list"]', "'results'"),
    ('{"results": {"q": [{"name": "a"}]}}', "retrieval_rank"),
    ('{"results": {"q": [{"name": "a", "retrieval_rank": 0}, {"name": "b", "retrieval_rank": 0}]}}',
     "repeated retrieval_rank"),
    ('{"results": {"q": [{"name": "a", "retrieval_rank": 0}, {"name": "a", "retrieval_rank": 1}]}}', "repeated"),
    ('{"results": {"q": {"name": "a"}}}', "list of candidate"),
])
def test_bad_log_names_the_file(tmp_path: Path, text: str | None, problem: str) -> None:
    log = tmp_path / "out.txt.verification.json"
    if text is not None:
        log.write_text(text)
    with pytest.raises(InputError) as err:
        stage_rankings(tmp_path / "out.txt")
    assert err.value.path == log and problem in err.value.problem
