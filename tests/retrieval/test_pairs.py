"""Image pairs from retrieval and from known poses, on hand-made indexes and camera layouts."""

from __future__ import annotations

import numpy as np
import pytest

from visloc.geometry import Pose
from visloc.retrieval import GlobalIndex
from visloc.retrieval.pairs import pairs_from_poses, pairs_from_retrieval


def _index() -> GlobalIndex:
    # one-hot database descriptors: the score of db i for a query is the query's i-th coordinate
    return GlobalIndex(np.eye(4, dtype=np.float32), ["db/a", "db/b", "db/c", "db/d"])


def test_pairs_from_retrieval_ranked() -> None:
    q = np.array([[0.1, 0.7, 0.0, 0.7], [0.9, 0.0, 0.4, 0.1]], dtype=np.float32)
    q[0, 3] = 0.6  # avoid a tie: b (0.7) > d (0.6) > a (0.1) > c (0)
    pairs = pairs_from_retrieval(["q1", "q2"], q, _index(), k=2)
    assert [(a, b) for a, b, _ in pairs] == [("q1", "db/b"), ("q1", "db/d"), ("q2", "db/a"), ("q2", "db/c")]
    np.testing.assert_allclose([s for *_, s in pairs], [0.7, 0.6, 0.9, 0.4], atol=1e-6)
    assert all(isinstance(s, float) for *_, s in pairs)


def test_pairs_from_retrieval_k_clipped() -> None:
    q = np.array([[0.4, 0.3, 0.2, 0.1]], dtype=np.float32)
    pairs = pairs_from_retrieval(["q"], q, _index(), k=10)
    assert [b for _, b, _ in pairs] == ["db/a", "db/b", "db/c", "db/d"]


def test_pairs_from_retrieval_exclude_self() -> None:
    # database images queried against their own index: self is dropped, still k results each
    index = _index()
    desc = np.eye(4, dtype=np.float32) + 0.1 * np.array([[0, 1, 2, 3]] * 4, dtype=np.float32)
    pairs = pairs_from_retrieval(index.names, desc, index, k=2, exclude_self=True)
    assert len(pairs) == 8
    assert all(q != d for q, d, _ in pairs)
    # for db/a: scores b 0.1, c 0.2, d 0.3 -> d, c
    assert [(q, d) for q, d, _ in pairs if q == "db/a"] == [("db/a", "db/d"), ("db/a", "db/c")]
    assert [(q, d) for q, d, _ in pairs if q == "db/d"] == [("db/d", "db/c"), ("db/d", "db/b")]
    # a query that is not in the database keeps its k best
    pairs = pairs_from_retrieval(["other"], desc[:1], index, k=2, exclude_self=True)
    assert [d for _, d, _ in pairs] == ["db/a", "db/d"]


def _cam(x: float, yaw_deg: float = 0.0) -> Pose:
    """Camera at (x, 0, 0) looking along +z turned by yaw about the y axis."""
    a = np.radians(yaw_deg)
    R_wc = np.array([[np.cos(a), 0.0, np.sin(a)], [0.0, 1.0, 0.0], [-np.sin(a), 0.0, np.cos(a)]])
    return Pose.from_world_from_cam(R_wc, np.array([x, 0.0, 0.0]))


POSES = {"c0": _cam(0.0), "c1": _cam(1.0, 20.0), "c2": _cam(2.5), "c3": _cam(10.0), "back": _cam(0.5, 180.0)}


def test_pairs_from_poses_nearest_by_centre_with_angle_filter() -> None:
    # nearest: c0 -> c1 (1), c1 -> c0 (1 < 1.5), c2 -> c1 (1.5), c3 -> c2 (7.5); "back" is nearest to
    # c0 and c1 (0.5) but looks the other way (180 degrees), so it pairs with nothing
    assert pairs_from_poses(POSES, num_neighbors=1) == [("c0", "c1"), ("c1", "c2"), ("c2", "c3")]
    # two neighbours: c0 -> c1, c2; c1 -> c0, c2; c2 -> c1, c0; c3 -> c2, c1
    assert pairs_from_poses(POSES, num_neighbors=2) == [("c0", "c1"), ("c0", "c2"), ("c1", "c2"), ("c1", "c3"),
                                                         ("c2", "c3")]


def test_pairs_from_poses_thresholds() -> None:
    # c1 is turned by 20 degrees: a 15-degree limit separates it
    assert pairs_from_poses(POSES, num_neighbors=1, max_angle_deg=15.0) == [("c0", "c2"), ("c2", "c3")]
    # 180 degrees lets "back" in: it is nearest to c0 and c1 (0.5 m)
    assert ("back", "c0") in pairs_from_poses(POSES, num_neighbors=1, max_angle_deg=180.0)
    # distance limit drops the far camera
    assert pairs_from_poses(POSES, num_neighbors=1, max_distance=5.0) == [("c0", "c1"), ("c1", "c2")]


