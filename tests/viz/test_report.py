"""The HTML report shows the table values, links the figures relatively and embeds the config."""

from __future__ import annotations

import re
from html.parser import HTMLParser

import numpy as np
import pytest

from visloc.evaluation import evaluate_localization
from visloc.geometry import Pose
from visloc.viz import plot_trajectories_topview, write_report


class _Collect(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.rows: list[list[str]] = []
        self.srcs: list[str] = []
        self.hrefs: list[str] = []
        self.pre: list[str] = []
        self._cell: list[str] | None = None
        self._in_pre = False

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "tr":
            self.rows.append([])
        elif tag in ("td", "th"):
            self._cell = []
        elif tag == "img":
            self.srcs.append(a["src"])
        elif tag == "a":
            self.hrefs.append(a["href"])
        elif tag == "pre":
            self._in_pre = True
            self.pre.append("")

    def handle_endtag(self, tag):
        if tag in ("td", "th") and self._cell is not None:
            self.rows[-1].append("".join(self._cell))
            self._cell = None
        elif tag == "pre":
            self._in_pre = False

    def handle_data(self, data):
        if self._cell is not None:
            self._cell.append(data)
        if self._in_pre:
            self.pre[-1] += data


def parse(path) -> _Collect:
    p = _Collect()
    p.feed(path.read_text(encoding="utf-8"))
    return p


def shifted(pose: Pose, dx: float) -> Pose:
    return Pose.from_world_from_cam(pose.R.T, pose.center + np.array([dx, 0.0, 0.0]))


@pytest.fixture
def results_and_truth():
    truth = {
        f"chess/seq-01/f{k}.png": Pose.from_world_from_cam(np.eye(3), [k * 0.3, 0.1 * k, 0.0])
        for k in range(4)
    }
    truth |= {
        f"fire/seq-02/f{k}.png": Pose.from_world_from_cam(np.eye(3), [0.0, k * 0.3, 1.0]) for k in range(2)
    }
    est = {n: shifted(p, 0.03) for n, p in truth.items() if not n.endswith("f3.png")}
    est["fire/seq-02/f1.png"] = shifted(truth["fire/seq-02/f1.png"], 0.3)
    return evaluate_localization(est, truth), truth, est


def test_report_table_figures_and_config(tmp_path, results_and_truth):
    results, truth, est = results_and_truth
    fig = plot_trajectories_topview(truth, est, None, tmp_path / "figs" / "top view.png", "top")
    extra = {"method": "relpose", "versions": {"numpy": np.__version__}}
    path = write_report(tmp_path, results, [("Top view <all scenes>", fig)], "Run <1> & co", extra=extra)
    assert path == tmp_path / "report.html"
    text = path.read_text(encoding="utf-8")
    assert text.startswith("<!DOCTYPE html>")
    assert "Run &lt;1&gt; &amp; co" in text and "Run <1>" not in text  # escaped
    assert "Top view &lt;all scenes&gt;" in text

    doc = parse(path)
    header, *rows = doc.rows
    assert header[:5] == ["scene", "n", "localized", "median t (cm)", "median R (deg)"]
    assert header[5:] == results.threshold_keys
    by_scene = {r[0]: r for r in rows}
    assert list(by_scene) == ["chess", "fire", "overall"]
    # chess: errors 3, 3, 3 cm and one failure -> median 3 cm; 5cm_5deg 3/4
    assert by_scene["chess"][1:5] == ["4", "3", "3.000", "0.000"]
    assert by_scene["chess"][header.index("5cm_5deg")] == "75.0"
    # fire: 3 cm and 30 cm -> median 16.5 cm
    assert by_scene["fire"][1:4] == ["2", "2", "16.500"]
    assert by_scene["overall"][1:3] == ["6", "5"]

    # figure referenced by a path relative to the report (URL-quoted), and it exists there
    assert doc.srcs == ["figs/top%20view.png"]
    assert doc.hrefs == ["figs/top%20view.png"]
    assert (tmp_path / "figs" / "top view.png").is_file()
    assert any('"method": "relpose"' in p and np.__version__ in p for p in doc.pre)
    assert any("threshold_keys" in p for p in doc.pre)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["figs", "report.html"]


def test_report_links_figures_outside_and_relative_to_out_dir(tmp_path, results_and_truth, monkeypatch):
    results, truth, est = results_and_truth
    outside = plot_trajectories_topview(truth, est, None, tmp_path / "shared" / "a.png", "a")
    out_dir = tmp_path / "run"
    plot_trajectories_topview(truth, est, None, out_dir / "b.png", "b")
    monkeypatch.chdir(tmp_path / "shared")  # "b.png" does not exist here: it is taken from out_dir
    path = write_report(out_dir, results, [("a", outside), ("b", "b.png")], "links")
    assert parse(path).srcs == ["../shared/a.png", "b.png"]


def test_report_shows_failed_medians_as_inf(tmp_path):
    truth = {f"s/q{k}": Pose.identity() for k in range(3)}
    results = evaluate_localization({"s/q0": Pose.identity()}, truth)
    text = write_report(tmp_path, results, [], "all failed").read_text()
    rows = {r[0]: r for r in parse(tmp_path / "report.html").rows[1:]}
    assert rows["s"][3:5] == ["inf", "inf"]
    assert re.search(r"<figure", text) is None
