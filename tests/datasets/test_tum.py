"""TUM RGB-D reader: conventions proven on the real fr2/desk frames, robustness on files made here."""

from __future__ import annotations

import itertools
import logging
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from scipy.spatial.transform import Rotation

from visloc.datasets import read_tum
from visloc.datasets.tum import DEFAULT_CAMERA, read_camera_file
from visloc.errors import ConfigError, InputError
from visloc.geometry import Camera, Pose, pose_error

# --------------------------------------------------------------------------------------------------
# Real data: 20 frames of rgbd_dataset_freiburg2_desk at 10 Hz with the full mocap ground truth
# --------------------------------------------------------------------------------------------------


def _raw_gt(tum_root: Path) -> np.ndarray:
    return np.loadtxt(tum_root / "groundtruth.txt")


def _nearest_row(gt: np.ndarray, image_path: Path) -> np.ndarray:
    return gt[np.argmin(np.abs(gt[:, 0] - float(image_path.stem)))]


def test_real_sequence_frames_and_intrinsics(tum_root: Path) -> None:
    fs = read_tum(tum_root)
    assert len(fs.frames) == 20 and not fs.skipped
    assert fs.names[0] == "rgb/1311868169.163498.png"
    stamps = [float(Path(n).stem) for n in fs.names]
    assert stamps == sorted(stamps)
    # camera.txt: 640 480 fx fy cx cy k1 k2 p1 p2 k3 (OpenCV) -> COLMAP FULL_OPENCV, k4..k6 = 0
    expected = Camera(
        "FULL_OPENCV", 640, 480,
        (520.908620, 521.007327, 325.141442, 249.701764, 0.231222, -0.784899, -0.003257, -0.000105,
         0.917205, 0.0, 0.0, 0.0),
    )
    assert all(f.camera == expected for f in fs.frames)
    assert all(f.pose is not None and f.depth_path is None for f in fs.frames)


def test_real_pose_matches_the_groundtruth_row(tum_root: Path) -> None:
    gt = _raw_gt(tum_root)
    # frames_gt_nearest.txt (derived, independent of the reader) names the row of each frame.
    derived = {}
    for line in (tum_root / "frames_gt_nearest.txt").read_text().splitlines():
        if line and not line.startswith("#"):
            parts = line.split()
            derived[parts[0]] = np.array(parts[3:], dtype=float)
    for frame in read_tum(tum_root).frames:
        row = _nearest_row(gt, frame.image_path)
        np.testing.assert_allclose(row[1:], derived[frame.name], atol=1e-9)
        tx, ty, tz, qx, qy, qz, qw = row[1:]
        # groundtruth.txt is camera-to-world with the quaternion w last (SciPy's own order).
        R_wc = Rotation.from_quat([qx, qy, qz, qw]).as_matrix()
        np.testing.assert_allclose(frame.pose.center, [tx, ty, tz], atol=1e-12)
        np.testing.assert_allclose(frame.pose.R, R_wc.T, atol=1e-9)


def test_real_motion_is_plausible(tum_root: Path) -> None:
    frames = read_tum(tum_root).frames
    steps = [pose_error(a.pose, b.pose) for a, b in itertools.pairwise(frames)]
    dist = np.array([s[0] for s in steps])
    angle = np.array([s[1] for s in steps])
    # A hand-held camera at 10 Hz: a few cm and about a degree per frame (frames 0-1: 2.8 cm).
    assert np.all(dist > 0.005) and np.all(dist < 0.10), dist
    assert 0.01 < np.median(dist) < 0.05
    assert np.all(angle < 5.0), angle


