"""Dense-matching evaluation (:mod:`visloc.evaluation.dense_matching`) against exact answers: oracle and shifted
matchers, hand-computed pooling, EVD-layout homography pairs after the 240 resize, ScanNet-like pose pairs with
exact projections, and point matches sampled from a dense map."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from scipy.spatial.transform import Rotation

from visloc.datasets.homography import read_evd
from visloc.datasets.scannet import PairWithGT
from visloc.datasets.stereo import stereo_motorcycle_pair
from visloc.evaluation.dense_matching import (
    FlowPair,
    dense_point_matcher,
    evaluate_flow_pairs,
    evaluate_pose_pairs,
    homography_flow_pairs,
    stereo_flow_pair,
)
from visloc.geometry import Camera, Pose
from visloc.io.images import read_image
from visloc.matching.dense_baselines import DenseCorrespondence, identity_correspondence

# --- flow pairs ---------------------------------------------------------------------------------------------


def _flow_pair(name: str, h: int, w: int, seed: int, invalid_fraction: float = 0.3) -> FlowPair:
    """Random images and a random map with values on a 1/4 px lattice (sums with integer shifts are exact);
    invalid pixels hold NaN (they must never be read)."""
    rng = np.random.default_rng(seed)
    images = [rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for _ in range(2)]
    map_ = torch.from_numpy(rng.integers(0, 4 * 50, (2, h, w)).astype(np.float64) / 4)
    mask = torch.from_numpy(rng.random((1, h, w)) >= invalid_fraction)
    map_ = torch.where(mask.expand(2, h, w), map_, torch.full_like(map_, math.nan))
    return FlowPair(name, images[0], images[1], map_, mask, {"view_angle_deg": float(seed)})


class _Oracle:
    """Answers each pair's ground truth (plus ``shift`` (dx, dy)), garbage outside the mask."""

    def __init__(self, pairs: list[FlowPair], shift: tuple[float, float] = (0.0, 0.0)) -> None:
        self.by_image = {id(p.source): p for p in pairs}
        self.shift = torch.tensor(shift, dtype=torch.float64).view(2, 1, 1)
        self.calls = 0

    def __call__(self, source: np.ndarray, target: np.ndarray) -> DenseCorrespondence:
        self.calls += 1
        pair = self.by_image[id(source)]
        assert target is pair.target
        answer = torch.where(pair.mask, pair.map + self.shift, torch.full_like(pair.map, 1e4))
        return DenseCorrespondence(answer)


def test_the_ground_truth_has_aepe_0_and_pck_1() -> None:
    pairs = [_flow_pair("a", 20, 30, 0), _flow_pair("b", 16, 12, 1)]
    oracle = _Oracle(pairs)
    results, errors = evaluate_flow_pairs(oracle, pairs)
    assert oracle.calls == 2
    assert [r.name for r in results.rows] == ["a", "b"]
    for row, pair in zip(results.rows, pairs, strict=True):
        assert row.aepe == 0.0
        assert row.pck == {1.0: 1.0, 3.0: 1.0, 5.0: 1.0}
        assert row.valid_pixels == int(pair.mask.sum()) == len(errors[pair.name])
        assert row.info == {"view_angle_deg": pair.info["view_angle_deg"]}
        assert row.seconds >= 0.0
    assert results.mean_aepe == 0.0 and results.pooled_pck == {1.0: 1.0, 3.0: 1.0, 5.0: 1.0}


def test_a_constant_3_4_shift_has_aepe_exactly_5() -> None:
    pairs = [_flow_pair("a", 20, 30, 0), _flow_pair("b", 16, 12, 1)]
    results, errors = evaluate_flow_pairs(_Oracle(pairs, (3.0, 4.0)), pairs)
    for row in results.rows:
        assert row.aepe == 5.0
        assert row.pck == {1.0: 0.0, 3.0: 0.0, 5.0: 1.0}  # 5 <= 5 counts
    assert all(torch.all(e == 5.0) for e in errors.values())
    assert results.mean_aepe == 5.0 and results.pooled_pck == {1.0: 0.0, 3.0: 0.0, 5.0: 1.0}
    # (-0.75, 1): error 1.25, exactly; other thresholds can be asked for
    results, _ = evaluate_flow_pairs(_Oracle(pairs, (-0.75, 1.0)), pairs, thresholds=(1.0, 1.25, 2.0))
    assert results.rows[0].aepe == pytest.approx(1.25) and results.pooled_pck == {1.0: 0.0, 1.25: 1.0, 2.0: 1.0}


