"""Nearest-neighbour search over global descriptors: the one place that talks to FAISS.

Inner-product search on L2-normalised descriptors, exact (``IndexFlatIP``, the default) or approximate
(IVF-PQ, :class:`IndexConfig` ``kind="ivfpq"``), optionally with a re-ranking stage (``refine_m > 0``:
FAISS's ``IndexIVFPQR``, the IVF-PQ shortlist of ``k_factor * k`` candidates re-scored with a second PQ of
the residuals' residuals, Jégou et al. ICASSP 2011). Queries are searched in blocks, so the full
query x database similarity matrix is never built.

Memory bound of :meth:`GlobalIndex.search` (``M`` queries, ``N`` database rows, dimension ``D``):
besides the index itself (flat: ``4 N D`` bytes, 2 GB at 1M x 512; IVF-PQ: about ``m + 8`` bytes a
vector, ``m + refine_m + 8`` with re-ranking) a search holds its outputs, ``12 M k`` bytes, plus per block of ``block`` queries a
``block x k`` result heap and FAISS's own scratch: the flat index computes similarities in BLAS tiles of
at most ``faiss.cvar.distance_compute_blas_query_bs x distance_compute_blas_database_bs`` (4096 x 1024
floats, 16 MB) whatever ``N`` is, and IVF-PQ only scores the ``nprobe`` probed inverted lists
(``block x nprobe`` coarse assignments plus a ``m x 2**nbits`` lookup table per query). So 1M x 512
never materialises an ``M x N`` matrix.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import faiss
import numpy as np

from ..errors import ConfigError, InputError
from ..io.atomic import atomic_path

log = logging.getLogger(__name__)

KINDS = ("flat", "ivfpq")
MIN_POINTS_PER_CENTROID = 39  # below this FAISS k-means warns (and clusters poorly)
#: A restricted search of an ivfpq index scores up to this many allowed rows exhaustively.
EXACT_RESTRICTED_ROWS = 4096


@dataclass(frozen=True)
class IndexConfig:
    """How :meth:`GlobalIndex.build` indexes the descriptors.

    Args:
        kind: ``"flat"`` (exact inner product) or ``"ivfpq"`` (inverted file with ``nlist`` lists,
            residuals product-quantised into ``m`` codes of ``nbits`` bits; approximate).
        nlist: IVF coarse centroids (ivfpq). Rule of thumb: ``4 sqrt(N)`` to ``16 sqrt(N)``.
        m: PQ sub-quantizers; must divide the descriptor dimension. Code size is ``m * nbits / 8``
            bytes a vector.
        nbits: bits per PQ code (8 is the fast path).
        nprobe: inverted lists scanned per query (recall vs speed).
        refine_m: re-ranking stage (ivfpq): ``0`` for none, else the sub-quantizers (8 bits each) of a second
            PQ that encodes what the first one missed; the IVF-PQ shortlist is re-scored with it. Adds
            ``refine_m`` bytes a vector; must divide the descriptor dimension. The index then searches in
            L2 internally (the same ranking as inner product on unit vectors); scores are still inner
            products.
        k_factor: re-ranking shortlist size, ``k_factor * k`` candidates (with ``refine_m``).
        dba_k: database-side augmentation (:func:`~visloc.retrieval.expansion.dba`, any kind): every vector
            is replaced by the mean of itself and its ``dba_k`` nearest other database vectors before it is
            indexed (0: off). Vectors added later with :meth:`GlobalIndex.add` are indexed as given.
        dba_alpha: ``0`` for DBA, ``> 0`` for alpha-DBA (neighbour weight ``similarity ** alpha``).
        train_size: at most this many vectors (a seeded random sample) train the quantizers.
        seed: sample seed.
    """

    kind: str = "flat"
    nlist: int = 1024
    m: int = 64
    nbits: int = 8
    nprobe: int = 32
    refine_m: int = 0
    k_factor: int = 4
    dba_k: int = 0
    dba_alpha: float = 0.0
    train_size: int = 100_000
    seed: int = 0

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ConfigError(f"index kind must be one of {KINDS}, got {self.kind!r}")
        for key in ("nlist", "m", "nbits", "nprobe", "train_size", "k_factor"):
            if int(getattr(self, key)) < 1:
                raise ConfigError(f"index {key} must be >= 1, got {getattr(self, key)}")
        if int(self.dba_k) < 0 or float(self.dba_alpha) < 0:
            raise ConfigError(f"index dba_k and dba_alpha must be >= 0, got {self.dba_k}, {self.dba_alpha}")
        if int(self.refine_m) < 0:
            raise ConfigError(f"index refine_m must be >= 0 (0: no re-ranking), got {self.refine_m}")
        if self.nbits > 16:
            raise ConfigError(f"index nbits must be <= 16, got {self.nbits}")

    def min_train(self) -> int:
        """Fewest training vectors ``ivfpq`` accepts: one per coarse centroid and per PQ centroid (the
        re-ranking PQ has 256 a sub-quantizer)."""
        return max(self.nlist, 2**self.nbits, 256 if self.refine_m else 1)


# --- version-sensitive FAISS calls (checked against faiss 1.15) -------------------------------------

def _make_ivfpq(dim: int, config: IndexConfig) -> faiss.Index:
    """An untrained IVF-PQ index (the Python wrapper keeps ``quantizer`` alive): inner product, or with
    ``refine_m`` an L2 ``IndexIVFPQR`` (FAISS implements the re-ranking stage for L2 only; on unit vectors
    ``|q - x|^2 = 2 - 2 q.x``, so the ranking is the same)."""
    if config.refine_m:
        index = faiss.IndexIVFPQR(faiss.IndexFlatL2(dim), dim, config.nlist, config.m, config.nbits, config.refine_m, 8)
        index.k_factor = float(config.k_factor)
        return index
    quantizer = faiss.IndexFlatIP(dim)
    return faiss.IndexIVFPQ(quantizer, dim, config.nlist, config.m, config.nbits, faiss.METRIC_INNER_PRODUCT)


def set_search_depth(index: faiss.Index, nprobe: int, ef_search: int | None = None) -> None:
    """Lists scanned per query (``nprobe``, at most ``nlist``) and, for an HNSW coarse quantizer, its search
    depth (at least ``nprobe``)."""
    ivf = faiss.extract_index_ivf(index)
    ivf.nprobe = min(int(nprobe), int(ivf.nlist))
    quantizer = faiss.downcast_index(ivf.quantizer)
    if isinstance(quantizer, faiss.IndexHNSW):
        depth = int(ef_search) if ef_search is not None else int(quantizer.hnsw.efSearch)
        quantizer.hnsw.efSearch = max(depth, int(ivf.nprobe))


def _inner_products(index: faiss.Index, scores: np.ndarray) -> np.ndarray:
    """``index.search`` scores as inner products: L2 indexes return squared distances of unit vectors."""
    if index.metric_type == faiss.METRIC_L2:
        return 1.0 - 0.5 * scores
    return scores


def _ivf(index: faiss.Index) -> faiss.IndexIVF | None:
    """The IVF part of ``index``, or ``None`` for a non-IVF (flat) index."""
    try:
        return faiss.extract_index_ivf(index)
    except RuntimeError:
        return None


def _ondisk(index: faiss.Index) -> bool:
    """Whether ``index`` keeps its inverted lists in a memory-mapped file (``OnDiskInvertedLists``)."""
    ivf = _ivf(index)
    return ivf is not None and isinstance(faiss.downcast_InvertedLists(ivf.invlists), faiss.OnDiskInvertedLists)


# ------------------------------------------------------------------------------------------------------


def _as_matrix(descriptors: np.ndarray, names: list[str]) -> np.ndarray:
    descriptors = np.ascontiguousarray(descriptors, dtype=np.float32)
    if descriptors.ndim != 2 or len(descriptors) != len(names):
        raise ValueError(f"need (N, D) descriptors for {len(names)} names, got {descriptors.shape}")
    return descriptors


def _check_unique(names: Iterable[str], existing: set[str] | None = None) -> None:
    seen = set(existing or ())
    for name in names:
        if name in seen:
            raise ConfigError(f"duplicate database image name {name!r}: index names must be unique")
        seen.add(name)


class GlobalIndex:
    """Database descriptors with their image names.

    ``GlobalIndex(descriptors, names)`` is the exact flat index; :meth:`build` makes any
    :class:`IndexConfig` kind.

    Args:
        descriptors: ``(N, D)`` float32, L2-normalised.
        names: the N database image names, in row order.
    """

    def __init__(self, descriptors: np.ndarray, names: list[str]) -> None:
        descriptors = _as_matrix(descriptors, names)
        self.names = list(names)
        self.index = faiss.IndexFlatIP(descriptors.shape[1])
        self.index.add(descriptors)

    @classmethod
    def build(cls, descriptors: np.ndarray, names: list[str], config: IndexConfig | None = None) -> GlobalIndex:
        """Index ``(N, D)`` L2-normalised float32 ``descriptors`` as ``config`` says (default: flat).

        ``ivfpq`` trains on a seeded sample of at most ``config.train_size`` rows, so needs at least
        ``max(nlist, 2**nbits)`` vectors (and ``D`` divisible by ``m``); raises :class:`ConfigError`
        otherwise, or on duplicate names.
        """
        config = config or IndexConfig()
        descriptors = _as_matrix(descriptors, names)
        _check_unique(names)
        if config.dba_k:
            descriptors = dba(descriptors, config.dba_k, config.dba_alpha)
        if config.kind == "flat":
            return cls(descriptors, names)
        n, dim = descriptors.shape
        for key in ("m", "refine_m"):
            value = int(getattr(config, key))
            if value and dim % value:
                raise ConfigError(f"ivfpq: {key}={value} sub-quantizers must divide the descriptor dimension {dim}")
        n_train = min(n, config.train_size)
        if n_train < config.min_train():
            raise ConfigError(
                f"ivfpq: {n_train} training vectors ({n} descriptors, train_size={config.train_size}) are too few "
                f"for nlist={config.nlist} lists and 2**nbits={2**config.nbits} PQ centroids; need at least "
                f"{config.min_train()} (ideally {MIN_POINTS_PER_CENTROID * config.min_train()}): lower nlist/nbits "
                f"or use kind='flat'"
            )
        if n_train < MIN_POINTS_PER_CENTROID * config.min_train():
            log.warning("ivfpq: %d training vectors for %d centroids; recall may suffer", n_train, config.min_train())
        rng = np.random.default_rng(config.seed)
        sample = descriptors if n_train == n else descriptors[np.sort(rng.choice(n, n_train, replace=False))]
        index = _make_ivfpq(dim, config)
        index.train(np.ascontiguousarray(sample))
        index.add(descriptors)
        self = cls.from_faiss(index, names)
        self.nprobe = config.nprobe
        return self

    @classmethod
    def from_faiss(cls, index: faiss.Index, names: list[str]) -> GlobalIndex:
        self = cls.__new__(cls)
        if index.ntotal != len(names):
            raise ValueError(f"index holds {index.ntotal} vectors but {len(names)} names were given")
        self.index, self.names = index, list(names)
        return self

    def __len__(self) -> int:
        return len(self.names)

    @property
    def dim(self) -> int:
        return int(self.index.d)

    @property
    def kind(self) -> str:
        """``"flat"`` or ``"ivfpq"``."""
        return "flat" if _ivf(self.index) is None else "ivfpq"

    @property
    def nprobe(self) -> int | None:
        """Inverted lists scanned per query (``None`` for a flat index). Saved with the index."""
        ivf = _ivf(self.index)
        return None if ivf is None else int(ivf.nprobe)

    @nprobe.setter
    def nprobe(self, value: int) -> None:
        ivf = _ivf(self.index)
        if ivf is None:
            raise ConfigError("nprobe only applies to an ivfpq index")
        if int(value) < 1:
            raise ConfigError(f"nprobe must be >= 1, got {value}")
        set_search_depth(self.index, int(value))

    @property
    def lists_file(self) -> Path | None:
        """The memory-mapped file of an on-disk index's inverted lists (:mod:`visloc.retrieval.large_index`:
        extend such an index with its ``extend_ondisk``, not :meth:`add`); ``None`` for an index in memory."""
        if not _ondisk(self.index):
            return None
        return Path(str(faiss.downcast_InvertedLists(_ivf(self.index).invlists).filename))

    def vectors(self, rows: np.ndarray | list[int]) -> np.ndarray:
        """``(K, D)`` float32: the indexed vectors of ``rows`` (exact for a flat index, the decoded
        approximation for IVF-PQ), e.g. the neighbours of average query expansion."""
        rows = np.asarray(rows, dtype=np.int64).reshape(-1)
        ivf = _ivf(self.index)
        if ivf is not None and not ivf.direct_map.type:  # IVF lists need a row -> (list, offset) map
            ivf.make_direct_map()
        if not len(rows):
            return np.zeros((0, self.dim), np.float32)
        return np.stack([self.index.reconstruct(int(r)) for r in rows]).astype(np.float32)

    def add(self, descriptors: np.ndarray, names: list[str]) -> None:
        """Append ``(K, D)`` L2-normalised float32 ``descriptors`` named ``names`` (rows ``N .. N+K-1``).

        An ``ivfpq`` index encodes them with its existing quantizers (no retraining). Raises
        :class:`ConfigError` naming a duplicate name (within ``names`` or already indexed), before adding
        anything.
        """
        descriptors = _as_matrix(descriptors, names)
        if len(names) and descriptors.shape[1] != self.dim:
            raise ValueError(f"need {self.dim}-dimensional descriptors, got {descriptors.shape[1]}")
        _check_unique(names, set(self.names))
        if len(names) and _ondisk(self.index):
            raise ConfigError(
                "this index keeps its lists on disk (memory-mapped, read-only): add vectors with "
                "visloc.retrieval.large_index.extend_ondisk and load it again"
            )
        if len(names):
            self.index.add(descriptors)
            self.names.extend(names)

    def search(self, queries: np.ndarray, k: int, block: int = 1024,
               rows: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Top-``k`` database rows for each query.

        Memory is bounded per block of ``block`` queries (see the module docstring); an ``ivfpq``
        index scans :attr:`nprobe` lists per query, and may return fewer than ``k`` hits (index ``-1``,
        score ``-inf``-like) when those lists hold fewer than ``k`` vectors.

        Args:
            queries: ``(M, D)`` float32.
            k: neighbours per query (clipped to the database size).
            rows: search only these database rows (a position prior); ``None``: all. A flat index
                searches them exactly through a FAISS ``IDSelectorBatch``; an ``ivfpq`` index scores at
                most :data:`EXACT_RESTRICTED_ROWS` of them exhaustively (their indexed approximations:
                no inverted list is missed), more through the selector within its :attr:`nprobe` lists.
                Fewer than ``k`` allowed rows leave ``-1`` indices.

        Returns:
            ``scores (M, k)`` (inner products, descending) and ``indices (M, k)`` into :attr:`names`.
        """
        queries = np.ascontiguousarray(np.atleast_2d(queries), dtype=np.float32)
        if rows is not None:
            return self._search_rows(queries, k, np.unique(np.asarray(rows, dtype=np.int64).reshape(-1)))
        k = min(k, len(self))
        scores, indices = [], []
        for start in range(0, len(queries), block):
            s, i = self.index.search(queries[start : start + block], k)
            scores.append(_inner_products(self.index, s))
            indices.append(i)
        if not scores:
            return np.zeros((0, k), np.float32), np.zeros((0, k), np.int64)
        return np.concatenate(scores), np.concatenate(indices)

    def _search_rows(self, queries: np.ndarray, k: int, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        if len(rows) and (rows[0] < 0 or rows[-1] >= len(self)):
            raise ValueError(f"rows must be in [0, {len(self)}), got {rows[0]} .. {rows[-1]}")
        k = max(min(k, len(self)), 0)
        scores = np.full((len(queries), k), -np.finfo(np.float32).max, np.float32)
        indices = np.full((len(queries), k), -1, np.int64)
        if not len(rows) or not len(queries) or not k:
            return scores, indices
        ivf = _ivf(self.index)
        if ivf is None or len(rows) <= EXACT_RESTRICTED_ROWS:
            if ivf is None:
                params: faiss.SearchParameters = faiss.SearchParameters(sel=faiss.IDSelectorBatch(rows))
                s, i = self.index.search(queries, k, params=params)
                return _inner_products(self.index, s), i
            sims = queries @ self.vectors(rows).T  # (M, R): every allowed row scored
            top = min(k, len(rows))
            order = np.argsort(-sims, axis=1, kind="stable")[:, :top]
            scores[:, :top] = np.take_along_axis(sims, order, axis=1)
            indices[:, :top] = rows[order]
            return scores, indices
        try:  # version-sensitive: IndexIVFPQR (re-ranking) refuses selectors
            params = faiss.SearchParametersIVF(sel=faiss.IDSelectorBatch(rows), nprobe=int(ivf.nprobe))
            s, i = self.index.search(queries, k, params=params)
            return _inner_products(self.index, s), i
        except RuntimeError:
            s, i = self.search(queries, len(self))  # the whole ranking, filtered
            keep = np.isin(i, rows)
            for m in range(len(queries)):
                found = np.flatnonzero(keep[m])[:k]
                scores[m, : len(found)], indices[m, : len(found)] = s[m, found], i[m, found]
            return scores, indices

    def nbytes(self) -> int:
        """Size of the serialised index in bytes (what :meth:`save` writes; for an on-disk index the
        index part plus its lists file)."""
        size = int(faiss.serialize_index(self.index).size)
        lists = self.lists_file
        return size + (lists.stat().st_size if lists is not None else 0)

    def save(self, path: str | Path) -> None:
        lists = self.lists_file
        if lists is not None:
            if Path(path).resolve().parent != lists.resolve().parent:
                raise ConfigError(f"an on-disk index is saved next to its lists file {lists}, not at {path}")
        with atomic_path(path) as tmp:
            faiss.write_index(self.index, str(tmp))

    @classmethod
    def load(cls, path: str | Path, names: list[str]) -> GlobalIndex:
        path = Path(path)
        if not path.is_file():
            raise InputError(path, "FAISS index file does not exist")
        try:  # an on-disk index (retrieval/large_index.py) finds its lists file next to the index file
            index = faiss.read_index(str(path), faiss.IO_FLAG_ONDISK_SAME_DIR)
        except RuntimeError as e:
            raise InputError(path, f"cannot read FAISS index ({e})") from None
        if index.ntotal != len(names):
            raise InputError(path, f"index holds {index.ntotal} vectors but {len(names)} image names were given")
        return cls.from_faiss(index, names)


# --- database-side augmentation (the exact search it needs is this module's; AQE lives in expansion) ------


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
