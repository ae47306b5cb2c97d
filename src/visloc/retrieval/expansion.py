"""Query expansion and database-side augmentation of global descriptors (Radenović et al., "Fine-tuning
CNN image retrieval with no human annotation", TPAMI 2019: AQE, alpha-QE and DBA).

Both replace a descriptor by a weighted mean of itself and its nearest database neighbours, then
renormalise. With ``alpha = 0`` every term weighs 1 (plain average: AQE / DBA); with ``alpha > 0`` a
neighbour weighs ``max(sim, 0) ** alpha`` (its inner product with the vector being expanded; the vector
itself weighs ``1 = 1 ** alpha``), which is alpha-QE / alpha-DBA.

Typical use: ``db2 = dba(db, k)``, index ``db2``; search the queries, ``q2 = aqe(q, db2, ranks, k)``,
search again. ``dba`` lives in :mod:`visloc.retrieval.index` (it needs that module's exact search; the
index applies it with ``IndexConfig.dba_k``) and is re-exported here.
"""

from __future__ import annotations

import numpy as np

from .index import _expand, dba  # dba (defined with the exact search it needs) is part of this API


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


__all__ = ["aqe", "dba"]