def test_the_mask_restricts_the_pixels_and_pck_is_pooled_over_pixels() -> None:
    h, w = 10, 10
    small = _flow_pair("small", h, w, 2, invalid_fraction=0.0)
    small.mask[:] = False
    small.mask[0, :2, :5] = True  # 10 valid pixels
    big = _flow_pair("big", h, w, 3, invalid_fraction=0.0)
    big.mask[:] = False
    big.mask[0, 5:, 4:] = True  # 30 valid pixels

    class Mixed:
        """Exact on `small`, off by (3, 4) on `big` (and wildly off everywhere outside the masks)."""

        def __call__(self, source: np.ndarray, target: np.ndarray) -> DenseCorrespondence:
            pair = small if source is small.source else big
            shift = 0.0 if pair is small else torch.tensor([3.0, 4.0], dtype=torch.float64).view(2, 1, 1)
            return DenseCorrespondence(torch.where(pair.mask, pair.map + shift, torch.full_like(pair.map, -1e5)))

    results, errors = evaluate_flow_pairs(Mixed(), [small, big])
    assert [r.valid_pixels for r in results.rows] == [10, 30]
    assert [len(errors["small"]), len(errors["big"])] == [10, 30]
    assert [r.aepe for r in results.rows] == [0.0, 5.0]
    assert results.mean_aepe == 2.5  # mean over pairs
    # pooled over all 40 pixels: 10 correct at 1 px (the mean of the per-pair values would be 0.5)
    assert results.pooled_pck == {1.0: 0.25, 3.0: 0.25, 5.0: 1.0}
    sub = results.subset(lambda r: r.name == "big", errors)
    assert [r.name for r in sub.rows] == ["big"] and sub.pooled_pck == {1.0: 0.0, 3.0: 0.0, 5.0: 1.0}
    saved = results.to_json()
    assert saved["mean_aepe"] == 2.5 and saved["pooled_pck"] == {"1.0": 0.25, "3.0": 0.25, "5.0": 1.0}
    assert [r["valid_pixels"] for r in saved["rows"]] == [10, 30]


def test_a_non_finite_answer_inside_the_mask_is_wrong_and_leaves_the_mean() -> None:
    good, bad = _flow_pair("good", 8, 8, 4), _flow_pair("bad", 8, 8, 5)

    def matcher(source: np.ndarray, target: np.ndarray) -> DenseCorrespondence:
        pair = good if source is good.source else bad
        answer = pair.map.clone()
        if pair is bad:
            answer[:, pair.mask[0]] = math.nan
        return DenseCorrespondence(answer)

    results, _ = evaluate_flow_pairs(matcher, [good, bad])
    assert results.rows[0].aepe == 0.0 and math.isnan(results.rows[1].aepe)
    assert results.rows[1].pck[5.0] == 0.0
    n_good, n_bad = int(good.mask.sum()), int(bad.mask.sum())
    assert results.mean_aepe == 0.0
    assert results.pooled_pck[5.0] == pytest.approx(n_good / (n_good + n_bad))


def test_stereo_motorcycle_flow_pair_and_the_identity() -> None:
    stereo = stereo_motorcycle_pair()
    pair = stereo_flow_pair(stereo)
    assert pair.source is stereo.right and pair.target is stereo.left
    (results, _) = evaluate_flow_pairs(identity_correspondence, [pair])
    mask = stereo.mask[0]
    # identity: the end-point error of a left pixel is its disparity
    assert results.rows[0].valid_pixels == int(mask.sum())
    assert results.rows[0].aepe == pytest.approx(float(np.abs(stereo.disparity[mask]).astype(np.float64).mean()),
                                                 rel=1e-5)


# --- homography pairs (EVD layout) ------------------------------------------------------------------------

#: source pixels -> target pixels of the synthetic EVD pair
H_TRUE = np.array([[0.92, 0.06, 12.0], [-0.04, 1.08, -6.0], [1.5e-4, -2.0e-4, 1.0]])
SOURCE_WH, TARGET_WH = (320, 200), (260, 300)