def test_real_epipolar_gt_beats_wrong_conventions(tum_root: Path, epipolar) -> None:
    frames = read_tum(tum_root).frames
    gt_rows = _raw_gt(tum_root)

    def w_first(frame) -> Pose:  # the classic mistake: TUM's (qx qy qz qw) read as (qw qx qy qz)
        row = _nearest_row(gt_rows, frame.image_path)
        return Pose.from_qt(row[4:8], row[1:4]).inverse()

    n_undistorted = n_pinhole = 0
    for i, j in [(0, 5), (0, 10), (10, 19)]:
        a, b = frames[i], frames[j]
        m = epipolar.match(a.image_path, b.image_path)
        gt = b.pose @ a.pose.inverse()
        counts = {
            "gt": epipolar.count(gt, m, a.camera, b.camera),
            "inverse": epipolar.count(gt.inverse(), m, a.camera, b.camera),
            "w_first": epipolar.count(w_first(b) @ w_first(a).inverse(), m, a.camera, b.camera),
            "not_inverted": epipolar.count(b.pose.inverse() @ a.pose, m, a.camera, b.camera),
        }
        # measured (of 270-530 matches): (0,5) 340/0/2/1, (0,10) 190/0/4/0, (10,19) 437/0/0/16
        assert counts["gt"] >= 120, (i, j, counts)
        assert counts["gt"] >= 8 * max(counts["inverse"], counts["w_first"], counts["not_inverted"]), counts
        n_undistorted += counts["gt"]
        n_pinhole += epipolar.count(gt, m, a.camera.pinhole_part(), b.camera.pinhole_part())
    # The images are not undistorted: camera.txt's distortion must help (measured 967 vs 878).
    assert n_undistorted >= 1.05 * n_pinhole, (n_undistorted, n_pinhole)


# --------------------------------------------------------------------------------------------------
# Synthetic folders
# --------------------------------------------------------------------------------------------------

T0 = 1000.0
# camera-to-world, quaternion w last: 90 deg about z (qz = qw = sqrt(1/2)), centre (1, 2, 3)
S = np.sqrt(0.5)
ROW = f"1 2 3 0 0 {S:.9f} {S:.9f}"


def make_sequence(root: Path, n: int = 4, gt_lines: list[str] | None = None, size=(32, 24)) -> Path:
    """Images at T0 + 0.1 k, ground truth at the same times (unless ``gt_lines`` is given)."""
    (root / "rgb").mkdir(parents=True)
    for k in range(n):
        Image.new("RGB", size, (10 * k, 0, 0)).save(root / "rgb" / f"{T0 + 0.1 * k:.6f}.png")
    if gt_lines is None:
        gt_lines = [f"{T0 + 0.1 * k + 0.003:.4f} {k} 0 0 0 0 0 1" for k in range(n)]
    (root / "groundtruth.txt").write_text("# ground truth trajectory\n# timestamp tx ty tz qx qy qz qw\n"
                                          + "\n".join(gt_lines) + "\n")
    return root


def test_hand_made_pose_conversion(tmp_path: Path) -> None:
    root = make_sequence(tmp_path, n=1, gt_lines=[f"{T0:.4f} {ROW}"])
    pose = read_tum(root, camera=DEFAULT_CAMERA).frames[0].pose
    # cam_from_world by hand: R = R_wc^T = [[0 1 0] [-1 0 0] [0 0 1]], t = -R c = (-2, 1, -3)
    np.testing.assert_allclose(pose.R, [[0, 1, 0], [-1, 0, 0], [0, 0, 1]], atol=1e-8)
    np.testing.assert_allclose(pose.t, [-2.0, 1.0, -3.0], atol=1e-8)
    np.testing.assert_allclose(pose.qvec, [S, 0, 0, -S], atol=1e-8)


