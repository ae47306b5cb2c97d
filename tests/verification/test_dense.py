"""Verification from dense maps: an exact homography oracle gives S = exp(-beta / |C|) with every in-bounds
lattice point consistent; a broken backward map gives no consistent match."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from visloc.errors import ConfigError
from visloc.geometry.backends import RansacConfig
from visloc.geometry.flow import homography_map
from visloc.matching.dense_baselines import DenseCorrespondence
from visloc.verification import VerificationConfig
from visloc.verification.dense import (
    DenseVerificationConfig,
    dense_pair_matches,
    query_lattice,
    verify_dense_pair,
)

H_QD = np.array([[0.95, 0.05, 8.0], [-0.04, 1.02, -5.0], [1e-4, -5e-5, 1.0]])  # query pixel -> database pixel


class _Oracle:
    def __init__(self, query: np.ndarray, backward_shift: float = 0.0) -> None:
        self.query, self.shift = query, backward_shift

    def __call__(self, source: np.ndarray, target: np.ndarray) -> DenseCorrespondence:
        h, w = target.shape[:2]
        if target is self.query:  # query pixel -> database pixel
            return DenseCorrespondence(homography_map(H_QD, (h, w), torch.float32))
        m = homography_map(np.linalg.inv(H_QD), (h, w))
        return DenseCorrespondence((m + self.shift).float())


def test_query_lattice_by_hand() -> None:
    pts = query_lattice((4, 8), 4)  # cells of 2 px: x centres 0.5, 2.5, 4.5, 6.5; y 0.5, 2.5
    np.testing.assert_allclose(np.unique(pts[:, 0]), [0.5, 2.5, 4.5, 6.5])
    np.testing.assert_allclose(np.unique(pts[:, 1]), [0.5, 2.5])
    assert len(query_lattice((120, 160), 160)) == 160 * 120


def test_exact_maps_give_all_consistent_inliers() -> None:
    query, database = np.zeros((90, 120, 3), np.uint8), np.zeros((90, 120, 3), np.uint8)
    q, d, consistent, beta = dense_pair_matches(_Oracle(query), query, database, grid=60, tolerance_px=0.5)
    assert beta == 60 * 45 and 0.5 * beta < len(q) < beta
    proj = np.c_[q, np.ones(len(q))] @ H_QD.T
    np.testing.assert_allclose(d, proj[:, :2] / proj[:, 2:], atol=1e-3)
    assert consistent.all()
    config = DenseVerificationConfig(grid=60, cyclic_tolerance_px=0.5, verification=VerificationConfig(
        model="homography", ransac=RansacConfig(max_error_px=1.0)))
    v = verify_dense_pair(_Oracle(query), query, database, config)
    assert v.num_inliers == v.num_consistent == len(q)
    assert v.score == pytest.approx(math.exp(-beta / len(q)))
    broken = verify_dense_pair(_Oracle(query, backward_shift=5.0), query, database, config)
    assert broken.num_inliers == len(q) and broken.num_consistent == 0 and broken.score == 0.0
    with pytest.raises(ConfigError):
        DenseVerificationConfig(grid=1)
