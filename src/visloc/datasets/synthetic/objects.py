"""Object retrieval queries on the embedded world: one poster or box as the region of interest.

A query is a test-traversal frame in which one object (a poster, or a box: its five faces) is well visible;
its region of interest is the bounding box of the object's visible pixels. Ground truth is exact, from
rendering (the quad seen at every pixel), not from any image matching:

* **positives**: database (training-traversal) frames that see that very object over
  ``min_positive_fraction`` of their pixels;
* **negatives**: database frames that see none of it, nor any copy of its design hanging elsewhere;
* **junk**: the rest: frames that see a little of it, or a copy of its design (posters repeated across
  rooms: the same picture, another object; neither right nor wrong).

Files (:func:`write_object_queries`, by default into the world folder; :func:`make_world` writes them for
worlds made with the hard options, e.g. ``--preset hard``)::

    object_queries.txt    one query a line: ``name x0 y0 x1 y1``, integer pixel bounds, x0 <= x < x1, y0 <= y < y1
    object_queries.json   {"database": [names], "queries": [{"name", "box", "object", "kind", "scene",
                           "moved", "texture_repeated", "copies", "visible_pixels", "positives", "negatives",
                           "junk"}], "criteria": {...}}

Names are frame names relative to the world folder (``office/seq-04/frame-000012.color.png``), as the
7-Scenes reader names them.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ...errors import ConfigError, InputError
from ...geometry import Camera
from ...io.atomic import write_json, write_text
from .changes import object_id
from .config import WorldConfig
from .layout import build_world
from .render import render_layers
from .scene import World

logger = logging.getLogger(__name__)

OBJECT_QUERIES_TXT = "object_queries.txt"
OBJECT_QUERIES_JSON = "object_queries.json"


@dataclass(frozen=True)
class ObjectQueryConfig:
    """What makes a query and its ground truth.

    Attributes:
        min_query_fraction: the object covers at least this share of the query image.
        min_inside_fraction: at least this share of the object's projection (unoccluded, unbounded image) lies
            inside the query image: it is not cut much by the image border.
        min_unoccluded_fraction: at least this share of the object's projection inside the image is visible
            (not hidden by other objects or an occluder).
        min_positive_fraction: a database frame is a positive when it sees the object over this share of its
            pixels; one that sees any of it is not a negative.
        queries_per_object: test frames taken per object (the ones that see it best).
    """

    min_query_fraction: float = 0.03
    min_inside_fraction: float = 0.8
    min_unoccluded_fraction: float = 0.7
    min_positive_fraction: float = 0.01
    queries_per_object: int = 1

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.name == "queries_per_object":
                if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                    raise ConfigError(f"ObjectQueryConfig.{f.name} must be a positive integer, got {value!r}")
            elif not 0.0 <= float(value) <= 1.0:
                raise ConfigError(f"ObjectQueryConfig.{f.name} must be in [0, 1], got {value!r}")


@dataclass
class ObjectQuery:
    """One object query (see the module docstring)."""

    name: str
    scene: str
    object: str
    kind: str
    box: tuple[int, int, int, int]
    visible_pixels: int
    moved: bool
    texture_repeated: bool
    copies: list[str] = field(default_factory=list)
    positives: list[str] = field(default_factory=list)
    negatives: list[str] = field(default_factory=list)
    junk: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["box"] = list(self.box)
        return d


def frame_name(scene: str, sequence: int, frame: int) -> str:
    """The 7-Scenes reader's name of a frame: ``<scene>/seq-XX/frame-NNNNNN.color.png``."""
    return f"{scene}/seq-{sequence:02d}/frame-{frame:06d}.color.png"


def object_pixels(quad_index: np.ndarray, quads: list) -> dict[str, np.ndarray]:
    """``{object id: (H, W) bool}`` of the objects visible in a frame rendered from ``quads``."""
    ids = [object_id(q) for q in quads]
    out: dict[str, np.ndarray] = {}
    present = np.unique(quad_index[quad_index >= 0])
    for k in present:
        oid = ids[int(k)]
        if oid is None:
            continue
        mask = quad_index == k
        out[oid] = out[oid] | mask if oid in out else mask
    return out