def _write_evd(root: Path) -> Path:
    rng = np.random.default_rng(0)
    for folder, (w, h) in (("1", SOURCE_WH), ("2", TARGET_WH)):
        (root / folder).mkdir(parents=True)
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(root / folder / "pair.png")
    (root / "h").mkdir()
    stored = -2.5 * H_TRUE  # EVD files are not normalised
    (root / "h" / "pair.txt").write_text("\n".join(" ".join(repr(float(v)) for v in row) for row in stored) + "\n")
    return root


def _expected_map(size: int | None) -> tuple[np.ndarray, np.ndarray]:
    """By hand: a target pixel of the resized target -> original target pixel (s (x + 0.5) - 0.5 inverted)
    -> H^-1 -> original source pixel -> resized source pixel; mask: inside the resized source's centres."""
    (ws, hs), (wt, ht) = SOURCE_WH, TARGET_WH
    out_wt, out_ht = (size, size) if size else (wt, ht)
    out_ws, out_hs = (size, size) if size else (ws, hs)
    v, u = np.mgrid[0:out_ht, 0:out_wt].astype(np.float64)
    xt, yt = (u + 0.5) * wt / out_wt - 0.5, (v + 0.5) * ht / out_ht - 0.5
    p = np.linalg.inv(H_TRUE) @ np.stack([xt.ravel(), yt.ravel(), np.ones(xt.size)])
    xs, ys = p[0] / p[2], p[1] / p[2]
    xs, ys = (xs + 0.5) * out_ws / ws - 0.5, (ys + 0.5) * out_hs / hs - 0.5
    expected = np.stack([xs, ys]).reshape(2, out_ht, out_wt)
    inside = (expected[0] >= 0) & (expected[0] <= out_ws - 1) & (expected[1] >= 0) & (expected[1] <= out_hs - 1)
    return expected, inside


