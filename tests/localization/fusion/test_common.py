"""``triangulate_rays``: the least-squares point of several rays (``triangmidpoints.m``), by hand."""

from __future__ import annotations

import numpy as np
import pytest

from visloc.localization.fusion import triangulate_rays


def test_midpoint_of_two_skew_lines_by_hand() -> None:
    # line 1: the x axis; line 2: parallel to y through (0, 0, 2). Common perpendicular: the z axis
    # from (0,0,0) to (0,0,2), so the least-squares point is its midpoint (0, 0, 1).
    X = triangulate_rays(np.array([[-3.0, 0.0, 0.0], [0.0, 5.0, 2.0]]), np.array([[1.0, 0.0, 0.0], [0.0, -2.0, 0.0]]))
    np.testing.assert_allclose(X, [0.0, 0.0, 1.0], atol=1e-12)


def test_midpoint_general_skew_lines() -> None:
    # line 1 through (1, 0, 0) along (0, 1, 1); line 2 through (0, 0, 0) along (1, 0, 0).
    # Closest points: on line 2, (1, 0, 0); on line 1, (1, 0, 0) + s (0, 1, 1) with s minimising
    # |(0, s, s)|: s = 0 -> lines intersect at (1, 0, 0). Shift line 1 by (0, 0, 4): closest points are
    # (1, -2, 2) on line 1 (s = -2) and (1, 0, 0) on line 2; the midpoint is (1, -1, 1).
    X = triangulate_rays(np.array([[1.0, 0.0, 4.0], [0.0, 0.0, 0.0]]), np.array([[0.0, 1.0, 1.0], [1.0, 0.0, 0.0]]))
    np.testing.assert_allclose(X, [1.0, -1.0, 1.0], atol=1e-12)


def test_triangulate_rays_is_sign_and_length_agnostic() -> None:
    C = np.array([[-3.0, 0.0, 0.0], [0.0, 5.0, 2.0]])
    d = np.array([[1.0, 0.0, 0.0], [0.0, -2.0, 0.0]])
    ref = triangulate_rays(C, d)
    for signs in ([1, -1], [-1, 1], [-1, -1]):
        np.testing.assert_allclose(triangulate_rays(C, d * np.array(signs)[:, None] * 7.0), ref, atol=1e-12)


def test_many_rays_through_one_point() -> None:
    rng = np.random.default_rng(0)
    X = np.array([0.5, -1.0, 2.0])
    C = rng.normal(size=(6, 3)) * 3
    np.testing.assert_allclose(triangulate_rays(C, X - C), X, atol=1e-10)


@pytest.mark.parametrize("flip", [1.0, -1.0])
def test_parallel_rays_give_none(flip: float) -> None:
    C = np.array([[0.0, 0.0, 0.0], [1.0, 0.0, 0.0]])
    d = np.array([[0.0, 0.0, 1.0], [0.0, 0.0, flip]])
    assert triangulate_rays(C, d) is None
    # nearly parallel: None only below the parallax limit
    tilted = np.array([[0.0, 0.0, 1.0], [np.tan(np.radians(1.0)), 0.0, 1.0]])
    assert triangulate_rays(C, tilted, min_parallax_deg=2.0) is None
    assert triangulate_rays(C, tilted, min_parallax_deg=0.5) is not None
