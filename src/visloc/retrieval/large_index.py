"""IVF-PQ indexes bigger than memory: built from a stream of vector chunks, inverted lists on disk.

:mod:`visloc.retrieval.index` builds its indexes from one ``(N, D)`` array in memory. This module is the
path for millions of vectors (docs/scale.md, "The index at scale"):

* :func:`build_ondisk` trains a PCA-rotation + IVF + PQ index (FAISS ``"PCAR{pca_dim},IVF{nlist},PQ{m}"``,
  L2 after the PCA, which on unit vectors ranks as the inner product; optionally an HNSW coarse quantizer and
  two-level k-means for many lists) on a seeded sample of the stream (:func:`reservoir_sample`, one pass, or a sample given),
  encodes the chunks with ids ``0 .. N-1`` into shards of at most ``shard_size`` vectors (each written to a
  temporary file: memory holds one shard's codes, ``shard_size * (m + 8)`` bytes), and merges the shards'
  inverted lists into one FAISS ``OnDiskInvertedLists`` file (``merge_from_multiple``, as
  ``faiss.contrib.ondisk.merge_ondisk``).
* The files, for ``PATH = MAP/global_index.faiss``::

      PATH                          the index: PCA matrix, coarse centroids, PQ codebooks and the
                                    directory of the lists (which list lies where in the .ivfdata file)
      PATH stem + .<gen>.ivfdata    codes (m bytes) and ids (8 bytes) of every vector, list by list
      PATH stem + .build.json       what the last build or extension did (counts, seconds, bytes)

  The index names its lists file by name only; :func:`open_ondisk` (and :meth:`GlobalIndex.load`) read it
  with ``IO_FLAG_ONDISK_SAME_DIR``, so the folder can be moved, and the lists file is memory-mapped: a
  search pages in only the probed lists, and resident memory stays at the small index part plus what the
  page cache lends.
* :func:`extend_ondisk` adds vectors (ids ``N .. N+K-1``) without retraining or re-encoding anything:
  the new codes and the old lists are merged into the next generation's lists file (a sequential copy),
  then the index file is replaced atomically and the old lists file removed. A reader that has the old
  index open keeps its mapping (POSIX keeps an unlinked file's data while it is mapped); an interruption
  leaves the previous index intact.

Bytes per vector (:func:`ondisk_bytes`): index file + lists file over ``N``, that is ``m`` code bytes + 8 id bytes
+ the centroids and matrices shared by all vectors.
"""

from __future__ import annotations

import json
import logging
import re
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import faiss
import numpy as np

from ..errors import ConfigError, InputError
from ..io.atomic import atomic_path
from .index import MIN_POINTS_PER_CENTROID, set_search_depth

log = logging.getLogger(__name__)

#: How :func:`open_ondisk` reads an index: lists file next to the index file, memory-mapped.
READ_FLAGS = faiss.IO_FLAG_ONDISK_SAME_DIR

Chunks = Iterable[np.ndarray] | Callable[[], Iterable[np.ndarray]]
#: ``LargeIndexConfig.metric`` -> FAISS metric.
METRICS = {"l2": faiss.METRIC_L2, "ip": faiss.METRIC_INNER_PRODUCT}
QUANTIZERS = ("flat", "hnsw")
#: Above this many lists the centroids are trained by two-level k-means unless ``two_level`` says otherwise.
TWO_LEVEL_ABOVE = 8192


