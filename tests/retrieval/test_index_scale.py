"""The large-index path (retrieval/large_index.py): streaming build, on-disk lists, incremental add."""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path

import faiss
import numpy as np
import pytest

from visloc.errors import ConfigError, InputError
from visloc.retrieval import GlobalIndex
from visloc.retrieval.large_index import (
    LargeIndexConfig,
    build_ondisk,
    extend_ondisk,
    kept_variance,
    ondisk_bytes,
    open_ondisk,
    reservoir_sample,
    train_index,
    trained_part,
)

DIM = 64
CONFIG = LargeIndexConfig(nlist=32, m=16, nbits=8, pca_dim=32, nprobe=8, train_size=3000, shard_size=2500)


def _clustered(n: int, seed: int) -> np.ndarray:
    """Unit vectors from 40 clusters in a 16-D latent space projected to DIM (fixed model, seeded draw)."""
    model = np.random.default_rng(123)
    centres, basis = model.standard_normal((40, 16)), model.standard_normal((16, DIM))
    rng = np.random.default_rng(seed)
    z = centres[rng.integers(0, 40, n)] + 0.3 * rng.standard_normal((n, 16))
    x = (z @ basis + 0.05 * rng.standard_normal((n, DIM))).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


@pytest.fixture(scope="module")
def db() -> np.ndarray:
    return _clustered(12_000, 1)


@pytest.fixture(scope="module")
def queries() -> np.ndarray:
    return _clustered(40, 2)


@pytest.fixture(scope="module")
def trained(db) -> faiss.Index:
    sample, n = reservoir_sample([db], CONFIG.train_size, CONFIG.seed)
    assert n == len(db)
    return train_index(sample, CONFIG)


@pytest.fixture(scope="module")
def built(tmp_path_factory, db, trained) -> Path:
    path = tmp_path_factory.mktemp("large") / "global_index.faiss"
    stats = build_ondisk(lambda: (db[i : i + 1700] for i in range(0, len(db), 1700)), path, CONFIG, trained=trained)
    assert stats.ntotal == len(db) and stats.shards == 5  # 12000 / shard_size 2500
    return path


def _in_memory(trained: faiss.Index, *parts: np.ndarray) -> faiss.Index:
    index = faiss.clone_index(trained)
    for part in parts:
        index.add(part)
    return index


def test_reservoir_sample_does_not_depend_on_chunking(db) -> None:
    a, n = reservoir_sample([db], 1000, seed=3)
    b, m = reservoir_sample(lambda: (db[i : i + 333] for i in range(0, len(db), 333)), 1000, seed=3)
    assert n == m == len(db) and a.shape == (1000, DIM)
    np.testing.assert_array_equal(a, b)
    rows = {r.tobytes() for r in db}
    assert all(r.tobytes() in rows for r in a)
    assert not np.array_equal(a, reservoir_sample([db], 1000, seed=4)[0])
    small, n = reservoir_sample([db[:10]], 1000)
    np.testing.assert_array_equal(small, db[:10])


def test_streaming_build_trains_on_its_sample(tmp_path: Path, db, queries, trained) -> None:
    """Without ``trained=``: the stream is sampled (reservoir, seeded) and trained on, then the same as
    training on that sample by hand and adding everything in memory."""
    path = tmp_path / "global_index.faiss"
    stats = build_ondisk(lambda: iter(np.array_split(db, 7)), path, CONFIG)
    assert stats.train_s > 0 and stats.ntotal == len(db)
    s, i = open_ondisk(path).search(queries, 10)
    ref_s, ref_i = _in_memory(trained, db).search(queries, 10)
    np.testing.assert_array_equal(i, ref_i)
    np.testing.assert_allclose(s, ref_s, rtol=1e-6)


