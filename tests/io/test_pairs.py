"""Pairs files (``query db`` per line, ranked) and their score sidecar."""

from __future__ import annotations

from pathlib import Path

import pytest

from visloc.errors import InputError
from visloc.io.pairs import read_pair_scores, read_pairs, scores_sidecar, write_pairs


def test_round_trip_keeps_order(tmp_path: Path) -> None:
    pairs = [("q/1.jpg", "db/9.jpg"), ("q/1.jpg", "db/2.jpg"), ("q/2.jpg", "db/9.jpg")]
    write_pairs(tmp_path / "pairs.txt", pairs)
    assert (tmp_path / "pairs.txt").read_text() == "q/1.jpg db/9.jpg\nq/1.jpg db/2.jpg\nq/2.jpg db/9.jpg\n"
    assert read_pairs(tmp_path / "pairs.txt") == pairs
    assert not scores_sidecar(tmp_path / "pairs.txt").exists()


def test_scores_sidecar(tmp_path: Path) -> None:
    pairs = [("a", "b"), ("a", "c")]
    write_pairs(tmp_path / "pairs.txt", pairs, scores=[0.9, 0.25])
    assert scores_sidecar(tmp_path / "pairs.txt") == tmp_path / "pairs.txt.scores.json"
    assert read_pair_scores(tmp_path / "pairs.txt") == {("a", "b"): 0.9, ("a", "c"): 0.25}
    with pytest.raises(InputError, match="sidecar"):
        read_pair_scores(tmp_path / "other.txt")


def test_comments_and_blank_lines(tmp_path: Path) -> None:
    (tmp_path / "p.txt").write_text("# header\n\n a b \n\nc d\n")
    assert read_pairs(tmp_path / "p.txt") == [("a", "b"), ("c", "d")]


@pytest.mark.parametrize("bad", ["a", "a b c"])
def test_malformed_line_names_file_and_line(tmp_path: Path, bad: str) -> None:
    path = tmp_path / "p.txt"
    path.write_text(f"a b\n{bad}\n")
    with pytest.raises(InputError, match="line 2") as err:
        read_pairs(path)
    assert err.value.path == path


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="does not exist"):
        read_pairs(tmp_path / "nope.txt")


def test_score_count_mismatch_leaves_old_files(tmp_path: Path) -> None:
    path = tmp_path / "pairs.txt"
    write_pairs(path, [("a", "b")], scores=[1.0])
    with pytest.raises(ValueError):
        write_pairs(path, [("x", "y"), ("x", "z")], scores=[1.0])
    assert read_pairs(path) == [("a", "b")]
