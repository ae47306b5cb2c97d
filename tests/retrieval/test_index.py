"""GlobalIndex (FAISS inner product) against brute-force numpy, and its file round trip."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from visloc.errors import ConfigError, InputError
from visloc.retrieval import GlobalIndex
from visloc.retrieval import index as index_module
from visloc.retrieval.index import IndexConfig


def _unit(rng: np.random.Generator, n: int, d: int) -> np.ndarray:
    x = rng.normal(size=(n, d)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def _brute_force(db: np.ndarray, q: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    sim = q.astype(np.float64) @ db.T.astype(np.float64)
    idx = np.argsort(-sim, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(sim, idx, axis=1), idx


@pytest.fixture(scope="module")
def data() -> tuple[np.ndarray, np.ndarray, list[str]]:
    rng = np.random.default_rng(0)
    return _unit(rng, 50, 32), _unit(rng, 13, 32), [f"db/{i:03d}.jpg" for i in range(50)]


@pytest.mark.parametrize("block", [1024, 5, 1])
def test_search_equals_brute_force(data, block: int) -> None:
    db, q, names = data
    index = GlobalIndex(db, names)
    assert len(index) == 50 and index.dim == 32
    scores, idx = index.search(q, k=7, block=block)
    ref_scores, ref_idx = _brute_force(db, q, 7)
    assert scores.shape == idx.shape == (13, 7)
    np.testing.assert_array_equal(idx, ref_idx)
    np.testing.assert_allclose(scores, ref_scores, atol=1e-5)
    assert (np.diff(scores, axis=1) <= 0).all()


def test_single_query_vector_and_empty_queries(data) -> None:
    db, q, names = data
    index = GlobalIndex(db, names)
    s, i = index.search(q[3], k=4)  # a (D,) query is one row
    np.testing.assert_array_equal(i, _brute_force(db, q[3:4], 4)[1])
    s, i = index.search(np.zeros((0, 32), np.float32), k=4)
    assert s.shape == (0, 4) and i.shape == (0, 4)


def test_k_larger_than_database_is_clipped(data) -> None:
    db, q, names = data
    index = GlobalIndex(db[:6], names[:6])
    _, idx = index.search(q, k=20, block=4)
    assert idx.shape == (13, 6)
    assert (idx >= 0).all()
    np.testing.assert_array_equal(np.sort(idx, axis=1), np.tile(np.arange(6), (13, 1)))
    np.testing.assert_array_equal(idx, _brute_force(db[:6], q, 6)[1])


def test_database_hit_finds_itself(data) -> None:
    db, _, names = data
    scores, idx = GlobalIndex(db, names).search(db[[4, 17]], k=1)
    np.testing.assert_array_equal(idx[:, 0], [4, 17])
    np.testing.assert_allclose(scores[:, 0], 1.0, atol=1e-5)


def test_bad_construction() -> None:
    with pytest.raises(ValueError):
        GlobalIndex(np.zeros((3, 4), np.float32), ["a", "b"])
    with pytest.raises(ValueError):
        GlobalIndex(np.zeros(4, np.float32), ["a"])


def test_save_load_round_trip(tmp_path: Path, data) -> None:
    db, q, names = data
    path = tmp_path / "sub" / "global_index.faiss"
    GlobalIndex(db, names).save(path)
    assert sorted(p.name for p in path.parent.iterdir()) == ["global_index.faiss"]  # no temporary left
    loaded = GlobalIndex.load(path, names)
    assert loaded.names == names and len(loaded) == 50
    for a, b in zip(loaded.search(q, 5), _brute_force(db, q, 5), strict=True):
        np.testing.assert_allclose(a, b, atol=1e-5)


def test_failed_save_leaves_previous_file(tmp_path: Path, data, monkeypatch: pytest.MonkeyPatch) -> None:
    db, _, names = data
    path = tmp_path / "global_index.faiss"
    GlobalIndex(db[:10], names[:10]).save(path)
    before = path.read_bytes()

    def broken_write(index, filename: str) -> None:
        Path(filename).write_bytes(b"partial")
        raise RuntimeError("disk full")

    monkeypatch.setattr(index_module.faiss, "write_index", broken_write)
    with pytest.raises(RuntimeError, match="disk full"):
        GlobalIndex(db, names).save(path)
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["global_index.faiss"]


def test_load_missing_file(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="does not exist") as err:
        GlobalIndex.load(tmp_path / "nope.faiss", ["a"])
    assert err.value.path == tmp_path / "nope.faiss"


@pytest.mark.parametrize("kind", ["garbage", "truncated", "empty"])
def test_load_corrupt_file(tmp_path: Path, data, kind: str) -> None:
    db, _, names = data
    path = tmp_path / "global_index.faiss"
    GlobalIndex(db, names).save(path)
    raw = path.read_bytes()
    path.write_bytes({"garbage": b"not a faiss index at all" * 4, "truncated": raw[: len(raw) // 2], "empty": b""}[kind])
    with pytest.raises(InputError, match="cannot read") as err:
        GlobalIndex.load(path, names)
    assert err.value.path == path


def test_load_with_wrong_names_names_the_file(tmp_path: Path, data) -> None:
    db, _, names = data
    path = tmp_path / "global_index.faiss"
    GlobalIndex(db, names).save(path)
    with pytest.raises(InputError) as err:
        GlobalIndex.load(path, names[:-1])
    assert err.value.path == path


# --- IndexConfig / build / add (IVF-PQ) ------------------------------------------------------------------


def _clustered(rng: np.random.Generator, n: int, d: int, clusters: int, latent: int = 8) -> np.ndarray:
    """Unit vectors around ``clusters`` random centres, each cluster spread along its own ``latent``-dim
    subspace plus a little isotropic noise (descriptors have a low intrinsic dimension)."""
    centers = rng.normal(size=(clusters, d))
    centers /= np.linalg.norm(centers, axis=1, keepdims=True)
    basis = rng.normal(size=(clusters, latent, d)) / np.sqrt(d)
    label = rng.integers(0, clusters, n)
    z = 0.5 * rng.normal(size=(n, latent))
    x = centers[label] + np.einsum("nl,nld->nd", z, basis[label]) + 0.1 * rng.normal(size=(n, d)) / np.sqrt(d)
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def _recall(got: np.ndarray, ref: np.ndarray) -> float:
    return float(np.mean([len(set(a) & set(b)) / ref.shape[1] for a, b in zip(got, ref, strict=True)]))


IVFPQ = IndexConfig(kind="ivfpq", nlist=64, m=32, nbits=6, nprobe=16, train_size=5000)


@pytest.fixture(scope="module")
def clustered() -> tuple[np.ndarray, np.ndarray, list[str], np.ndarray]:
    rng = np.random.default_rng(1)
    x = _clustered(rng, 20_200, 64, 50)
    db, q = x[:20_000], x[20_000:]
    names = [f"db/{i:05d}.jpg" for i in range(len(db))]
    _, ref = GlobalIndex(db, names).search(q, 10)
    return db, q, names, ref


@pytest.fixture(scope="module")
def ivfpq(clustered) -> GlobalIndex:
    db, _, names, _ = clustered
    return GlobalIndex.build(db, names, IVFPQ)


def test_ivfpq_recall_against_exact(clustered, ivfpq: GlobalIndex) -> None:
    _, q, _, ref = clustered
    assert ivfpq.kind == "ivfpq" and ivfpq.nprobe == 16 and len(ivfpq) == 20_000 and ivfpq.dim == 64
    scores, idx = ivfpq.search(q, 10, block=64)
    assert idx.shape == scores.shape == (200, 10)
    assert _recall(idx, ref) >= 0.8
    assert (np.diff(scores, axis=1) <= 1e-6).all()


def test_ivfpq_honours_nprobe(clustered) -> None:
    db, q, names, ref = clustered
    index = GlobalIndex.build(db, names, IVFPQ)
    index.nprobe = 1
    low = _recall(index.search(q, 10)[1], ref)
    index.nprobe = 64
    high = _recall(index.search(q, 10)[1], ref)
    assert low < high
    index.nprobe = 10_000  # clipped to nlist
    assert index.nprobe == 64


def test_ivfpq_is_compact(ivfpq: GlobalIndex, clustered) -> None:
    db, _, names, _ = clustered
    flat = GlobalIndex(db, names)
    assert flat.kind == "flat" and flat.nprobe is None
    assert ivfpq.nbytes() < flat.nbytes() / 3


def test_ivfpq_save_load_round_trip(tmp_path: Path, clustered, ivfpq: GlobalIndex) -> None:
    _, q, names, _ = clustered
    path = tmp_path / "global_index.faiss"
    ivfpq.save(path)
    loaded = GlobalIndex.load(path, names)
    assert loaded.kind == "ivfpq" and loaded.nprobe == 16
    for a, b in zip(loaded.search(q, 10), ivfpq.search(q, 10), strict=True):
        np.testing.assert_array_equal(a, b)


def test_build_flat_equals_constructor(data) -> None:
    db, q, names = data
    built = GlobalIndex.build(db, names)
    assert built.kind == "flat"
    for a, b in zip(built.search(q, 5), GlobalIndex(db, names).search(q, 5), strict=True):
        np.testing.assert_array_equal(a, b)


def test_add_equals_building_at_once(data) -> None:
    db, q, names = data
    index = GlobalIndex(db[:20], names[:20])
    index.add(db[20:35], names[20:35])
    index.add(db[35:35], [])  # nothing
    index.add(db[35:], names[35:])
    assert index.names == names and len(index) == 50
    for a, b in zip(index.search(q, 9), GlobalIndex(db, names).search(q, 9), strict=True):
        np.testing.assert_array_equal(a, b)


def test_add_to_ivfpq(clustered) -> None:
    db, q, names, ref = clustered
    index = GlobalIndex.build(db[:12_000], names[:12_000], IVFPQ)
    index.add(db[12_000:], names[12_000:])
    assert index.names == names
    assert _recall(index.search(q, 10)[1], ref) >= 0.8


def test_duplicate_names_refused(data) -> None:
    db, _, names = data
    index = GlobalIndex(db[:10], names[:10])
    with pytest.raises(ConfigError, match=r"db/003\.jpg"):
        index.add(db[10:12], [names[10], names[3]])
    with pytest.raises(ConfigError, match=r"db/011\.jpg"):
        index.add(db[10:13], [names[11], names[12], names[11]])
    assert len(index) == 10 and index.index.ntotal == 10  # nothing added
    with pytest.raises(ConfigError, match=r"db/001\.jpg"):
        GlobalIndex.build(db[:3], [names[0], names[1], names[1]])
    with pytest.raises(ValueError):
        index.add(db[10:12, :16], names[10:12])


def test_ivfpq_too_few_vectors(data) -> None:
    db, _, names = data
    with pytest.raises(ConfigError, match=r"50 training vectors.*nlist=64.*at least 64"):
        GlobalIndex.build(db, names, IndexConfig(kind="ivfpq", nlist=64, m=8, nbits=4))
    with pytest.raises(ConfigError, match=r"train_size=10"):
        GlobalIndex.build(db, names, IndexConfig(kind="ivfpq", nlist=16, m=8, nbits=4, train_size=10))
    with pytest.raises(ConfigError, match="divide"):
        GlobalIndex.build(db, names, IndexConfig(kind="ivfpq", nlist=4, m=5, nbits=4))


def test_bad_index_config() -> None:
    with pytest.raises(ConfigError, match="kind"):
        IndexConfig(kind="hnsw")
    with pytest.raises(ConfigError, match="nprobe"):
        IndexConfig(nprobe=0)
    with pytest.raises(ConfigError, match="nprobe"):
        GlobalIndex(np.eye(4, dtype=np.float32), list("abcd")).nprobe = 3


def test_refine_stage_raises_recall_and_keeps_inner_product_scores(tmp_path: Path, clustered) -> None:
    """IVF-PQ + re-ranking PQ (IndexIVFPQR): better 1-recall@10 than the same IVF-PQ alone, scores are the
    exact-search inner products up to the quantisation error, and it survives save / load."""
    db, q, names, ref = clustered
    base = IndexConfig(kind="ivfpq", nlist=64, m=8, nbits=8, nprobe=16, train_size=5000)
    plain = GlobalIndex.build(db, names, base)
    refined = GlobalIndex.build(db, names, IndexConfig(**{**base.__dict__, "refine_m": 16, "k_factor": 8}))
    assert refined.kind == "ivfpq" and refined.nprobe == 16
    nn = lambda idx: float(np.mean([b[0] in set(a) for a, b in zip(idx, ref, strict=True)]))  # noqa: E731
    s_plain, i_plain = plain.search(q, 10)
    s_ref, i_ref = refined.search(q, 10)
    assert nn(i_ref) > nn(i_plain) and nn(i_ref) >= 0.95
    assert (np.diff(s_ref, axis=1) <= 1e-6).all()
    exact = np.einsum("qd,qkd->qk", q, db[i_ref])  # true inner products of the returned rows
    exact_plain = np.einsum("qd,qkd->qk", q, db[i_plain])
    assert np.abs(s_ref - exact).mean() < min(0.01, np.abs(s_plain - exact_plain).mean())  # sharper scores
    assert refined.nbytes() - plain.nbytes() > 16 * len(db)  # the refine codes: refine_m bytes a vector
    path = tmp_path / "refined.faiss"
    refined.save(path)
    loaded = GlobalIndex.load(path, names)
    for a, b in zip(loaded.search(q, 10), refined.search(q, 10), strict=True):
        np.testing.assert_array_equal(a, b)


def test_refine_config_validation(data) -> None:
    db, _, names = data
    with pytest.raises(ConfigError, match="refine_m"):
        IndexConfig(kind="ivfpq", refine_m=-1)
    with pytest.raises(ConfigError, match="k_factor"):
        IndexConfig(kind="ivfpq", k_factor=0)
    with pytest.raises(ConfigError, match=r"refine_m=5.*divide"):
        GlobalIndex.build(db, names, IndexConfig(kind="ivfpq", nlist=4, m=8, refine_m=5, nbits=4))
    with pytest.raises(ConfigError, match="at least 256"):
        GlobalIndex.build(db, names, IndexConfig(kind="ivfpq", nlist=4, m=8, refine_m=8, nbits=4))


def test_dba_option_indexes_augmented_vectors_and_vectors_reads_them_back(data) -> None:
    from visloc.retrieval.expansion import dba

    db, q, names = data
    built = GlobalIndex.build(db, names, IndexConfig(dba_k=3))
    np.testing.assert_allclose(built.vectors(np.arange(len(db))), dba(db, 3), atol=1e-6)
    by_hand = GlobalIndex(dba(db, 3), names)
    for a, b in zip(built.search(q, 5), by_hand.search(q, 5), strict=True):
        np.testing.assert_allclose(a, b, atol=1e-6)
    assert built.vectors([]).shape == (0, db.shape[1])


def test_vectors_of_an_ivfpq_index_are_its_decoded_codes(clustered, ivfpq: GlobalIndex) -> None:
    db, _, _, _ = clustered
    rows = np.array([0, 17, 19_999])
    approx = ivfpq.vectors(rows)
    err = np.linalg.norm(approx - db[rows], axis=1)
    assert approx.shape == (3, 64) and np.all(err < 0.5) and np.all(err > 0)  # lossy, but close
