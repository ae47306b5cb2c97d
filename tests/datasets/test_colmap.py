"""COLMAP sparse models over an image folder: poses and intrinsics read through pycolmap, the COLMAP pixel
convention (+0.5) converted at the reader, bad models and missing images reported.

Truth: the tiny embedded world's own poses and cameras (its 7-Scenes files, read by another reader), a
model written by hand in COLMAP's text format, and the quaternions pycolmap writes checked against the
world's (w first in ``images.txt``)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from visloc.datasets import FrameSet, load_frames, read_colmap_model
from visloc.datasets.colmap import read_colmap_observations
from visloc.errors import ConfigError, InputError
from visloc.geometry import Camera, Pose, pose_error
from visloc.io.images import list_images


@pytest.fixture(scope="module")
def train(tiny_world: Path) -> FrameSet:
    return load_frames(tiny_world, split="train")


@pytest.mark.parametrize("binary", [False, True], ids=["txt", "bin"])
def test_reader_returns_the_worlds_poses_and_cameras(colmap_writer, tiny_world: Path, train: FrameSet, tmp_path: Path,
                                                     binary: bool) -> None:
    model = colmap_writer(tmp_path / "sparse", train, binary)
    fs = read_colmap_model(tiny_world, model)
    assert fs.format == "colmap" and fs.colmap_model == model and fs.root == tiny_world
    assert fs.names == sorted(train.names)
    truth = train.by_name()
    for f in fs.frames:
        t_err, r_err = pose_error(f.pose, truth[f.name].pose)
        assert t_err < 1e-9 and r_err < 1e-6
        assert f.camera == truth[f.name].camera  # PINHOLE 320 240 262.5 262.5 160 120: the half pixel removed
        assert f.image_path == truth[f.name].image_path
    # every other image on disk (test frames, depth maps) is reported, not read
    others = {p.relative_to(tiny_world).as_posix() for p in list_images(tiny_world)} - set(fs.names)
    assert {s.name for s in fs.skipped} == others and others
    assert all("not in the COLMAP model" in s.reason for s in fs.skipped)


def test_pycolmap_writes_w_first_quaternions_and_colmap_principal_points(colmap_writer, train: FrameSet, tmp_path: Path) -> None:
    """The model the other tests read is what it claims to be (checked on the text files, without pycolmap)."""
    model = colmap_writer(tmp_path / "sparse", train.frames[:3], binary=False)
    lines = [ln.split() for ln in (model / "images.txt").read_text().splitlines() if not ln.startswith("#")]
    rows = {r[9]: r for r in lines[0::2]}  # two lines per image (the second empty here), the first ends with the name
    for f in train.frames[:3]:
        q, t = np.array(rows[f.name][1:5], float), np.array(rows[f.name][5:8], float)
        q = q if q[0] >= 0 else -q
        np.testing.assert_allclose(q, f.pose.qvec, atol=1e-12)
        np.testing.assert_allclose(t, f.pose.t, atol=1e-12)
    cams = [ln.split() for ln in (model / "cameras.txt").read_text().splitlines() if ln and not ln.startswith("#")]
    assert [c[1:] for c in cams] == [["PINHOLE", "320", "240", "262.5", "262.5", "160.5", "120.5"]]


def test_hand_written_text_model(tmp_path: Path) -> None:
    """Independent of pycolmap's writer: COLMAP's documented text format, typed in."""
    images = tmp_path / "images"
    (images / "sub").mkdir(parents=True)
    from PIL import Image

    for name in ("a.png", "sub/b.jpg"):
        Image.new("RGB", (64, 48), (10, 200, 30)).save(images / name)
    model = tmp_path / "model"
    model.mkdir()
    (model / "cameras.txt").write_text("# CAMERA_ID, MODEL, WIDTH, HEIGHT, PARAMS[]\n"
                                       "1 SIMPLE_RADIAL 64 48 50 32 24 0.01\n"
                                       "2 OPENCV 64 48 40 41 31 23 0.1 -0.02 0.001 0.002\n")
    s = np.sqrt(0.5)  # 90 degrees about z: qw = qz = sqrt(1/2)
    (model / "images.txt").write_text(
        "# IMAGE_ID, QW, QX, QY, QZ, TX, TY, TZ, CAMERA_ID, NAME\n# POINTS2D[] as (X, Y, POINT3D_ID)\n"
        f"1 {s} 0 0 {s} 1 2 3 1 a.png\n10.5 20.5 7 3 4 -1\n"
        "2 1 0 0 0 0 0 0 2 sub/b.jpg\n0.5 0.5 7\n")
    (model / "points3D.txt").write_text("# POINT3D_ID, X, Y, Z, R, G, B, ERROR, TRACK[]\n"
                                        "7 1.5 -2 4 255 0 0 0.1 1 0 2 0\n")
    fs = read_colmap_model(images, model)
    a, b = fs.by_name()["a.png"], fs.by_name()["sub/b.jpg"]
    np.testing.assert_allclose(a.pose.R, [[0, -1, 0], [1, 0, 0], [0, 0, 1]], atol=1e-12)
    np.testing.assert_allclose(a.pose.t, [1, 2, 3])
    assert a.camera == Camera("SIMPLE_RADIAL", 64, 48, (50, 31.5, 23.5, 0.01))
    assert b.camera == Camera("OPENCV", 64, 48, (40, 41, 30.5, 22.5, 0.1, -0.02, 0.001, 0.002))
    assert b.pose.R.tolist() == np.eye(3).tolist() and not fs.skipped
    obs = read_colmap_observations(model)
    np.testing.assert_allclose(obs["a.png"][0], [[10, 20]])  # the observation without a 3D point is left out
    np.testing.assert_allclose(obs["a.png"][1], [[1.5, -2, 4]])
    np.testing.assert_allclose(obs["sub/b.jpg"][0], [[0, 0]])
    # the split selects by position in the name-sorted list
    assert read_colmap_model(images, model, split="odd").names == ["sub/b.jpg"]
    with pytest.raises(ValueError, match="no split"):
        read_colmap_model(images, model, split="val")


def test_missing_image_and_other_size_are_skipped_with_the_reason(colmap_writer, tiny_world: Path, train: FrameSet,
                                                                  tmp_path: Path) -> None:
    frames = train.frames[:4]
    wrong = Camera("PINHOLE", 640, 480, (525, 525, 320, 240))
    frames[1] = type(frames[1])(frames[1].name, frames[1].image_path, wrong, frames[1].pose)
    model = colmap_writer(tmp_path / "sparse", frames, binary=True,
                               extra={"kitchen/seq-01/gone.color.png": Pose.identity()})
    fs = read_colmap_model(tiny_world, model)
    assert fs.names == sorted([frames[0].name, frames[2].name, frames[3].name])
    reasons = {s.name: s.reason for s in fs.skipped}
    assert "registered in the COLMAP model" in reasons["kitchen/seq-01/gone.color.png"]
    assert "no such image" in reasons["kitchen/seq-01/gone.color.png"]
    assert "image is 320x240, its camera in the COLMAP model is 640x480" in reasons[frames[1].name]


def test_bad_model_folders_raise_input_errors_naming_the_folder(colmap_writer, tiny_world: Path, train: FrameSet,
                                                               tmp_path: Path) -> None:
    with pytest.raises(InputError, match="does not exist") as e:
        read_colmap_model(tiny_world, tmp_path / "nowhere")
    assert e.value.path == tmp_path / "nowhere"
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(InputError, match=r"not a COLMAP model.*none of them"):
        read_colmap_model(tiny_world, empty)
    half = colmap_writer(tmp_path / "half", train.frames[:2], binary=False)
    (half / "points3D.txt").unlink()
    with pytest.raises(InputError, match=r"found cameras.txt, .*images.txt") as e:
        read_colmap_model(tiny_world, half)
    assert e.value.path == half
    corrupt = colmap_writer(tmp_path / "corrupt", train.frames[:2], binary=True)
    (corrupt / "cameras.bin").write_bytes(b"\x01\x00\x00\x00\x00\x00\x00\x00garbage")
    with pytest.raises(InputError, match="cannot read the COLMAP bin model") as e:
        read_colmap_model(tiny_world, corrupt)
    assert e.value.path == corrupt
    bad_text = colmap_writer(tmp_path / "badtext", train.frames[:2], binary=False)
    (bad_text / "cameras.txt").write_text("1 PINHOLE 320 240 262.5\n")  # too few parameters
    with pytest.raises(InputError, match="cannot read the COLMAP txt model"):
        read_colmap_model(tiny_world, bad_text)


def test_load_frames_routes_model_dir_to_the_colmap_reader(colmap_writer, tiny_world: Path, train: FrameSet, tmp_path: Path) -> None:
    model = colmap_writer(tmp_path / "sparse", train.frames[:5], binary=True)
    fs = load_frames(tiny_world, model_dir=model)
    assert fs.format == "colmap" and fs.names == sorted(f.name for f in train.frames[:5])
    assert load_frames(tiny_world, split="train", format="colmap", model_dir=model).names == fs.names
    with pytest.raises(ConfigError, match=r"needs the option.*model_dir"):
        load_frames(tiny_world, format="colmap")
    with pytest.raises(ConfigError, match="not understood by the colmap reader"):
        load_frames(tiny_world, model_dir=model, poses=tmp_path / "poses.txt")
