"""HDF5 feature files in hloc's layout, with a resumable, crash-safe writer.

Layout: one group per image name (names may contain ``/``, which nests groups, as in hloc), holding
``keypoints`` (N, 2), ``descriptors`` (D, N), ``scores`` (N,), ``image_size`` (2,) and optionally
``points3D`` (N, 3, NaN where unknown) for map images; global descriptors live in their own file
under ``<name>/global_descriptor`` (D,). Pair keys use :func:`names_to_pair`.

:class:`ShardedH5Writer` never writes into the final file in place: groups are buffered and written
to small shard files (each created atomically) every ``flush_every`` images, and :meth:`finalize`
merges the previous file and the shards into a new file that atomically replaces it. A killed run
loses at most the unflushed buffer, and the rerun skips the names already stored.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from pathlib import Path

import h5py
import numpy as np

from ..errors import InputError
from .atomic import atomic_path

logger = logging.getLogger(__name__)


def names_to_pair(name0: str, name1: str, separator: str = "/") -> str:
    """hloc's key of a pair of images: ``name0/name1`` with ``/`` inside names replaced by ``-``."""
    return separator.join((name0.replace("/", "-"), name1.replace("/", "-")))


def list_h5_names(path: str | Path, marker: str | None = None) -> list[str]:
    """Names of the image groups in ``path`` (groups that directly hold datasets)."""
    path = Path(path)
    if not path.is_file():
        return []
    names: set[str] = set()
    try:
        with h5py.File(path, "r") as f:

            def visit(name: str, obj: object) -> None:
                if isinstance(obj, h5py.Dataset):
                    parent = name.rsplit("/", 1)[0] if "/" in name else ""
                    if marker is None or name.endswith("/" + marker):
                        names.add(parent)

            f.visititems(visit)
    except OSError as e:
        raise InputError(path, f"cannot read HDF5 file ({e})") from None
    return sorted(n for n in names if n)


def _write_group(f: h5py.File, name: str, arrays: Mapping[str, np.ndarray], attrs: Mapping | None,
                 compression: str | None = None) -> None:
    if name in f:
        del f[name]
    g = f.create_group(name)
    for key, value in arrays.items():
        value = np.asarray(value)
        packed = compression is not None and value.ndim > 0 and value.size > 0
        g.create_dataset(key, data=value, compression=compression if packed else None, shuffle=packed)
    for key, value in (attrs or {}).items():
        g.attrs[key] = value


class ShardedH5Writer:
    """Resumable writer of per-image groups into ``path`` (see the module docstring).

    Args:
        path: the final HDF5 file.
        flush_every: images buffered in memory before a shard is written.
        compression: HDF5 filter of the arrays (e.g. ``"gzip"``; default none).
    """

    def __init__(self, path: str | Path, flush_every: int = 32, compression: str | None = None) -> None:
        self.path = Path(path)
        self.compression = compression
        self.shard_dir = self.path.with_name(self.path.name + ".shards")
        self.flush_every = flush_every
        self._buffer: dict[str, tuple[dict[str, np.ndarray], dict]] = {}
        self._done: set[str] = set(list_h5_names(self.path))
        for shard in self._shards():
            try:
                self._done.update(list_h5_names(shard))
            except InputError:
                logger.warning("ignoring unreadable shard %s", shard)
                shard.unlink()

    def _shards(self) -> list[Path]:
        return sorted(self.shard_dir.glob("*.h5")) if self.shard_dir.is_dir() else []

    def done(self) -> set[str]:
        """Names stored in the final file or in flushed shards (plus the buffer)."""
        return self._done | set(self._buffer)

    def add(self, name: str, arrays: Mapping[str, np.ndarray], attrs: Mapping | None = None) -> None:
        self._buffer[name] = (dict(arrays), dict(attrs or {}))
        if len(self._buffer) >= self.flush_every:
            self.flush()

    def flush(self) -> None:
        if not self._buffer:
            return
        self.shard_dir.mkdir(parents=True, exist_ok=True)
        index = len(self._shards())
        shard = self.shard_dir / f"{index:06d}.h5"
        while shard.exists():
            index += 1
            shard = self.shard_dir / f"{index:06d}.h5"
        with atomic_path(shard) as tmp:
            with h5py.File(tmp, "w") as f:
                for name, (arrays, attrs) in self._buffer.items():
                    _write_group(f, name, arrays, attrs, self.compression)
        self._done.update(self._buffer)
        self._buffer.clear()

    def finalize(self, file_attrs: Mapping | None = None) -> Path:
        """Merge the existing file and all shards into ``path`` (atomically) and remove the shards."""
        self.flush()
        shards = self._shards()
        with atomic_path(self.path) as tmp:
            with h5py.File(tmp, "w") as out:
                sources = ([self.path] if self.path.is_file() else []) + shards
                for src in sources:
                    with h5py.File(src, "r") as f:
                        for name in list_h5_names(src):
                            if name in out:
                                del out[name]
                            parent = name.rsplit("/", 1)[0] if "/" in name else None
                            if parent:
                                out.require_group(parent)
                            f.copy(f[name], out, name=name)
                for key, value in (file_attrs or {}).items():
                    out.attrs[key] = value
        for shard in shards:
            shard.unlink()
        self._remove_shard_dir()
        return self.path

    def _remove_shard_dir(self) -> None:
        """Remove the shard folder with the temporary files an interrupted flush left in it (only the
        run that owns the output may call this: see :func:`visloc.io.lock.run_lock`)."""
        if not self.shard_dir.is_dir():
            return
        for leftover in self.shard_dir.glob(".*.tmp"):
            leftover.unlink(missing_ok=True)
        if not any(self.shard_dir.iterdir()):
            self.shard_dir.rmdir()

    def discard(self) -> None:
        """Forget everything stored: the file, the shards and the buffer (a run that starts afresh)."""
        self._buffer.clear()
        self._done.clear()
        for shard in self._shards():
            shard.unlink()
        self._remove_shard_dir()
        self.path.unlink(missing_ok=True)


