"""Plain image folders with hloc poses and intrinsics."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from visloc.datasets import read_cameras, read_image_folder
from visloc.errors import ConfigError, InputError
from visloc.geometry import Camera, Pose
from visloc.io.poses import write_poses

CAM = "PINHOLE 64 48 50 50 31.5 23.5"


def make_folder(root: Path) -> Path:
    (root / "db").mkdir(parents=True)
    (root / "query").mkdir()
    for name in ("db/a.jpg", "db/b.png", "query/q1.jpg"):
        Image.new("RGB", (64, 48), (90, 20, 200)).save(root / name)
    return root


def test_names_poses_and_shared_camera(tmp_path: Path) -> None:
    root = make_folder(tmp_path / "imgs")
    pose_a = Pose.from_qt([1, 0, 0, 0], [1, 2, 3])
    pose_b = Pose.from_qt([np.sqrt(0.5), 0, np.sqrt(0.5), 0], [0, 0, 1])
    write_poses(tmp_path / "poses.txt", {"db/a.jpg": pose_a, "db/b.png": pose_b})
    fs = read_image_folder(root, poses=tmp_path / "poses.txt", camera=CAM)
    assert fs.names == ["db/a.jpg", "db/b.png", "query/q1.jpg"]
    assert fs.format == "folder" and not fs.skipped
    by = fs.by_name()
    assert by["db/a.jpg"].image_path == root / "db" / "a.jpg"
    # hloc files are already world-to-camera: read as is
    np.testing.assert_allclose(by["db/a.jpg"].pose.t, [1, 2, 3])
    np.testing.assert_allclose(by["db/a.jpg"].pose.center, [-1, -2, -3])
    np.testing.assert_allclose(by["db/b.png"].pose.matrix, pose_b.matrix, atol=1e-9)
    assert by["query/q1.jpg"].pose is None  # a query
    assert {f.camera for f in fs.frames} == {Camera.from_colmap_string(CAM)}


def test_require_pose_skips_images_without_one(tmp_path: Path) -> None:
    root = make_folder(tmp_path / "imgs")
    poses = {"db/a.jpg": Pose.identity(), "db/missing.jpg": Pose.identity()}
    fs = read_image_folder(root, poses=poses, camera=CAM, require_poses=True)
    assert fs.names == ["db/a.jpg"]
    skipped = {s.name: s for s in fs.skipped}
    assert set(skipped) == {"db/b.png", "query/q1.jpg", "db/missing.jpg"}
    assert "no pose" in skipped["db/b.png"].reason
    assert skipped["db/missing.jpg"].path == root / "db" / "missing.jpg"
    assert "no such image" in skipped["db/missing.jpg"].reason


def test_query_list_intrinsics(tmp_path: Path) -> None:
    root = make_folder(tmp_path / "imgs")
    qlist = tmp_path / "queries_with_intrinsics.txt"
    qlist.write_text(
        "# hloc query list\n"
        "query/q1.jpg SIMPLE_RADIAL 64 48 55 32 24 0.01\n"
        "db/a.jpg OPENCV 64 48 50 51 32 24 0.1 0.01 0 0\n"
    )
    cams = read_cameras(qlist)
    assert cams["query/q1.jpg"] == Camera("SIMPLE_RADIAL", 64, 48, (55, 32, 24, 0.01))
    fs = read_image_folder(root, camera=qlist)
    assert fs.names == ["db/a.jpg", "query/q1.jpg"]
    assert fs.by_name()["db/a.jpg"].camera.model == "OPENCV"
    assert [(s.name, "no intrinsics" in s.reason) for s in fs.skipped] == [("db/b.png", True)]
    # a str path works too
    assert read_image_folder(root, camera=str(qlist)).names == fs.names


def test_malformed_query_list_names_file_and_line(tmp_path: Path) -> None:
    root = make_folder(tmp_path / "imgs")
    qlist = tmp_path / "q.txt"
    qlist.write_text("query/q1.jpg PINHOLE 64 48 50 50 32 24\nquery/q2.jpg PINHOLE 64 48 50\n")
    with pytest.raises(InputError, match="line 2") as err:
        read_image_folder(root, camera=qlist)
    assert err.value.path == qlist


def test_without_intrinsics_each_image_gets_the_default_camera_of_its_size(tmp_path: Path) -> None:
    root = make_folder(tmp_path / "imgs")
    fs = read_image_folder(root)
    assert fs.frames and not fs.skipped
    for frame in fs.frames:
        w, h = Image.open(frame.image_path).size
        # hand-computed: f = 1.2 * longer side, principal point at the centre of the pixel grid
        assert frame.camera == Camera("SIMPLE_PINHOLE", w, h, (1.2 * max(w, h), (w - 1) / 2, (h - 1) / 2))
    # a malformed camera string is a configuration error naming the option and the string
    for bad, problem in [("PINHOLE 64 48 50", "PINHOLE takes 4 parameters, got 1"),
                         ("PINHOLE 64 48 50 nan 31.5 23.5", "must be finite"),
                         ("PINHOLE 64 48 0 50 31.5 23.5", "focal length must be positive"),
                         ("SIMPLE_PINHOLE 64 48 0 31.5 23.5", "focal length must be positive"),
                         ("PINHOLE 64 0 50 50 31.5 23.5", "size must be positive"),
                         ("pinhole 64 48 50 50 31.5 23.5", "neither an intrinsics file nor a camera string")]:
        with pytest.raises(ConfigError) as err:
            read_image_folder(root, camera=bad)
        assert str(err.value).startswith(f"--camera {bad!r}: ") and problem in str(err.value), str(err.value)


def test_shared_camera_is_scaled_or_rejected_by_image_size(tmp_path: Path) -> None:
    root = tmp_path / "imgs"
    root.mkdir()
    Image.new("RGB", (32, 24)).save(root / "half.png")
    Image.new("RGB", (48, 48)).save(root / "square.png")
    fs = read_image_folder(root, camera="PINHOLE 64 48 50 50 31.5 23.5")
    # half size, pixel-centre aware: c = (c + 0.5) / 2 - 0.5
    assert fs.by_name()["half.png"].camera == Camera("PINHOLE", 32, 24, (25, 25, 15.5, 11.5))
    assert [s.name for s in fs.skipped] == ["square.png"]
    assert "aspect" in fs.skipped[0].reason


def test_exif_rotated_image_gets_the_rotated_size(tmp_path: Path) -> None:
    root = tmp_path / "imgs"
    root.mkdir()
    exif = Image.Exif()
    exif[0x0112] = 6  # stored 64x48, displayed (and read by visloc) as 48x64
    Image.new("RGB", (64, 48)).save(root / "phone.jpg", exif=exif)
    fs = read_image_folder(root, camera="PINHOLE 48 64 50 50 23.5 31.5")
    assert not fs.skipped
    assert (fs.frames[0].camera.width, fs.frames[0].camera.height) == (48, 64)


def test_unreadable_image_is_skipped(tmp_path: Path) -> None:
    root = make_folder(tmp_path / "imgs")
    (root / "db" / "zz.jpg").write_bytes(b"\x00garbage")
    fs = read_image_folder(root, camera=CAM)
    assert len(fs.frames) == 3
    assert [(s.name, s.path) for s in fs.skipped] == [("db/zz.jpg", root / "db" / "zz.jpg")]


def test_empty_folder_and_bad_split(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="no images"):
        read_image_folder(tmp_path, camera=CAM)
    root = make_folder(tmp_path / "imgs")
    assert read_image_folder(root, camera=CAM, split="odd").names == ["db/b.png"]
    # a folder has no train/test split: both read the whole folder
    assert read_image_folder(root, camera=CAM, split="test").names == read_image_folder(root, camera=CAM).names
    with pytest.raises(ConfigError, match=r"^split 'validation': an image folder has no such split; choose one "
                                          r"of all, even, odd \(train and test read the whole folder\)$"):
        read_image_folder(root, camera=CAM, split="validation")


def test_image_declaring_too_many_pixels_is_skipped(tmp_path: Path) -> None:
    import struct
    import zlib

    root = make_folder(tmp_path / "imgs")
    bomb = root / "db" / "bomb.png"
    Image.new("RGB", (4, 4)).save(bomb)
    data = bytearray(bomb.read_bytes())
    data[16:24] = struct.pack(">II", 60000, 60000)  # the IHDR's width and height
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])))
    bomb.write_bytes(bytes(data))
    for camera in (CAM, None):  # a shared camera fitted to the header's size, or the default camera
        fs = read_image_folder(root, camera=camera)
        assert fs.names == ["db/a.jpg", "db/b.png", "query/q1.jpg"]
        assert [(s.name, s.path) for s in fs.skipped] == [("db/bomb.png", bomb)]
        assert "declares 60000x60000 pixels" in fs.skipped[0].reason


def test_duplicate_names_in_query_list_or_pose_file_are_refused(tmp_path: Path) -> None:
    root = make_folder(tmp_path / "imgs")
    qlist = tmp_path / "q.txt"
    qlist.write_text("query/q1.jpg PINHOLE 64 48 50 50 32 24\ndb/a.jpg PINHOLE 64 48 50 50 32 24\n"
                     "query/q1.jpg PINHOLE 64 48 70 70 32 24\n")
    with pytest.raises(InputError, match=r"line 3: image query/q1.jpg is listed twice \(lines 1 and 3\)") as err:
        read_image_folder(root, camera=qlist)
    assert err.value.path == qlist
    poses = tmp_path / "poses.txt"
    poses.write_text("db/a.jpg 1 0 0 0 0 0 0\ndb/b.png 1 0 0 0 1 0 0\ndb/a.jpg 1 0 0 0 0 0 1\n")
    with pytest.raises(InputError, match=r"line 3: image db/a.jpg is listed twice \(lines 1 and 3\)") as err:
        read_image_folder(root, poses=poses, camera=CAM)
    assert err.value.path == poses


def test_exif_focal_length_gives_the_default_cameras_focal(tmp_path: Path) -> None:
    root = tmp_path / "photos"
    root.mkdir()
    exif = Image.Exif()
    exif.get_ifd(0x8769)[0xA405] = 28  # 28 mm (35 mm equivalent)
    Image.new("RGB", (80, 60), (90, 90, 90)).save(root / "with_exif.jpg", exif=exif)
    Image.new("RGB", (40, 60), (90, 90, 90)).save(root / "plain.jpg")
    cams = {f.name: f.camera for f in read_image_folder(root).frames}
    # hand-computed: 28 / 36 of the longer side (80 px); without EXIF 1.2 x 60 px
    assert cams["with_exif.jpg"] == Camera("SIMPLE_PINHOLE", 80, 60, (28 / 36 * 80, 39.5, 29.5))
    assert cams["plain.jpg"] == Camera("SIMPLE_PINHOLE", 40, 60, (72.0, 19.5, 29.5))