def test_ondisk_search_equals_in_memory(built: Path, db, queries, trained) -> None:
    index = open_ondisk(built)
    invlists = faiss.downcast_InvertedLists(faiss.extract_index_ivf(index).invlists)
    assert isinstance(invlists, faiss.OnDiskInvertedLists)
    assert faiss.extract_index_ivf(index).nprobe == CONFIG.nprobe
    memory = _in_memory(trained, db)
    for nprobe in (1, 8, 32):
        faiss.extract_index_ivf(index).nprobe = faiss.extract_index_ivf(memory).nprobe = nprobe
        s, i = index.search(queries, 10)
        ref_s, ref_i = memory.search(queries, 10)
        np.testing.assert_array_equal(i, ref_i)
        np.testing.assert_array_equal(s, ref_s)
    # the same codes, list by list
    a, b = faiss.extract_index_ivf(index).invlists, faiss.extract_index_ivf(memory).invlists
    for lst in range(CONFIG.nlist):
        assert a.list_size(lst) == b.list_size(lst)
        n = a.list_size(lst)
        ids_a = faiss.rev_swig_ptr(a.get_ids(lst), n).copy()
        ids_b = faiss.rev_swig_ptr(b.get_ids(lst), n).copy()
        np.testing.assert_array_equal(np.sort(ids_a), np.sort(ids_b))


def test_recall_against_exact(built: Path, db, queries) -> None:
    exact = np.argsort(-(queries @ db.T), axis=1)[:, :10]
    _, got = open_ondisk(built, nprobe=32).search(queries, 10)
    nn_in_top10 = np.mean([b[0] in a for a, b in zip(got, exact, strict=True)])
    overlap = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(got, exact, strict=True)])
    # a sanity bound: 16 code bytes, and 300 vectors per cluster in 16 dimensions sit at nearly equal
    # distances (benchmarks/scale.py measures recall at scale)
    assert nn_in_top10 >= 0.6 and overlap > 0.35, (nn_in_top10, overlap)


def test_moved_folder_still_opens(built: Path, tmp_path: Path, queries) -> None:
    moved = tmp_path / "moved"
    shutil.copytree(built.parent, moved)
    ref = open_ondisk(built).search(queries, 5)
    got = open_ondisk(moved / built.name).search(queries, 5)
    np.testing.assert_array_equal(got[1], ref[1])
    index = open_ondisk(moved / built.name)  # (keep it alive while its lists are looked at)
    lists = faiss.downcast_InvertedLists(faiss.extract_index_ivf(index).invlists)
    assert Path(str(lists.filename)).parent == moved


def test_bytes_per_vector(built: Path, db) -> None:
    files = sorted(p.name for p in built.parent.iterdir())
    assert files == ["global_index.1.ivfdata", "global_index.build.json", "global_index.faiss"]
    size = built.stat().st_size + (built.parent / "global_index.1.ivfdata").stat().st_size
    assert ondisk_bytes(built) == size
    per_vector = size / len(db)
    # 16 code bytes + 8 id bytes, plus the shared centroids, PCA matrix and codebooks over N
    assert CONFIG.bytes_per_vector() == 24
    shared = 4 * (CONFIG.nlist * CONFIG.pca_dim + DIM * CONFIG.pca_dim + 256 * CONFIG.pca_dim)
    assert 24 <= per_vector <= 24 + (shared + 20_000) / len(db)
    index = GlobalIndex.load(built, [str(i) for i in range(len(db))])
    assert index.nbytes() == size


def test_incremental_add_equals_building_at_once(tmp_path: Path, db, queries, trained) -> None:
    path = tmp_path / "global_index.faiss"
    build_ondisk([db[:7000]], path, CONFIG, trained=trained)
    extra = _clustered(1500, 9)
    stats = extend_ondisk(path, [db[7000:], extra[:700], extra[700:]], shard_size=2000)
    assert stats.added == len(db) - 7000 + 1500 and stats.ntotal == len(db) + 1500
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "global_index.2.ivfdata", "global_index.build.json", "global_index.faiss"]  # the old lists file is gone
    s, i = open_ondisk(path).search(queries, 10)
    ref_s, ref_i = _in_memory(trained, db, extra).search(queries, 10)
    np.testing.assert_array_equal(i, ref_i)
    np.testing.assert_array_equal(s, ref_s)
    assert extend_ondisk(path, []).added == 0  # nothing to add: the index is unchanged
    assert open_ondisk(path).ntotal == len(db) + 1500