class _ReadOnlyH5:
    """An HDF5 file opened for reading, as a context manager; errors name the file."""

    #: What the file is, for the message when it is missing.
    what = "HDF5 file"

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        if not self.path.is_file():
            raise InputError(self.path, f"{self.what} does not exist")
        try:
            self._file = h5py.File(self.path, "r")
        except OSError as e:
            raise InputError(self.path, f"cannot open HDF5 file ({e})") from None

    def __enter__(self):
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._file.close()


class H5Reader(_ReadOnlyH5):
    """Read-only access to a feature file; keep one open per process (h5py handles are not fork-safe)."""

    def __contains__(self, name: str) -> bool:
        return name in self._file

    def read(self, name: str, keys: Iterable[str] | None = None) -> dict[str, np.ndarray]:
        """The datasets of image ``name`` (all, or ``keys``) as numpy arrays."""
        if name not in self._file:
            raise InputError(self.path, f"no entry for image {name!r} (was it built from another image list?)")
        g = self._file[name]
        keys = list(keys) if keys is not None else list(g.keys())
        return {k: g[k][()] for k in keys}

    @property
    def attrs(self) -> dict:
        return dict(self._file.attrs)


# --- hloc match files -------------------------------------------------------------------------------


def match_arrays(matches: np.ndarray, scores: np.ndarray, num_keypoints0: int) -> dict[str, np.ndarray]:
    """hloc's per-pair datasets from index pairs.

    Args:
        matches: ``(M, 2)`` int, (keypoint of image 0, keypoint of image 1).
        scores: ``(M,)`` float similarity of each match.
        num_keypoints0: keypoints of image 0 (the length of ``matches0``).

    Returns:
        ``{"matches0": (N0,) int32, -1 where unmatched, "matching_scores0": (N0,) float16, 0 where unmatched}``.
    """
    matches0 = np.full(num_keypoints0, -1, np.int32)
    scores0 = np.zeros(num_keypoints0, np.float16)
    if len(matches):
        matches0[matches[:, 0]] = matches[:, 1]
        scores0[matches[:, 0]] = np.asarray(scores, np.float16)
    return {"matches0": matches0, "matching_scores0": scores0}


def find_pair(f: h5py.File, name0: str, name1: str) -> tuple[str, bool] | None:
    """The key of a pair in an open hloc match file and whether it is stored the other way round
    (``name1/name0``), as hloc's ``find_pair`` looks it up; ``None`` when absent."""
    for key, reverse in ((names_to_pair(name0, name1), False), (names_to_pair(name1, name0), True),
                         (names_to_pair(name0, name1, "_"), False), (names_to_pair(name1, name0, "_"), True)):
        if key in f and isinstance(f[key], h5py.Group) and "matches0" in f[key]:
            return key, reverse
    return None


class MatchReader(_ReadOnlyH5):
    """Read pairs from an hloc ``matches.h5`` (written by hloc or by visloc); keep one open per process."""

    what = "match file"

    def __contains__(self, pair: tuple[str, str]) -> bool:
        return find_pair(self._file, *pair) is not None

    def read(self, name0: str, name1: str) -> tuple[np.ndarray, np.ndarray]:
        """Matches of ``(name0, name1)`` as ``(M, 2)`` int index pairs (keypoint of name0, of name1) and
        ``(M,)`` float32 scores (1 where the file has no ``matching_scores0``).

        Raises:
            InputError: the pair is not in the file.
        """
        found = find_pair(self._file, name0, name1)
        if found is None:
            raise InputError(self.path, f"no matches for the pair {name0} {name1}")
        key, reverse = found
        g = self._file[key]
        matches0 = np.asarray(g["matches0"][()]).astype(np.int64)
        scores0 = (np.asarray(g["matching_scores0"][()], np.float32) if "matching_scores0" in g
                   else np.ones(len(matches0), np.float32))
        i0 = np.flatnonzero(matches0 >= 0)
        pairs = np.stack([i0, matches0[i0]], axis=1)
        scores = scores0[i0]
        if reverse:
            pairs = pairs[:, ::-1]
            order = np.argsort(pairs[:, 0], kind="stable")
            pairs, scores = pairs[order], scores[order]
        return np.ascontiguousarray(pairs), scores
