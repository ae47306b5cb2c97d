"""hloc pose files: ``name qw qx qy qz tx ty tz`` (world-to-camera)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from visloc.errors import InputError
from visloc.geometry import Pose
from visloc.io.poses import format_pose_line, read_poses, write_poses


def test_hand_written_lines(tmp_path: Path) -> None:
    s = np.sqrt(0.5)
    path = tmp_path / "poses.txt"
    path.write_text(
        "# hloc poses\n\n"
        "db/a.jpg 1 0 0 0 1 2 3\n"
        f"q/b.png {s} 0 0 {s} 0.5 0 0\n"
    )
    poses = read_poses(path)
    assert list(poses) == ["db/a.jpg", "q/b.png"]
    np.testing.assert_allclose(poses["db/a.jpg"].R, np.eye(3))
    np.testing.assert_allclose(poses["db/a.jpg"].center, [-1, -2, -3])  # c = -R^T t
    # w-first quaternion of 90 deg about z: R = [[0 -1 0] [1 0 0] [0 0 1]] (by hand)
    np.testing.assert_allclose(poses["q/b.png"].R, [[0, -1, 0], [1, 0, 0], [0, 0, 1]], atol=1e-12)
    np.testing.assert_allclose(poses["q/b.png"].center, [0, 0.5, 0], atol=1e-12)


def test_round_trip(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    poses = {}
    for i in range(20):
        q = rng.normal(size=4)
        poses[f"seq/{i:03d}.jpg"] = Pose.from_qt(q / np.linalg.norm(q), rng.normal(size=3) * 10)
    write_poses(tmp_path / "p.txt", poses)
    back = read_poses(tmp_path / "p.txt")
    assert list(back) == list(poses)
    for name, pose in poses.items():
        np.testing.assert_allclose(back[name].matrix, pose.matrix, atol=1e-9)
    line = format_pose_line("x.jpg", Pose.from_qt([1, 0, 0, 0], [1, 2, 3]))
    assert line.split() == ["x.jpg", "1", "0", "0", "0", "1", "2", "3"]


@pytest.mark.parametrize(
    ("bad_line", "problem"),
    [
        ("c.jpg 1 0 0 0 1 2", "expected"),  # 7 fields
        ("c.jpg 1 0 0 0 1 2 x", "c.jpg"),  # not a number
        ("c.jpg 2 0 0 0 1 2 3", "unit"),  # not a unit quaternion
        ("c.jpg nan 0 0 0 1 2 3", "c.jpg"),
    ],
)
def test_malformed_line_names_file_and_line(tmp_path: Path, bad_line: str, problem: str) -> None:
    path = tmp_path / "poses.txt"
    path.write_text(f"a.jpg 1 0 0 0 0 0 0\n# comment\n{bad_line}\n")
    with pytest.raises(InputError, match="line 3") as err:
        read_poses(path)
    assert err.value.path == path
    assert problem in str(err.value)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="does not exist") as err:
        read_poses(tmp_path / "nope.txt")
    assert err.value.path == tmp_path / "nope.txt"


def test_whitespace_name_is_refused_and_old_file_kept(tmp_path: Path) -> None:
    path = tmp_path / "poses.txt"
    write_poses(path, {"a.jpg": Pose.identity()})
    before = path.read_text()
    with pytest.raises(ValueError, match="whitespace"):
        write_poses(path, {"b.jpg": Pose.identity(), "my photo.jpg": Pose.identity()})
    assert path.read_text() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["poses.txt"]  # no temporary left behind


def test_duplicate_name_is_refused_naming_both_lines(tmp_path: Path) -> None:
    # the second pose of a.jpg used to replace the first silently
    path = tmp_path / "poses.txt"
    path.write_text("a.jpg 1 0 0 0 0 0 0\n# comment\nb.jpg 1 0 0 0 1 0 0\n\na.jpg 1 0 0 0 5 5 5\n")
    with pytest.raises(InputError) as err:
        read_poses(path)
    assert err.value.path == path
    assert str(err.value) == f"{path}: line 5: image a.jpg is listed twice (lines 1 and 5)"
