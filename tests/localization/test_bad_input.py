"""Map building and map loading with bad input (issue 10): a bad image is skipped and reported and the rest
is built; surprises on disk are noticed instead of silently used."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import struct
import zlib
from pathlib import Path

import h5py
import numpy as np
import pytest
from PIL import Image

from visloc.datasets import load_frames
from visloc.datasets.base import FrameSet
from visloc.errors import InputError
from visloc.features import extractors
from visloc.io.images import read_image
from visloc.localization import Map, build_map
from visloc.localization import build as build_module
from visloc.localization.build import points_from_depth

pytestmark = pytest.mark.e2e


def _declare_size(path: Path, width: int, height: int) -> None:
    """Make ``path`` a 4x4 PNG whose IHDR declares ``width`` x ``height`` (CRC recomputed)."""
    Image.new("RGB", (4, 4)).save(path, format="PNG")
    data = bytearray(path.read_bytes())
    data[16:24] = struct.pack(">II", width, height)
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])))
    path.write_bytes(bytes(data))


def test_image_declaring_60000x60000_pixels_is_skipped(tiny_world: Path, tiny_map_config, tmp_path: Path) -> None:
    world = tmp_path / "world"
    shutil.copytree(tiny_world, world)
    victim = sorted(world.glob("*/seq-01/frame-000003.color.png"))[0]
    _declare_size(victim, 60000, 60000)
    summary = build_map(world, tmp_path / "map", tiny_map_config, split="train")
    assert [str(s.path) for s in summary.skipped] == [str(victim)]
    assert "declares 60000x60000 pixels" in summary.skipped[0].reason
    manifest = json.loads((tmp_path / "map" / "map.json").read_text())
    assert manifest["skipped"][0]["path"] == str(victim)
    train = load_frames(world, split="train")
    assert sorted(manifest["names"]) == sorted(f.name for f in train.frames if f.image_path != victim)


def test_near_identical_image_from_the_same_pose_is_triangulated(tiny_world: Path, tiny_map_config,
                                                                 tmp_path: Path) -> None:
    """A second photo from the same pose (a copy with a little noise) used to stop triangulation with
    ``LinAlgError: Singular matrix``; its points now come from the views with parallax."""
    train = load_frames(tiny_world, split="train")
    original = train.frames[3]
    pixels = np.asarray(Image.open(original.image_path)).astype(int)
    noise = np.random.default_rng(0).integers(-2, 3, pixels.shape)
    twin_path = tmp_path / "twin.png"
    Image.fromarray(np.clip(pixels + noise, 0, 255).astype(np.uint8)).save(twin_path)
    twin = dataclasses.replace(original, name="twin.png", image_path=twin_path)
    frames = FrameSet(root=train.root, frames=[*train.frames, twin], skipped=[], format=train.format)
    summary = build_map(frames, tmp_path / "map", dataclasses.replace(tiny_map_config, points="triangulate"))
    assert summary.num_images == len(train.frames) + 1 and summary.points == "triangulate"
    m = Map(tmp_path / "map")
    # independent truth: the world's registered depth of the original frame (same pose, same content)
    kps = m.local_features("twin.png").keypoints
    truth = points_from_depth(original, kps)
    points = m.points3D("twin.png")
    ok = np.isfinite(points[:, 0]) & np.isfinite(truth[:, 0])
    assert ok.mean() > 0.5
    assert np.median(np.linalg.norm(points[ok] - truth[ok], axis=1)) < 0.01
    m.close()


def test_an_image_replaced_on_disk_is_extracted_again(tiny_world: Path, tiny_map_config, tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    world = tmp_path / "world"
    shutil.copytree(tiny_world, world)
    frames = load_frames(world, split="train").frames
    build_map(world, tmp_path / "map", tiny_map_config, split="train")
    with h5py.File(tmp_path / "map" / "local_features.h5", "r") as f:
        before = {fr.name: f[fr.name]["keypoints"][()] for fr in frames}
    victim, other = frames[2], frames[-1]
    shutil.copyfile(other.image_path, victim.image_path)  # another picture under the old name
    stat = victim.image_path.stat()
    os.utime(victim.image_path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    read = []
    monkeypatch.setattr(build_module, "read_image", lambda path: read.append(path) or read_image(path))
    build_map(world, tmp_path / "map", tiny_map_config, split="train")
    assert read == [victim.image_path], "only the changed image is read again"
    expected = extractors.create(tiny_map_config.extractor, **tiny_map_config.extractor_options)(
        read_image(victim.image_path))
    with h5py.File(tmp_path / "map" / "local_features.h5", "r") as f:
        after = {fr.name: f[fr.name]["keypoints"][()] for fr in frames}
    np.testing.assert_array_equal(after[victim.name], expected.keypoints)
    assert not np.array_equal(after[victim.name], before[victim.name])
    for name in before.keys() - {victim.name}:
        np.testing.assert_array_equal(after[name], before[name])
    # a third run with nothing changed reads no image
    read.clear()
    build_map(world, tmp_path / "map", tiny_map_config, split="train")
    assert read == []


def test_map_whose_features_come_from_another_extractor_is_refused(tiny_map: Path, tmp_path: Path) -> None:
    the_map = tmp_path / "map"
    shutil.copytree(tiny_map, the_map)
    Map(the_map).close()
    manifest = json.loads((the_map / "map.json").read_text())
    manifest["config"]["extractor"] = "aliked"  # map.json edited, or the files of two builds mixed
    (the_map / "map.json").write_text(json.dumps(manifest))
    with pytest.raises(InputError) as err:
        Map(the_map)
    assert err.value.path == the_map
    assert "map.json names the extractor 'aliked' but local_features.h5 holds 'sift' features" in str(err.value)
