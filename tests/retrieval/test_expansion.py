"""Average / alpha query expansion and database-side augmentation on hand-made vectors."""

from __future__ import annotations

import numpy as np
import pytest

from visloc.retrieval import GlobalIndex
from visloc.retrieval.expansion import aqe, dba

# 2-D database: db[0] = y axis, db[1] = x axis, db[2] = (0.6, 0.8) (a 3-4-5 triangle)
DB2 = np.array([[0.0, 1.0], [1.0, 0.0], [0.6, 0.8]], np.float32)


def _unit(*v: float) -> np.ndarray:
    v = np.asarray(v, np.float64)
    return v / np.linalg.norm(v)


def test_aqe_by_hand() -> None:
    q = np.array([[1.0, 0.0]], np.float32)
    ranks = np.array([[2, 0, 1]])
    # k = 1: q + db[2] = (1.6, 0.8) -> (2, 1) / sqrt(5)
    np.testing.assert_allclose(aqe(q, DB2, ranks, 1), [_unit(2, 1)], atol=1e-6)
    # k = 2: q + db[2] + db[0] = (1.6, 1.8) -> (8, 9) / sqrt(145)
    np.testing.assert_allclose(aqe(q, DB2, ranks, 2), [_unit(8, 9)], atol=1e-6)
    # k = 0: the query itself
    np.testing.assert_allclose(aqe(q, DB2, ranks, 0), q, atol=1e-7)
    out = aqe(q[0], DB2, ranks[0], 1)  # a (D,) query and (k,) ranks
    assert out.shape == (1, 2) and out.dtype == np.float32


def test_alpha_qe_by_hand() -> None:
    q = np.array([[1.0, 0.0]], np.float32)
    # alpha = 2: weights sim^2 = 0.6^2 = 0.36 for db[2], 0^2 = 0 for db[0]:
    # q + 0.36 (0.6, 0.8) = (1.216, 0.288)
    np.testing.assert_allclose(aqe(q, DB2, [[2, 0]], 2, alpha=2.0), [_unit(1.216, 0.288)], atol=1e-6)
    # alpha = 1 with a negative similarity: clipped to weight 0
    db = np.array([[-1.0, 0.0], [0.0, 1.0]], np.float32)
    np.testing.assert_allclose(aqe(q, db, [[1, 0]], 2, alpha=1.0), q, atol=1e-7)


def test_aqe_skips_missing_ranks() -> None:
    q = np.array([[1.0, 0.0], [0.0, 1.0]], np.float32)
    out = aqe(q, DB2, np.array([[2, -1], [-1, -1]]), 2)
    np.testing.assert_allclose(out, [_unit(2, 1), [0.0, 1.0]], atol=1e-6)


def test_aqe_bad_arguments() -> None:
    q = np.array([[1.0, 0.0]], np.float32)
    with pytest.raises(ValueError, match="ranks"):
        aqe(q, DB2, [[2]], 2)
    with pytest.raises(ValueError):
        aqe(q, DB2, [[2]], 1, alpha=-1.0)


# 3-D database: a.b = 0.8, b.c = 0.36, a.c = 0
A, B, C = (1.0, 0.0, 0.0), (0.8, 0.6, 0.0), (0.0, 0.6, 0.8)
DB3 = np.array([A, B, C], np.float32)


def test_dba_by_hand() -> None:
    # k = 1: a <- a + b, b <- b + a (0.8 > 0.36), c <- c + b
    expected = [_unit(1.8, 0.6, 0), _unit(1.8, 0.6, 0), _unit(0.8, 1.2, 0.8)]
    np.testing.assert_allclose(dba(DB3, 1), expected, atol=1e-6)
    np.testing.assert_allclose(dba(DB3, 1, block=1), expected, atol=1e-6)
    # k = 2 (and k clipped to N - 1): every row becomes a + b + c = (1.8, 1.2, 0.8) -> (9, 6, 4) / sqrt(133)
    for k in (2, 10):
        np.testing.assert_allclose(dba(DB3, k), np.tile(_unit(9, 6, 4), (3, 1)), atol=1e-6)
    np.testing.assert_allclose(dba(DB3, 0), DB3, atol=1e-7)


def test_alpha_dba_by_hand() -> None:
    # alpha = 1, k = 1: a <- a + 0.8 b = (1.64, 0.48, 0); c <- c + 0.36 b = (0.288, 0.816, 0.8)
    out = dba(DB3, 1, alpha=1.0)
    np.testing.assert_allclose(out[0], _unit(1.64, 0.48, 0), atol=1e-6)
    np.testing.assert_allclose(out[1], _unit(1.6, 0.6, 0), atol=1e-6)  # b + 0.8 a = (0.8 + 0.8, 0.6, 0)
    np.testing.assert_allclose(out[2], _unit(0.288, 0.816, 0.8), atol=1e-6)


def test_dba_with_duplicate_rows_drops_only_itself() -> None:
    db = np.array([A, A, C], np.float32)
    out = dba(db, 1)  # each copy of a averages with the other copy: a again
    np.testing.assert_allclose(out[:2], [A, A], atol=1e-6)
    np.testing.assert_allclose(out[2], _unit(1, 0.6, 0.8), atol=1e-6)  # c + a (tie a/a: either copy)


def test_dba_then_aqe_pipeline_shapes() -> None:
    rng = np.random.default_rng(0)
    db = rng.normal(size=(40, 8)).astype(np.float32)
    db /= np.linalg.norm(db, axis=1, keepdims=True)
    db2 = dba(db, 3, block=7)
    assert db2.shape == db.shape and db2.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(db2, axis=1), 1.0, atol=1e-5)
    q = db[:5] + 0.1 * rng.normal(size=(5, 8)).astype(np.float32)
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    _, ranks = GlobalIndex(db2, [str(i) for i in range(40)]).search(q, 4)
    q2 = aqe(q, db2, ranks, 4, alpha=3.0)
    assert q2.shape == (5, 8)
    np.testing.assert_allclose(np.linalg.norm(q2, axis=1), 1.0, atol=1e-5)