def test_association_skips_frames_without_ground_truth(tmp_path: Path) -> None:
    lines = [f"{T0 + 0.005:.4f} 0 0 0 0 0 0 1", f"{T0 + 0.2 - 0.01:.4f} 2 0 0 0 0 0 1"]
    root = make_sequence(tmp_path, n=4, gt_lines=lines)
    fs = read_tum(root, camera=DEFAULT_CAMERA)
    assert fs.names == [f"rgb/{T0:.6f}.png", f"rgb/{T0 + 0.2:.6f}.png"]
    np.testing.assert_allclose([f.pose.center[0] for f in fs.frames], [0.0, 2.0])
    assert [s.name for s in fs.skipped] == [f"rgb/{T0 + 0.1:.6f}.png", f"rgb/{T0 + 0.3:.6f}.png"]
    assert all(s.path == root / "groundtruth.txt" and "no ground truth within" in s.reason for s in fs.skipped)
    # A wider window associates them; asking for frames without GT keeps them with pose None.
    assert len(read_tum(root, camera=DEFAULT_CAMERA, max_dt=0.2).frames) == 4
    kept = read_tum(root, camera=DEFAULT_CAMERA, require_poses=False)
    assert len(kept.frames) == 4 and not kept.skipped
    assert [f.pose is None for f in kept.frames] == [False, True, False, True]


def test_invalid_groundtruth_row_is_skipped(tmp_path: Path) -> None:
    lines = [f"{T0 + 0.1 * k:.4f} 0 0 0 0 0 0 1" for k in range(3)]
    lines[1] = f"{T0 + 0.1:.4f} nan 0 0 0 0 0 1"
    lines[2] = f"{T0 + 0.2:.4f} 0 0 0 0 0 0 2"  # not a unit quaternion
    root = make_sequence(tmp_path, n=3, gt_lines=lines)
    fs = read_tum(root, camera=DEFAULT_CAMERA)
    assert len(fs.frames) == 1
    reasons = [s.reason for s in fs.skipped]
    # 2 comment lines precede the data
    assert "line 4" in reasons[0] and "NaN" in reasons[0]
    assert "line 5" in reasons[1] and "unit" in reasons[1]


def test_malformed_groundtruth_line_is_an_error(tmp_path: Path) -> None:
    root = make_sequence(tmp_path, n=2, gt_lines=[f"{T0:.4f} 0 0 0 0 0 0 1", "1000.1 0 0 0 0 0 1"])
    with pytest.raises(InputError, match="line 4") as err:
        read_tum(root, camera=DEFAULT_CAMERA)
    assert err.value.path == root / "groundtruth.txt"


def test_missing_groundtruth(tmp_path: Path) -> None:
    root = make_sequence(tmp_path, n=2)
    (root / "groundtruth.txt").unlink()
    with pytest.raises(InputError) as err:
        read_tum(root, camera=DEFAULT_CAMERA)
    assert err.value.path == root / "groundtruth.txt"
    fs = read_tum(root, camera=DEFAULT_CAMERA, require_poses=False)
    assert len(fs.frames) == 2 and all(f.pose is None for f in fs.frames)


def test_empty_or_non_tum_folder_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="rgb"):
        read_tum(tmp_path)
    (tmp_path / "rgb").mkdir()
    with pytest.raises(InputError, match="no images"):
        read_tum(tmp_path)


def test_even_odd_split_by_time(tmp_path: Path) -> None:
    root = make_sequence(tmp_path, n=5)
    all_names = read_tum(root, camera=DEFAULT_CAMERA).names
    assert read_tum(root, "even", camera=DEFAULT_CAMERA).names == all_names[0::2]
    assert read_tum(root, "odd", camera=DEFAULT_CAMERA).names == all_names[1::2]
    with pytest.raises(ConfigError, match=r"^split 'validation': a TUM sequence has no such split; choose one "
                                          r"of all, even, odd \(train and test read every frame\)$"):
        read_tum(root, "validation")


