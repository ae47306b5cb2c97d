"""Dense matching against a map (``visloc.localization.dense_match``): keypoint sampling against hand-computed
maps, and localization / pairs-file matching with an oracle dense matcher built from the world's exact depth and
poses, so the plumbing (anchoring, index bookkeeping, files, resume) is checked against the exact poses."""

from __future__ import annotations

import hashlib
import importlib
from pathlib import Path

import numpy as np
import pytest
import torch

from visloc.datasets import load_frames
from visloc.evaluation import evaluate_localization
from visloc.geometry.depth_flow import correspondence_from_depth
from visloc.io.h5 import H5Reader, names_to_pair
from visloc.io.images import read_depth, read_image
from visloc.io.pairs import write_pairs
from visloc.io.poses import read_poses
from visloc.localization import LocalizeConfig, Map, localize, match_pairs
from visloc.localization import dense_match as dm
from visloc.localization.match import MatchConfig
from visloc.matching.dense_baselines import DenseCorrespondence

localize_module = importlib.import_module("visloc.localization.localize")  # the package re-exports the function


def _affine_map(h: int, w: int) -> torch.Tensor:
    y, x = torch.meshgrid(torch.arange(h, dtype=torch.float32), torch.arange(w, dtype=torch.float32), indexing="ij")
    return torch.stack([2 * x + 3, 0.5 * y - 1])


def test_sample_at_keypoints_is_exact_for_an_affine_map() -> None:
    corr = _affine_map(40, 50)
    conf = (torch.arange(50, dtype=torch.float32) / 50).expand(40, 50)[None]
    kp = np.array([[10.3, 7.7], [0.0, 0.0], [49.0, 39.0], [25.5, 12.25]], np.float32)
    xy, c = dm.sample_at_keypoints(DenseCorrespondence(corr, conf), kp)
    np.testing.assert_allclose(xy, np.stack([2 * kp[:, 0] + 3, 0.5 * kp[:, 1] - 1], 1), atol=1e-4)
    np.testing.assert_allclose(c, kp[:, 0] / 50, atol=1e-5)
    _, ones = dm.sample_at_keypoints(DenseCorrespondence(corr), kp)
    np.testing.assert_array_equal(ones, 1.0)


class _Shift:
    """A matcher that says every target pixel sits ``shift`` pixels away in the source."""

    def __init__(self, shift: tuple[float, float]) -> None:
        self.shift = torch.tensor(shift, dtype=torch.float32).view(2, 1, 1)

    def __call__(self, source: np.ndarray, target: np.ndarray) -> DenseCorrespondence:
        h, w = target.shape[:2]
        y, x = torch.meshgrid(torch.arange(h, dtype=torch.float32), torch.arange(w, dtype=torch.float32),
                              indexing="ij")
        return DenseCorrespondence(torch.stack([x, y]) + self.shift)


class _Pair:
    """Forward ``shift`` for (query, database), the given backward shift for (database, query)."""

    def __init__(self, query: np.ndarray, forward: tuple[float, float], backward: tuple[float, float]) -> None:
        self.query, self.forward, self.backward = query, _Shift(forward), _Shift(backward)

    def __call__(self, source: np.ndarray, target: np.ndarray) -> DenseCorrespondence:
        return self.forward(source, target) if source is self.query else self.backward(source, target)


def test_anchored_matches_drop_keypoints_leaving_the_query_and_inconsistent_ones() -> None:
    query, database = np.zeros((30, 40, 3), np.uint8), np.zeros((30, 40, 3), np.uint8)
    kp = np.array([[5.0, 5.0], [37.0, 10.0], [20.0, 2.0], [10.0, 20.0]], np.float32)
    # database (x, y) -> query (x + 4, y - 3): (37, 10) lands at x = 41 > 39, (20, 2) at y = -1 < 0
    xy, rows, scores = dm.anchored_matches(_Shift((4.0, -3.0)), query, database, kp)
    np.testing.assert_array_equal(rows, [0, 3])
    np.testing.assert_allclose(xy, [[9.0, 2.0], [14.0, 17.0]], atol=1e-5)
    np.testing.assert_array_equal(scores, 1.0)
    # cyclic check: the inverse shift closes the loop, a wrong backward map does not
    _, rows, _ = dm.anchored_matches(_Pair(query, (4.0, -3.0), (-4.0, 3.0)), query, database, kp,
                                     cyclic_tolerance_px=0.5)
    np.testing.assert_array_equal(rows, [0, 3])
    _, rows, _ = dm.anchored_matches(_Pair(query, (4.0, -3.0), (-4.0, 5.0)), query, database, kp,
                                     cyclic_tolerance_px=0.5)
    assert len(rows) == 0


def test_dense_match_config_rejects_bad_values(tmp_path: Path) -> None:
    from visloc.errors import ConfigError, InputError

    with pytest.raises(ConfigError):
        dm.DenseMatchConfig(min_confidence=2.0)
    with pytest.raises(ConfigError):
        dm.DenseMatchConfig(cyclic_tolerance_px=0.0)
    with pytest.raises(InputError, match=r"no\.pt"):
        dm.DenseMatchConfig(model=str(tmp_path / "no.pt")).model_path()


