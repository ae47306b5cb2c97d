"""``visloc evaluate retrieval`` with a ``PAIRS.verification.json``: Recall@N and mAP of each verification stage
side by side (hand-built log with known rankings); exactly one ground truth (``--labels`` or ``--world``).

The log (shortlist 2, second stage 2) of two queries, positives ``a1`` (of ``qa``) and ``b1`` (of ``qb``):
``qa`` retrieval [x1, a1, x2], first stage [a1, x1], second stage [x1, a1]; ``qb`` retrieval [b1, x1, x2],
first stage [b1, x1], second stage [b1, x1]. Recall@1: retrieval 1/2, first stage 2/2, second stage 1/2;
Recall@5 = 1 everywhere. AP (one positive): 1 at rank 1, (0 + 1/2) / 2 = 1/4 at rank 2.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from visloc.cli import app
from visloc.evaluation.place_recall import world_place_ground_truth
from visloc.io.pairs import write_pairs

runner = CliRunner()


def _log(retrieval: list[str], first: list[str], final: list[str]) -> list[dict]:
    return [{"name": n, "retrieval_score": 0.5, "retrieval_rank": retrieval.index(n),
             "first_stage_rank": first.index(n) if n in first else None, "matches": 1, "inliers": 1,
             "consistent": 1, "S": 0.1, "S_L": None, "G": 0.1, "S_F": None, "final": 0.1} for n in final]


def _verified(tmp_path: Path, runs: dict[str, tuple[list[str], list[str], list[str]]]) -> Path:
    """PAIRS (the final order) and PAIRS.verification.json as `visloc verify` writes them."""
    pairs = tmp_path / "verified.txt"
    write_pairs(pairs, [(q, n) for q, (_, _, final) in runs.items() for n in final])
    config = {"rerank": {"shortlist": 2, "first_stage": "S", "second_stage": 2, "fusion": "monotone"}}
    pairs.with_name(pairs.name + ".verification.json").write_text(json.dumps(
        {"signature": {"config": config}, "results": {q: _log(*r) for q, r in runs.items()}, "skipped": []}))
    return pairs


def test_stages_side_by_side_with_labels(tmp_path: Path) -> None:
    labels = tmp_path / "labels.csv"
    labels.write_text("path,landmark\nqa,a\nqb,b\na1,a\nb1,b\nx1,x\nx2,x\n")
    pairs = _verified(tmp_path, {"qa": (["x1", "a1", "x2"], ["a1", "x1"], ["x1", "a1", "x2"]),
                                 "qb": (["b1", "x1", "x2"], ["b1", "x1"], ["b1", "x1", "x2"])})
    result = runner.invoke(app, ["evaluate", "retrieval", str(pairs), "--labels", str(labels)])
    assert result.exit_code == 0, result.output + repr(result.exception)
    lines = result.output.splitlines()
    assert "| stage | R@1 | R@5 | R@10 | mAP |" in lines
    assert "| retrieval | 50.00 | 100.00 | 100.00 | 62.50 |" in lines
    assert "| first stage | 100.00 | 100.00 | 100.00 | 100.00 |" in lines
    assert "| second stage | 50.00 | 100.00 | 100.00 | 62.50 |" in lines
    saved = json.loads((tmp_path / "verified.txt.results.json").read_text())
    assert saved["protocols"]["labels"] == pytest.approx({"mAP": 0.625, "R@1": 0.5, "R@5": 1.0, "R@10": 1.0})
    assert saved["stages"]["first stage"] == pytest.approx({"R@1": 1.0, "R@5": 1.0, "R@10": 1.0, "mAP": 1.0})
    assert list(saved["stages"]) == ["retrieval", "first stage", "second stage"]
    assert saved["config"]["verification"].endswith("verified.txt.verification.json")


def test_plain_pairs_have_no_stages(tmp_path: Path) -> None:
    labels = tmp_path / "labels.csv"
    labels.write_text("path,landmark\na1,a\na2,a\nb1,b\nb2,b\n")
    pairs = tmp_path / "pairs.txt"
    pairs.write_text("a1 a2\na1 b1\nb1 a1\nb1 b2\n")  # R@1 1/2, R@5 1, mAP (1 + 1/4) / 2
    result = runner.invoke(app, ["evaluate", "retrieval", str(pairs), "--labels", str(labels)])
    assert result.exit_code == 0, result.output + repr(result.exception)
    assert "per stage" not in result.output and "62.50" in result.output
    saved = json.loads((tmp_path / "pairs.txt.results.json").read_text())
    assert "stages" not in saved and saved["protocols"]["labels"]["R@1"] == 0.5


@pytest.mark.parametrize("truth", [[], ["--labels", "l.csv", "--world", "w"], ["--world", "w", "--map", "m"]])
def test_exactly_one_ground_truth_and_map_only_with_labels(tmp_path: Path, truth: list[str]) -> None:
    pairs = tmp_path / "pairs.txt"
    pairs.write_text("a b\n")
    result = runner.invoke(app, ["evaluate", "retrieval", str(pairs), *truth])
    assert result.exit_code == 2 and "--labels" in result.output and "--world" in result.output
    assert not (tmp_path / "pairs.txt.results.json").exists()


def test_stages_with_world_place_truth(tiny_world: Path, tmp_path: Path) -> None:
    truth = world_place_ground_truth(tiny_world)
    positives = truth.positive_names()
    query = next(q for q in truth.query_names if positives[q])
    good = sorted(positives[query])[0]
    bad = [n for n in truth.database_names if n not in positives[query]][:2]
    # retrieval puts the correct image 3rd, the first stage 1st, the second stage 2nd
    pairs = _verified(tmp_path, {query: ([*bad, good], [good, bad[0], bad[1]], [bad[0], good, bad[1]])})
    result = runner.invoke(app, ["evaluate", "retrieval", str(pairs), "--world", str(tiny_world)])
    assert result.exit_code == 0, result.output + repr(result.exception)
    n = len(truth.query_names)  # the other queries are in no ranking: misses
    saved = json.loads((tmp_path / "verified.txt.results.json").read_text())
    assert saved["stages"]["retrieval"] == pytest.approx({"R@1": 0, "R@5": 1 / n, "R@10": 1 / n})
    assert saved["stages"]["first stage"] == pytest.approx({"R@1": 1 / n, "R@5": 1 / n, "R@10": 1 / n})
    assert saved["stages"]["second stage"]["R@1"] == 0
    assert saved["protocols"]["place"] == saved["stages"]["second stage"]
    other = tmp_path / "other.txt"
    other.write_text("nobody x\n")
    result = runner.invoke(app, ["evaluate", "retrieval", str(other), "--world", str(tiny_world)])
    assert result.exit_code != 0 and "none of its queries" in str(result.exception)
