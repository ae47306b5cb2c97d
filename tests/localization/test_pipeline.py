"""End to end: embedded world -> map -> localization -> evaluation, against the world's exact poses."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from visloc.datasets import load_frames
from visloc.errors import InputError
from visloc.evaluation import evaluate_localization
from visloc.geometry import pose_error
from visloc.io.h5 import H5Reader, list_h5_names, names_to_pair
from visloc.io.pairs import read_pairs
from visloc.io.poses import read_poses
from visloc.localization import LocalizeConfig, Map, build_map, localize
from visloc.localization import build as build_module
from visloc.localization.localize import output_paths

pytestmark = pytest.mark.e2e


def test_map_contents_match_the_world(tiny_world: Path, tiny_map: Path) -> None:
    train = load_frames(tiny_world, split="train")
    m = Map(tiny_map)
    assert sorted(m.names) == sorted(train.names)
    assert m.has_points and m.manifest["points"] == "depth"
    for f in train.frames[:3]:
        assert pose_error(m.poses[f.name], f.pose) == pytest.approx((0.0, 0.0), abs=1e-6)
        # a database 3D point reprojects onto its own keypoint (depth and pose are consistent)
        pts, kps = m.points3D(f.name), m.local_features(f.name).keypoints
        ok = np.isfinite(pts[:, 0])
        assert ok.mean() > 0.8
        cam = f.pose.transform(pts[ok])
        proj = cam[:, :2] / cam[:, 2:] * f.camera.focal[0] + np.array(f.camera.principal_point)
        assert np.median(np.linalg.norm(proj - kps[ok], axis=1)) < 0.05
    m.close()


@pytest.mark.parametrize(("method", "max_t", "max_R"), [("pnp", 0.01, 0.3), ("essential", 0.05, 1.0)])
def test_localization_is_accurate(tiny_world: Path, tiny_map: Path, tmp_path: Path, method: str,
                                  max_t: float, max_R: float) -> None:
    out = tmp_path / "poses.txt"
    summary = localize(tiny_map, tiny_world, out, LocalizeConfig(method=method), split="test")
    truth = load_frames(tiny_world, split="test").poses()
    estimates = read_poses(out)
    assert summary.num_localized == len(estimates) >= 0.9 * len(truth)
    results = evaluate_localization(estimates, truth)
    for scene, stats in results.scenes.items():
        assert stats.median_t_m < max_t, scene
        assert stats.median_R_deg < max_R, scene
    log = json.loads((tmp_path / "poses.txt.log.json").read_text())
    assert log["method"] == method and len(log["results"]) == len(truth)
    assert all(r["support"] for r in log["results"] if r["pose"] is not None)
    assert not (tmp_path / "poses.txt.partial.json").exists()
    # hloc-style side outputs: ranked pairs, query features, matches keyed name0/name1
    paths = output_paths(out)
    pairs = read_pairs(paths["pairs"])
    assert pairs == [(r["name"], db) for r in log["results"] for db in r["retrieved"]]
    assert sorted(list_h5_names(paths["features"])) == sorted(truth)
    q, db = pairs[0]
    with H5Reader(paths["matches"]) as matches, H5Reader(paths["features"]) as feats:
        m0 = matches.read(names_to_pair(q, db))["matches0"]
        assert len(m0) == len(feats.read(q)["keypoints"])
        first = next(r for r in log["results"] if r["name"] == q)
        assert int((m0 >= 0).sum()) == first["matches"][0]


def test_bad_query_image_is_skipped_and_reported(tiny_world: Path, tiny_map: Path, tmp_path: Path) -> None:
    queries = load_frames(tiny_world, split="test")
    broken = tmp_path / "broken.png"
    broken.write_bytes(queries.frames[0].image_path.read_bytes()[:200])  # truncated PNG
    frames = [queries.frames[0].__class__(**{**queries.frames[0].__dict__, "image_path": broken})]
    frames += queries.frames[1:3]
    summary = localize(tiny_map, frames, tmp_path / "poses.txt")
    assert [s.name for s in summary.skipped] == [queries.frames[0].name]
    assert str(broken) in str(summary.skipped[0])
    assert len(summary.results) == 2


def test_localize_resumes_from_checkpoint(tiny_world: Path, tiny_map: Path, tmp_path: Path, monkeypatch) -> None:
    import importlib

    localize_module = importlib.import_module("visloc.localization.localize")

    queries = load_frames(tiny_world, split="test")
    out = tmp_path / "poses.txt"
    calls = {"n": 0}
    original = localize_module.Localizer.localize_with_evidence

    def crash_after_four(self, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] > 4:
            raise KeyboardInterrupt
        return original(self, *args, **kwargs)

    monkeypatch.setattr(localize_module.Localizer, "localize_with_evidence", crash_after_four)
    with pytest.raises(KeyboardInterrupt):
        localize(tiny_map, queries, out, checkpoint_every=2)
    assert not out.exists()
    saved = json.loads((tmp_path / "poses.txt.partial.json").read_text())["results"]
    assert len(saved) == 4
    calls["n"] = -100  # no more crashes; count the calls of the resumed run
    summary = localize(tiny_map, queries, out, checkpoint_every=2)
    assert calls["n"] == -100 + len(queries.frames) - 4
    assert len(summary.results) == len(queries.frames)
    # the features of the queries localized before the interruption survived in the HDF5 output
    assert sorted(list_h5_names(output_paths(out)["features"])) == sorted(queries.names)


def test_map_build_resumes_after_interruption(tiny_world: Path, tiny_map_config, tmp_path: Path, monkeypatch) -> None:
    out = tmp_path / "map"
    real_read = build_module.read_image
    seen = {"n": 0}

    def crash_on_the_20th_image(path):
        seen["n"] += 1
        if seen["n"] == 20:
            raise KeyboardInterrupt
        return real_read(path)

    monkeypatch.setattr(build_module, "read_image", crash_on_the_20th_image)
    with pytest.raises(KeyboardInterrupt):
        build_map(tiny_world, out, tiny_map_config, split="train")
    assert not (out / "map.json").exists()
    monkeypatch.setattr(build_module, "read_image", real_read)
    extracted = []
    monkeypatch.setattr(build_module, "read_image", lambda p: extracted.append(p) or real_read(p))
    summary = build_map(tiny_world, out, tiny_map_config, split="train")
    total = len(load_frames(tiny_world, split="train").frames)
    # the 19 images extracted before the interruption were kept: only the others were read again
    assert len(extracted) == total - 19 and summary.num_images == total
    assert not (out / "local_features.h5.shards").exists()


def test_unreadable_database_image_is_skipped(tiny_world: Path, tiny_map_config, tmp_path: Path) -> None:
    world = tmp_path / "world"
    shutil.copytree(tiny_world, world)
    victim = sorted(world.glob("*/seq-01/frame-000003.color.png"))[0]
    victim.write_bytes(b"not a png")
    summary = build_map(world, tmp_path / "map", tiny_map_config, split="train")
    assert [str(s.path) for s in summary.skipped] == [str(victim)]
    manifest = json.loads((tmp_path / "map" / "map.json").read_text())
    assert manifest["skipped"][0]["path"] == str(victim)
    assert len(manifest["names"]) == len(load_frames(world, split="train").frames) - 1


def test_incomplete_map_is_rejected(tmp_path: Path) -> None:
    (tmp_path / "map").mkdir()
    with pytest.raises(InputError, match="not a complete visloc map"):
        Map(tmp_path / "map")


@pytest.mark.real_data
def test_tum_even_odd_split(tum_root: Path, tmp_path: Path) -> None:
    """TUM fr2/desk: map of the even frames (triangulated, distorted camera), odd frames as queries."""
    build_map(tum_root, tmp_path / "map", split="even")
    assert Map(tmp_path / "map").manifest["points"] == "triangulate"
    summary = localize(tmp_path / "map", tum_root, tmp_path / "poses.txt", split="odd")
    truth = load_frames(tum_root, split="odd").poses()
    assert summary.num_localized == len(truth) == 10
    errors = np.array([pose_error(r.pose, truth[r.name]) for r in summary.results])
    assert np.median(errors[:, 0]) < 0.015 and np.median(errors[:, 1]) < 0.5


def test_resuming_a_map_with_other_settings_is_refused(tiny_world: Path, tiny_map_config, tmp_path: Path) -> None:
    from visloc.errors import ConfigError
    from visloc.localization import MapConfig

    build_map(tiny_world, tmp_path / "map", tiny_map_config, split="train")
    other = MapConfig(extractor_options={"max_keypoints": 512})
    with pytest.raises(ConfigError, match=r"started with other settings \(config\.extractor_options\.max_keypoints: 1024 -> 512;"):
        build_map(tiny_world, tmp_path / "map", other, split="train")
    assert (tmp_path / "map" / "map.json").is_file()  # the finished map was not touched
