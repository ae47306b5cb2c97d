"""A map built in pieces: ``visloc map build --shard i/n`` and ``visloc map merge SHARD... --out MAP``.

A batch system (a Slurm array, any scheduler) builds a map without Dask in two steps:

1. ``map build DATA --out SHARD_i --shard i/n`` for ``i = 0 .. n-1`` (any machines, any order): shard ``i``
   takes slice ``i`` of the data set's database image names, sorted (:func:`shard_slice`), and writes
   their local features (and the global descriptors of a descriptor that needs no fitting) into its
   folder, with ``shard.json`` last: the shard is complete when its manifest exists. A rerun resumes
   (:class:`~visloc.io.h5.ShardedH5Writer`) or, for a complete shard, does nothing.
2. ``map merge SHARD_0 ... SHARD_n-1 --out MAP`` checks that every shard is complete, that all were built
   with the same settings (configuration, data set, split, reader options, library versions; it names
   the setting and the shard that differ) and that together they cover the database images exactly
   once; it then merges their features into ``MAP`` and finishes the build on this machine, as
   :func:`~visloc.localization.build.build_map` does: fitting the global descriptor (the VLAD codebook
   needs every image's features), describing the images, the index, the 3D points and the manifest.
   The result equals the one-machine build. A rerun with the same shards is idempotent (and skips the
   work when ``MAP`` is complete).

A shard folder::

    SHARD/shard.json            manifest (written last): signature, slice, assigned and stored image names
    SHARD/local_features.h5     the slice's local features (hloc layout, as in a map)
    SHARD/global_features.h5    its global descriptors, only for descriptors that need no fitting
    SHARD/build_config.json     the settings the shard was started with (a resumed shard must match)
    SHARD/shard.lock            while a process writes the shard (another live writer is refused)

The Dask driver (:mod:`.cluster`) builds the same shards as tasks, in ``MAP/shards/``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import shutil
import time
from pathlib import Path
from typing import Any

from ..datasets.base import Frame, Skipped
from ..errors import ConfigError, InputError
from ..io.atomic import atomic_path, write_json
from ..io.h5 import list_h5_names
from ..io.lock import run_lock
from . import map as M
from .build import (
    BUILD_CONFIG,
    BuildPlan,
    Mapper,
    MapSummary,
    check_started_config,
    config_differences,
    extract_all,
    finish_build,
    library_versions,
    plan_build,
    run_here,
    start_build,
)
from .triangulation import TriangulationConfig

logger = logging.getLogger(__name__)

#: The shard manifest (written last: a shard is complete when it exists).
SHARD_MANIFEST = "shard.json"
#: What ``visloc map merge`` merged into a map (its rerun with the same shards does nothing).
MERGED = "merged_shards.json"
SHARD_FORMAT = "visloc-map-shard"
#: Held while a shard is written (:func:`~visloc.io.lock.run_lock`: the writer's pid; a dead writer's is taken over).
SHARD_LOCK = "shard.lock"


@dataclasses.dataclass(frozen=True)
class ShardSpec:
    """Slice ``index`` of ``count`` (0-based: ``0/4`` .. ``3/4``)."""

    index: int
    count: int

    def __post_init__(self) -> None:
        if self.count < 1 or not 0 <= self.index < self.count:
            raise ConfigError(f"shard {self.index}/{self.count}: need 0 <= i < n (i is 0-based, e.g. 0/4 .. 3/4)")

    @classmethod
    def parse(cls, text: str) -> ShardSpec:
        """``"i/n"`` (e.g. ``$SLURM_ARRAY_TASK_ID/$SLURM_ARRAY_TASK_COUNT`` with ``--array=0-(n-1)``)."""
        i, sep, n = text.partition("/")
        try:
            if not sep:
                raise ValueError
            return cls(int(i), int(n))
        except ValueError:
            raise ConfigError(f"--shard {text!r}: expected i/n, the 0-based slice i of n (e.g. 0/4)") from None

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"


def shard_slice(names: list[str], shard: ShardSpec) -> list[str]:
    """Slice ``shard.index`` of ``shard.count`` contiguous, near-equal slices of the sorted ``names``: the
    same on every machine, and the slices of ``0/n .. n-1/n`` cover the names exactly once."""
    ordered = sorted(names)
    start = shard.index * len(ordered) // shard.count
    stop = (shard.index + 1) * len(ordered) // shard.count
    return ordered[start:stop]


def _encode_options(options: dict[str, Any]) -> dict[str, Any]:
    return {k: {"path": str(Path(v).resolve())} if isinstance(v, Path) else v for k, v in sorted(options.items())}


def _decode_options(options: dict[str, Any]) -> dict[str, Any]:
    return {k: Path(v["path"]) if isinstance(v, dict) and set(v) == {"path"} else v for k, v in options.items()}


def build_signature(plan: BuildPlan, dataset_options: dict[str, Any]) -> dict[str, Any]:
    """What every shard of one map must share: settings, data set, split, reader options, versions, and the
    database image list (its size and digest)."""
    names = sorted(f.name for f in plan.frames)
    return {
        "config": json.loads(json.dumps(dataclasses.asdict(plan.config))),
        "split": plan.split,
        "source": str(Path(plan.frameset.root).resolve()),
        "dataset_options": _encode_options(dataset_options),
        "versions": library_versions(),
        "num_images": len(names),
        "names_sha256": hashlib.sha256("\n".join(names).encode()).hexdigest(),
    }


def read_shard_manifest(shard_dir: str | Path) -> dict[str, Any] | None:
    """The manifest of a complete shard, ``None`` when it has none (not built, or interrupted)."""
    path = Path(shard_dir) / SHARD_MANIFEST
    if not path.is_file():
        return None
    try:
        manifest = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise InputError(path, f"invalid JSON ({e})") from None
    if not isinstance(manifest, dict) or manifest.get("format") != SHARD_FORMAT:
        raise InputError(path, f"not a visloc map shard manifest (format {SHARD_FORMAT!r})")
    return manifest


def shard_complete(shard_dir: Path, signature: dict[str, Any], assigned: list[str]) -> bool:
    """Whether ``shard_dir`` holds a complete shard of these images built with this signature."""
    try:
        manifest = read_shard_manifest(shard_dir)
    except InputError:
        return False
    return manifest is not None and manifest["signature"] == signature and manifest["assigned"] == assigned


def write_shard(frames: list[Frame], out: str | Path, config: M.MapConfig, signature: dict[str, Any],
                shard: ShardSpec) -> Path:
    """Extract the local features of ``frames`` (one shard) into the folder ``out``, manifest last.

    Resumes an interrupted shard; a complete one with the same signature and images is left as it is.
    Returns ``out`` (all a Dask task sends back)."""
    out = Path(out)
    assigned = sorted(f.name for f in frames)
    if shard_complete(out, signature, assigned):
        return out
    out.mkdir(parents=True, exist_ok=True)
    # one live writer per shard (a task still running for an interrupted client, a duplicated array job)
    with run_lock(out / SHARD_LOCK, f"the shard {out}"):
        check_started_config(out / BUILD_CONFIG, {"signature": signature, "shard": [shard.index, shard.count],
                                                   "assigned": assigned})
        (out / SHARD_MANIFEST).unlink(missing_ok=True)
        for leftover in out.glob(".*.tmp"):  # a file being written when a run was killed
            leftover.unlink(missing_ok=True)
        skipped: list[Skipped] = []
        extracted = extract_all(sorted(frames, key=lambda f: f.name), out, config, skipped)
        write_json(out / SHARD_MANIFEST, {
            "format": SHARD_FORMAT,
            "version": 1,
            "shard": {"index": shard.index, "count": shard.count},
            "signature": signature,
            "assigned": assigned,
            "names": [f.name for f in extracted],
            "skipped": [{"name": s.name, "path": str(s.path), "reason": s.reason} for s in skipped],
        })
    return out


@dataclasses.dataclass(frozen=True)
class ShardSummary:
    root: Path
    shard: ShardSpec
    num_images: int
    skipped: list[dict[str, str]]
    seconds: float


def build_shard(data: str | Path, out: str | Path, shard: ShardSpec, config: M.MapConfig = M.MapConfig(),
                split: str | None = None, **dataset_options: Any) -> ShardSummary:
    """Build shard ``shard`` of the map of ``data`` into the folder ``out`` (arguments as
    :func:`~visloc.localization.build.build_map`; merge the shards with :func:`merge_shards`)."""
    t0 = time.perf_counter()
    plan = plan_build(Path(data).resolve(), config, split, **dataset_options)
    names = set(shard_slice([f.name for f in plan.frames], shard))
    frames = [f for f in plan.frames if f.name in names]
    out = write_shard(frames, out, plan.config, build_signature(plan, dataset_options), shard)
    manifest = read_shard_manifest(out) or {}
    seconds = time.perf_counter() - t0
    logger.info("shard %s: %d of %d images -> %s in %.1f s", shard, len(frames), len(plan.frames), out, seconds)
    return ShardSummary(out, shard, len(manifest.get("names", [])), list(manifest.get("skipped", [])), seconds)


def file_digest(path: Path) -> str:
    """SHA-256 of the file's bytes (hex)."""
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _load_shards(shards: list[Path]) -> list[tuple[Path, dict[str, Any]]]:
    """Manifests of ``shards`` in the canonical order (by first image name), checked to be complete, built
    with one signature, and not overlapping."""
    if not shards:
        raise ConfigError("map merge: give the shard folders to merge")
    loaded = []
    for shard in shards:
        manifest = read_shard_manifest(shard)
        if manifest is None:
            what = "not a shard folder" if not Path(shard).is_dir() else "an incomplete shard"
            raise InputError(shard, f"{what} (no {SHARD_MANIFEST}): its `visloc map build --shard i/n` did not "
                                    "finish; rerun it (it resumes)")
        loaded.append((Path(shard), manifest))
    first, reference = loaded[0]
    for shard, manifest in loaded[1:]:
        diff = config_differences(reference["signature"], manifest["signature"])
        if diff:
            changed = "; ".join(f"{key}: {old!r} in {first} vs {new!r}" for key, old, new in diff)
            raise ConfigError(f"{shard}: built with other settings than {first} ({changed}); rebuild it with the "
                              "same settings and versions")
    owner: dict[str, Path] = {}
    for shard, manifest in loaded:
        for name in manifest["assigned"]:
            if name in owner:
                raise InputError(shard, f"overlaps {owner[name]}: both hold {name} (the same shard given twice, or "
                                        "shards of different counts n?)")
            owner[name] = shard
    return sorted(loaded, key=lambda sm: (sm[1]["assigned"][:1], str(sm[0])))