@dataclass(frozen=True)
class LargeIndexConfig:
    """How :func:`build_ondisk` indexes a stream.

    Args:
        nlist: IVF coarse centroids (``4 sqrt(N)`` to ``16 sqrt(N)``; 16384 at 10M), trained on about 40
            vectors each (``train_size``).
        m: PQ sub-quantizers of ``nbits`` bits: ``m * nbits / 8`` code bytes a vector (+ 8 id bytes).
        nbits: bits per PQ code (8 is FAISS's fastest scan; the default 64 one-dimensional codes of 6 bits
            keep more precision in the same 48 bytes than 48 two-dimensional ones of 8 bits: 10-recall@10
            0.936 against 0.909 at 1M vectors, 0.913 at 10M, at about a quarter of the speed).
        pca_dim: PCA to this many dimensions followed by a random rotation (FAISS ``PCAR``: spreads the
            variance evenly over the PQ sub-vectors) before the IVF; ``0``: none (PQ on the full
            dimension). Must be divisible by ``m``; descriptors with a low intrinsic dimension (CNN
            descriptors, VLAD) lose little: choose it where :func:`kept_variance` of a trained index reaches
            about 0.99 (64 on the benchmark's data, docs/scale.md).
        nprobe: inverted lists scanned per query (saved with the index).
        train_size: at most this many vectors (a seeded sample) train PCA, centroids and codebooks.
        shard_size: vectors encoded in memory before their shard is written to disk.
        seed: sample seed.
        metric: ``"l2"`` (default) or ``"ip"``: how the index compares vectors *after* the PCA. On unit
            descriptors both rank like the inner product of the originals, but the PCA subtracts the data
            mean, after which an inner product is biased by each vector's projection on the mean, and
            inner-product (spherical) centroids leave larger residuals for the PQ: L2 reached 10-recall@10
            0.909 where ``"ip"`` reached 0.848 (1M vectors, 4096 lists, nprobe 16; docs/results/scale.md).
            Scores are converted back to inner products by :class:`~visloc.retrieval.GlobalIndex`.
        quantizer: the coarse quantizer that assigns vectors to lists: ``"flat"`` (exact) or ``"hnsw"``
            (an HNSW graph over the centroids, FAISS ``IVF{nlist}_HNSW32``: assignment in about
            ``log(nlist)`` instead of ``nlist`` distances, what makes 65,536+ lists affordable).
        ef_search: HNSW search depth of the ``"hnsw"`` quantizer, for encoding and queries (at least
            ``nprobe`` at query time).
        two_level: train the centroids by two-level k-means (``sqrt(nlist)`` coarse clusters, then each
            split into its share of the lists: ``faiss.contrib.clustering.two_level_clustering``), far
            faster than one k-means over ``nlist`` centroids on many lists; ``None`` (default): when
            ``nlist > 8192``. L2 only.
    """

    nlist: int = 16384
    m: int = 64
    nbits: int = 6
    pca_dim: int = 64
    nprobe: int = 16
    train_size: int = 262_144
    shard_size: int = 1_000_000
    seed: int = 0
    metric: str = "l2"
    quantizer: str = "flat"
    ef_search: int = 128
    two_level: bool | None = None

    def __post_init__(self) -> None:
        for key in ("nlist", "m", "nbits", "nprobe", "train_size", "shard_size"):
            if int(getattr(self, key)) < 1:
                raise ConfigError(f"large index {key} must be >= 1, got {getattr(self, key)}")
        if int(self.pca_dim) < 0:
            raise ConfigError(f"large index pca_dim must be >= 0 (0: no PCA), got {self.pca_dim}")
        if self.nbits > 16:
            raise ConfigError(f"large index nbits must be <= 16, got {self.nbits}")
        if self.metric not in METRICS:
            raise ConfigError(f"large index metric must be one of {tuple(METRICS)}, got {self.metric!r}")
        if self.quantizer not in QUANTIZERS:
            raise ConfigError(f"large index quantizer must be one of {QUANTIZERS}, got {self.quantizer!r}")
        if int(self.ef_search) < 1:
            raise ConfigError(f"large index ef_search must be >= 1, got {self.ef_search}")
        if self.two_level and self.metric != "l2":
            raise ConfigError("large index two_level training clusters in L2: use metric='l2' or two_level=False")

    @property
    def uses_two_level(self) -> bool:
        """Whether the centroids are trained by two-level k-means (``two_level``, else ``nlist > 8192`` in L2)."""
        if self.two_level is not None:
            return bool(self.two_level)
        return self.metric == "l2" and self.nlist > TWO_LEVEL_ABOVE

    def factory(self, dim: int) -> str:
        """The FAISS ``index_factory`` string for ``dim``-dimensional input (ConfigError if it cannot be)."""
        inner = int(self.pca_dim) or dim
        if self.pca_dim and self.pca_dim > dim:
            raise ConfigError(f"large index pca_dim={self.pca_dim} exceeds the descriptor dimension {dim}")
        if inner % self.m:
            raise ConfigError(f"large index: m={self.m} sub-quantizers must divide the PQ dimension {inner}")
        pre = f"PCAR{self.pca_dim}," if self.pca_dim else ""
        coarse = "_HNSW32" if self.quantizer == "hnsw" else ""
        return f"{pre}IVF{self.nlist}{coarse},PQ{self.m}x{self.nbits}"

    def min_train(self) -> int:
        return max(self.nlist, 2**self.nbits, self.pca_dim)

    def bytes_per_vector(self) -> int:
        """Code + id bytes a vector in the lists file (shared centroids not counted)."""
        return (self.m * self.nbits + 7) // 8 + 8


