"""Robust single-rotation averaging (Weiszfeld L1 on SO(3)) against known rotations and outliers."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from visloc.geometry.rotation import rotation_angle_deg
from visloc.geometry.rotation_averaging import l1_rotation_average, quaternion_mean

TRUTH = Rotation.from_euler("zyx", [30.0, -20.0, 45.0], degrees=True)


def _scatter(rng: np.random.Generator, n: int, sigma_deg: float) -> np.ndarray:
    noise = Rotation.from_rotvec(rng.normal(scale=np.radians(sigma_deg), size=(n, 3)))
    return (noise * TRUTH).as_matrix()


def _angle_to_truth(R: np.ndarray) -> float:
    return float(rotation_angle_deg(R @ TRUTH.as_matrix().T))


def test_l1_average_ignores_a_minority_of_gross_outliers() -> None:
    rng = np.random.default_rng(0)
    inliers = _scatter(rng, 16, sigma_deg=1.0)
    # four outliers clustered 90 degrees away pull any least-squares mean strongly
    far = (Rotation.from_rotvec(np.radians(90.0) * np.array([0.0, 0.0, 1.0])) * TRUTH).as_matrix()
    outliers = (Rotation.from_rotvec(rng.normal(scale=0.02, size=(4, 3))) * Rotation.from_matrix(far)).as_matrix()
    rotations = np.concatenate([inliers, outliers])[rng.permutation(20)]
    l1 = l1_rotation_average(rotations)
    assert _angle_to_truth(l1) < 1.0
    # the chordal / quaternion means do not: scipy's (independent) chordal L2 mean and visloc's
    assert _angle_to_truth(Rotation.from_matrix(rotations).mean().as_matrix()) > 10.0
    assert _angle_to_truth(quaternion_mean(rotations)) > 10.0
    np.testing.assert_allclose(l1 @ l1.T, np.eye(3), atol=1e-10)
    assert np.linalg.det(l1) == pytest.approx(1.0)


def test_l1_average_of_random_outliers() -> None:
    rng = np.random.default_rng(1)
    rotations = np.concatenate([_scatter(rng, 12, sigma_deg=2.0), Rotation.random(5, random_state=1).as_matrix()])
    assert _angle_to_truth(l1_rotation_average(rotations)) < 1.5


def test_single_rotation_is_returned() -> None:
    R = TRUTH.as_matrix()
    np.testing.assert_allclose(l1_rotation_average(R[None]), R, atol=1e-12)
    np.testing.assert_allclose(l1_rotation_average(np.stack([R, R, R])), R, atol=1e-12)


def test_l1_average_about_one_axis_is_the_median_angle() -> None:
    # Rotations about one axis: the geodesic L1 minimiser is the rotation by the median angle
    # (symmetry confines it to the axis; on the axis it is the 1-D median).
    angles = np.array([0.0, 1.0, 2.5, 10.0, 50.0])
    axis = np.array([1.0, 2.0, -2.0]) / 3.0
    rotations = Rotation.from_rotvec(np.radians(angles)[:, None] * axis).as_matrix()
    S = l1_rotation_average(rotations)
    expected = Rotation.from_rotvec(np.radians(2.5) * axis).as_matrix()
    assert rotation_angle_deg(S @ expected.T) < 1e-6


def test_l1_average_is_not_its_quaternion_mean_initialisation() -> None:
    # dqq_L1_mean_rotation_matrix.m stops after one update and returns its initialisation (the MATLAB
    # stopping test |1 - det(S S^T)| < 1e-10 holds for every rotation). About one axis, 0, 5 and 12
    # degrees: the L1 mean is the median, 5; the normalised quaternion mean is
    # 2 atan(sum sin(a/2) / sum cos(a/2)) = 5.666 degrees.
    axis = np.array([0.0, 0.6, 0.8])
    rotations = Rotation.from_rotvec(np.radians([0.0, 5.0, 12.0])[:, None] * axis).as_matrix()
    at = lambda deg: Rotation.from_rotvec(np.radians(deg) * axis).as_matrix()  # noqa: E731
    assert rotation_angle_deg(l1_rotation_average(rotations) @ at(5.0).T) < 1e-6
    half = np.radians([0.0, 5.0, 12.0]) / 2
    qmean = np.degrees(2 * np.arctan2(np.sin(half).sum(), np.cos(half).sum()))
    assert rotation_angle_deg(quaternion_mean(rotations) @ at(qmean).T) < 1e-9
    assert rotation_angle_deg(l1_rotation_average(rotations, max_iterations=0) @ at(qmean).T) < 1e-9


def test_l1_average_about_one_axis_even_count() -> None:
    # With an even count every angle between the two middle ones is a minimiser (here [10, 20]).
    rotations = Rotation.from_rotvec(np.radians([0.0, 10.0, 20.0, 90.0])[:, None] * np.array([1.0, 0, 0])).as_matrix()
    angle = np.degrees(Rotation.from_matrix(l1_rotation_average(rotations)).as_rotvec())
    np.testing.assert_allclose(angle[1:], 0.0, atol=1e-9)
    assert 10.0 - 1e-9 <= angle[0] <= 20.0 + 1e-9


def test_two_rotations_average_to_the_geodesic_midpoint() -> None:
    a = TRUTH
    b = Rotation.from_rotvec(np.radians(50.0) * np.array([0.0, 0.0, 1.0])) * TRUTH
    mid = Rotation.from_rotvec(np.radians(25.0) * np.array([0.0, 0.0, 1.0])) * TRUTH
    S = l1_rotation_average(np.stack([a.as_matrix(), b.as_matrix()]))
    assert rotation_angle_deg(S @ mid.as_matrix().T) < 1e-9


def test_l1_minimiser_at_one_of_the_rotations() -> None:
    # Geodesic Fermat point: I and two rotations about axes 150 degrees apart. The unit pulls of the two
    # others sum to 2 cos(75 deg) = 0.52 < 1, so the minimiser is I itself (not the quaternion mean).
    a = np.array([1.0, 0.0, 0.0])
    b = np.array([np.cos(np.radians(150.0)), np.sin(np.radians(150.0)), 0.0])
    rotations = Rotation.from_rotvec(np.stack([np.zeros(3), 0.3 * a, 0.5 * b])).as_matrix()
    assert rotation_angle_deg(quaternion_mean(rotations)) > 5.0
    assert rotation_angle_deg(l1_rotation_average(rotations)) < 1e-7
    # started exactly on a minimiser (a symmetric set whose quaternion mean is I), it stays there
    sym = Rotation.from_rotvec(np.stack([np.zeros(3), 0.4 * a, -0.4 * a, 0.2 * b, -0.2 * b])).as_matrix()
    np.testing.assert_allclose(l1_rotation_average(sym), np.eye(3), atol=1e-12)


def test_l1_average_minimises_sum_of_geodesic_distances() -> None:
    rng = np.random.default_rng(2)
    rotations = np.concatenate([_scatter(rng, 9, sigma_deg=5.0), Rotation.random(3, random_state=2).as_matrix()])
    S = l1_rotation_average(rotations)

    def cost(M: np.ndarray) -> float:
        return float(rotation_angle_deg(rotations @ M.T).sum())

    for _ in range(30):
        other = Rotation.from_rotvec(rng.normal(scale=np.radians(0.5), size=3)).as_matrix() @ S
        assert cost(S) <= cost(other) + 1e-6


def test_quaternion_mean_handles_sign_flips() -> None:
    # q and -q: a naive mean of raw quaternions of these would cancel out
    rng = np.random.default_rng(3)
    rotations = _scatter(rng, 10, sigma_deg=1.0)
    assert _angle_to_truth(quaternion_mean(rotations)) < 1.0
    # for a tight cluster it agrees with scipy's chordal mean
    assert rotation_angle_deg(quaternion_mean(rotations) @ Rotation.from_matrix(rotations).mean().as_matrix().T) < 0.01


@pytest.mark.parametrize("shape", [(0, 3, 3), (3, 3), (2, 4, 4)])
def test_bad_input_shape(shape: tuple[int, ...]) -> None:
    with pytest.raises(ValueError, match="expected"):
        l1_rotation_average(np.zeros(shape))


@pytest.mark.parametrize("max_iterations", [99, 100, 101])
def test_reaching_an_input_rotation_does_not_throw_the_iterate_off(max_iterations: int) -> None:
    # Three copies of I and one 30-degree rotation: the minimiser is I. With no tolerance the iterate
    # reaches I to within 1e-12 rad; leaving the coinciding rotations out of a plain Weiszfeld step
    # would then jump to the lone rotation and back (the answer would depend on the iteration count).
    rotations = np.concatenate([np.repeat(np.eye(3)[None], 3, axis=0),
                                Rotation.from_rotvec([[np.radians(30.0), 0.0, 0.0]]).as_matrix()])
    S = l1_rotation_average(rotations, max_iterations=max_iterations, tol=0.0)
    assert rotation_angle_deg(S) < 1e-9