class _Oracle:
    """Exact dense maps of the embedded world from depth and poses (images recognised by their bytes)."""

    def __init__(self, world: Path) -> None:
        self.frames = {}
        for split in ("train", "test"):
            for f in load_frames(world, split=split).frames:
                self.frames[hashlib.sha1(read_image(f.image_path).tobytes()).hexdigest()] = f

    def __call__(self, source: np.ndarray, target: np.ndarray) -> DenseCorrespondence:
        s, t = (self.frames[hashlib.sha1(im.tobytes()).hexdigest()] for im in (source, target))
        corr, mask = correspondence_from_depth(
            read_depth(t.depth_path, t.depth_scale), t.camera, t.pose,
            read_depth(s.depth_path, s.depth_scale), s.camera, s.pose)
        return DenseCorrespondence(torch.from_numpy(corr), torch.from_numpy(mask.astype(np.float32)))


@pytest.fixture(scope="module")
def oracle(tiny_world: Path) -> _Oracle:
    return _Oracle(tiny_world)


def _with_oracle(monkeypatch: pytest.MonkeyPatch, oracle: _Oracle) -> None:
    original = dm.DenseQueryMatcher

    def make(map_, config):
        return original(map_, config, network=oracle)

    monkeypatch.setattr(localize_module, "DenseQueryMatcher", make)
    monkeypatch.setattr(dm, "DenseQueryMatcher", make)


@pytest.mark.e2e
def test_localize_with_an_exact_dense_matcher_recovers_the_poses(
    tiny_world: Path, tiny_map: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, oracle: _Oracle
) -> None:
    _with_oracle(monkeypatch, oracle)
    out = tmp_path / "poses.txt"
    config = LocalizeConfig(method="pnp", matching=MatchConfig(
        matcher="dense", dense=dm.DenseMatchConfig(min_confidence=0.5)))
    summary = localize(tiny_map, tiny_world, out, config, split="test")
    truth = load_frames(tiny_world, split="test").poses()
    assert summary.num_localized == len(truth)
    results = evaluate_localization(read_poses(out), truth)
    for scene, stats in results.scenes.items():
        assert stats.median_t_m < 0.01 and stats.median_R_deg < 0.3, scene
    # the written query features and matches agree: every match's query keypoint is the map's 3D point's
    # projection into the query (the oracle is exact), and it indexes the query's own keypoints
    m = Map(tiny_map)
    name = next(iter(truth))
    with H5Reader(tmp_path / "poses.txt.features.h5") as f, H5Reader(tmp_path / "poses.txt.matches.h5") as mt:
        kp = f.read(name, ["keypoints"])["keypoints"]
        result = next(r for r in summary.results if r.name == name)
        db = result.retrieved[0]
        matches0 = mt.read(names_to_pair(name, db), ["matches0"])["matches0"]
    valid = np.flatnonzero(matches0 >= 0)
    assert len(valid) > 20 and matches0.shape == (len(kp),)
    pts = m.points3D(db)[matches0[valid]]
    frame = next(f for f in load_frames(tiny_world, split="test").frames if f.name == name)
    cam = frame.pose.transform(pts)
    proj = cam[:, :2] / cam[:, 2:] * np.array(frame.camera.focal) + np.array(frame.camera.principal_point)
    assert np.median(np.linalg.norm(proj - kp[valid], axis=1)) < 0.5
    m.close()


@pytest.mark.e2e
def test_match_pairs_dense_writes_consistent_files_and_resumes(
    tiny_world: Path, tiny_map: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, oracle: _Oracle
) -> None:
    _with_oracle(monkeypatch, oracle)
    m = Map(tiny_map)
    queries = load_frames(tiny_world, split="test").frames[:2]
    pairs = [(q.name, db) for q in queries for db in m.names[:2]] + [(m.names[0], m.names[1])]
    write_pairs(tmp_path / "pairs.txt", pairs)
    features, matches = tmp_path / "features.h5", tmp_path / "matches.h5"
    config = MatchConfig(matcher="dense", dense=dm.DenseMatchConfig())
    summary = match_pairs(m, tmp_path / "pairs.txt", tiny_world, features, matches, config, split="test")
    assert summary.num_pairs == 5 and summary.num_matched == 4
    assert [s.name for s in summary.skipped] == [f"{m.names[0]} {m.names[1]}"]
    with H5Reader(features) as f, H5Reader(matches) as mt:
        for q in queries:
            kp = f.read(q.name, ["keypoints"])["keypoints"]
            seen = 0
            for db in m.names[:2]:
                m0 = mt.read(names_to_pair(q.name, db), ["matches0"])["matches0"]
                assert m0.shape == (len(kp),)
                seen += int((m0 >= 0).sum())
                ok = m0 >= 0
                if ok.any():  # the database keypoint's 3D point projects onto the query keypoint
                    pts = m.points3D(db)[m0[ok]]
                    fin = np.isfinite(pts[:, 0])
                    cam = q.pose.transform(pts[fin])
                    proj = cam[:, :2] / cam[:, 2:] * np.array(q.camera.focal) + np.array(q.camera.principal_point)
                    assert np.median(np.linalg.norm(proj - kp[ok][fin], axis=1)) < 0.5
            assert seen == len(kp)  # every query keypoint belongs to exactly one pair
    again = match_pairs(m, tmp_path / "pairs.txt", tiny_world, features, matches, config, split="test")
    assert again.num_matched == 0
    m.close()
