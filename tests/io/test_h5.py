"""HDF5 feature files: pair keys, the crash-safe resumable sharded writer, and the reader."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pytest

from visloc.errors import InputError
from visloc.io.h5 import H5Reader, MatchReader, ShardedH5Writer, list_h5_names, match_arrays, names_to_pair


def _groups(seed: int, names: list[str]) -> dict[str, dict[str, np.ndarray]]:
    rng = np.random.default_rng(seed)
    out = {}
    for name in names:
        n = int(rng.integers(0, 20))
        out[name] = {
            "keypoints": rng.uniform(0, 640, (n, 2)).astype(np.float32),
            "descriptors": rng.normal(size=(128, n)).astype(np.float16),
            "scores": rng.random(n).astype(np.float32),
            "image_size": np.array([640, 480]),
        }
    return out


def _read_all(path: Path) -> dict[str, dict[str, np.ndarray]]:
    with h5py.File(path, "r") as f:
        return {name: {k: f[name][k][()] for k in f[name] if isinstance(f[name][k], h5py.Dataset)}
                for name in list_h5_names(path)}


def _assert_same(actual: dict, expected: dict) -> None:
    assert sorted(actual) == sorted(expected)
    for name, arrays in expected.items():
        assert sorted(actual[name]) == sorted(arrays), name
        for key, value in arrays.items():
            assert actual[name][key].dtype == value.dtype, (name, key)
            np.testing.assert_array_equal(actual[name][key], value)


NAMES = ["db/seq-01/frame-000000.color.png", "db/seq-01/frame-000010.color.png", "query/1.jpg", "top.jpg",
         "db/seq-02/frame-000000.color.png"]


def test_names_to_pair() -> None:
    assert names_to_pair("a.jpg", "b.jpg") == "a.jpg/b.jpg"
    assert names_to_pair("db/seq/1.png", "q/2.png") == "db-seq-1.png/q-2.png"
    assert names_to_pair("x/y", "z", separator="_") == "x-y_z"


def test_write_and_read_back(tmp_path: Path) -> None:
    path = tmp_path / "features.h5"
    data = _groups(0, NAMES)
    writer = ShardedH5Writer(path, flush_every=2)
    for name, arrays in data.items():
        writer.add(name, arrays, attrs={"n": len(arrays["scores"])})
    assert writer.finalize(file_attrs={"extractor": "sift"}) == path
    _assert_same(_read_all(path), data)
    assert list_h5_names(path) == sorted(NAMES)  # nested names ("/") are listed whole
    assert not (tmp_path / "features.h5.shards").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["features.h5"]  # no temporary files left
    with H5Reader(path) as r:
        assert r.attrs == {"extractor": "sift"}
        assert "query/1.jpg" in r and "query/2.jpg" not in r
        got = r.read("db/seq-01/frame-000010.color.png", ["keypoints", "scores"])
        assert sorted(got) == ["keypoints", "scores"]
        np.testing.assert_array_equal(got["scores"], data["db/seq-01/frame-000010.color.png"]["scores"])
    with h5py.File(path, "r") as f:
        assert f["top.jpg"].attrs["n"] == len(data["top.jpg"]["scores"])


def test_list_h5_names_marker_and_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "g.h5"
    with h5py.File(path, "w") as f:
        f.create_dataset("a/b/1.jpg/global_descriptor", data=np.ones(4))
        f.create_dataset("a/2.jpg/keypoints", data=np.ones((1, 2)))
        f.create_dataset("3.jpg/global_descriptor", data=np.ones(4))
    assert list_h5_names(path) == ["3.jpg", "a/2.jpg", "a/b/1.jpg"]
    assert list_h5_names(path, marker="global_descriptor") == ["3.jpg", "a/b/1.jpg"]
    assert list_h5_names(tmp_path / "missing.h5") == []
    (tmp_path / "bad.h5").write_bytes(b"not an hdf5 file")
    with pytest.raises(InputError) as err:
        list_h5_names(tmp_path / "bad.h5")
    assert err.value.path == tmp_path / "bad.h5"


def test_crash_then_resume(tmp_path: Path) -> None:
    path = tmp_path / "features.h5"
    data = _groups(1, [*NAMES, "late/6.jpg"])
    writer = ShardedH5Writer(path, flush_every=2)
    for name in NAMES:
        writer.add(name, data[name])
    # the 5th image is still in the buffer: the writer "crashes" without finalize
    assert writer.done() == set(NAMES)
    del writer
    assert not path.exists()
    assert len(list((tmp_path / "features.h5.shards").glob("*.h5"))) == 2

    resumed = ShardedH5Writer(path, flush_every=2)
    assert resumed.done() == set(NAMES[:4])  # flushed names only; the buffer was lost
    for name in sorted(set(data) - resumed.done()):
        resumed.add(name, data[name])
    resumed.finalize()
    _assert_same(_read_all(path), data)
    assert not (tmp_path / "features.h5.shards").exists()


def test_resume_onto_an_existing_file_merges_old_and_new(tmp_path: Path) -> None:
    path = tmp_path / "features.h5"
    first, second = _groups(2, NAMES[:3]), _groups(3, NAMES[3:])
    w = ShardedH5Writer(path, flush_every=2)
    for name, arrays in first.items():
        w.add(name, arrays)
    w.finalize(file_attrs={"extractor": "sift"})

    w = ShardedH5Writer(path, flush_every=2)
    assert w.done() == set(first)
    for name, arrays in second.items():
        w.add(name, arrays)
    w.finalize(file_attrs={"extractor": "sift"})
    _assert_same(_read_all(path), {**first, **second})


def test_a_later_write_replaces_an_earlier_one(tmp_path: Path) -> None:
    path = tmp_path / "features.h5"
    old, new = _groups(4, ["x/1.jpg", "y.jpg"]), _groups(5, ["x/1.jpg"])
    w = ShardedH5Writer(path)
    for name, arrays in old.items():
        w.add(name, arrays)
    w.finalize()
    w = ShardedH5Writer(path, flush_every=1)
    w.add("x/1.jpg", new["x/1.jpg"])  # flushed to a shard, merged after the old file
    w.finalize()
    _assert_same(_read_all(path), {"x/1.jpg": new["x/1.jpg"], "y.jpg": old["y.jpg"]})


def test_torn_shard_is_ignored(tmp_path: Path) -> None:
    path = tmp_path / "f.h5"
    data = _groups(6, ["a.jpg", "b.jpg"])
    w = ShardedH5Writer(path, flush_every=1)
    for name, arrays in data.items():
        w.add(name, arrays)
    del w
    torn = tmp_path / "f.h5.shards" / "000007.h5"
    torn.write_bytes(b"\x89HDF\r\n\x1a\n" + b"\0" * 20)  # an HDF5 signature, then nothing
    w = ShardedH5Writer(path)
    assert w.done() == {"a.jpg", "b.jpg"}
    assert not torn.exists()
    w.finalize()
    _assert_same(_read_all(path), data)


def test_failed_merge_leaves_previous_file_and_shards(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "features.h5"
    first, second = _groups(7, NAMES[:2]), _groups(8, NAMES[2:])
    w = ShardedH5Writer(path)
    for name, arrays in first.items():
        w.add(name, arrays)
    w.finalize(file_attrs={"extractor": "sift"})
    before = path.read_bytes()

    w = ShardedH5Writer(path, flush_every=1)
    for name, arrays in second.items():
        w.add(name, arrays)
    shards = sorted((tmp_path / "features.h5.shards").glob("*.h5"))
    assert len(shards) == 3

    calls = {"n": 0}
    real_copy = h5py.Group.copy

    def failing_copy(self, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:  # fail in the middle of the merge, after part of the new file is written
            raise OSError("disk full")
        return real_copy(self, *args, **kwargs)

    monkeypatch.setattr(h5py.Group, "copy", failing_copy)
    with pytest.raises(OSError, match="disk full"):
        w.finalize(file_attrs={"extractor": "sift"})
    assert calls["n"] == 3
    assert path.read_bytes() == before
    assert sorted((tmp_path / "features.h5.shards").glob("*.h5")) == shards  # nothing lost
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]  # no torn temporary file

    monkeypatch.setattr(h5py.Group, "copy", real_copy)
    ShardedH5Writer(path).finalize(file_attrs={"extractor": "sift"})
    _assert_same(_read_all(path), {**first, **second})


def test_reader_errors_name_the_file(tmp_path: Path) -> None:
    path = tmp_path / "features.h5"
    w = ShardedH5Writer(path)
    w.add("a.jpg", {"scores": np.ones(3)})
    w.finalize()
    with H5Reader(path) as r, pytest.raises(InputError, match=r"b\.jpg") as err:
        r.read("b.jpg")
    assert err.value.path == path
    assert str(path) in str(err.value)
    with pytest.raises(InputError, match="does not exist") as err:
        H5Reader(tmp_path / "missing.h5")
    assert err.value.path == tmp_path / "missing.h5"
    (tmp_path / "bad.h5").write_text("hello")
    with pytest.raises(InputError) as err:
        H5Reader(tmp_path / "bad.h5")
    assert err.value.path == tmp_path / "bad.h5"


def test_match_arrays_layout_by_hand() -> None:
    arrays = match_arrays(np.array([[0, 5], [3, 1]]), np.array([0.9, 0.5]), num_keypoints0=4)
    np.testing.assert_array_equal(arrays["matches0"], [5, -1, -1, 1])
    np.testing.assert_allclose(arrays["matching_scores0"], [0.9, 0, 0, 0.5], atol=1e-3)
    assert arrays["matches0"].dtype == np.int32 and arrays["matching_scores0"].dtype == np.float16


def test_match_reader_finds_pairs_either_way_round_like_hloc(tmp_path: Path) -> None:
    path = tmp_path / "matches.h5"
    with h5py.File(path, "w") as f:
        g = f.create_group("q-a.jpg/db.jpg")  # names "q/a.jpg" and "db.jpg", hloc's key
        g["matches0"] = np.array([2, -1, 0], np.int16)
        g["matching_scores0"] = np.array([0.5, 0, 0.25], np.float16)
        f.create_group("x.jpg_y.jpg")["matches0"] = np.array([-1, 1])  # hloc's old separator, no scores
    with MatchReader(path) as r:
        m, s = r.read("q/a.jpg", "db.jpg")
        np.testing.assert_array_equal(m, [[0, 2], [2, 0]])
        np.testing.assert_allclose(s, [0.5, 0.25])
        m, s = r.read("db.jpg", "q/a.jpg")  # reversed: (db keypoint, query keypoint), sorted by db keypoint
        np.testing.assert_array_equal(m, [[0, 2], [2, 0]])
        m, s = r.read("y.jpg", "x.jpg")
        np.testing.assert_array_equal(m, [[1, 1]])
        np.testing.assert_array_equal(s, [1.0])
        assert ("q/a.jpg", "db.jpg") in r and ("q/a.jpg", "other.jpg") not in r
        with pytest.raises(InputError, match=r"no matches for the pair q/a\.jpg other\.jpg") as err:
            r.read("q/a.jpg", "other.jpg")
        assert err.value.path == path
    with pytest.raises(InputError, match="does not exist"):
        MatchReader(tmp_path / "missing.h5")
