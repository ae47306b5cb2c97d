"""load_frames: format detection and dispatch through the reader registry."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

from visloc.datasets import FORMATS, detect_format, load_frames, read_7scenes, read_colmap_model, read_tum
from visloc.errors import ConfigError, InputError
from visloc.geometry import Camera


def test_registry_holds_the_readers() -> None:
    assert list(FORMATS) == ["7scenes", "tum", "folder", "colmap"]
    assert FORMATS["colmap"].reader is read_colmap_model
    assert FORMATS["7scenes"].reader is read_7scenes
    assert FORMATS["tum"].reader is read_tum


def test_detects_real_layouts(stairs_root: Path, tum_root: Path, scannet_root: Path) -> None:
    assert detect_format(stairs_root) == "7scenes"
    assert detect_format(stairs_root / "stairs") == "7scenes"
    assert detect_format(tum_root) == "tum"
    assert detect_format(scannet_root / "images") == "folder"


def test_load_real_data_with_format_defaults(stairs_root: Path, tum_root: Path) -> None:
    stairs = load_frames(stairs_root)  # 7-Scenes default split: train
    assert stairs.format == "7scenes" and len(stairs.frames) == 6
    assert load_frames(stairs_root, split="test").names == read_7scenes(stairs_root, "test").names
    tum = load_frames(tum_root)  # TUM default split: all
    assert tum.format == "tum" and len(tum.frames) == 20
    assert len(load_frames(tum_root, split="even", max_dt=0.01).frames) == 10


def test_image_folder_with_options(tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    Image.new("RGB", (8, 6)).save(tmp_path / "sub" / "x.png")
    assert detect_format(tmp_path) == "folder"
    fs = load_frames(tmp_path, camera="PINHOLE 8 6 10 10 3.5 2.5")
    assert fs.names == ["sub/x.png"] and fs.frames[0].camera == Camera("PINHOLE", 8, 6, (10, 10, 3.5, 2.5))
    assert load_frames(tmp_path).frames[0].camera == Camera("SIMPLE_PINHOLE", 8, 6, (9.6, 3.5, 2.5))


def test_explicit_format_overrides_detection(stairs_root: Path) -> None:
    # the stairs images read as a plain folder (pose files are not images, so they are ignored)
    fs = load_frames(stairs_root / "stairs", format="folder", camera="PINHOLE 640 480 525 525 320 240")
    assert fs.format == "folder" and len(fs.frames) == 24  # 12 colour JPEGs + 12 depth PNGs


def test_empty_missing_and_unrecognised(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="empty") as err:
        load_frames(tmp_path)
    assert err.value.path == tmp_path
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(InputError, match="unrecognised"):
        load_frames(tmp_path)
    with pytest.raises(InputError, match="does not exist"):
        load_frames(tmp_path / "nope")
    with pytest.raises(InputError, match="file"):
        load_frames(tmp_path / "notes.txt")


def test_unknown_format_or_option_is_a_config_error(stairs_root: Path) -> None:
    with pytest.raises(ConfigError, match="cambridge"):
        load_frames(stairs_root, format="cambridge")
    with pytest.raises(ConfigError, match="max_dt"):
        load_frames(stairs_root, max_dt=0.1)  # a TUM option given to the 7-Scenes reader


def test_query_style_call_works_for_every_format(stairs_root: Path, tum_root: Path, tmp_path: Path) -> None:
    """visloc.localization calls load_frames(path, split="test", require_poses=False, ...) and
    load_frames(path, split="train", ...) whatever the format is."""
    Image.new("RGB", (8, 6)).save(tmp_path / "q.png")
    assert len(load_frames(stairs_root, split="test", require_poses=False).frames) == 6
    assert len(load_frames(tum_root, split="test", require_poses=False).frames) == 20
    folder = load_frames(tmp_path, split="test", require_poses=False, camera="PINHOLE 8 6 10 10 3.5 2.5")
    assert folder.names == ["q.png"] and folder.frames[0].pose is None
    assert len(load_frames(tum_root, split="train").frames) == 20
