"""Geometry of the synthetic world: textured planar rectangles (quads), boxes, rooms, the world.

World frame: **z up**, metres. Room ``i`` occupies ``x0_i <= x <= x0_i + width_i``, ``0 <= y <= depth_i``,
``0 <= z <= height_i`` (floor at ``z = 0``); rooms are placed side by side along +x, separated by
opaque walls :data:`WALL_THICKNESS` thick, and all share this one coordinate system (like the
University data set). Only the inside faces of the rooms are modelled: a camera inside a room sees only
that room; a camera outside every room sees the rooms' inner faces through the (culled) backs of walls.

A :class:`Quad` is a rectangle ``origin + a * u + b * v`` (``0 <= a, b <= 1``) seen from the side of
its front normal ``cross(v, u)``: seen from the front, ``u`` runs left to right along the texture
columns and ``v`` top to bottom along the texture rows, so a texture is never seen mirrored.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field

import numpy as np

from ...geometry import Camera
from ...geometry.pose import frozen_array
from .config import WorldConfig
from .textures import (
    Texture,
)
from .trajectories import LoopSpec, Traversal

#: Thickness of the opaque walls between neighbouring rooms (m).
WALL_THICKNESS = 0.2
#: Posters hang this far in front of their wall (m).
POSTER_OFFSET = 0.005
#: Smallest distance between any camera centre and a wall or box (m).
CLEARANCE = 0.55

EZ = np.array([0.0, 0.0, 1.0])

# Independent random streams per scene (the world does not change when an unrelated stream does).
_DIMS, _LAYOUT, _TEXTURES, _PATHS, _PHOTOMETRIC, _SHARED = 0, 1, 2, 3, 4, 5
#: Stream tag of the per-frame sensor-noise generators (see :func:`frame_rng`).
FRAME_NOISE_STREAM = 6
# Streams of the hard options only (posters in every room, the lamp, moved / removed objects, occluders).
_SHARED_ALL, _LIGHTING, _CHANGES, _OCCLUDERS = 7, 8, 9, 10
#: Stream tag of the per-frame noise of the night exposure (see :func:`~.render.render_frame`).
NIGHT_NOISE_STREAM = 11


def stream(seed: int, *keys: int) -> np.random.Generator:
    """Deterministic random generator for ``(seed, *keys)``."""
    return np.random.default_rng(np.random.SeedSequence([seed, *keys]))


def frame_rng(seed: int, scene: int, sequence: int, frame: int) -> np.random.Generator:
    """Generator of the sensor noise of one frame (independent of the order frames are made in)."""
    return stream(seed, FRAME_NOISE_STREAM, scene, sequence, frame)


@dataclass(frozen=True, eq=False)
class Quad:
    """A textured rectangle.

    Attributes:
        origin: ``(3,)`` corner at the texture's top-left (texel ``(0, 0)`` corner), world frame.
        u: ``(3,)`` edge vector along the texture columns (left to right seen from the front).
        v: ``(3,)`` edge vector along the texture rows (top to bottom seen from the front), ``u . v = 0``.
        texture: its :class:`~visloc.datasets.synthetic.textures.Texture`; level-0 texel ``(s, t)``
            (centres at integers) lies at ``a = (s + 0.5) / W``, ``b = (t + 0.5) / H``.
        name: unique label, e.g. ``office/wall-south``.
        kind: ``wall``, ``floor``, ``ceiling``, ``box`` or ``poster``.
        scene: index of the scene it belongs to (-1: none).
    """

    origin: np.ndarray
    u: np.ndarray
    v: np.ndarray
    texture: Texture
    name: str = ""
    kind: str = ""
    scene: int = -1

    def __post_init__(self) -> None:
        for attr in ("origin", "u", "v"):
            value = frozen_array(getattr(self, attr)).reshape(-1)
            if value.shape != (3,) or not np.all(np.isfinite(value)):
                raise ValueError(f"Quad.{attr} must be 3 finite numbers, got {value}")
            object.__setattr__(self, attr, value)
        lu, lv = np.linalg.norm(self.u), np.linalg.norm(self.v)
        if lu <= 0 or lv <= 0:
            raise ValueError("Quad edges must have positive length")
        if abs(float(self.u @ self.v)) > 1e-9 * lu * lv:
            raise ValueError("Quad edges u and v must be perpendicular")

    @property
    def normal(self) -> np.ndarray:
        """``(3,)`` unit front normal ``cross(v, u) / |.|``."""
        n = np.cross(self.v, self.u)
        return n / np.linalg.norm(n)

    @property
    def width(self) -> float:
        return float(np.linalg.norm(self.u))

    @property
    def height(self) -> float:
        return float(np.linalg.norm(self.v))

    @property
    def corners(self) -> np.ndarray:
        """``(4, 3)``: origin, origin + u, origin + u + v, origin + v."""
        o, u, v = self.origin, self.u, self.v
        return np.stack([o, o + u, o + u + v, o + v])

    def point(self, ab: np.ndarray) -> np.ndarray:
        """World points ``(N, 3)`` at rectangle coordinates ``ab`` ``(N, 2)`` in ``[0, 1]``."""
        ab = np.asarray(ab, dtype=np.float64).reshape(-1, 2)
        return self.origin + ab[:, :1] * self.u + ab[:, 1:] * self.v

    def rect_coords(self, points: np.ndarray) -> np.ndarray:
        """Rectangle coordinates ``(N, 2)`` of world points ``(N, 3)`` (projected onto the plane)."""
        d = np.asarray(points, dtype=np.float64).reshape(-1, 3) - self.origin
        return np.stack([d @ self.u / (self.u @ self.u), d @ self.v / (self.v @ self.v)], axis=1)

    def texel_coords(self, points: np.ndarray) -> np.ndarray:
        """Level-0 texel coordinates ``(N, 2)`` as ``(s, t)`` = (column, row), centres at integers."""
        ab = self.rect_coords(points)
        return ab * np.array([self.texture.width, self.texture.height]) - 0.5


def vertical_quad(bottom_centre: np.ndarray, normal: np.ndarray, width: float, height: float,
                  texture: Texture, **kw: object) -> Quad:
    """Upright rectangle facing horizontal ``normal``, standing on ``bottom_centre``."""
    n = np.asarray(normal, dtype=np.float64)
    right = np.cross(EZ, n)
    origin = np.asarray(bottom_centre, dtype=np.float64) - 0.5 * width * right + height * EZ
    return Quad(origin, width * right, -height * EZ, texture, **kw)  # type: ignore[arg-type]


def horizontal_quad(centre: np.ndarray, x_axis: np.ndarray, size_x: float, size_y: float, up: bool,
                    texture: Texture, **kw: object) -> Quad:
    """Horizontal rectangle centred on ``centre``, facing up (floor, box top) or down (ceiling)."""
    ex = np.asarray(x_axis, dtype=np.float64)
    ey = np.cross(EZ, ex)
    c = np.asarray(centre, dtype=np.float64)
    if up:
        return Quad(c - 0.5 * size_x * ex + 0.5 * size_y * ey, size_x * ex, -size_y * ey, texture, **kw)  # type: ignore[arg-type]
    return Quad(c - 0.5 * size_x * ex - 0.5 * size_y * ey, size_x * ex, size_y * ey, texture, **kw)  # type: ignore[arg-type]


@dataclass(frozen=True)
class Box:
    """An upright box standing on the floor.

    Attributes:
        centre: ``(x, y)`` of the footprint centre.
        half_size: half extents ``(hx, hy)`` along the box's own x and y axes.
        height: top at ``z = height``.
        yaw_deg: angle of the box x axis from world +x.
    """

    centre: tuple[float, float]
    half_size: tuple[float, float]
    height: float
    yaw_deg: float = 0.0

    @property
    def axes(self) -> tuple[np.ndarray, np.ndarray]:
        """Horizontal unit axes ``(ex, ey)``, each ``(3,)``."""
        c, s = np.cos(np.radians(self.yaw_deg)), np.sin(np.radians(self.yaw_deg))
        return np.array([c, s, 0.0]), np.array([-s, c, 0.0])

    @property
    def circumradius(self) -> float:
        return float(np.hypot(*self.half_size))

    def corners_xy(self) -> np.ndarray:
        """``(4, 2)`` footprint corners."""
        ex, ey = self.axes
        hx, hy = self.half_size
        c = np.array(self.centre)
        return np.array([c + sx * hx * ex[:2] + sy * hy * ey[:2] for sx, sy in ((-1, -1), (1, -1), (1, 1), (-1, 1))])

    def distance(self, points: np.ndarray) -> np.ndarray:
        """Euclidean distance ``(N,)`` from points ``(N, 3)`` (or ``(N, 2)``: footprint only) to the box."""
        p = np.asarray(points, dtype=np.float64)
        p = p.reshape(-1, p.shape[-1])
        ex, ey = self.axes
        d = p[:, :2] - np.array(self.centre)
        local = np.abs(np.stack([d @ ex[:2], d @ ey[:2]], axis=1)) - np.array(self.half_size)
        if p.shape[1] == 3:
            dz = np.maximum(p[:, 2] - self.height, -p[:, 2])[:, None]
            local = np.concatenate([local, dz], axis=1)
        return np.linalg.norm(np.maximum(local, 0.0), axis=1)

    def quads(self, textures: list[Texture], name: str, scene: int) -> list[Quad]:
        """Its five visible faces (+x, +y, -x, -y sides, then the top), outward facing."""
        ex, ey = self.axes
        hx, hy = self.half_size
        c = np.array([self.centre[0], self.centre[1], 0.0])
        sides = [(ex, hx, 2 * hy), (ey, hy, 2 * hx), (-ex, hx, 2 * hy), (-ey, hy, 2 * hx)]
        out = [vertical_quad(c + half * n, n, w, self.height, tex, name=f"{name}/side{k}", kind="box", scene=scene)
               for k, ((n, half, w), tex) in enumerate(zip(sides, textures[:4], strict=True))]
        out.append(horizontal_quad(c + self.height * EZ, ex, 2 * hx, 2 * hy, True, textures[4],
                                   name=f"{name}/top", kind="box", scene=scene))
        return out

    def face_sizes(self) -> list[tuple[float, float]]:
        """``(width, height)`` in metres of the faces, in the order of :meth:`quads`."""
        hx, hy = self.half_size
        return [(2 * hy, self.height), (2 * hx, self.height), (2 * hy, self.height), (2 * hx, self.height),
                (2 * hx, 2 * hy)]


@dataclass(frozen=True)
class Wall:
    """One inside wall of a room: the line from ``left`` (seen from inside) along ``right``."""

    side: str
    left: np.ndarray  # (3,) bottom-left corner seen from inside
    right: np.ndarray  # (3,) unit vector along the wall
    normal: np.ndarray  # (3,) unit normal into the room
    length: float

    def point(self, s: float, z: float = 0.0, offset: float = 0.0) -> np.ndarray:
        """World point at ``s`` metres along the wall, height ``z``, ``offset`` into the room."""
        return self.left + s * self.right + z * EZ + offset * self.normal


@dataclass(eq=False)
class Scene:
    """One room of the world.

    Attributes:
        index: position in :attr:`World.scenes`.
        name: scene name (folder name in the 7-Scenes layout).
        x0: world x of the room's west wall.
        size: inside ``(width along x, depth along y, height)`` in metres.
        quads: every surface, in render order (boxes, posters, walls, floor, ceiling).
        boxes: the boxes standing in the room.
        loop: the nominal camera loop.
        traversals: training traversals then the test traversal.
        plain_wall: ``(side, start, end)`` of the plain wall section, if any.
        test_quads: the surfaces of the test traversal when objects are moved or removed in it (``None``:
            the same as :attr:`quads`); a moved object keeps its name and textures.
        test_boxes: the boxes of the test traversal (``None``: :attr:`boxes`).
        changes: what differs in the test traversal, one dict per object (``object``, ``kind``,
            ``change``: ``moved`` / ``removed``, ``from`` / ``to`` centres in metres).
        lamp: world position ``(3,)`` of the test traversal's lamp (``None``: no lamp).
        occluders: test frame index -> the occluder quads in front of the camera in that frame.
    """

    index: int
    name: str
    x0: float
    size: tuple[float, float, float]
    quads: list[Quad] = field(default_factory=list)
    boxes: list[Box] = field(default_factory=list)
    loop: LoopSpec | None = None
    traversals: list[Traversal] = field(default_factory=list)
    plain_wall: tuple[str, float, float] | None = None
    test_quads: list[Quad] | None = None
    test_boxes: list[Box] | None = None
    changes: list[dict] = field(default_factory=list)
    lamp: np.ndarray | None = None
    occluders: dict[int, list[Quad]] = field(default_factory=dict)

    def frame_quads(self, sequence: int, frame: int) -> list[Quad]:
        """The surfaces frame ``frame`` of sequence ``sequence`` (1-based) sees: the room as it is in that
        traversal plus, for a test frame, its occluders. ``render_layers(scene.frame_quads(...), ...)``
        renders exactly the frame that is written."""
        traversal = self.traversals[sequence - 1]
        if traversal.split != "test":
            return self.quads
        quads = self.test_quads if self.test_quads is not None else self.quads
        extra = self.occluders.get(frame)
        return [*quads, *extra] if extra else quads

    @property
    def bounds(self) -> tuple[np.ndarray, np.ndarray]:
        """Inside ``(min (3,), max (3,))`` corners in the world frame."""
        w, d, h = self.size
        return np.array([self.x0, 0.0, 0.0]), np.array([self.x0 + w, d, h])

    @property
    def walls(self) -> list[Wall]:
        """The four walls: south (y = 0), east, north, west."""
        w, d, _ = self.size
        x0, x1 = self.x0, self.x0 + w
        ex, ey = np.array([1.0, 0, 0]), np.array([0, 1.0, 0])
        return [Wall("south", np.array([x1, 0, 0.0]), -ex, ey, w),
                Wall("east", np.array([x1, d, 0.0]), -ey, -ex, d),
                Wall("north", np.array([x0, d, 0.0]), ex, -ey, w),
                Wall("west", np.array([x0, 0, 0.0]), ey, ex, d)]

    @property
    def train_traversals(self) -> list[Traversal]:
        return [t for t in self.traversals if t.split == "train"]

    @property
    def test_traversals(self) -> list[Traversal]:
        return [t for t in self.traversals if t.split == "test"]

    def contains(self, points: np.ndarray) -> np.ndarray:
        """Boolean ``(N,)``: points ``(N, 3)`` strictly inside the room (boxes included)."""
        p = np.asarray(points, dtype=np.float64).reshape(-1, 3)
        lo, hi = self.bounds
        return np.all((p > lo) & (p < hi), axis=1)

    def obstacle_distance(self, points: np.ndarray) -> np.ndarray:
        """Distance ``(N,)`` from points ``(N, 3)`` inside the room to the nearest wall, floor, ceiling or box."""
        p = np.asarray(points, dtype=np.float64).reshape(-1, 3)
        lo, hi = self.bounds
        d = np.minimum(p - lo, hi - p).min(axis=1)
        for box in self.boxes:
            d = np.minimum(d, box.distance(p))
        return d


@dataclass(eq=False)
class World:
    """All rooms in one world frame (z up, metres) plus the config that made them.

    Attributes:
        config: the :class:`~visloc.datasets.synthetic.config.WorldConfig`.
        scenes: the rooms, west to east.
    """

    config: WorldConfig
    scenes: list[Scene]

    @functools.cached_property
    def quads(self) -> list[Quad]:
        """Every quad of every scene (scene order, then each scene's render order)."""
        return [q for s in self.scenes for q in s.quads]

    @functools.cached_property
    def quad_offsets(self) -> np.ndarray:
        """``(num_scenes + 1,)``: scene ``i`` owns ``quads[offsets[i]:offsets[i + 1]]``."""
        return np.concatenate([[0], np.cumsum([len(s.quads) for s in self.scenes])]).astype(np.int64)

    @property
    def camera(self) -> Camera:
        """Intrinsics of every frame."""
        return self.config.camera

    def scene(self, name: str) -> Scene:
        for s in self.scenes:
            if s.name == name:
                return s
        raise KeyError(f"no scene {name!r}; scenes: {[s.name for s in self.scenes]}")

    def scene_of_point(self, points: np.ndarray) -> np.ndarray:
        """Index ``(N,)`` of the room containing each point ``(N, 3)``; -1 outside every room.

        Points on a surface count as outside (use a point a little in front of the surface)."""
        p = np.asarray(points, dtype=np.float64).reshape(-1, 3)
        out = np.full(len(p), -1, dtype=np.int64)
        for s in self.scenes:
            out[s.contains(p)] = s.index
        return out
