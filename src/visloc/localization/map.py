"""The on-disk map of a scene (or of many scenes in one world frame) and its reader.

A map folder holds, in formats hloc users know::

    MAP/map.json              manifest: config, versions, image list (written last: its presence
                              means the map is complete)
    MAP/poses.txt             database poses, hloc format (name qw qx qy qz tx ty tz, world-to-camera);
                              empty in a retrieval-only map (built from images without poses)
    MAP/cameras.txt           database intrinsics, hloc query-list format (name MODEL W H params...)
    MAP/local_features.h5     keypoints / descriptors / scores / image_size per image (hloc layout)
    MAP/global_features.h5    global_descriptor per image
    MAP/global_index.faiss    FAISS index over the global descriptors (rows in map.json "names" order):
                              exact (flat) or IVF-PQ as ``MapConfig.index`` says; maps without an
                              ``index`` entry in map.json are flat
    MAP/global_state.npz      state of the global descriptor (e.g. the VLAD codebook, the CNN descriptor's
                              PCA whitening)
    MAP/points3D.h5           points3D (N, 3) per image: the world point of each keypoint, NaN if unknown
                              (from registered depth, or triangulated from database pairs)

``visloc map add`` (:mod:`.extend`) writes the next state of these files in ``MAP/add.staging/`` and moves
them in with the manifest last (``MAP/add.lock`` while it runs); a map without ``map.json`` but with
``MAP/add.staging/commit.json`` is an interrupted addition that a rerun of ``visloc map add`` completes.
"""

from __future__ import annotations

import json
import zipfile
from dataclasses import dataclass, field
from functools import cached_property, lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ConfigError, InputError
from ..features import LocalFeatures, extractors
from ..geometry import Camera, Pose
from ..io.cameras import read_cameras
from ..io.h5 import H5Reader
from ..io.poses import read_poses
from ..retrieval import GlobalIndex, global_descriptors
from ..retrieval.index import IndexConfig

MANIFEST = "map.json"
POSES = "poses.txt"
CAMERAS = "cameras.txt"
LOCAL_FEATURES = "local_features.h5"
GLOBAL_FEATURES = "global_features.h5"
GLOBAL_INDEX = "global_index.faiss"
GLOBAL_STATE = "global_state.npz"
POINTS3D = "points3D.h5"
#: Where ``visloc map add`` prepares the map's next files, and the record whose presence means they are
#: complete and being moved in (see :mod:`.extend`).
ADD_STAGING = "add.staging"
ADD_COMMIT = "commit.json"


@dataclass(frozen=True)
class MapConfig:
    """How a map is built.

    Attributes:
        extractor / extractor_options: local feature plug-in (``sift``, ``aliked``) and its options.
        global_descriptor / global_options: global descriptor plug-in (``vlad``) and its options.
        points: where database 3D points come from: ``auto`` (registered depth when the data set has
            it, else triangulation), ``depth``, ``triangulate`` or ``none``.
        index: the FAISS index of the global descriptors, :class:`~visloc.retrieval.index.IndexConfig`
            fields (``kind="flat"`` or ``"ivfpq"``, ``nlist``, ``m``, ``nbits``, ``nprobe``, ...); empty
            is the exact flat index.
    """

    extractor: str = "sift"
    extractor_options: dict[str, Any] = field(default_factory=dict)
    global_descriptor: str = "vlad"
    global_options: dict[str, Any] = field(default_factory=dict)
    points: str = "auto"
    index: dict[str, Any] = field(default_factory=dict)

    def index_config(self) -> IndexConfig:
        """:attr:`index` as an :class:`~visloc.retrieval.index.IndexConfig`.

        Raises:
            ConfigError: an unknown key or a bad value.
        """
        return index_config(self.index)


def index_config(options: dict[str, Any] | None) -> IndexConfig:
    """An :class:`~visloc.retrieval.index.IndexConfig` from ``key: value`` options (ConfigError naming the
    valid keys on an unknown one)."""
    import dataclasses

    valid = [f.name for f in dataclasses.fields(IndexConfig)]
    unknown = sorted(set(options or {}) - set(valid))
    if unknown:
        raise ConfigError(f"unknown index option {unknown[0]!r}; valid: {', '.join(valid)}")
    return IndexConfig(**(options or {}))


def normalize_rows(vectors: np.ndarray) -> np.ndarray:
    """L2-normalised float32 copy of ``(N, D)`` descriptors (what the FAISS index holds)."""
    vectors = np.asarray(vectors, dtype=np.float32)
    return vectors / np.maximum(np.linalg.norm(vectors, axis=-1, keepdims=True), 1e-12)


def index_vectors(descriptor: Any, vectors: np.ndarray) -> np.ndarray:
    """What the FAISS index holds for raw ``(N, D)`` descriptors of the plug-in ``descriptor``: their
    L2-normalised retrieval part. A plug-in whose raw vector carries more than its retrieval descriptor
    (``relpose`` with the correlation head) says which part with a ``retrieval_part`` method."""
    part = getattr(descriptor, "retrieval_part", None)
    return normalize_rows(part(vectors) if part is not None else vectors)


def read_local_features(reader: H5Reader, name: str) -> LocalFeatures:
    """Local features of image ``name`` from an hloc-layout feature file."""
    d = reader.read(name, ("keypoints", "descriptors", "scores", "image_size"))
    return LocalFeatures(
        keypoints=d["keypoints"].astype(np.float32),
        descriptors=np.ascontiguousarray(d["descriptors"].T, dtype=np.float32),
        scores=d["scores"].astype(np.float32),
        image_size=(int(d["image_size"][0]), int(d["image_size"][1])),
    )