def test_train_and_test_read_all_frames_with_a_warning(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    root = make_sequence(tmp_path, n=3)
    all_names = read_tum(root, camera=DEFAULT_CAMERA).names
    with caplog.at_level(logging.WARNING, logger="visloc.datasets.tum"):
        assert read_tum(root, "test", camera=DEFAULT_CAMERA).names == all_names
    assert "no 'test' split" in caplog.text


def test_rgb_txt_and_depth_association(tmp_path: Path) -> None:
    root = make_sequence(tmp_path, n=3)
    # rgb.txt lists frames 0 and 2 and a file that does not exist
    (root / "rgb.txt").write_text(
        f"# color images\n{T0:.6f} rgb/{T0:.6f}.png\n{T0 + 0.2:.6f} rgb/{T0 + 0.2:.6f}.png\n"
        f"{T0 + 0.25:.6f} rgb/missing.png\n"
    )
    (root / "depth").mkdir()
    for t in (T0 + 0.011, T0 + 0.26):  # frame 0 has depth within 0.02 s, frame 2 does not
        Image.fromarray(np.full((24, 32), 5000, np.uint16)).save(root / "depth" / f"{t:.6f}.png")
    fs = read_tum(root, camera=DEFAULT_CAMERA, max_dt=0.02)
    assert fs.names == [f"rgb/{T0:.6f}.png", f"rgb/{T0 + 0.2:.6f}.png"]
    assert fs.frames[0].depth_path == root / "depth" / f"{T0 + 0.011:.6f}.png"
    assert fs.frames[0].depth_scale == 5000.0
    assert fs.frames[1].depth_path is None
    assert [(s.name, s.path.name) for s in fs.skipped] == [("rgb/missing.png", "missing.png")]
    assert read_tum(root, camera=DEFAULT_CAMERA, with_depth=False).frames[0].depth_path is None


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("# w h fx fy cx cy\n640 480 500 501 320 240\n", Camera("PINHOLE", 640, 480, (500, 501, 320, 240))),
        (
            "640 480 fx=500 fy=501 cx=320 cy=240 k1=0.1 k2=-0.2 p1=0.01 p2=0.02 k3=0.3",
            Camera("FULL_OPENCV", 640, 480, (500, 501, 320, 240, 0.1, -0.2, 0.01, 0.02, 0.3, 0, 0, 0)),
        ),
        (
            "640 480\nfx=500 fy=501 cx=320 cy=240\nk1=0.1 k2=-0.2 p1=0.01 p2=0.02 k3=0",
            Camera("OPENCV", 640, 480, (500, 501, 320, 240, 0.1, -0.2, 0.01, 0.02)),
        ),
        ("640 480 500 501 320 240 0.1 -0.2 0.01 0.02", Camera("OPENCV", 640, 480, (500, 501, 320, 240, 0.1, -0.2, 0.01, 0.02))),
        ("PINHOLE 640 480 500 501 320 240", Camera("PINHOLE", 640, 480, (500, 501, 320, 240))),
    ],
)
def test_camera_file_formats(tmp_path: Path, text: str, expected: Camera) -> None:
    path = tmp_path / "camera.txt"
    path.write_text(text)
    assert read_camera_file(path) == expected


@pytest.mark.parametrize("text", ["640 480 500", "640 480 fx=500 fy=500 cx=320", "640 480 fx=1 fy=1 cx=1 cy=1 q=3", ""])
def test_bad_camera_file_is_an_error(tmp_path: Path, text: str) -> None:
    path = tmp_path / "camera.txt"
    path.write_text(text)
    with pytest.raises(InputError) as err:
        read_camera_file(path)
    assert err.value.path == path


def test_camera_priority(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    root = make_sequence(tmp_path, n=1)
    with caplog.at_level(logging.WARNING, logger="visloc.datasets.tum"):
        assert read_tum(root).frames[0].camera == Camera("PINHOLE", 640, 480, (525, 525, 319.5, 239.5))
    assert "default intrinsics" in caplog.text
    (root / "camera.txt").write_text("32 24 30 30 15.5 11.5")
    assert read_tum(root).frames[0].camera == Camera("PINHOLE", 32, 24, (30, 30, 15.5, 11.5))
    mine = Camera.pinhole(40, 40, 16, 12, 32, 24)
    assert read_tum(root, camera=mine).frames[0].camera == mine
