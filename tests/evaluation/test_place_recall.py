"""Place-recall ground truth on hand-made poses (just under / over 1 m and 45 deg, another room), Recall@N
from sets, and the ground truth of a world folder against a brute-force check."""

from __future__ import annotations

import numpy as np
import pytest

from visloc.datasets.synthetic import WorldConfig, make_world
from visloc.evaluation.place_recall import (
    correct_database_images,
    first_correct_ranks,
    recall_at_n_from_sets,
    world_place_ground_truth,
)
from visloc.geometry import Pose


def camera(centre, yaw_deg: float, pitch_deg: float = 0.0) -> Pose:
    """A camera at ``centre`` whose optical axis has heading ``yaw_deg`` (from +x, z up) and ``pitch_deg``."""
    y, p = np.radians(yaw_deg), np.radians(pitch_deg)
    forward = np.array([np.cos(p) * np.cos(y), np.cos(p) * np.sin(y), np.sin(p)])
    right = np.cross(forward, [0.0, 0.0, 1.0])
    right /= np.linalg.norm(right)
    down = np.cross(forward, right)
    world_from_cam = np.stack([right, down, forward], axis=1)
    return Pose.from_world_from_cam(world_from_cam, np.asarray(centre, dtype=float))


def test_distance_angle_and_room_thresholds():
    query = camera([1.0, 2.0, 1.5], 30.0)
    db = [
        camera([1.0 + 0.999, 2.0, 1.5], 30.0),            # 0: 0.999 m, same direction -> correct
        camera([1.0, 2.0 + 1.001, 1.5], 30.0),            # 1: 1.001 m -> wrong
        camera([1.0, 2.0, 1.5], 30.0 + 44.9),             # 2: 44.9 deg -> correct
        camera([1.0, 2.0, 1.5], 30.0 - 45.1),             # 3: 45.1 deg -> wrong
        camera([1.0, 2.0, 1.5 + 0.5], 30.0, 44.9),        # 4: 0.5 m up, pitched 44.9 deg -> correct
        camera([1.0, 2.0, 1.5], 30.0),                    # 5: the same pose in another room -> wrong
        camera([1.0 + 0.6, 2.0 + 0.8, 1.5], 30.0),        # 6: exactly 1 m (0.6, 0.8) -> correct (inclusive)
        camera([1.0, 2.0, 1.5], 210.0),                   # 7: opposite direction -> wrong
    ]
    scenes = ["a"] * 5 + ["b"] + ["a"] * 2
    assert correct_database_images([query], ["a"], db, scenes) == [{0, 2, 4, 6}]
    # Other thresholds; a query in room b; no database.
    assert correct_database_images([query], ["a"], db, scenes, max_distance=2.0, max_angle_deg=50.0) == [{0, 1, 2, 3, 4, 6}]
    assert correct_database_images([query], ["b"], db, scenes) == [{5}]
    assert correct_database_images([query], ["a"], [], []) == [set()]
    with pytest.raises(ValueError):
        correct_database_images([query], [], db, scenes)


def test_recall_from_sets():
    ranked = [[3, 1, 2], [0, 5, 6], [7, 8, 9], ["x", "y"]]
    positives = [{1}, {6, 0}, set(), {"y"}]
    np.testing.assert_array_equal(first_correct_ranks(ranked, positives), [2, 1, np.inf, 2])
    assert recall_at_n_from_sets(ranked, positives, (1, 2, 10)) == {1: 0.25, 2: 0.75, 10: 0.75}
    # index arrays and numpy integers work like lists of ints
    arr = np.array([[3, 1, 2], [0, 5, 6]])
    assert recall_at_n_from_sets(arr, [{np.int64(1)}, {6}], (1, 3)) == {1: 0.0, 3: 1.0}
    assert np.isnan(recall_at_n_from_sets([], [], (1,))[1])
    with pytest.raises(ValueError):
        recall_at_n_from_sets(ranked, positives[:2])
    with pytest.raises(ValueError):
        recall_at_n_from_sets(ranked, positives, (0,))


def test_world_ground_truth_matches_brute_force(tmp_path):
    config = WorldConfig(num_scenes=2, train_traversals=2, frames_per_train_traversal=6, frames_per_test_traversal=4,
                         width=80, height=60, focal=65.625, texel_density=60.0)
    root = make_world(tmp_path / "w", config, progress=False, workers=1)
    truth = world_place_ground_truth(root)
    assert len(truth.queries) == 2 * 4 and len(truth.database) == 2 * 2 * 6
    assert all("/seq-03/" in n for n in truth.query_names) and not any("/seq-03/" in n for n in truth.database_names)
    for q, good in zip(truth.queries, truth.positives, strict=True):
        expected = set()
        for j, d in enumerate(truth.database):
            dist = np.linalg.norm(q.pose.center - d.pose.center)
            cos = np.dot(q.pose.inverse().R[:, 2], d.pose.inverse().R[:, 2])
            if d.scene == q.scene and dist <= 1.0 and np.degrees(np.arccos(np.clip(cos, -1, 1))) <= 45.0:
                expected.add(j)
        assert good == expected
    assert sum(map(len, truth.positives)) > 0
    # ranking every query's positives first gives recall 1, an empty ranking 0
    names = truth.positive_names()
    full = {q: sorted(p) + [n for n in truth.database_names if n not in p] for q, p in names.items()}
    assert truth.recall(full, (1,))[1] == pytest.approx(np.mean([bool(p) for p in truth.positives]))
    assert truth.recall({}, (1, 5)) == {1: 0.0, 5: 0.0}