def link_or_copy(src: Path, dst: Path) -> None:
    """``dst`` becomes ``src``'s content, atomically: a hard link where the file system allows it (feature files
    are never changed in place: they are replaced), else a copy."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = dst.with_name(f".{dst.name}.{os.getpid()}.tmp")
    tmp.unlink(missing_ok=True)
    try:
        os.link(src, tmp)
    except OSError:
        with atomic_path(dst) as copy:
            shutil.copyfile(src, copy)
        return
    os.replace(tmp, dst)


def merge_into(plan: BuildPlan, shards: list[Path], out: str | Path,
               triangulation: TriangulationConfig = TriangulationConfig(),
               mapper: Mapper = run_here, t0: float | None = None) -> MapSummary:
    """Copy the features of complete ``shards`` (in this order) into the map folder ``out`` and finish the
    build there (:func:`~visloc.localization.build.finish_build`; images no shard holds are extracted here)."""
    out = start_build(plan, out)
    for k, shard in enumerate(shards):
        for file in (M.LOCAL_FEATURES, M.GLOBAL_FEATURES):
            src = shard / file
            if src.is_file() and list_h5_names(src):
                # where ShardedH5Writer keeps flushed shards: finish_build's extraction merges them atomically
                link_or_copy(src, out / (file + ".shards") / f"merge-{k:05d}.h5")
    return finish_build(plan, out, triangulation, mapper, t0=t0)


def merge_shards(shards: list[str | Path], out: str | Path, triangulation: TriangulationConfig = TriangulationConfig(),
                 mapper: Mapper = run_here) -> MapSummary:
    """Merge the shards of one map (from :func:`build_shard`) into the map folder ``out`` and finish it.

    Raises:
        InputError: a shard is incomplete, two overlap, or together they miss images of the data set.
        ConfigError: shards built with different settings (the message names the setting and the shard).
    """
    t0 = time.perf_counter()
    loaded = _load_shards([Path(s) for s in shards])
    signature = loaded[0][1]["signature"]
    out = Path(out)
    record = {"signature": signature,
              "shards": [{"path": str(s.resolve()), "sha256": file_digest(s / SHARD_MANIFEST)} for s, _ in loaded]}
    manifest_path = out / M.MANIFEST
    if manifest_path.is_file() and (out / MERGED).is_file():
        try:
            same = json.loads((out / MERGED).read_text()) == json.loads(json.dumps(record))
        except json.JSONDecodeError:
            same = False
        if same:
            done = json.loads(manifest_path.read_text())
            logger.info("%s is already the merge of these %d shards", out, len(loaded))
            return MapSummary(out, len(done["names"]), [Skipped(s["name"], Path(s["path"]), s["reason"])
                                                        for s in done["skipped"]], done["points"],
                              time.perf_counter() - t0)
    plan = plan_build(Path(signature["source"]), M.MapConfig(**signature["config"]), signature["split"],
                      **_decode_options(signature["dataset_options"]))
    expected = {f.name for f in plan.frames}
    covered = {n for _, m in loaded for n in m["assigned"]}
    missing, extra = sorted(expected - covered), sorted(covered - expected)
    if missing:
        counts = sorted({m["shard"]["count"] for _, m in loaded})
        given = sorted(m["shard"]["index"] for _, m in loaded)
        raise InputError(loaded[0][0], f"the shards cover {len(covered)} of {len(expected)} database images: "
                                       f"{len(missing)} missing, e.g. {missing[0]} (shards given: {given} of "
                                       f"{counts}; is one left out?)")
    if extra:
        raise InputError(loaded[0][0], f"the shards hold {len(extra)} images that are not database images of "
                                       f"{signature['source']}, e.g. {extra[0]}")
    (out / MERGED).unlink(missing_ok=True)
    summary = merge_into(plan, [s for s, _ in loaded], out, triangulation, mapper, t0=t0)
    write_json(out / MERGED, record)
    return summary