@dataclass
class BuildStats:
    """What :func:`build_ondisk` / :func:`extend_ondisk` did: counts, seconds, bytes."""

    ntotal: int = 0
    added: int = 0
    dim: int = 0
    train_s: float = 0.0
    sample_s: float = 0.0
    add_s: float = 0.0
    merge_s: float = 0.0
    total_s: float = 0.0
    file_bytes: int = 0
    shards: int = 0
    pca_kept_variance: float | None = None
    config: dict = field(default_factory=dict)

    @property
    def bytes_per_vector(self) -> float:
        return self.file_bytes / max(self.ntotal, 1)


# --- inputs --------------------------------------------------------------------------------------------


def _iterate(chunks: Chunks) -> Iterator[np.ndarray]:
    return iter(chunks() if callable(chunks) else chunks)


def _check_chunk(chunk: np.ndarray, dim: int | None, where: str) -> np.ndarray:
    chunk = np.asarray(chunk)
    if chunk.ndim != 2:
        raise InputError(where, f"need (n, D) vector chunks, got shape {chunk.shape}")
    if dim is not None and chunk.shape[1] != dim:
        raise InputError(where, f"need {dim}-dimensional vectors, got a chunk of dimension {chunk.shape[1]}")
    if not np.issubdtype(chunk.dtype, np.floating):
        raise InputError(where, f"need float vectors, got {chunk.dtype}")
    return np.ascontiguousarray(chunk, dtype=np.float32)


def reservoir_sample(chunks: Chunks, size: int, seed: int = 0) -> tuple[np.ndarray, int]:
    """A seeded uniform sample of at most ``size`` rows of a stream, in one pass, and the stream's length.

    Every row gets a uniform key from one ``default_rng(seed)`` stream; the ``size`` smallest keys win and
    the sample keeps stream order, so it does not depend on how the stream is cut into chunks. Memory:
    ``O((size + chunk) D)``.
    """
    rng = np.random.default_rng(seed)
    keep = np.zeros((0, 0), np.float32)
    keys = np.zeros(0)
    rows = np.zeros(0, np.int64)
    n, dim = 0, None
    for chunk in _iterate(chunks):
        chunk = _check_chunk(chunk, dim, "vector stream")
        if dim is None:
            dim = chunk.shape[1]
            keep = np.zeros((0, dim), np.float32)
        k = rng.random(len(chunk))
        keep, keys = np.concatenate([keep, chunk]), np.concatenate([keys, k])
        rows = np.concatenate([rows, np.arange(n, n + len(chunk))])
        n += len(chunk)
        if len(keys) > size:
            best = np.argpartition(keys, size - 1)[:size] if size else np.zeros(0, np.int64)
            keep, keys, rows = keep[best], keys[best], rows[best]
    order = np.argsort(rows, kind="stable")
    return np.ascontiguousarray(keep[order]), n


# --- training and encoding ------------------------------------------------------------------------------


