"""ScanNet pairs (SuperGlue format): conventions proven on the real pairs, robustness on made files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from visloc.datasets import PairWithGT, read_scannet_pairs
from visloc.errors import InputError
from visloc.geometry import Camera


def test_real_pairs_parse_to_the_file_numbers(scannet_root: Path) -> None:
    pairs = read_scannet_pairs(scannet_root)  # the folder; pairs_with_gt.txt and images/ are found
    lines = (scannet_root / "pairs_with_gt.txt").read_text().split("\n")
    lines = [line.split() for line in lines if line.strip()]
    assert len(pairs) == len(lines) == 15 and not pairs.skipped
    for pair, fields in zip(pairs, lines, strict=True):
        assert isinstance(pair, PairWithGT)
        assert (pair.name0, pair.name1) == (fields[0], fields[1])
        assert pair.path0 == scannet_root / "images" / fields[0]
        assert (pair.rot0, pair.rot1) == (0, 0)
        K0 = np.array(fields[4:13], dtype=float).reshape(3, 3)
        T = np.array(fields[22:38], dtype=float).reshape(4, 4)
        # images are 1296x968 (read from the files), K used as is
        assert pair.camera0 == Camera("PINHOLE", 1296, 968, (K0[0, 0], K0[1, 1], K0[0, 2], K0[1, 2]))
        assert pair.camera1.width == 1296 and pair.camera1.height == 968
        # T_0to1 *is* cam1_from_cam0: X1 = R X0 + t (4-decimal rotations, projected on SO(3))
        np.testing.assert_allclose(pair.cam1_from_cam0.matrix, T, atol=1e-4)


def test_real_epipolar_gt_beats_inverse(scannet_root: Path, epipolar) -> None:
    """The 15 hard pairs: too few correct SIFT matches for RANSAC, but summed over all pairs the
    matches on the GT epipolar lines clearly outnumber those on the inverse pose's (MANIFEST: 37 vs 5
    within 2 px at full resolution; chance is about 1 in 300)."""
    n_gt = n_inv = n_matches = 0
    for pair in read_scannet_pairs(scannet_root / "pairs_with_gt.txt"):
        m = epipolar.match(pair.path0, pair.path1, ratio=0.9, scale=0.5)
        n_matches += len(m)
        n_gt += epipolar.count(pair.cam1_from_cam0, m, pair.camera0, pair.camera1)
        n_inv += epipolar.count(pair.cam1_from_cam0.inverse(), m, pair.camera0, pair.camera1)
    # measured: 34 vs 6 of about 2000 matches
    assert n_gt >= 20, (n_gt, n_inv, n_matches)
    assert n_gt >= 3 * n_inv, (n_gt, n_inv, n_matches)


# --------------------------------------------------------------------------------------------------

K = "100 0 31.5 0 101 23.5 0 0 1"
T_ID = "1 0 0 0.5 0 1 0 0 0 0 1 0 0 0 0 1"


def _images(root: Path, *names: str, size=(64, 48)) -> None:
    (root / "images").mkdir(exist_ok=True)
    for n in names:
        Image.new("RGB", size).save(root / "images" / n)


def test_made_pairs_file(tmp_path: Path) -> None:
    _images(tmp_path, "a.jpg", "b.jpg")
    _images(tmp_path, "c.png", size=(32, 24))
    (tmp_path / "pairs.txt").write_text(
        f"# comment\na.jpg b.jpg 0 1 {K} {K} {T_ID}\n\nb.jpg c.png 2 3 {K} {K} {T_ID}\n"
    )
    pairs = read_scannet_pairs(tmp_path / "pairs.txt")
    assert [(p.name0, p.name1, p.rot0, p.rot1) for p in pairs] == [("a.jpg", "b.jpg", 0, 1), ("b.jpg", "c.png", 2, 3)]
    assert pairs[1].camera1 == Camera("PINHOLE", 32, 24, (100, 101, 31.5, 23.5))
    np.testing.assert_allclose(pairs[0].cam1_from_cam0.t, [0.5, 0, 0])
    # a point 1 m in front of camera 0 is at x = 0.5 in camera 1
    np.testing.assert_allclose(pairs[0].cam1_from_cam0.transform(np.array([[0.0, 0, 1]])), [[0.5, 0, 1]])


def test_problems_per_pair_are_skipped(tmp_path: Path) -> None:
    _images(tmp_path, "a.jpg", "b.jpg")
    (tmp_path / "images" / "broken.jpg").write_bytes(b"not a jpeg at all")
    shear = "100 5 31.5 0 101 23.5 0 0 1"
    not_rigid = "2 0 0 0 0 1 0 0 0 0 1 0 0 0 0 1"
    (tmp_path / "pairs_with_gt.txt").write_text(
        f"a.jpg b.jpg 0 0 {K} {K} {T_ID}\n"
        f"a.jpg gone.jpg 0 0 {K} {K} {T_ID}\n"
        f"broken.jpg b.jpg 0 0 {K} {K} {T_ID}\n"
        f"a.jpg b.jpg 0 0 {K} {K} {not_rigid}\n"
        f"a.jpg b.jpg 0 0 {shear} {K} {T_ID}\n"
    )
    pairs = read_scannet_pairs(tmp_path)
    assert len(pairs) == 1
    got = [(s.path.name, s.reason) for s in pairs.skipped]
    assert got[0][0] == "gone.jpg" and "does not exist" in got[0][1]
    assert got[1][0] == "broken.jpg" and "cannot read" in got[1][1]
    assert got[2][0] == "pairs_with_gt.txt" and "line 4" in got[2][1] and "orthonormal" in got[2][1]
    assert got[3][0] == "pairs_with_gt.txt" and "line 5" in got[3][1]


@pytest.mark.parametrize(
    "line",
    [
        f"a.jpg b.jpg 0 0 {K} {K} 1 0 0",  # too few fields
        f"a.jpg b.jpg 0 x {K} {K} {T_ID}",  # not a number
        f"a.jpg b.jpg 0 5 {K} {K} {T_ID}",  # rotation code out of range
    ],
)
def test_malformed_line_names_file_and_line(tmp_path: Path, line: str) -> None:
    _images(tmp_path, "a.jpg", "b.jpg")
    path = tmp_path / "pairs_with_gt.txt"
    path.write_text(f"a.jpg b.jpg 0 0 {K} {K} {T_ID}\n{line}\n")
    with pytest.raises(InputError, match="line 2") as err:
        read_scannet_pairs(path)
    assert err.value.path == path


def test_missing_or_empty_pairs_file(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="does not exist"):
        read_scannet_pairs(tmp_path)
    (tmp_path / "pairs_with_gt.txt").write_text("# nothing\n")
    with pytest.raises(InputError, match="no pair"):
        read_scannet_pairs(tmp_path)