def load_global_descriptor(config: MapConfig, root: str | Path):
    """The global-descriptor plug-in of a map built with ``config`` in ``root``, with its state from
    ``root/global_state.npz`` when it has one.

    Raises:
        InputError: the state file is missing, unreadable, holds pickled (object) data (never
            loaded: unpickling runs code) or does not fit the descriptor.
    """
    desc = global_descriptors.create(config.global_descriptor, **config.global_options)
    state_path = Path(root) / GLOBAL_STATE
    # a codebook fitted on local features (needs_fit) or a fit on the database's global vectors
    # (fits_on_vectors, e.g. the CNN descriptor's PCA whitening): both saved at map build
    if getattr(desc, "needs_fit", False) or getattr(desc, "fits_on_vectors", False):
        if not state_path.is_file():
            raise InputError(state_path, "global descriptor state is missing")
        try:
            loaded = np.load(state_path, allow_pickle=False)
            if not isinstance(loaded, np.lib.npyio.NpzFile):
                raise ValueError("a single array, not an .npz archive")
            with loaded as state:
                arrays = {k: state[k] for k in state.files}
        except (ValueError, OSError, EOFError, KeyError, zipfile.BadZipFile) as e:
            raise InputError(state_path, f"cannot read the global descriptor state ({e})") from None
        try:
            desc.load_state(**arrays)
        except (TypeError, ValueError) as e:
            raise InputError(
                state_path, f"not a {config.global_descriptor} state: holds {sorted(arrays)} ({e})"
            ) from None
    return desc


class Map:
    """A built map, opened for localization (load once, localize many).

    Attributes:
        root: the map folder.
        manifest: the parsed ``map.json``.
        names: database image names (row order of the global index).
        poses / cameras / scenes / image_paths: per database image.
        index: the global-descriptor search index.
    """

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        manifest = self.root / MANIFEST
        if not manifest.is_file():
            if (self.root / ADD_STAGING / ADD_COMMIT).is_file():
                raise InputError(self.root, f"not a complete visloc map (no {MANIFEST}): a `visloc map add` was "
                                            "interrupted while it moved its files in; rerun it to finish")
            raise InputError(self.root, f"not a complete visloc map (no {MANIFEST}; build it with `visloc map build`)")
        try:
            self.manifest: dict[str, Any] = json.loads(manifest.read_text())
        except json.JSONDecodeError as e:
            raise InputError(manifest, f"invalid JSON ({e})") from None
        self.names: list[str] = list(self.manifest["names"])
        self.scenes: dict[str, str] = dict(self.manifest["scenes"])
        self.image_paths: dict[str, Path] = {n: Path(p) for n, p in self.manifest["image_paths"].items()}
        self.poses: dict[str, Pose] = read_poses(self.root / POSES)
        self.cameras: dict[str, Camera] = read_cameras(self.root / CAMERAS)
        missing = [n for n in self.names if n not in self.cameras or (self.poses and n not in self.poses)]
        if missing:
            raise InputError(self.root, f"{len(missing)} images lack a pose or camera, e.g. {missing[0]}")
        self.config = MapConfig(**self.manifest["config"])
        self.index = GlobalIndex.load(self.root / GLOBAL_INDEX, self.names)
        self._local = H5Reader(self.root / LOCAL_FEATURES)
        stored = self._local.attrs.get("extractor")
        if isinstance(stored, bytes):
            stored = stored.decode("utf-8", "replace")
        if stored is not None and str(stored) != self.config.extractor:
            self._local.close()
            raise InputError(
                self.root,
                f"{MANIFEST} names the extractor {self.config.extractor!r} but {LOCAL_FEATURES} holds "
                f"{str(stored)!r} features (files of two builds mixed?); rebuild the map",
            )
        self._global = H5Reader(self.root / GLOBAL_FEATURES)
        points_path = self.root / POINTS3D
        self._points = H5Reader(points_path) if points_path.is_file() else None
        self.local_features = lru_cache(maxsize=256)(self._read_local)
        self.points3D = lru_cache(maxsize=256)(self._read_points)
        self.global_descriptor = lru_cache(maxsize=4096)(self._read_global)

    @property
    def has_points(self) -> bool:
        return self._points is not None

    @property
    def has_poses(self) -> bool:
        """``False`` for a retrieval-only map (images without poses): it can be searched, not localized in."""
        return bool(self.poses)

    @cached_property
    def extractor(self):
        """The map's local-feature extractor (made once; queries must use the same)."""
        return self.make_extractor()

    @cached_property
    def descriptor(self):
        """The map's global-descriptor plug-in with its state (made once; queries must use the same)."""
        return self.make_global_descriptor()

    def make_extractor(self):
        return extractors.create(self.config.extractor, **self.config.extractor_options)

    def make_global_descriptor(self):
        """The map's global-descriptor plug-in, with its state from ``global_state.npz`` when it has one
        (see :func:`load_global_descriptor`)."""
        return load_global_descriptor(self.config, self.root)

    def _read_local(self, name: str) -> LocalFeatures:
        return read_local_features(self._local, name)

    def _read_global(self, name: str) -> np.ndarray:
        """The stored (raw) global descriptor ``(D,)`` of a database image."""
        return self._global.read(name, ("global_descriptor",))["global_descriptor"].astype(np.float32)

    def _read_points(self, name: str) -> np.ndarray | None:
        if self._points is None or name not in self._points:
            return None
        return self._points.read(name, ("points3D",))["points3D"].astype(np.float64)

    def close(self) -> None:
        self._local.close()
        self._global.close()
        if self._points is not None:
            self._points.close()
