"""7-Scenes reader: conventions proven on the real ``stairs`` sample, robustness on files made here."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from visloc.datasets import read_7scenes
from visloc.datasets.sevenscenes import read_pose_file
from visloc.errors import ConfigError, InputError
from visloc.geometry import Camera, Pose
from visloc.io.images import read_depth

# --------------------------------------------------------------------------------------------------
# Real data: kapture's 7-Scenes "stairs" sample (12 frames, seq-01..04, 3 frames each)
# --------------------------------------------------------------------------------------------------


def _seqs(frameset) -> list[str]:
    return sorted({f.name.split("/")[1] for f in frameset.frames})


def test_stairs_splits_follow_the_split_files(stairs_root: Path) -> None:
    scene = stairs_root / "stairs"
    train = read_7scenes(scene, "train")
    test = read_7scenes(scene, "test")
    # TrainSplit.txt = sequence2, sequence3; TestSplit.txt = sequence1, sequence4 (MANIFEST 3).
    assert _seqs(train) == ["seq-02", "seq-03"]
    assert _seqs(test) == ["seq-01", "seq-04"]
    assert len(train.frames) == len(test.frames) == 6
    assert not train.skipped and not test.skipped
    assert len(read_7scenes(scene, "all").frames) == 12
    assert train.names[0] == "stairs/seq-02/frame-000000.color.jpg"
    assert {f.scene for f in train.frames} == {"stairs"}
    assert train.format == "7scenes"
    # The scene folder and the folder holding it give the same frames and names.
    assert read_7scenes(stairs_root, "train").names == train.names


def test_stairs_pose_is_the_inverse_of_the_file_matrix(stairs_root: Path) -> None:
    frames = read_7scenes(stairs_root, "all").frames
    for frame in frames:
        raw = np.loadtxt(frame.image_path.with_name(frame.image_path.name.replace("color.jpg", "pose.txt")))
        # pose.txt is camera-to-world: its last column is the camera centre, and the reader's
        # cam_from_world rotation is the transpose of the file's rotation.
        np.testing.assert_allclose(frame.pose.center, raw[:3, 3], atol=1e-6)
        # The stored rotations are slightly scaled (|R R^T - I| ~ 1e-4, det ~ 0.9998); Pose projects
        # them onto the nearest rotation, so the transpose matches to that level.
        np.testing.assert_allclose(frame.pose.R, raw[:3, :3].T, atol=3e-4)
        np.testing.assert_allclose(frame.pose.inverse().matrix, raw, atol=3e-4)
    # First frame of seq-01 checked against the numbers printed in the file.
    first = read_7scenes(stairs_root, "test").frames[0]
    np.testing.assert_allclose(first.pose.center, [-1.4903377, -0.49737796, -0.054694783], atol=1e-7)


def test_stairs_default_intrinsics_and_unregistered_depth(stairs_root: Path) -> None:
    frames = read_7scenes(stairs_root, "all").frames
    assert {f.camera for f in frames} == {Camera("PINHOLE", 640, 480, (525.0, 525.0, 320.0, 240.0))}
    # Real 7-Scenes depth is not registered to colour: no depth_path unless asked for.
    assert all(f.depth_path is None for f in frames)
    registered = read_7scenes(stairs_root, "all", depth_registered=True).frames
    assert all(f.depth_path == f.image_path.with_name(f.image_path.name.replace("color.jpg", "depth.png"))
               for f in registered)


def test_stairs_depth_is_millimetres_with_65535_invalid(stairs_root: Path) -> None:
    frame = read_7scenes(stairs_root, "train", depth_registered=True).frames[0]  # seq-02
    assert frame.depth_scale == 1000.0
    raw = np.asarray(Image.open(frame.depth_path)).astype(np.int64)
    depth = read_depth(frame.depth_path, scale=frame.depth_scale)
    assert (raw == 65535).any(), "seq-02 frame 0 holds invalid (65535) pixels"
    assert np.isnan(depth[(raw == 65535) | (raw == 0)]).all()
    valid = (raw > 0) & (raw < 65535)
    np.testing.assert_allclose(depth[valid], raw[valid] / 1000.0, rtol=1e-6)
    assert 0.3 < np.nanmedian(depth) < 5.0  # a room-scale scene, in metres


def _frame(frames, seq: int, idx: int):
    return next(f for f in frames if f.name.endswith(f"seq-{seq:02d}/frame-{idx:06d}.color.jpg"))


def test_stairs_epipolar_within_a_sequence(stairs_root: Path, epipolar) -> None:
    """Frames 0 and 2 of seq-03 / seq-04 (2-5 cm, 0.4-2 deg apart): GT epipolar geometry fits."""
    frames = read_7scenes(stairs_root, "all").frames
    for seq in (3, 4):
        f0, f2 = _frame(frames, seq, 0), _frame(frames, seq, 2)
        m = epipolar.match(f0.image_path, f2.image_path)
        gt = f2.pose @ f0.pose.inverse()
        not_inverted = f2.pose.inverse() @ f0.pose  # pose.txt wrongly read as cam_from_world
        n_gt = epipolar.count(gt, m, f0.camera, f2.camera)
        n_inv = epipolar.count(gt.inverse(), m, f0.camera, f2.camera)
        n_raw = epipolar.count(not_inverted, m, f0.camera, f2.camera)
        # measured: seq-03 78 / 10 / 26, seq-04 70 / 7 / 7 (of ~200 matches; chance ~3)
        assert n_gt >= 40, (seq, n_gt)
        assert n_gt >= 2.5 * max(n_inv, n_raw), (seq, n_gt, n_inv, n_raw)


def test_stairs_epipolar_across_sequences(stairs_root: Path, epipolar) -> None:
    """seq-02 vs seq-04 (27 cm and 42 deg apart): few but real correct matches on the JPEG blocks.

    The kapture JPEGs are ~2.5 KB each, so SIFT finds ~60 ratio-test matches per pair, mostly wrong;
    RANSAC cannot recover the pose. Summed over the 9 pairs, the matches that agree with the GT
    epipolar geometry still clearly outnumber chance (~5) and the wrong conventions.
    """
    frames = read_7scenes(stairs_root, "all").frames
    n_gt = n_inv = n_raw = 0
    for i in range(3):
        for j in range(3):
            a, b = _frame(frames, 2, i), _frame(frames, 4, j)
            m = epipolar.match(a.image_path, b.image_path)
            gt = b.pose @ a.pose.inverse()
            n_gt += epipolar.count(gt, m, a.camera, b.camera)
            n_inv += epipolar.count(gt.inverse(), m, a.camera, b.camera)
            n_raw += epipolar.count(b.pose.inverse() @ a.pose, m, a.camera, b.camera)
    # measured: 38 / 0 / 0
    assert n_gt >= 20, n_gt
    assert n_gt >= 4 * max(n_inv, n_raw, 2), (n_gt, n_inv, n_raw)


# --------------------------------------------------------------------------------------------------
# Synthetic folders
# --------------------------------------------------------------------------------------------------

def _c2w(center=(0.0, 0.0, 0.0), angle_deg: float = 0.0) -> np.ndarray:
    a = np.radians(angle_deg)
    T = np.eye(4)
    T[:3, :3] = [[np.cos(a), -np.sin(a), 0.0], [np.sin(a), np.cos(a), 0.0], [0.0, 0.0, 1.0]]
    T[:3, 3] = center
    return T


def _write_pose(path: Path, T: np.ndarray) -> None:
    path.write_text("\n".join(" ".join(f"{v:.9e}" for v in row) for row in T) + "\n")


def make_scene(
    base: Path,
    scene: str = "office",
    train=(1,),
    test=(2,),
    n_frames: int = 3,
    size=(64, 48),
    suffix: str = "png",
) -> Path:
    """A tiny 7-Scenes scene: PNG images, 16-bit depth, camera-to-world poses, split files."""
    root = base / scene
    root.mkdir(parents=True)
    (root / "TrainSplit.txt").write_text("".join(f"sequence{s}\n" for s in train))
    (root / "TestSplit.txt").write_text("".join(f"sequence{s}\n" for s in test))
    for seq in (*train, *test):
        d = root / f"seq-{seq:02d}"
        d.mkdir()
        for i in range(n_frames):
            stem = d / f"frame-{i:06d}"
            Image.new("RGB", size, (40 * i, 80, 120)).save(f"{stem}.color.{suffix}")
            Image.fromarray(np.full(size[::-1], 1000 + i, dtype=np.uint16)).save(f"{stem}.depth.png")
            _write_pose(Path(f"{stem}.pose.txt"), _c2w((seq, i, 0.5), 10.0 * i))
    return root


def test_hand_made_pose_is_inverted(tmp_path: Path) -> None:
    path = tmp_path / "frame-000000.pose.txt"
    # camera-to-world: rotation of 90 deg about z, centre (1, 2, 3)
    _write_pose(path, _c2w((1.0, 2.0, 3.0), 90.0))
    pose = read_pose_file(path)
    # cam_from_world by hand: R = R_wc^T = [[0 1 0] [-1 0 0] [0 0 1]], t = -R c = (-2, 1, -3)
    np.testing.assert_allclose(pose.R, [[0, 1, 0], [-1, 0, 0], [0, 0, 1]], atol=1e-9)
    np.testing.assert_allclose(pose.t, [-2.0, 1.0, -3.0], atol=1e-9)
    np.testing.assert_allclose(pose.transform(np.array([[1.0, 2.0, 3.0]])), [[0.0, 0.0, 0.0]], atol=1e-9)


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        ("nan 0 0 0\n0 1 0 0\n0 0 1 0\n0 0 0 1\n", "NaN"),
        ("2 0 0 0\n0 1 0 0\n0 0 1 0\n0 0 0 1\n", "orthonormal"),
        ("1 0 0\n0 1 0\n", "16 numbers"),
        ("one two three\n", "non-numeric"),
        ("1 0 0 0\n0 1 0 0\n0 0 1 0\n0 0 1 1\n", "last row"),
    ],
)
def test_bad_pose_file_is_skipped_and_the_rest_loads(tmp_path: Path, content: str, problem: str) -> None:
    root = make_scene(tmp_path)
    bad = root / "seq-01" / "frame-000001.pose.txt"
    bad.write_text(content)
    fs = read_7scenes(root, "train")
    assert fs.names == ["office/seq-01/frame-000000.color.png", "office/seq-01/frame-000002.color.png"]
    assert len(fs.skipped) == 1
    s = fs.skipped[0]
    assert s.name == "office/seq-01/frame-000001.color.png"
    assert s.path == bad
    assert problem in s.reason
    assert str(bad) in str(s)


def test_frames_without_valid_pose_kept_for_queries(tmp_path: Path) -> None:
    root = make_scene(tmp_path)
    (root / "seq-01" / "frame-000000.pose.txt").unlink()
    (root / "seq-01" / "frame-000001.pose.txt").write_text("nan " * 16)
    fs = read_7scenes(root, "train", require_poses=False)
    assert len(fs.frames) == 3 and not fs.skipped
    assert [f.pose is None for f in fs.frames] == [True, True, False]


def test_missing_pose_file_and_missing_image_are_skipped(tmp_path: Path) -> None:
    root = make_scene(tmp_path)
    (root / "seq-01" / "frame-000000.pose.txt").unlink()
    (root / "seq-01" / "frame-000002.color.png").unlink()
    fs = read_7scenes(root, "train")
    assert fs.names == ["office/seq-01/frame-000001.color.png"]
    reasons = {s.path.name: s.reason for s in fs.skipped}
    assert set(reasons) == {"frame-000000.pose.txt", "frame-000002.color.png"}
    assert "does not exist" in reasons["frame-000000.pose.txt"]
    assert "image missing" in reasons["frame-000002.color.png"]


def test_sequence_listed_but_absent_is_skipped(tmp_path: Path) -> None:
    root = make_scene(tmp_path, train=(1,))
    (root / "TrainSplit.txt").write_text("sequence1\nsequence7\n")
    fs = read_7scenes(root, "train")
    assert len(fs.frames) == 3
    assert [(s.name, s.path) for s in fs.skipped] == [("office/seq-07", root / "seq-07")]
    assert "TrainSplit.txt" in fs.skipped[0].reason


def test_split_file_tolerates_case_and_blank_lines(tmp_path: Path) -> None:
    root = make_scene(tmp_path, train=(1, 3), test=(2,))
    (root / "TrainSplit.txt").write_text("\nSequence1\n\n  SEQUENCE3  \n\n")
    assert _seqs(read_7scenes(root, "train")) == ["seq-01", "seq-03"]


def test_unparsable_split_file_names_file_and_line(tmp_path: Path) -> None:
    root = make_scene(tmp_path)
    (root / "TestSplit.txt").write_text("sequence2\nsequenceX\n")
    with pytest.raises(InputError, match="line 2") as err:
        read_7scenes(root, "test")
    assert err.value.path == root / "TestSplit.txt"


def test_missing_split_file_is_an_error(tmp_path: Path) -> None:
    root = make_scene(tmp_path)
    (root / "TestSplit.txt").unlink()
    assert len(read_7scenes(root, "train").frames) == 3
    assert len(read_7scenes(root, "all").frames) == 3  # "all" uses the split files that exist
    with pytest.raises(InputError) as err:
        read_7scenes(root, "test")
    assert err.value.path == root / "TestSplit.txt"


def test_empty_or_missing_folder_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="not a 7-Scenes folder") as err:
        read_7scenes(tmp_path, "train")
    assert err.value.path == tmp_path
    with pytest.raises(InputError, match="does not exist"):
        read_7scenes(tmp_path / "nope", "train")


def test_unknown_split_is_rejected(tmp_path: Path) -> None:
    root = make_scene(tmp_path)
    # a configuration error (reported without a traceback) naming the split, then the valid ones
    with pytest.raises(ConfigError, match=r"^split 'validation': 7-Scenes has no such split; choose one of "
                                          r"train, test, all, even, odd$"):
        read_7scenes(root, "validation")


def test_default_intrinsics_scale_with_image_size(tmp_path: Path) -> None:
    root = make_scene(tmp_path, size=(320, 240))
    cam = read_7scenes(root, "train").frames[0].camera
    # f = 525 / 2; pixel-centre aware: c = (c640 + 0.5) / 2 - 0.5
    assert cam == Camera("PINHOLE", 320, 240, (262.5, 262.5, 159.75, 119.75))


def test_dataset_json_sets_camera_and_registered_depth(tmp_path: Path) -> None:
    make_scene(tmp_path, "kitchen", size=(64, 48))
    meta = {"camera": "PINHOLE 64 48 50 51 31.5 23.5", "depth_registered": True, "depth_scale": 4000}
    (tmp_path / "dataset.json").write_text(json.dumps(meta))
    for root in (tmp_path, tmp_path / "kitchen"):  # multi-scene root and the scene folder itself
        fs = read_7scenes(root, "train")
        frame = fs.frames[1]
        assert frame.camera == Camera("PINHOLE", 64, 48, (50.0, 51.0, 31.5, 23.5))
        assert frame.depth_path == tmp_path / "kitchen" / "seq-01" / "frame-000001.depth.png"
        assert frame.depth_scale == 4000.0
        np.testing.assert_allclose(read_depth(frame.depth_path, scale=frame.depth_scale), 1001 / 4000)
    # Arguments override dataset.json.
    own = Camera.pinhole(10, 10, 31.5, 23.5, 64, 48)
    fs = read_7scenes(tmp_path, "train", camera=own, depth_registered=False)
    assert all(f.camera == own and f.depth_path is None for f in fs.frames)


def test_malformed_dataset_json_is_an_error(tmp_path: Path) -> None:
    make_scene(tmp_path)
    (tmp_path / "dataset.json").write_text('{"camera": "PINHOLE 64 48 50"}')
    with pytest.raises(InputError, match="camera") as err:
        read_7scenes(tmp_path, "train")
    assert err.value.path == tmp_path / "dataset.json"


def test_multi_scene_root_and_scene_filter(tmp_path: Path) -> None:
    make_scene(tmp_path, "chess", suffix="jpg")
    make_scene(tmp_path, "fire")
    (tmp_path / "notes").mkdir()  # a folder without split files is not a scene
    fs = read_7scenes(tmp_path, "test")
    assert fs.scenes == ["chess", "fire"]
    assert fs.names[0] == "chess/seq-02/frame-000000.color.jpg"
    only = read_7scenes(tmp_path, "test", scenes=["fire"])
    assert only.scenes == ["fire"] and len(only.frames) == 3
    with pytest.raises(InputError, match="heads"):
        read_7scenes(tmp_path, "test", scenes=["heads"])


def test_even_and_odd_partition_all(tmp_path: Path) -> None:
    root = make_scene(tmp_path, n_frames=3)
    names = read_7scenes(root, "all").names
    even, odd = read_7scenes(root, "even").names, read_7scenes(root, "odd").names
    assert even == names[0::2] and odd == names[1::2]


def test_poses_of_made_scene_round_trip(tmp_path: Path) -> None:
    root = make_scene(tmp_path, train=(1,), n_frames=2)
    frame = read_7scenes(root, "train").frames[1]
    expected = Pose.from_matrix(_c2w((1, 1, 0.5), 10.0)).inverse()
    np.testing.assert_allclose(frame.pose.matrix, expected.matrix, atol=1e-8)
    np.testing.assert_allclose(frame.pose.center, [1.0, 1.0, 0.5], atol=1e-8)
