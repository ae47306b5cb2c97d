"""GlobalIndex (FAISS inner product) against brute-force numpy, and its file round trip."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from visloc.errors import InputError
from visloc.retrieval import GlobalIndex
from visloc.retrieval import index as index_module


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