def object_counts(quad_index: np.ndarray, quads: list) -> dict[str, int]:
    """``{object id: visible pixels}`` of a frame rendered from ``quads``."""
    counts = np.bincount(quad_index[quad_index >= 0].ravel(), minlength=len(quads))
    out: dict[str, int] = {}
    for k in np.flatnonzero(counts):
        oid = object_id(quads[int(k)])
        if oid is not None:
            out[oid] = out.get(oid, 0) + int(counts[k])
    return out


def _enlarged(camera: Camera, margin: float) -> tuple[Camera, int, int]:
    """The camera with ``margin`` of the image size added on every side, and the offsets of the image in it."""
    dx, dy = int(round(margin * camera.width)), int(round(margin * camera.height))
    (fx, fy), (cx, cy) = camera.focal, camera.principal_point
    big = Camera.pinhole(fx, fy, cx + dx, cy + dy, camera.width + 2 * dx, camera.height + 2 * dy)
    return big, dx, dy


def projection_fractions(object_quads: list, visible: int, camera: Camera, pose, margin: float = 0.5
                         ) -> tuple[float, float]:
    """``(inside, unoccluded)``: the share of the object's unoccluded projection that falls inside the image,
    and the share of that part which is ``visible`` (pixels seen in the real frame). The projection is
    rendered alone on an image enlarged by ``margin`` on every side; a projection reaching the enlarged
    border counts as mostly outside (``inside = 0``)."""
    big, dx, dy = _enlarged(camera, margin)
    alone = render_layers(object_quads, big, pose).quad_index >= 0
    total = int(alone.sum())
    if total == 0:
        return 0.0, 0.0
    if alone[0].any() or alone[-1].any() or alone[:, 0].any() or alone[:, -1].any():
        return 0.0, 0.0
    inside = int(alone[dy:dy + camera.height, dx:dx + camera.width].sum())
    return inside / total, (visible / inside if inside else 0.0)


def _database_visibility(world: World) -> tuple[list[str], list[str], list[dict[str, int]]]:
    """Names, scenes and ``{object id: pixels}`` of every database (training) frame."""
    names, scenes, counts = [], [], []
    for scene in world.scenes:
        for t in scene.train_traversals:
            for i, pose in enumerate(t.poses):
                quad_index = render_layers(scene.quads, world.camera, pose).quad_index
                names.append(frame_name(scene.name, t.sequence, i))
                scenes.append(scene.name)
                counts.append(object_counts(quad_index, scene.quads))
    return names, scenes, counts


def _object_textures(world: World) -> dict[str, set[str]]:
    """Texture names of every object of the database world."""
    out: dict[str, set[str]] = {}
    for q in world.quads:
        oid = object_id(q)
        if oid is not None:
            out.setdefault(oid, set()).add(q.texture.name)
    return out