def test_interrupted_add_leaves_the_index(tmp_path: Path, db, queries, trained, monkeypatch) -> None:
    path = tmp_path / "global_index.faiss"
    build_ondisk([db], path, CONFIG, trained=trained)
    before = open_ondisk(path).search(queries, 5)

    def chunks():
        yield db[:100]
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        extend_ondisk(path, chunks())
    after = open_ondisk(path)
    assert after.ntotal == len(db)
    np.testing.assert_array_equal(after.search(queries, 5)[1], before[1])
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".shards")]


def test_global_index_wraps_an_ondisk_index(built: Path, db, queries) -> None:
    names = [f"db/{i}.jpg" for i in range(len(db))]
    index = GlobalIndex.load(built, names)
    assert index.kind == "ivfpq" and index.nprobe == CONFIG.nprobe and len(index) == len(db)
    ref = open_ondisk(built).search(queries, 10)
    _, i = index.search(queries, 10)
    np.testing.assert_array_equal(i, ref[1])
    # a position prior (rows=) restricts it, exhaustively below EXACT_RESTRICTED_ROWS, else via the selector
    for rows in (np.arange(0, 3000, 2), np.arange(0, len(db), 2)):
        _, got = index.search(queries[:5], 10, rows=rows)
        assert np.isin(got[got >= 0], rows).all() and (got >= 0).any()
    with pytest.raises(ConfigError, match="extend_ondisk"):
        index.add(db[:2], ["new/0.jpg", "new/1.jpg"])
    with pytest.raises(ConfigError, match="next to its lists file"):
        index.save(built.parent.parent / "elsewhere" / "global_index.faiss")


def test_trained_part_is_empty_and_encodes_the_same(built: Path, db, queries, trained) -> None:
    index = open_ondisk(built)
    empty = trained_part(index)
    assert empty.ntotal == 0 and empty.is_trained and index.ntotal == len(db)
    empty.add(db)
    np.testing.assert_array_equal(empty.search(queries, 5)[1], _in_memory(trained, db).search(queries, 5)[1])
    assert index.search(queries, 5)[1].shape == (len(queries), 5)  # the source still works


def test_bad_inputs(tmp_path: Path, db, trained) -> None:
    path = tmp_path / "global_index.faiss"
    with pytest.raises(InputError, match="empty"):
        build_ondisk(lambda: iter([]), path, CONFIG)
    with pytest.raises(InputError, match="empty"):
        build_ondisk([], path, CONFIG, trained=trained)
    with pytest.raises(InputError, match="64-dimensional"):
        build_ondisk([db[:100], db[:100, :32]], path, CONFIG, trained=trained)
    with pytest.raises(InputError, match="takes 64-dimensional"):
        build_ondisk([db[:100, :48]], path, CONFIG, trained=trained)
    with pytest.raises(InputError, match=r"\(n, D\)"):
        build_ondisk([db[0]], path, CONFIG, trained=trained)
    with pytest.raises(ConfigError, match="one-pass iterator"):
        build_ondisk(iter([db]), path, CONFIG)
    with pytest.raises(ConfigError, match="must divide"):
        LargeIndexConfig(m=7, pca_dim=32).factory(DIM)
    with pytest.raises(ConfigError, match="exceeds"):
        LargeIndexConfig(m=8, pca_dim=128).factory(DIM)
    with pytest.raises(ConfigError, match="too few"):
        train_index(db[:20], CONFIG)
    with pytest.raises(ConfigError, match="nlist"):
        LargeIndexConfig(nlist=0)
    with pytest.raises(ConfigError, match="holds"):  # a filled index is not a trained empty one
        build_ondisk([db[:100]], path, CONFIG, trained=_in_memory(trained, db[:10]))
    assert not path.exists()
    with pytest.raises(InputError, match="does not exist"):
        extend_ondisk(path, [db[:10]])
    flat = tmp_path / "flat.faiss"
    GlobalIndex(db[:10], [str(i) for i in range(10)]).save(flat)
    with pytest.raises(InputError, match="not an on-disk"):
        extend_ondisk(flat, [db[:10]])
    built = tmp_path / "ok.faiss"
    build_ondisk([db[:3000]], built, CONFIG, trained=trained)
    with pytest.raises(InputError, match="64-dimensional"):
        extend_ondisk(built, [db[:10, :32]])
    assert open_ondisk(built).ntotal == 3000