def train_index(sample: np.ndarray, config: LargeIndexConfig) -> faiss.Index:
    """A trained, empty index (:meth:`LargeIndexConfig.factory`) fitted on ``(S, D)`` ``sample``."""
    sample = _check_chunk(sample, None, "training sample")
    n, dim = sample.shape
    factory = config.factory(dim)
    if n < config.min_train():
        raise ConfigError(
            f"large index: {n} training vectors are too few for nlist={config.nlist}, 2**nbits={2**config.nbits} "
            f"and pca_dim={config.pca_dim}; need at least {config.min_train()} "
            f"(ideally {MIN_POINTS_PER_CENTROID * config.min_train()}): lower nlist or use more vectors"
        )
    if n < MIN_POINTS_PER_CENTROID * config.nlist:
        log.warning("large index: %d training vectors for %d lists; recall may suffer", n, config.nlist)
    index = faiss.index_factory(dim, factory, METRICS[config.metric])
    ivf = faiss.extract_index_ivf(index)
    ivf.cp.seed = int(config.seed) + 1234  # k-means initialisation (FAISS's default seed is 1234)
    ivf.cp.max_points_per_centroid = max(ivf.cp.max_points_per_centroid, n // config.nlist + 1)
    pq_ivf = faiss.downcast_index(ivf)
    if hasattr(pq_ivf, "do_polysemous_training"):  # the factory turns it on; unused here, and slow
        pq_ivf.do_polysemous_training = False
    if config.uses_two_level:
        _train_two_level(index, ivf, sample, config)
    else:
        index.train(sample)
    set_search_depth(index, config.nprobe, config.ef_search)
    kept = kept_variance(index)
    if kept is not None:
        log.info("large index: PCA to %d dimensions keeps %.2f %% of the sample's variance", config.pca_dim, 100 * kept)
    return index


def kept_variance(index: faiss.Index) -> float | None:
    """The share of its training sample's variance that the PCA of a trained ``index`` keeps (``None``
    without a PCA). Choose ``pca_dim`` where it reaches about 0.99: the dimensions dropped beyond are noise
    to the ranking, and every kept one takes PQ bits (on the benchmark's 64-D-latent mixture, 64 dimensions
    with 6 bits each beat 96 with 4 bits each at the same 48 bytes: docs/results/scale.md)."""
    outer = faiss.downcast_index(index)
    if not isinstance(outer, faiss.IndexPreTransform):
        return None
    for i in range(outer.chain.size()):
        transform = faiss.downcast_VectorTransform(outer.chain.at(i))
        if isinstance(transform, faiss.PCAMatrix):
            eig = faiss.vector_to_array(transform.eigenvalues)
            total = float(np.sum(np.maximum(eig, 0)))
            return float(np.sum(np.maximum(eig[: transform.d_out], 0)) / total) if total > 0 else None
    return None


def _train_two_level(index: faiss.Index, ivf: faiss.IndexIVF, sample: np.ndarray, config: LargeIndexConfig) -> None:
    """Train ``index`` with centroids from two-level k-means: the pre-transforms first, then the centroids
    (added to the quantizer, which IVF training then keeps), then the PQ on the residuals."""
    from faiss.contrib.clustering import two_level_clustering

    x = sample
    outer = faiss.downcast_index(index)
    if isinstance(outer, faiss.IndexPreTransform):
        for i in range(outer.chain.size()):
            transform = outer.chain.at(i)
            transform.train(x)
            x = transform.apply(x)
    # the sub-clusterings get about the sample's share per list; train_index has warned already if it is thin
    centroids, _ = two_level_clustering(x, max(1, round(config.nlist ** 0.5)), config.nlist,
                                        seed=int(config.seed) + 1234, min_points_per_centroid=16)
    ivf.quantizer.train(centroids)
    ivf.quantizer.add(centroids)
    index.train(sample)  # the transforms are trained and the quantizer full: this trains the PQ only


def _empty_like(trained: faiss.Index) -> faiss.Index:
    index = faiss.clone_index(trained)
    if index.ntotal:
        raise ConfigError(f"need a trained empty index, this one holds {index.ntotal} vectors")
    return index


def _check_trained(trained: faiss.Index, dim: int, where: str) -> faiss.IndexIVF:
    try:
        ivf = faiss.extract_index_ivf(trained)
    except RuntimeError:
        raise InputError(where, "not an IVF index (build it with build_ondisk)") from None
    if not trained.is_trained:
        raise InputError(where, "the index is not trained")
    if int(trained.d) != dim:
        raise InputError(where, f"the index takes {trained.d}-dimensional vectors, the stream has {dim}")
    return ivf


class _ShardWriter:
    """Encodes chunks with consecutive ids into shards of at most ``shard_size`` vectors, each written
    to a temporary file (memory: one shard's codes)."""

    def __init__(self, trained: faiss.Index, shard_size: int, first_id: int, tmp: Path) -> None:
        self.trained, self.shard_size, self.next_id, self.tmp = trained, shard_size, first_id, tmp
        self.files: list[Path] = []
        self.current: faiss.Index | None = None
        self.add_s = 0.0

    def add(self, chunk: np.ndarray) -> None:
        while len(chunk):
            if self.current is None:
                self.current = _empty_like(self.trained)
            room = self.shard_size - int(self.current.ntotal)
            part, chunk = chunk[:room], chunk[room:]
            t = time.perf_counter()
            ids = np.arange(self.next_id, self.next_id + len(part), dtype=np.int64)
            self.current.add_with_ids(part, ids)
            self.add_s += time.perf_counter() - t
            self.next_id += len(part)
            if self.current.ntotal >= self.shard_size:
                self.flush()

    def flush(self) -> None:
        if self.current is not None and self.current.ntotal:
            path = self.tmp / f"shard{len(self.files):05d}.faiss"
            faiss.write_index(self.current, str(path))
            self.files.append(path)
        self.current = None


def _lists_path(path: Path, generation: int) -> Path:
    return path.with_name(f"{path.stem}.{generation}.ivfdata")


def _next_generation(path: Path) -> int:
    found = [re.search(r"\.(\d+)\.ivfdata$", p.name) for p in path.parent.glob(f"{path.stem}.*.ivfdata")]
    return 1 + max((int(f.group(1)) for f in found if f), default=0)


def trained_part(index: faiss.Index) -> faiss.Index:
    """A trained empty copy of ``index`` (its transform, centroids and codebooks, no vectors): what
    encodes further additions with the same quantizers. ``index`` itself is left as it was.

    Its lists (in memory or mapped from disk) are swapped for empty ones while it is cloned, so the
    vectors are never copied; the empty lists are C++-owned by the copy (a Python-owned list object
    handed to faiss would be freed under it)."""
    ivf = faiss.extract_index_ivf(index)
    saved, owned, ntotal = ivf.invlists, ivf.own_invlists, int(index.ntotal)
    placeholder = faiss.ArrayInvertedLists(int(ivf.nlist), int(ivf.code_size))
    ivf.own_invlists = False
    ivf.invlists = placeholder
    index.ntotal = ivf.ntotal = 0
    try:
        empty = faiss.clone_index(index)
    finally:
        ivf.invlists, ivf.own_invlists = saved, owned
        index.ntotal = ivf.ntotal = ntotal
        del placeholder
    return empty


def _is_ondisk(index: faiss.Index) -> bool:
    try:
        invlists = faiss.downcast_InvertedLists(faiss.extract_index_ivf(index).invlists)
    except RuntimeError:
        return False
    return isinstance(invlists, faiss.OnDiskInvertedLists)


def _generation(index: faiss.Index) -> int:
    invlists = faiss.extract_index_ivf(index).invlists
    ondisk = faiss.downcast_InvertedLists(invlists)
    if not isinstance(ondisk, faiss.OnDiskInvertedLists):
        return 0
    found = re.search(r"\.(\d+)\.ivfdata$", str(ondisk.filename))
    return int(found.group(1)) if found else 0


def _merge(trained: faiss.Index, sources: Sequence[faiss.InvertedLists], lists_file: Path) -> faiss.Index:
    """``trained`` (a clone) with the concatenation of ``sources``' lists in a new on-disk lists file."""
    index = _empty_like(trained)
    ivf = faiss.extract_index_ivf(index)
    invlists = faiss.OnDiskInvertedLists(ivf.nlist, ivf.code_size, str(lists_file))
    vector = faiss.InvertedListsPtrVector()
    for source in sources:
        vector.push_back(source)
    ntotal = invlists.merge_from_multiple(vector.data(), vector.size(), False)
    index.ntotal = ivf.ntotal = int(ntotal)
    ivf.replace_invlists(invlists, True)
    invlists.this.disown()
    return index


def _read_shards(files: Sequence[Path]) -> tuple[list[faiss.Index], list[faiss.InvertedLists]]:
    indexes = [faiss.read_index(str(f), faiss.IO_FLAG_MMAP) for f in files]
    return indexes, [faiss.extract_index_ivf(i).invlists for i in indexes]


def _commit(index: faiss.Index, path: Path, keep: Path) -> None:
    """Write ``index`` atomically to ``path``; remove lists files of ``path`` other than ``keep``."""
    with atomic_path(path) as tmp:
        faiss.write_index(index, str(tmp))
    for old in path.parent.glob(f"{path.stem}.*.ivfdata"):
        if old.name != keep.name:
            old.unlink(missing_ok=True)


def _file_bytes(path: Path) -> int:
    index = faiss.read_index(str(path), READ_FLAGS)
    lists = _lists_path(path, _generation(index))
    del index
    return sum(p.stat().st_size for p in (path, lists) if p.is_file())


def ondisk_bytes(path: str | Path) -> int:
    """Bytes on disk of the index at ``path``: index file + its lists file."""
    return _file_bytes(Path(path))


def build_ondisk(chunks: Chunks, path: str | Path, config: LargeIndexConfig | None = None, *,
                 sample: np.ndarray | None = None, trained: faiss.Index | None = None,
                 tmp_dir: str | Path | None = None) -> BuildStats:
    """Index a stream of ``(n, D)`` float32 L2-normalised chunks (ids ``0 .. N-1`` in stream order) at
    ``path`` with lists on disk.

    Training: ``trained`` (a trained empty index of the same dimension, e.g. to share quantizers between
    indexes), else ``sample``, else a :func:`reservoir_sample` of ``config.train_size`` rows, which reads
    the stream twice: pass ``chunks`` as a callable that returns a fresh iterator (or a sequence).

    Raises:
        InputError: an empty stream, a chunk of the wrong shape or dimension, a bad ``trained`` index.
        ConfigError: bad parameters for the dimension, too few training vectors.
    """
    config = config or LargeIndexConfig()
    path = Path(path)
    t0 = time.perf_counter()
    stats = BuildStats(config=asdict(config))
    if trained is None:
        if sample is None:
            if not callable(chunks) and iter(chunks) is chunks:
                raise ConfigError("build_ondisk: a one-pass iterator needs sample= or trained= (or pass a callable)")
            t = time.perf_counter()
            sample, n = reservoir_sample(chunks, config.train_size, config.seed)
            stats.sample_s = time.perf_counter() - t
            if n == 0:
                raise InputError("vector stream", "is empty: nothing to index")
        t = time.perf_counter()
        trained = train_index(sample, config)
        stats.train_s = time.perf_counter() - t
    stats.pca_kept_variance = kept_variance(trained)
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".shards.", dir=tmp_dir or path.parent) as tmp:
        writer = _ShardWriter(trained, config.shard_size, 0, Path(tmp))
        dim = None
        for chunk in _iterate(chunks):
            chunk = _check_chunk(chunk, dim, "vector stream")
            if dim is None:
                dim = chunk.shape[1]
                _check_trained(trained, dim, "trained index")
            writer.add(chunk)
        writer.flush()
        if writer.next_id == 0:
            raise InputError("vector stream", "is empty: nothing to index")
        t = time.perf_counter()
        shards, sources = _read_shards(writer.files)
        lists = _lists_path(path, _next_generation(path))
        index = _merge(trained, sources, lists)
        set_search_depth(index, config.nprobe)
        _commit(index, path, lists)
        stats.merge_s = time.perf_counter() - t
        del index, shards, sources
    stats.ntotal = stats.added = writer.next_id
    stats.dim = int(trained.d)
    stats.add_s = writer.add_s
    stats.shards = len(writer.files)
    stats.file_bytes = _file_bytes(path)
    stats.total_s = time.perf_counter() - t0
    _write_meta(path, stats)
    return stats