def object_queries(world: World, config: ObjectQueryConfig = ObjectQueryConfig()) -> tuple[list[ObjectQuery], list[str]]:
    """The object queries of ``world``'s test traversals and the database frame names.

    Objects that no database frame sees over ``min_positive_fraction`` get no query.

    Returns:
        Queries (sorted by name) and the names of the database frames (every training frame, sorted as the
        world's traversals are: scene, sequence, frame).
    """
    camera = world.camera
    n_pixels = camera.width * camera.height
    db_names, _, db_counts = _database_visibility(world)
    textures = _object_textures(world)
    copies = {oid: sorted(o for o, t in textures.items() if o != oid and t & tex) for oid, tex in textures.items()}
    moved = {c["object"] for s in world.scenes for c in s.changes if c["change"] == "moved"}

    # Candidate (object, frame) views in the test traversals.
    candidates: dict[str, list[tuple[int, str, str, tuple[int, int, int, int]]]] = {}
    kinds: dict[str, str] = {}
    for scene in world.scenes:
        for t in scene.test_traversals:
            for i, pose in enumerate(t.poses):
                quads = scene.frame_quads(t.sequence, i)
                quad_index = render_layers(quads, camera, pose).quad_index
                for oid, mask in object_pixels(quad_index, quads).items():
                    visible = int(mask.sum())
                    if visible < config.min_query_fraction * n_pixels:
                        continue
                    own = [q for q in quads if object_id(q) == oid]
                    inside, unoccluded = projection_fractions(own, visible, camera, pose)
                    if inside < config.min_inside_fraction or unoccluded < config.min_unoccluded_fraction:
                        continue
                    rows, cols = np.nonzero(mask)
                    box = (int(cols.min()), int(rows.min()), int(cols.max()) + 1, int(rows.max()) + 1)
                    kinds[oid] = own[0].kind
                    candidates.setdefault(oid, []).append((visible, frame_name(scene.name, t.sequence, i),
                                                           scene.name, box))
    # The best views of each object; a frame is the query of one object only (its name keys the ROI file).
    used: set[str] = set()
    queries: list[ObjectQuery] = []
    order = sorted(candidates, key=lambda o: (-max(c[0] for c in candidates[o]), o))
    for oid in order:
        taken = 0
        positives, negatives, junk = [], [], []
        for db, counts in zip(db_names, db_counts, strict=True):
            seen = counts.get(oid, 0)
            if seen >= config.min_positive_fraction * n_pixels:
                positives.append(db)
            elif seen == 0 and not any(counts.get(c, 0) for c in copies[oid]):
                negatives.append(db)
            else:
                junk.append(db)
        if not positives:  # no database view sees it well: nothing to retrieve
            continue
        for visible, name, scene_name, box in sorted(candidates[oid], key=lambda c: (-c[0], c[1])):
            if taken >= config.queries_per_object:
                break
            if name in used:
                continue
            used.add(name)
            taken += 1
            queries.append(ObjectQuery(name=name, scene=scene_name, object=oid, kind=kinds[oid], box=box,
                                       visible_pixels=visible, moved=oid in moved,
                                       texture_repeated=bool(copies[oid]), copies=copies[oid],
                                       positives=list(positives), negatives=list(negatives), junk=list(junk)))
    queries.sort(key=lambda q: q.name)
    return queries, db_names


def _world_of(world_or_root: World | str | Path) -> tuple[World, Path | None]:
    if isinstance(world_or_root, World):
        return world_or_root, None
    root = Path(world_or_root)
    meta = root / "dataset.json"
    if not meta.is_file():
        raise InputError(root, "not a synthetic world folder (no dataset.json): make it with `visloc world make`")
    try:
        data = json.loads(meta.read_text(encoding="utf-8"))
        config = WorldConfig.from_dict(data["world"])
    except (ValueError, KeyError, TypeError) as e:
        raise InputError(meta, f"cannot read the world config ({e})") from None
    return build_world(config), root


def write_object_queries(world_or_root: World | str | Path, out_dir: str | Path | None = None,
                         config: ObjectQueryConfig = ObjectQueryConfig()) -> Path:
    """Compute the object queries of a world and write ``object_queries.txt`` and ``.json``.

    Args:
        world_or_root: a world folder written by :func:`make_world` (its config is read from ``dataset.json``)
            or an in-memory :class:`World`.
        out_dir: where to write (default: the world folder; required for an in-memory world).
        config: the selection and ground-truth criteria.

    Returns:
        The path of ``object_queries.json``.
    """
    world, root = _world_of(world_or_root)
    out = Path(out_dir) if out_dir is not None else root
    if out is None:
        raise ConfigError("write_object_queries: give out_dir for an in-memory world")
    queries, db_names = object_queries(world, config)
    spec = {
        "format": "visloc-object-queries",
        "version": 1,
        "box_format": "x0 y0 x1 y1: integer pixel bounds, x0 <= x < x1, y0 <= y < y1",
        "database": db_names,
        "database_split": "train",
        "criteria": dataclasses.asdict(config),
        "rule": "positives: database frames seeing the object over min_positive_fraction of their pixels; "
                "negatives: frames seeing none of it nor a copy of its texture; junk: the rest",
        "queries": [q.to_json() for q in queries],
    }
    write_text(out / OBJECT_QUERIES_TXT, "".join(f"{q.name} {' '.join(str(v) for v in q.box)}\n" for q in queries))
    path = out / OBJECT_QUERIES_JSON
    write_json(path, spec)
    logger.info("%d object queries (%d database frames) -> %s", len(queries), len(db_names), path)
    return path