def test_trained_part_of_an_index_in_memory(db, queries, trained) -> None:
    """The copy of an index held in memory takes additions (it once crashed on its first ``add``) and
    the source keeps its vectors and answers."""
    index = _in_memory(trained, db)
    before = index.search(queries, 5)
    empty = trained_part(index)
    assert empty.ntotal == 0 and empty.is_trained and index.ntotal == len(db)
    empty.add(db[:6000])
    empty.add(db[6000:])
    assert empty.ntotal == len(db)
    np.testing.assert_array_equal(empty.search(queries, 5)[1], before[1])
    np.testing.assert_array_equal(index.search(queries, 5)[1], before[1])
    del empty
    index.add(db[:10])  # the source's own lists are intact and still its own
    assert index.ntotal == len(db) + 10


def _recall(index: faiss.Index, db: np.ndarray, queries: np.ndarray, k: int = 10) -> float:
    exact = np.argsort(-(queries @ db.T), axis=1)[:, :k]
    _, got = index.search(queries, k)
    return float(np.mean([len(set(a) & set(b)) / k for a, b in zip(got, exact, strict=True)]))


def test_l2_after_the_pca_is_the_default_and_ranks_as_inner_product(db, queries) -> None:
    """The default compares in L2 after the (mean-subtracting) PCA; GlobalIndex turns its distances back into
    inner products, which match the exact ones of the returned rows up to the PQ error."""
    sample, _ = reservoir_sample([db], CONFIG.train_size, CONFIG.seed)
    l2 = train_index(sample, CONFIG)
    assert CONFIG.metric == "l2" and l2.metric_type == faiss.METRIC_L2
    ip = train_index(sample, dataclasses.replace(CONFIG, metric="ip"))
    assert ip.metric_type == faiss.METRIC_INNER_PRODUCT
    l2.add(db)
    ip.add(db)
    for index in (l2, ip):
        faiss.extract_index_ivf(index).nprobe = CONFIG.nlist  # every list: only the codes differ
    wrapped = GlobalIndex.from_faiss(l2, [str(i) for i in range(len(db))])
    scores, rows = wrapped.search(queries, 5)
    exact = np.take_along_axis(queries @ db.T, rows, axis=1)
    assert np.abs(scores - exact).max() < 0.1, np.abs(scores - exact).max()
    assert np.all(np.diff(scores, axis=1) <= 1e-6)  # best first
    # on these clusters L2 is not worse than the inner product (benchmarks/scale.py: better at scale)
    assert _recall(l2, db, queries) >= _recall(ip, db, queries) - 0.05


def test_hnsw_quantizer_and_two_level_training(tmp_path: Path, db, queries) -> None:
    flat = dataclasses.replace(CONFIG, two_level=False)
    hnsw = dataclasses.replace(CONFIG, quantizer="hnsw", two_level=True, ef_search=48)
    assert hnsw.factory(DIM) == "PCAR32,IVF32_HNSW32,PQ16x8" and flat.factory(DIM) == "PCAR32,IVF32,PQ16x8"
    path = tmp_path / "global_index.faiss"
    stats = build_ondisk([db], path, hnsw)
    assert stats.ntotal == len(db)
    index = open_ondisk(path)
    ivf = faiss.extract_index_ivf(index)
    quantizer = faiss.downcast_index(ivf.quantizer)
    assert isinstance(quantizer, faiss.IndexHNSWFlat) and quantizer.ntotal == CONFIG.nlist
    assert quantizer.hnsw.efSearch == 48 and ivf.nprobe == CONFIG.nprobe
    # as good as the exact quantizer trained by one k-means
    sample, _ = reservoir_sample([db], CONFIG.train_size, CONFIG.seed)
    reference = train_index(sample, flat)
    reference.add(db)
    for a in (index, reference):
        faiss.extract_index_ivf(a).nprobe = 8
    assert _recall(index, db, queries) >= _recall(reference, db, queries) - 0.05
    # nprobe beyond the graph's search depth raises the depth with it (else fewer lists come back)
    wrapped = GlobalIndex.load(path, [str(i) for i in range(len(db))])
    graph = faiss.downcast_index(faiss.extract_index_ivf(wrapped.index).quantizer).hnsw
    wrapped.nprobe = 30
    assert graph.efSearch == 48  # deep enough already
    graph.efSearch = 8
    wrapped.nprobe = 30
    assert graph.efSearch == 30 and wrapped.nprobe == 30
    open_deep = open_ondisk(path, nprobe=32)
    assert faiss.downcast_index(faiss.extract_index_ivf(open_deep).quantizer).hnsw.efSearch == 48
    wide = dataclasses.replace(hnsw, ef_search=4, nprobe=20)
    small = train_index(sample, wide)
    assert faiss.downcast_index(faiss.extract_index_ivf(small).quantizer).hnsw.efSearch == 20