@pytest.mark.parametrize("size", [240, None])
def test_homography_flow_pairs_of_an_evd_folder(tmp_path: Path, size: int | None) -> None:
    root = _write_evd(tmp_path / "evd")
    [pair] = list(homography_flow_pairs(read_evd(root), size))
    expected, inside = _expected_map(size)
    h, w = expected.shape[1:]
    assert pair.name == "pair"
    assert pair.source.shape == ((size, size, 3) if size else (SOURCE_WH[1], SOURCE_WH[0], 3))
    assert pair.target.shape == (h, w, 3) and pair.target.dtype == np.uint8
    assert pair.map.shape == (2, h, w) and pair.mask.shape == (1, h, w) and pair.mask.dtype == torch.bool
    got = pair.map.numpy()
    np.testing.assert_allclose(got, expected, atol=1e-6)
    # a few pixels spelled out (the corners and the centre of the target)
    for v, u in ((0, 0), (h - 1, w - 1), (h // 2, w // 2), (0, w - 1)):
        np.testing.assert_allclose(got[:, v, u], expected[:, v, u], atol=1e-6)
    clear = np.ones_like(inside)  # away from the border, where rounding could flip the decision
    for c, limit in ((0, pair.source.shape[1] - 1), (1, pair.source.shape[0] - 1)):
        clear &= (np.abs(expected[c]) > 1e-6) & (np.abs(expected[c] - limit) > 1e-6)
    assert 0.3 < inside.mean() < 0.99
    np.testing.assert_array_equal(pair.mask[0].numpy()[clear], inside[clear])


def test_resized_homography_pairs_are_solved_by_the_exact_map(tmp_path: Path) -> None:
    pairs = list(homography_flow_pairs(read_evd(_write_evd(tmp_path / "evd")), 240))
    expected, _ = _expected_map(240)

    def exact(source: np.ndarray, target: np.ndarray) -> DenseCorrespondence:
        assert source.shape == target.shape == (240, 240, 3)
        return DenseCorrespondence(torch.from_numpy(expected.astype(np.float32)))

    results, _ = evaluate_flow_pairs(exact, pairs)
    assert results.rows[0].aepe < 1e-4 and results.pooled_pck[1.0] == 1.0


# --- relative pose ----------------------------------------------------------------------------------------

K0 = np.array([[300.0, 0.0, 159.5], [0.0, 305.0, 119.5], [0.0, 0.0, 1.0]])
K1 = np.array([[280.0, 0.0, 165.0], [0.0, 282.0, 121.0], [0.0, 0.0, 1.0]])
WH = (320, 240)


def _camera(K: np.ndarray) -> Camera:
    return Camera("PINHOLE", WH[0], WH[1], (K[0, 0], K[1, 1], K[0, 2], K[1, 2]))


def _pose_pairs(root: Path, n: int = 3) -> list[PairWithGT]:
    rng = np.random.default_rng(0)
    root.mkdir(parents=True, exist_ok=True)
    pairs = []
    for i in range(n):
        paths = []
        for k in (0, 1):
            path = root / f"scene{i}_{k}.png"
            Image.fromarray(rng.integers(0, 256, (WH[1], WH[0], 3), dtype=np.uint8)).save(path)
            paths.append(path)
        axis = rng.normal(size=3)
        R = Rotation.from_rotvec(np.radians(5.0 + 5.0 * i) * axis / np.linalg.norm(axis)).as_matrix()
        t = np.array([0.4, -0.1 * i, 0.15])
        pairs.append(PairWithGT(f"scene{i}/a.jpg", f"scene{i}/b.jpg", paths[0], paths[1], _camera(K0), _camera(K1),
                                0, 0, Pose(R, t)))
    return pairs


class _Projector:
    """Exact projections of random points (depth 2..6 m in front of camera 0) seen inside both images; the
    pair is recognised by its images' content."""

    def __init__(self, pairs: list[PairWithGT], n: int = 300) -> None:
        self.pairs = {(read_image(p.path0).tobytes(), read_image(p.path1).tobytes()): p for p in pairs}
        self.n = n
        self.rng = np.random.default_rng(1)

    def __call__(self, image0: np.ndarray, image1: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        pair = self.pairs[(image0.tobytes(), image1.tobytes())]
        m = 50 * self.n
        uv = self.rng.uniform([0, 0], [WH[0] - 1, WH[1] - 1], (m, 2))
        z = self.rng.uniform(2.0, 6.0, (m, 1))
        X0 = np.c_[(uv - K0[:2, 2]) / np.diag(K0)[:2], np.ones(m)] * z
        T = pair.cam1_from_cam0
        X1 = X0 @ T.R.T + T.t
        x0, x1 = X0 @ K0.T, X1 @ K1.T
        p0, p1 = x0[:, :2] / x0[:, 2:], x1[:, :2] / x1[:, 2:]
        ok = (X1[:, 2] > 0.1) & np.all((p1 >= 0) & (p1 <= [WH[0] - 1, WH[1] - 1]), axis=1)
        assert ok.sum() >= self.n
        return p0[ok][: self.n], p1[ok][: self.n]


def test_exact_projections_give_the_pose_back(tmp_path: Path) -> None:
    pairs = _pose_pairs(tmp_path / "images")
    results = evaluate_pose_pairs(_Projector(pairs), pairs)
    assert results.names == [f"scene{i}/a.jpg scene{i}/b.jpg" for i in range(3)]
    assert max(results.errors_deg) < 0.5, results.errors_deg
    assert results.matches == [300, 300, 300] and all(i >= 290 for i in results.inliers)
    assert results.auc[20.0] > 0.98 and results.auc[5.0] > 0.9
    saved = results.to_json()
    assert set(saved["auc"]) == {"5.0", "10.0", "20.0"} and len(saved["pairs"]) == 3


def test_no_or_too_few_matches_fail_with_infinite_errors(tmp_path: Path) -> None:
    pairs = _pose_pairs(tmp_path / "images", n=2)
    empty = evaluate_pose_pairs(lambda a, b: (np.zeros((0, 2)), np.zeros((0, 2))), pairs)
    assert empty.errors_deg == [math.inf, math.inf] and empty.matches == [0, 0] and empty.inliers == [0, 0]
    assert empty.auc == {5.0: 0.0, 10.0: 0.0, 20.0: 0.0}
    projector = _Projector(pairs, n=4)
    four = evaluate_pose_pairs(projector, pairs)  # 4 < 5 matches: no essential matrix
    assert four.errors_deg == [math.inf, math.inf] and four.matches == [4, 4]
    assert four.auc == {5.0: 0.0, 10.0: 0.0, 20.0: 0.0}


# --- point matches from a dense map -----------------------------------------------------------------------


def test_dense_point_matcher_samples_matches_of_the_dense_map() -> None:
    hs, ws, ht, wt, cell = 40, 50, 36, 44, 4
    rng = np.random.default_rng(0)
    source = rng.integers(0, 256, (hs, ws, 3), dtype=np.uint8)
    target = rng.integers(0, 256, (ht, wt, 3), dtype=np.uint8)
    v, u = np.mgrid[0:ht, 0:wt].astype(np.float32)
    map_ = np.stack([1.25 * u - 4.0, 0.75 * v + 6.0])  # x < 0 or x > 49 for some columns: outside the source
    conf = rng.random((1, ht, wt)).astype(np.float32)
    seen = []

    def dense(a: np.ndarray, b: np.ndarray) -> DenseCorrespondence:
        seen.append((a is source, b is target))
        return DenseCorrespondence(torch.from_numpy(map_), torch.from_numpy(conf))

    k0, k1 = dense_point_matcher(dense, max_matches=10_000, cell=cell)(source, target)
    assert seen == [(True, True)]  # image 0 is the source, image 1 the target
    assert k0.shape == k1.shape and k0.shape[1] == 2 and len(k0) > 0
    # every match is the map at its target pixel, inside the source
    xi, yi = k1[:, 0].astype(int), k1[:, 1].astype(int)
    np.testing.assert_array_equal(k1, np.stack([xi, yi], 1))
    np.testing.assert_allclose(k0, map_[:, yi, xi].T)
    assert np.all((k0[:, 0] >= 0) & (k0[:, 0] <= ws - 1) & (k0[:, 1] >= 0) & (k0[:, 1] <= hs - 1))
    # one match per cell that has a valid pixel, its most confident valid pixel, most confident first
    valid = (map_[0] >= 0) & (map_[0] <= ws - 1) & (map_[1] >= 0) & (map_[1] <= hs - 1)
    cells = {}
    for y, x in zip(*np.nonzero(valid), strict=True):
        key = (y // cell, x // cell)
        if key not in cells or conf[0, y, x] > conf[0, cells[key][0], cells[key][1]]:
            cells[key] = (y, x)
    assert sorted(zip(yi.tolist(), xi.tolist(), strict=True)) == sorted((int(y), int(x)) for y, x in cells.values())
    scores = conf[0, yi, xi]
    assert np.all(np.diff(scores) <= 0)
    # a cap keeps the most confident
    k0_cap, k1_cap = dense_point_matcher(dense, max_matches=7, cell=cell)(source, target)
    assert len(k1_cap) == 7
    np.testing.assert_array_equal(k1_cap, k1[:7])
    np.testing.assert_allclose(k0_cap, k0[:7])
    # min_confidence drops the weaker ones
    _, k1_conf = dense_point_matcher(dense, max_matches=10_000, cell=cell, min_confidence=0.97)(source, target)
    assert np.all(conf[0, k1_conf[:, 1].astype(int), k1_conf[:, 0].astype(int)] >= 0.97)
    assert 0 < len(k1_conf) < len(k1)


def test_dense_point_matcher_keeps_only_cyclically_consistent_matches() -> None:
    """Forward: target (x, y) -> source (x + 3, y); backward right for x < 20 only (x - 3 there, x + 5
    elsewhere), so only targets whose source x + 3 < 20 come back."""
    h, w = 24, 40
    source, target = np.zeros((h, w, 3), np.uint8), np.ones((h, w, 3), np.uint8)
    v, u = np.mgrid[0:h, 0:w].astype(np.float32)

    def dense(a: np.ndarray, b: np.ndarray) -> DenseCorrespondence:
        if b is target:
            return DenseCorrespondence(torch.from_numpy(np.stack([u + 3.0, v])))
        back = np.where(u < 20, u - 3.0, u + 5.0)
        return DenseCorrespondence(torch.from_numpy(np.stack([back, v]).astype(np.float32)))

    k0, k1 = dense_point_matcher(dense, max_matches=10_000, cell=2, cyclic_tolerance_px=0.5)(source, target)
    assert len(k1) > 0 and np.all(k1[:, 0] + 3 < 20)
    np.testing.assert_allclose(k0, k1 + np.array([3.0, 0.0]))
    all0, _ = dense_point_matcher(dense, max_matches=10_000, cell=2)(source, target)
    assert len(all0) > len(k0)
