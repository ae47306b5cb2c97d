"""Query expansion and database-side augmentation of global descriptors (Radenović et al., "Fine-tuning
CNN image retrieval with no human annotation", TPAMI 2019: AQE, alpha-QE and DBA).

Both replace a descriptor by a weighted mean of itself and its nearest database neighbours, then
renormalise. With ``alpha = 0`` every term weighs 1 (plain average: AQE / DBA); with ``alpha > 0`` a
neighbour weighs ``max(sim, 0) ** alpha`` (its inner product with the vector being expanded; the vector
itself weighs ``1 = 1 ** alpha``), which is alpha-QE / alpha-DBA.

Typical use: ``db2 = dba(db, k)``, index ``db2``; search the queries, ``q2 = aqe(q, db2, ranks, k)``,
search again.
"""

from __future__ import annotations

import numpy as np

from .index import GlobalIndex


def _normalise(x: np.ndarray) -> np.ndarray:
    norm = np.linalg.norm(x, axis=1, keepdims=True)
    return (x / np.maximum(norm, 1e-12)).astype(np.float32)


def _expand(x: np.ndarray, db: np.ndarray, ranks: np.ndarray, alpha: float) -> np.ndarray:
    """``x (M, D)`` plus the weighted ``db`` rows ``ranks (M, k)`` (``-1`` = none), renormalised."""
    valid = ranks >= 0
    neighbours = db[np.where(valid, ranks, 0)]  # (M, k, D)
    if alpha == 0:
        weights = valid.astype(np.float64)
    else:
        sim = np.einsum("md,mkd->mk", x.astype(np.float64), neighbours.astype(np.float64))
        weights = np.where(valid, np.maximum(sim, 0.0) ** alpha, 0.0)
    out = x.astype(np.float64) + np.einsum("mk,mkd->md", weights, neighbours.astype(np.float64))
    return _normalise(out)


def aqe(query: np.ndarray, db: np.ndarray, ranks: np.ndarray, k: int, alpha: float = 0.0) -> np.ndarray:
    """Average query expansion: each query becomes the mean of itself and its top-``k`` database vectors.

    Args:
        query: ``(M, D)`` L2-normalised query descriptors (a ``(D,)`` vector is one row).
        db: ``(N, D)`` L2-normalised database descriptors.
        ranks: ``(M, >= k)`` database row indices per query, best first (``GlobalIndex.search``'s
            indices); ``-1`` entries (no hit) are skipped.
        k: neighbours to average (``0``: the queries, normalised, unchanged).
        alpha: ``0`` for AQE; ``> 0`` for alpha-QE, neighbour weight ``max(q . db_j, 0) ** alpha``.

    Returns:
        ``(M, D)`` float32, L2-normalised.
    """
    query = np.atleast_2d(np.asarray(query, np.float32))
    db = np.asarray(db, np.float32)
    ranks = np.asarray(ranks, np.int64).reshape(len(query), -1)
    if k < 0 or alpha < 0:
        raise ValueError(f"need k >= 0 and alpha >= 0, got k={k}, alpha={alpha}")
    if ranks.shape[1] < k:
        raise ValueError(f"need at least k={k} ranks per query, got {ranks.shape[1]}")
    return _expand(query, db, ranks[:, :k], alpha)


def dba(db: np.ndarray, k: int, alpha: float = 0.0, block: int = 1024) -> np.ndarray:
    """Database-side augmentation: each database vector becomes the mean of itself and its ``k`` nearest
    other database vectors (by inner product, exact search in blocks of ``block`` rows, so memory is
    ``O(block * (k + D))`` beyond the inputs).

    Args:
        db: ``(N, D)`` L2-normalised database descriptors.
        k: neighbours to average (clipped to ``N - 1``; ``0``: ``db`` normalised, unchanged).
        alpha: ``0`` for DBA; ``> 0`` weighs a neighbour ``max(db_i . db_j, 0) ** alpha``.

    Returns:
        ``(N, D)`` float32, L2-normalised, rows in ``db``'s order.
    """
    db = np.ascontiguousarray(db, np.float32)
    if db.ndim != 2:
        raise ValueError(f"need (N, D) descriptors, got {db.shape}")
    if k < 0 or alpha < 0:
        raise ValueError(f"need k >= 0 and alpha >= 0, got k={k}, alpha={alpha}")
    n = len(db)
    k = min(k, n - 1)
    if k <= 0:
        return _normalise(db)
    index = GlobalIndex(db, [str(i) for i in range(n)])
    out = np.empty_like(db)
    for start in range(0, n, block):
        rows = np.arange(start, min(start + block, n))
        _, idx = index.search(db[rows], k + 1)
        # drop the row itself (normally first; with exact duplicates it may be elsewhere or absent)
        is_self = idx == rows[:, None]
        drop = np.where(is_self.any(axis=1), is_self.argmax(axis=1), k)
        keep = np.ones_like(idx, dtype=bool)
        keep[np.arange(len(rows)), drop] = False
        out[rows] = _expand(db[rows], db, idx[keep].reshape(len(rows), k), alpha)
    return out