def _Ry(deg: float) -> np.ndarray:
    a = np.radians(deg)
    return np.array([[np.cos(a), 0.0, np.sin(a)], [0.0, 1.0, 0.0], [-np.sin(a), 0.0, np.cos(a)]])


def _Rx(deg: float) -> np.ndarray:
    a = np.radians(deg)
    return np.array([[1.0, 0.0, 0.0], [0.0, np.cos(a), -np.sin(a)], [0.0, np.sin(a), np.cos(a)]])


def test_pairs_from_poses_uses_centres_not_translations() -> None:
    # centres a (0,0,0), b (1,0,0), c (0,0,1.5), with yaw 0, 180 and 90 degrees; by hand t = -R C is
    # a (0,0,0), b (1,0,0), c (1.5,0,0). Nearest by centre: a-b 1, a-c 1.5, b-c 1.8 -> a-b, a-c; by t
    # it would be a-b and b-c (0.5).
    poses = {"a": Pose.from_world_from_cam(_Ry(0.0), np.zeros(3)),
             "b": Pose.from_world_from_cam(_Ry(180.0), np.array([1.0, 0.0, 0.0])),
             "c": Pose.from_world_from_cam(_Ry(90.0), np.array([0.0, 0.0, 1.5]))}
    np.testing.assert_allclose(poses["c"].t, [1.5, 0.0, 0.0], atol=1e-12)
    assert pairs_from_poses(poses, num_neighbors=1, max_angle_deg=180.0) == [("a", "b"), ("a", "c")]


def test_pairs_from_poses_angle_is_between_optical_axes() -> None:
    # b has a's optical axis (a tilted by 40 degrees) but is rolled by 90 degrees about it: the viewing
    # directions agree exactly. (The rows of R_wc instead of its columns would be 54 degrees apart.)
    R_a = _Rx(40.0)
    roll = np.array([[0.0, -1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])
    R_b = R_a @ roll
    np.testing.assert_allclose(R_a[:, 2], R_b[:, 2], atol=1e-12)
    # c looks 30 degrees away from a (tilt 70)
    poses = {"a": Pose.from_world_from_cam(R_a, np.zeros(3)),
             "b": Pose.from_world_from_cam(R_b, np.array([2.0, 0.0, 0.0])),
             "c": Pose.from_world_from_cam(_Rx(70.0), np.array([0.0, 1.0, 0.0]))}
    assert pairs_from_poses(poses, num_neighbors=2, max_angle_deg=10.0) == [("a", "b")]
    # b shares a's axis, so it is 30 degrees from c as well
    assert pairs_from_poses(poses, num_neighbors=2, max_angle_deg=35.0) == [("a", "b"), ("a", "c"), ("b", "c")]


@pytest.mark.parametrize("poses", [{}, {"only": _cam(0.0)}])
def test_pairs_from_poses_too_few(poses: dict) -> None:
    assert pairs_from_poses(poses, num_neighbors=3) == []


def _dense_pairs(poses: dict[str, Pose], num_neighbors: int, max_angle_deg: float,
                 max_distance: float | None) -> list[tuple[str, str]]:
    """The definition, by brute force over the N x N distances and angles."""
    names = list(poses)
    out = set()
    for a in names:
        ranked = []
        for b in names:
            if b == a:
                continue
            d = float(np.linalg.norm(poses[a].center - poses[b].center))
            angle = np.degrees(np.arccos(np.clip(poses[a].R[2] @ poses[b].R[2], -1.0, 1.0)))
            if angle <= max_angle_deg and (max_distance is None or d <= max_distance):
                ranked.append((d, b))
        out |= {tuple(sorted((a, b))) for _, b in sorted(ranked)[:num_neighbors]}
    return sorted(out)


@pytest.mark.parametrize(("num_neighbors", "max_angle_deg", "max_distance"),
                         [(1, 60.0, None), (5, 30.0, None), (10, 10.0, None), (5, 60.0, 1.5), (3, 180.0, None)])
def test_pairs_from_poses_equals_the_brute_force_definition(num_neighbors: int, max_angle_deg: float,
                                                            max_distance: float | None) -> None:
    """Random cameras in a 10 m box looking anywhere: a narrow angle makes most nearest centres fail the filter,
    so the k-d tree must look further for many images (and, with a distance limit, stop)."""
    from scipy.spatial.transform import Rotation

    rng = np.random.default_rng(7)
    rotations = Rotation.random(300, random_state=3).as_matrix()
    poses = {f"im{i:03d}": Pose.from_world_from_cam(rotations[i], rng.uniform(0, 10, 3)) for i in range(300)}
    got = pairs_from_poses(poses, num_neighbors, max_angle_deg, max_distance)
    assert got == _dense_pairs(poses, num_neighbors, max_angle_deg, max_distance)
    assert len(got) > 0
