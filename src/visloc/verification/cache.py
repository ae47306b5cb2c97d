"""The matches of verified pairs, stored once (HDF5, hloc's pair keys) so that a rerun, or another
re-ranking of the same shortlists (another first-stage score, fusion or stage length), reuses them.

One group per pair, keyed ``names_to_pair(query, database)`` as hloc's match files are, holding
``keypoints0 (M, 2)`` (query pixels), ``keypoints1 (M, 2)`` (database pixels), ``consistent (M,)`` and the
attributes ``beta``, ``image_size1`` (database ``(H, W)``) and ``signature`` (a hash of the settings the
matches were made with: a pair stored under other settings counts as missing and is recomputed). Written with
:class:`~visloc.io.h5.ShardedH5Writer`: an interrupted run keeps every flushed pair.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from ..errors import InputError
from ..io.h5 import ShardedH5Writer, names_to_pair
from .dense import PairMatches


def settings_signature(settings: dict[str, Any]) -> str:
    """A short stable hash of JSON-able settings."""
    return hashlib.sha1(json.dumps(settings, sort_keys=True, default=str).encode()).hexdigest()[:16]


class PairMatchCache:
    """Stored pair matches (see the module docstring); close it (or use ``with``) to merge what was added."""

    def __init__(self, path: str | Path, settings: dict[str, Any], flush_every: int = 20) -> None:
        self.path = Path(path)
        self.signature = settings_signature(settings)
        self.flush_every = flush_every
        self._writer = ShardedH5Writer(self.path, flush_every=1 << 30, compression="lzf")
        if self._writer.shard_dir.is_dir():
            self._writer.finalize()  # an interrupted run's shards
        self._readers: list[h5py.File] = []
        if self.path.is_file():
            try:
                self._readers.append(h5py.File(self.path, "r"))
            except OSError as e:
                raise InputError(self.path, f"cannot open the match cache ({e}); delete it to start afresh") from None
        self._new: dict[str, tuple[PairMatches, tuple[int, int]]] = {}

    def get(self, query: str, database: str) -> tuple[PairMatches, tuple[int, int]] | None:
        """The stored matches of a pair made with this cache's settings and the database image's ``(H, W)``,
        or ``None``."""
        key = names_to_pair(query, database)
        if key in self._new:
            return self._new[key]
        for f in reversed(self._readers):  # newest first
            if key in f and f[key].attrs.get("signature") == self.signature:
                g = f[key]
                break
        else:
            return None
        matches = (g["keypoints0"][()].reshape(-1, 2).astype(np.float32),
                   g["keypoints1"][()].reshape(-1, 2).astype(np.float32),
                   g["consistent"][()].reshape(-1).astype(bool), int(g.attrs["beta"]))
        h, w = (int(v) for v in g.attrs["image_size1"])
        return matches, (h, w)

    def put(self, query: str, database: str, matches: PairMatches, database_hw: tuple[int, int]) -> None:
        q, d, consistent, beta = matches
        key = names_to_pair(query, database)
        self._new[key] = (matches, (int(database_hw[0]), int(database_hw[1])))
        self._writer.add(key, {"keypoints0": np.asarray(q, np.float32), "keypoints1": np.asarray(d, np.float32),
                               "consistent": np.asarray(consistent, np.uint8)},
                         {"beta": int(beta), "image_size1": np.asarray(database_hw, np.int64),
                          "signature": self.signature})
        if len(self._new) >= self.flush_every:  # to a shard, read back from there (memory stays bounded)
            self._writer.flush()
            self._readers.append(h5py.File(sorted(self._writer.shard_dir.glob("*.h5"))[-1], "r"))
            self._new.clear()

    def close(self) -> Path:
        """Merge what was added into the file; the cache cannot be used afterwards."""
        for f in self._readers:
            f.close()
        self._readers.clear()
        self._new.clear()
        return self._writer.finalize()

    def __enter__(self) -> PairMatchCache:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


__all__ = ["PairMatchCache", "settings_signature"]