def _write_meta(path: Path, stats: BuildStats) -> None:
    meta = asdict(stats) | {"bytes_per_vector": stats.bytes_per_vector}
    with atomic_path(path.with_name(f"{path.stem}.build.json")) as tmp:
        tmp.write_text(json.dumps(meta, indent=1))


def open_ondisk(path: str | Path, nprobe: int | None = None) -> faiss.Index:
    """The FAISS index at ``path`` with its lists memory-mapped (InputError if missing or unreadable)."""
    path = Path(path)
    if not path.is_file():
        raise InputError(path, "FAISS index file does not exist")
    try:
        index = faiss.read_index(str(path), READ_FLAGS)
    except RuntimeError as e:
        raise InputError(path, f"cannot read FAISS index ({e})") from None
    if nprobe is not None:
        set_search_depth(index, nprobe)
    return index


def extend_ondisk(path: str | Path, chunks: Iterable[np.ndarray], *, shard_size: int = 1_000_000,
                  tmp_dir: str | Path | None = None) -> BuildStats:
    """Add ``chunks`` to the on-disk index at ``path`` with ids ``N, N+1, ...`` (``N`` = its current size):
    encoded with its trained quantizers (no retraining), the lists rewritten to the next generation's
    file, the index file replaced atomically. Returns the stats (``added``, new ``ntotal``).

    Raises:
        InputError: no index (or not an on-disk one), a chunk of the wrong dimension.
    """
    path = Path(path)
    t0 = time.perf_counter()
    current = open_ondisk(path)
    if not _is_ondisk(current):
        raise InputError(path, "not an on-disk IVF index (build it with build_ondisk)")
    ivf_now = faiss.extract_index_ivf(current)
    trained = trained_part(current)
    stats = BuildStats(ntotal=int(current.ntotal), dim=int(current.d))
    with tempfile.TemporaryDirectory(prefix=".shards.", dir=tmp_dir or path.parent) as tmp:
        writer = _ShardWriter(trained, shard_size, int(current.ntotal), Path(tmp))
        for chunk in chunks:
            writer.add(_check_chunk(chunk, int(current.d), "vector stream"))
        writer.flush()
        stats.add_s = writer.add_s
        stats.added = writer.next_id - int(current.ntotal)
        if stats.added:
            t = time.perf_counter()
            shards, sources = _read_shards(writer.files)
            lists = _lists_path(path, max(_generation(current), _next_generation(path) - 1) + 1)
            index = _merge(trained, [ivf_now.invlists, *sources], lists)
            set_search_depth(index, int(ivf_now.nprobe))
            _commit(index, path, lists)
            stats.merge_s = time.perf_counter() - t
            stats.shards = len(writer.files)
            del index, shards, sources
    del current
    stats.ntotal += stats.added
    stats.file_bytes = _file_bytes(path)
    stats.total_s = time.perf_counter() - t0
    return stats


def resident_bytes() -> int:
    """This process's resident memory (VmRSS) in bytes, 0 where ``/proc`` is missing."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


__all__ = [
    "BuildStats",
    "LargeIndexConfig",
    "build_ondisk",
    "extend_ondisk",
    "kept_variance",
    "ondisk_bytes",
    "open_ondisk",
    "reservoir_sample",
    "resident_bytes",
    "train_index",
    "trained_part",
]
