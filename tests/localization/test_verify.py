"""Verification stage on the embedded world with an exact dense oracle: the re-ranked top-1 is the shortlisted
image that sees the largest share of the query (computed independently from depth and poses), files and
resume."""

from __future__ import annotations

import importlib
import json
from pathlib import Path

import numpy as np
import pytest

from visloc.datasets import load_frames
from visloc.errors import ConfigError
from visloc.geometry.depth_flow import correspondence_from_depth
from visloc.io.images import read_depth
from visloc.io.pairs import read_pair_scores, read_ranked_pairs, write_pairs
from visloc.localization import Map
from visloc.localization.verify import VerifyConfig, verify_pairs, verify_preset
from visloc.verification.rerank import RerankConfig

from .test_dense_match import _Oracle

verify_module = importlib.import_module("visloc.localization.verify")
pytestmark = pytest.mark.e2e


def _visible_share(query, db) -> float:
    """Share of the query's pixels whose 3D point the database image sees."""
    _, mask = correspondence_from_depth(read_depth(query.depth_path, query.depth_scale), query.camera, query.pose,
                                        read_depth(db.depth_path, db.depth_scale), db.camera, db.pose)
    return float(mask.mean())


def test_verification_puts_the_most_overlapping_image_first(tiny_world: Path, tiny_map: Path, tmp_path: Path,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    oracle = _Oracle(tiny_world)
    original = verify_module.PairVerifier
    monkeypatch.setattr(verify_module, "PairVerifier", lambda m, c: original(m, c, matcher=oracle))
    m = Map(tiny_map)
    train = {f.name: f for f in load_frames(tiny_world, split="train").frames}
    queries = load_frames(tiny_world, split="test").frames[:3]
    pairs, scores = [], []
    for k, q in enumerate(queries):  # a shortlist of 6: same-scene images in a scrambled order
        same = [n for n in m.names if train[n].scene == q.scene][k::3][:6]
        pairs += [(q.name, n) for n in same]
        scores += list(np.linspace(0.9, 0.4, len(same)))
    write_pairs(tmp_path / "pairs.txt", pairs, scores)
    out = tmp_path / "verified.txt"
    config = VerifyConfig(rerank=RerankConfig(shortlist=6, first_stage="S"), matches="dense")
    summary = verify_pairs(m, tmp_path / "pairs.txt", tiny_world, out, config, split="test")
    assert summary.num_queries == 3 and not summary.skipped
    ranked = read_ranked_pairs(out)
    log = json.loads(out.with_name("verified.txt.verification.json").read_text())
    for q in queries:
        names = ranked[q.name]
        assert sorted(names) == sorted(n for a, n in pairs if a == q.name)
        share = {n: _visible_share(q, train[n]) for n in names}
        assert share[names[0]] == pytest.approx(max(share.values()), abs=0.02)
        rows = log["results"][q.name]
        assert [r["name"] for r in rows] == names
        S = [r["S"] for r in rows]
        assert S == sorted(S, reverse=True)
        assert all(r["consistent"] <= r["inliers"] <= r["matches"] for r in rows)
    assert read_pair_scores(out)[(queries[0].name, ranked[queries[0].name][0])] == pytest.approx(
        log["results"][queries[0].name][0]["S"])
    # a rerun with the same inputs is refused only by the lock of a live run; it recomputes to the same order
    again = verify_pairs(m, tmp_path / "pairs.txt", tiny_world, tmp_path / "again.txt", config, split="test")
    assert read_ranked_pairs(again.out) == ranked
    m.close()


def test_sparse_inlier_count_reranking(tiny_world: Path, tiny_map: Path, tmp_path: Path) -> None:
    m = Map(tiny_map)
    q = load_frames(tiny_world, split="test").frames[0]
    train = {f.name: f for f in load_frames(tiny_world, split="train").frames}
    names = [n for n in m.names if train[n].scene == q.scene][::4][:5]
    write_pairs(tmp_path / "pairs.txt", [(q.name, n) for n in names])
    config = verify_preset("classical", shortlist=5)  # the default recipe
    assert config == VerifyConfig(rerank=RerankConfig(shortlist=5))
    out = tmp_path / "verified.txt"
    verify_pairs(m, tmp_path / "pairs.txt", tiny_world, out, config, split="test")
    rows = json.loads(out.with_name("verified.txt.verification.json").read_text())["results"][q.name]
    inliers = [r["inliers"] for r in rows]
    assert inliers == sorted(inliers, reverse=True) and inliers[0] > 0
    assert all(r["consistent"] == r["inliers"] for r in rows)  # mutual matches: C = I
    share = {n: _visible_share(q, train[n]) for n in names}
    assert share[rows[0]["name"]] >= sorted(share.values())[-2]  # the most inliers: one of the two most overlapping
    with pytest.raises(Exception, match="dense or sparse"):
        VerifyConfig(matches="semi")
    m.close()


def test_verify_presets() -> None:
    """``paper`` is Publication IV's recipe; given fields override a preset, ``None`` keeps its value."""
    paper = verify_preset("paper")
    assert (paper.matches, paper.rerank.first_stage, paper.rerank.second_stage, paper.rerank.fusion) == (
        "dense", "S", 5, "monotone")
    assert verify_preset("paper-printed").rerank.fusion == "paper"
    mixed = verify_preset("paper", 7, second_stage=0, fusion=None)
    assert (mixed.matches, mixed.rerank.first_stage, mixed.rerank.second_stage, mixed.rerank.shortlist) == (
        "dense", "S", 0, 7)
    with pytest.raises(ConfigError, match=r"unknown verification preset 'fast'.*classical"):
        verify_preset("fast")
    with pytest.raises(ConfigError, match="unknown first stage"):
        verify_preset("classical", first_stage="votes")


def test_pair_matches_are_cached_and_reused(tiny_world: Path, tiny_map: Path, tmp_path: Path,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    oracle = _Oracle(tiny_world)
    original = verify_module.PairVerifier
    monkeypatch.setattr(verify_module, "PairVerifier", lambda m, c: original(m, c, matcher=oracle))
    m = Map(tiny_map)
    q = load_frames(tiny_world, split="test").frames[0]
    names = m.names[::7][:4]
    write_pairs(tmp_path / "pairs.txt", [(q.name, n) for n in names])
    out = tmp_path / "verified.txt"
    verify_pairs(m, tmp_path / "pairs.txt", tiny_world, out,
                 VerifyConfig(rerank=RerankConfig(shortlist=4, first_stage="S"), matches="dense"), split="test")
    cache = out.with_name("verified.txt.matches.h5")
    assert cache.is_file() and not out.with_name("verified.txt.matches.h5.shards").exists()
    first = {r["name"]: r for r in json.loads(out.with_name("verified.txt.verification.json").read_text())
             ["results"][q.name]}

    def no_matching(*args, **kwargs):
        raise AssertionError("matched again although the cache holds the pairs")

    monkeypatch.setattr(verify_module, "dense_matches_many", no_matching)
    other = tmp_path / "by_inliers.txt"
    verify_pairs(m, tmp_path / "pairs.txt", tiny_world, other,
                 VerifyConfig(rerank=RerankConfig(shortlist=4), matches="dense"),
                 split="test", matches_cache=cache)
    rows = json.loads(other.with_name("by_inliers.txt.verification.json").read_text())["results"][q.name]
    assert {r["name"]: (r["matches"], r["consistent"]) for r in rows} == {
        n: (r["matches"], r["consistent"]) for n, r in first.items()}
    assert [r["inliers"] for r in rows] == sorted((r["inliers"] for r in rows), reverse=True)
    # other settings (a tighter cyclic tolerance) do not reuse the stored matches
    with pytest.raises(AssertionError, match="matched again"):
        verify_pairs(m, tmp_path / "pairs.txt", tiny_world, tmp_path / "tight.txt",
                     VerifyConfig(rerank=RerankConfig(shortlist=4, first_stage="S"), matches="dense",
                                  dense=verify_module.DenseVerificationConfig(cyclic_tolerance_px=0.5)),
                     split="test", matches_cache=cache)
    m.close()


def test_retrieve_and_localize_with_verify(tiny_world: Path, tiny_map: Path, tmp_path: Path,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """``visloc retrieve --verify`` / ``visloc localize --verify``: the shortlist is re-ranked by verification
    and localization uses the re-ranked top ``--num-retrieved``."""
    from typer.testing import CliRunner

    from visloc.cli import app
    from visloc.io.poses import read_poses

    oracle = _Oracle(tiny_world)
    original = verify_module.PairVerifier
    monkeypatch.setattr(verify_module, "PairVerifier", lambda m, c: original(m, c, matcher=oracle))
    runner = CliRunner()
    out = tmp_path / "pairs.txt"
    result = runner.invoke(app, ["retrieve", str(tiny_map), str(tiny_world), "--split", "test", "--out", str(out),
                                 "--num", "2", "--verify", "--shortlist", "4"])
    assert result.exit_code == 0, result.output
    before = read_ranked_pairs(out.with_name("pairs.txt.retrieval.txt"))
    after = read_ranked_pairs(out)
    log = json.loads(out.with_name("pairs.txt.verification.json").read_text())["results"]
    for q, names in after.items():
        assert len(names) == 2 and set(names) <= set(before[q][:4])
        assert names == [r["name"] for r in log[q]][:2]  # the verified order, cut to --num
    poses = tmp_path / "poses.txt"
    result = runner.invoke(app, ["localize", str(tiny_map), str(tiny_world), "--split", "test", "--out", str(poses),
                                 "--num-retrieved", "2", "--verify", "--shortlist", "4"])
    assert result.exit_code == 0, result.output
    verified = read_ranked_pairs(poses.with_name("poses.txt.verified.txt"))
    assert verified == after  # same map, queries and settings: the same re-ranked pairs
    results = {r["name"]: r for r in json.loads(poses.with_name("poses.txt.log.json").read_text())["results"]}
    assert all(results[q]["retrieved"] == names for q, names in verified.items())
    assert len(read_poses(poses)) >= len(verified) - 1
    both = runner.invoke(app, ["localize", str(tiny_map), str(tiny_world), "--out", str(tmp_path / "p2.txt"),
                               "--verify", "--pairs", str(out)])
    assert both.exit_code == 2 and "either --pairs or --verify" in both.output
