"""The pair-match cache: exact round trip, settings signature, shards of an interrupted run."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from visloc.verification.cache import PairMatchCache, settings_signature


def _matches(seed: int, n: int = 7):
    rng = np.random.default_rng(seed)
    return (rng.uniform(0, 100, (n, 2)).astype(np.float32), rng.uniform(0, 100, (n, 2)).astype(np.float32),
            rng.uniform(size=n) > 0.5, 1234)


def _same(a, b) -> None:
    for x, y in zip(a[:3], b[:3], strict=True):
        np.testing.assert_array_equal(x, y)
    assert a[3] == b[3]


def test_round_trip_through_shards_and_file(tmp_path: Path) -> None:
    path = tmp_path / "m.h5"
    settings = {"grid": 160, "model": "a.pt"}
    cache = PairMatchCache(path, settings, flush_every=2)
    pairs = [("q/1.png", f"db/{i}.png") for i in range(5)]
    for i, (q, d) in enumerate(pairs):
        cache.put(q, d, _matches(i), (480, 640))
    for i, (q, d) in enumerate(pairs):  # 4 from two shards, 1 from memory
        got, hw = cache.get(q, d)
        _same(got, _matches(i))
        assert hw == (480, 640)
    assert cache.get("q/1.png", "db/9.png") is None
    cache.close()
    again = PairMatchCache(path, settings)
    _same(again.get(*pairs[4])[0], _matches(4))
    assert PairMatchCache(path, settings | {"grid": 80}).get(*pairs[0]) is None  # other settings: missing
    again.close()


def test_interrupted_run_keeps_flushed_pairs(tmp_path: Path) -> None:
    path = tmp_path / "m.h5"
    cache = PairMatchCache(path, {"k": 1}, flush_every=1)
    cache.put("q", "d0", _matches(0), (10, 20))
    cache.put("q", "d1", _matches(1), (10, 20))  # never closed: the process died here
    resumed = PairMatchCache(path, {"k": 1})
    _same(resumed.get("q", "d1")[0], _matches(1))
    resumed.close()
    assert path.is_file() and not path.with_name("m.h5.shards").exists()


def test_signature_is_stable_and_order_free() -> None:
    assert settings_signature({"a": 1, "b": [2, 3]}) == settings_signature({"b": [2, 3], "a": 1})
    assert settings_signature({"a": 1}) != settings_signature({"a": 2})
