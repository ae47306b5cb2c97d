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


def _write_group(f: h5py.File, name: str, arrays: Mapping[str, np.ndarray], attrs: Mapping | None) -> None:
    if name in f:
        del f[name]
    g = f.create_group(name)
    for key, value in arrays.items():
        g.create_dataset(key, data=np.asarray(value))
    for key, value in (attrs or {}).items():
        g.attrs[key] = value


class ShardedH5Writer:
    """Resumable writer of per-image groups into ``path`` (see the module docstring).

    Args:
        path: the final HDF5 file.
        flush_every: images buffered in memory before a shard is written.
    """

    def __init__(self, path: str | Path, flush_every: int = 32) -> None:
        self.path = Path(path)
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
                    _write_group(f, name, arrays, attrs)
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
        if self.shard_dir.is_dir() and not any(self.shard_dir.iterdir()):
            self.shard_dir.rmdir()
        return self.path


class H5Reader:
    """Read-only access to a feature file; keep one open per process (h5py handles are not fork-safe)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        if not self.path.is_file():
            raise InputError(self.path, "HDF5 file does not exist")
        try:
            self._file = h5py.File(self.path, "r")
        except OSError as e:
            raise InputError(self.path, f"cannot open HDF5 file ({e})") from None

    def __enter__(self) -> H5Reader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._file.close()

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