def test_two_level_centroids_cover_the_lists(db) -> None:
    sample, _ = reservoir_sample([db], CONFIG.train_size, CONFIG.seed)
    config = dataclasses.replace(CONFIG, two_level=True)
    index = train_index(sample, config)
    ivf = faiss.extract_index_ivf(index)
    assert index.is_trained and ivf.quantizer.ntotal == CONFIG.nlist
    centroids = ivf.quantizer.reconstruct_n(0, CONFIG.nlist)
    assert len(np.unique(centroids.round(5), axis=0)) == CONFIG.nlist  # no empty or repeated list
    # every list is used, and encoding is deterministic for a seed
    index.add(db)
    sizes = [ivf.invlists.list_size(i) for i in range(CONFIG.nlist)]
    assert min(sizes) > 0 and sum(sizes) == len(db)
    again = train_index(sample, config)
    np.testing.assert_array_equal(faiss.extract_index_ivf(again).quantizer.reconstruct_n(0, CONFIG.nlist), centroids)


def test_two_level_choice_and_bad_options() -> None:
    assert LargeIndexConfig(nlist=16384).uses_two_level and not LargeIndexConfig(nlist=8192).uses_two_level
    assert not LargeIndexConfig(nlist=65536, metric="ip").uses_two_level
    assert not LargeIndexConfig(nlist=65536, two_level=False).uses_two_level
    with pytest.raises(ConfigError, match="metric"):
        LargeIndexConfig(metric="cosine")
    with pytest.raises(ConfigError, match="quantizer"):
        LargeIndexConfig(quantizer="ivf")
    with pytest.raises(ConfigError, match="two_level"):
        LargeIndexConfig(metric="ip", two_level=True)
    with pytest.raises(ConfigError, match="ef_search"):
        LargeIndexConfig(ef_search=0)


def test_kept_variance_is_the_share_of_the_kept_axes() -> None:
    """8 axes of std 10 and 24 of std 0.1: a PCA to 8 dimensions keeps 800 / (800 + 0.24) of the variance."""
    scale = np.r_[np.full(8, 10.0), np.full(24, 0.1)].astype(np.float32)
    x = np.random.default_rng(0).standard_normal((20_000, 32)).astype(np.float32) * scale
    index = train_index(x, LargeIndexConfig(nlist=4, m=4, nbits=4, pca_dim=8, train_size=20_000))
    assert kept_variance(index) == pytest.approx(800 / (800 + 0.24), abs=2e-5)
    assert kept_variance(train_index(x, LargeIndexConfig(nlist=4, m=4, nbits=4, pca_dim=0))) is None


def test_default_is_the_benchmarked_index() -> None:
    """The defaults are the index measured at 10M vectors (docs/results/scale_10m_pca64.md): 48 code bytes."""
    config = LargeIndexConfig()
    assert config.factory(512) == "PCAR64,IVF16384,PQ64x6" and config.metric == "l2" and config.uses_two_level
    assert config.bytes_per_vector() == 48 + 8 and config.nprobe == 16
