"""``visloc verify`` through typer: a run with a quickly trained dense model writes the re-ranked pairs
(the same pairs, scores sidecar, per-candidate log); bad input exits 2 naming the problem."""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from visloc import cli
from visloc.cli import app
from visloc.datasets import load_frames
from visloc.io.pairs import read_pairs, write_pairs
from visloc.localization import Map

runner = CliRunner()
TRAIN = ["--image-size", "64", "--synthetic-pairs", "16", "--val-pairs", "8", "--epochs", "1", "--batch-size", "8",
         "--device", "cpu", "--no-progress"]


def _exit_2(monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, *args: str | Path) -> str:
    caplog.clear()
    monkeypatch.setattr(sys, "argv", ["visloc", *(str(a) for a in args)])
    with caplog.at_level(logging.ERROR, logger="visloc"), pytest.raises(SystemExit) as done:
        cli.main()
    assert done.value.code == 2, caplog.text
    return caplog.text


@pytest.mark.e2e
def test_verify_command(tiny_world: Path, tiny_map: Path, tmp_path: Path, monkeypatch, caplog) -> None:
    run = tmp_path / "dense"
    assert runner.invoke(app, ["train", "dense", "--out", str(run), *TRAIN]).exit_code == 0
    m = Map(tiny_map)
    q = load_frames(tiny_world, split="test").frames[0].name
    pairs = [(q, n) for n in m.names[:4]]
    write_pairs(tmp_path / "pairs.txt", pairs, [0.9, 0.8, 0.7, 0.6])
    out = tmp_path / "verified.txt"
    result = runner.invoke(app, ["verify", str(tmp_path / "pairs.txt"), "--map", str(tiny_map), "--queries",
                                 str(tiny_world), "--split", "test", "--out", str(out), "--preset", "paper", "--model",
                                 str(run / "model.pt"), "--shortlist", "3", "--second-stage", "2", "--grid", "40"])
    assert result.exit_code == 0, result.output
    assert "re-ranked 1 queries" in result.output
    got = read_pairs(out)
    assert sorted(got) == sorted(pairs) and got[3] == pairs[3]  # the 4th is beyond the shortlist: stays last
    rows = json.loads(out.with_name("verified.txt.verification.json").read_text())["results"][q]
    assert all(r["S_L"] is not None and -1.0 <= r["S_L"] <= 1.0 for r in rows[:2])  # the second stage ran
    assert all(r["S_F"] is not None for r in rows[:2] if r["S"] > 0)
    assert rows[2]["S_F"] is None and rows[3]["S"] is None
    message = _exit_2(monkeypatch, caplog, "verify", tmp_path / "none.txt", "--map", tiny_map, "--queries",
                      tiny_world, "--out", tmp_path / "o.txt")
    assert "none.txt" in message
    message = _exit_2(monkeypatch, caplog, "verify", tmp_path / "pairs.txt", "--map", tiny_map, "--queries",
                      tiny_world, "--out", tmp_path / "o.txt", "--first-stage", "votes")
    assert "votes" in message
    m.close()
