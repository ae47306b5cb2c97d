"""What differs in the test traversal of the harder world: moved / removed objects and occluders.

Both are geometry: the test traversal renders its own quad list (:attr:`Scene.test_quads`) plus, per frame,
the occluder quads (:attr:`Scene.occluders`), so depth and the visible quad of every pixel stay exact
(:meth:`Scene.frame_quads`). The database (training) traversals keep the original room.

An *object* is a box (its five faces, quads named ``<scene>/boxK/...``) or a poster (one quad named
``<scene>/posterK``); :func:`object_id` maps a quad to it.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from ...geometry import Pose
from .config import WorldConfig
from .scene import CLEARANCE, POSTER_OFFSET, Box, Quad, vertical_quad
from .textures import Texture, _paint, aligned, make_panel

#: Moved objects land at least this far (m) from where they stood.
MIN_MOVE = 1.0
#: Occluders stand this far (m, camera z) in front of the camera.
OCCLUDER_DEPTH = (0.25, 0.45)
#: Occluders reach this share of the image size past the image edges they cross.
OCCLUDER_MARGIN = 0.25


def object_id(quad) -> str | None:
    """``<scene>/boxK`` or ``<scene>/posterK`` of a box face or a poster; ``None`` for other quads."""
    if quad.kind == "box":
        return quad.name.rsplit("/", 1)[0]
    if quad.kind == "poster":
        return quad.name
    return None


def _centre(quads) -> list[float]:
    c = np.mean([q.origin + 0.5 * (q.u + q.v) for q in quads], axis=0)
    return [round(float(v), 4) for v in c]


def _box_spot(rng: np.random.Generator, scene, box, others, band: np.ndarray):
    """A new place along a wall for ``box`` (same size), clear of ``others`` and of the camera band."""

    lo, hi = scene.bounds
    walls = scene.walls
    hw, hd = box.half_size
    for _ in range(300):
        wall = walls[int(rng.integers(4))]
        if wall.length - 0.3 - 2 * hw <= 0:
            continue
        jitter, gap = rng.uniform(-10.0, 10.0), rng.uniform(0.03, 0.2)
        s = rng.uniform(0.15 + hw, wall.length - 0.15 - hw)
        c = wall.point(s, 0.0, gap + hd)
        yaw = np.degrees(np.arctan2(wall.right[1], wall.right[0])) + jitter
        moved = Box((float(c[0]), float(c[1])), (float(hw), float(hd)), box.height, float(yaw))
        corners = moved.corners_xy()
        if np.any(corners < lo[:2] + 0.02) or np.any(corners > hi[:2] - 0.02):
            continue
        if np.hypot(moved.centre[0] - box.centre[0], moved.centre[1] - box.centre[1]) < MIN_MOVE:
            continue
        if any(np.hypot(moved.centre[0] - b.centre[0], moved.centre[1] - b.centre[1])
               < moved.circumradius + b.circumradius + 0.05 for b in others):
            continue
        if moved.distance(band).min() < CLEARANCE:
            continue
        return moved
    return None


def _wall_of(scene, quad):
    """The wall a poster hangs on and the span ``(start, end)`` it covers along it (m)."""
    n = quad.normal
    wall = max(scene.walls, key=lambda w: float(w.normal @ n))
    a = float((quad.origin - wall.left) @ wall.right)
    b = float((quad.origin + quad.u - wall.left) @ wall.right)
    return wall, (min(a, b), max(a, b))


def _poster_spot(rng: np.random.Generator, scene, poster, others):
    """A new place on a wall for ``poster`` (same size), clear of ``others``, corners and the plain section."""

    pw, ph = poster.width, poster.height
    taken: dict[str, list[tuple[float, float]]] = {w.side: [] for w in scene.walls}
    if scene.plain_wall is not None:
        taken[scene.plain_wall[0]].append(scene.plain_wall[1:])
    for q in others:
        wall, span = _wall_of(scene, q)
        taken[wall.side].append(span)
    old = poster.origin + 0.5 * (poster.u + poster.v)
    for _ in range(300):
        wall = scene.walls[int(rng.integers(4))]
        if wall.length - 0.4 - pw <= 0:
            continue
        s = float(rng.uniform(0.2 + pw / 2, wall.length - 0.2 - pw / 2))
        zc = min(float(rng.uniform(1.2, 1.7)), scene.size[2] - 0.2 - ph / 2)
        if any(s - pw / 2 < e + 0.1 and s + pw / 2 > b - 0.1 for b, e in taken[wall.side]):
            continue
        new = vertical_quad(wall.point(s, zc - ph / 2, POSTER_OFFSET), wall.normal, pw, ph, poster.texture,
                            name=poster.name, kind="poster", scene=poster.scene)
        if np.linalg.norm(new.origin + 0.5 * (new.u + new.v) - old) < MIN_MOVE:
            continue
        return new
    return None


def change_objects(rng: np.random.Generator, scene, config: WorldConfig) -> None:
    """Move and remove boxes and posters of ``scene`` for its test traversal (sets ``test_quads``,
    ``test_boxes`` and ``changes``; the training traversals keep the room as it was)."""
    assert scene.loop is not None
    band = scene.loop.band()
    boxes = list(scene.boxes)
    posters = [q for q in scene.quads if q.kind == "poster"]
    n_box = min(len(boxes), config.test_moved_boxes + config.test_removed_boxes)
    n_poster = min(len(posters), config.test_moved_posters + config.test_removed_posters)
    box_pick = [int(i) for i in rng.permutation(len(boxes))[:n_box]]
    poster_pick = [int(i) for i in rng.permutation(len(posters))[:n_poster]]
    n_moved_boxes = min(config.test_moved_boxes, n_box)
    n_moved_posters = min(config.test_moved_posters, n_poster)

    replaced: dict[str, list] = {}  # object id -> its new quads ([] when removed)
    changes: list[dict] = []
    test_boxes: list = list(boxes)
    # Removals first, so that a moved box may take the place of a removed one.
    for i in box_pick[n_moved_boxes:]:
        oid = f"{scene.name}/box{i}"
        quads = [q for q in scene.quads if object_id(q) == oid]
        test_boxes[i] = None
        replaced[oid] = []
        changes.append({"object": oid, "kind": "box", "change": "removed", "from": _centre(quads)})
    for i in box_pick[:n_moved_boxes]:
        oid = f"{scene.name}/box{i}"
        quads = [q for q in scene.quads if object_id(q) == oid]
        others = [b for j, b in enumerate(test_boxes) if b is not None and j != i]
        moved = _box_spot(rng, scene, boxes[i], others, band)
        if moved is None:
            continue
        new_quads = moved.quads([q.texture for q in quads], oid, scene.index)
        test_boxes[i] = moved
        replaced[oid] = new_quads
        changes.append({"object": oid, "kind": "box", "change": "moved", "from": _centre(quads),
                        "to": _centre(new_quads)})
    for i in poster_pick[n_moved_posters:]:
        poster = posters[i]
        replaced[poster.name] = []
        changes.append({"object": poster.name, "kind": "poster", "change": "removed", "from": _centre([poster])})
    for i in poster_pick[:n_moved_posters]:
        poster = posters[i]
        others = [q for q in posters if q.name not in replaced and q is not poster]
        others += [q for quads in replaced.values() for q in quads if q.kind == "poster"]
        new = _poster_spot(rng, scene, poster, others)
        if new is None:
            continue
        replaced[poster.name] = [new]
        changes.append({"object": poster.name, "kind": "poster", "change": "moved", "from": _centre([poster]),
                        "to": _centre([new])})
    if not changes:
        return
    test_quads: list = []
    done: set[str] = set()
    for q in scene.quads:
        oid = object_id(q)
        if oid is None or oid not in replaced:
            test_quads.append(q)
        elif oid not in done:  # the object's new quads where its first quad was
            test_quads += replaced[oid]
            done.add(oid)
    scene.test_quads = test_quads
    scene.test_boxes = [b for b in test_boxes if b is not None]
    changes.sort(key=lambda c: c["object"])
    scene.changes = changes


def occluder_quad(pose: Pose, camera, side: str, depth: float, cover: float, texture: Texture,
                  name: str, scene: int):
    """A board parallel to the image plane at camera depth ``depth`` covering the ``cover`` share of the
    image from its ``left`` / ``right`` / ``bottom`` edge (and reaching well past the other edges)."""

    (fx, fy), (cx, cy) = camera.focal, camera.principal_point
    W, H = camera.width, camera.height
    margin = OCCLUDER_MARGIN
    x_lo, x_hi = (-0.5 - margin * W - cx) / fx * depth, (W - 0.5 + margin * W - cx) / fx * depth
    y_lo, y_hi = (-0.5 - margin * H - cy) / fy * depth, (H - 0.5 + margin * H - cy) / fy * depth
    if side == "left":
        x_hi = (cover * W - 0.5 - cx) / fx * depth
    elif side == "right":
        x_lo = ((1 - cover) * W - 0.5 - cx) / fx * depth
    else:
        y_lo = ((1 - cover) * H - 0.5 - cy) / fy * depth
    # Camera frame: x right, y down; seen from the camera u runs right, v down, so the front faces it.
    origin_c = np.array([x_lo, y_lo, depth])
    world_from_cam = pose.inverse()
    origin = world_from_cam.transform(origin_c[None])[0]
    R_wc = world_from_cam.R
    u = R_wc @ np.array([x_hi - x_lo, 0.0, 0.0])
    v = R_wc @ np.array([0.0, y_hi - y_lo, 0.0])
    return Quad(origin, u, v, texture, name=name, kind="occluder", scene=scene)


def make_occluders(config: WorldConfig, scene, rng_of: Callable[[int], np.random.Generator]) -> dict[int, list]:
    """Occluders of the test frames of ``scene``: a ``config.test_occluders`` share of them (drawn per frame
    from ``rng_of(frame)``) get a board in front of the camera, textured like a poster or plain like a
    jacket, covering up to ``config.test_occluder_size`` of the image from a side or the bottom."""
    camera = config.camera
    test = scene.test_traversals[0]
    out: dict[int, list] = {}
    for i, pose in enumerate(test.poses):
        rng = rng_of(i)
        if rng.uniform() >= config.test_occluders:
            continue
        side = ("left", "right", "bottom")[int(rng.choice(3, p=[0.4, 0.4, 0.2]))]
        depth = float(rng.uniform(*OCCLUDER_DEPTH))
        cover = float(rng.uniform(0.45, 1.0)) * config.test_occluder_size
        # About one texel per pixel: the board is seen from a few decimetres.
        long_side, short_side = (camera.width, camera.height) if side != "bottom" else (camera.height, camera.width)
        along = (cover + OCCLUDER_MARGIN) * long_side
        across = (1 + 2 * OCCLUDER_MARGIN) * short_side
        tw, th = (aligned(along), aligned(across)) if side != "bottom" else (aligned(across), aligned(along))
        if rng.uniform() < 0.5:
            image = make_panel(rng, tw, th, frame=False)
        else:
            image = _paint(rng, tw, th, rng.uniform(15, 90, size=3), 0.6)
        texture = Texture(image, f"{scene.name}/occluder{i}")
        out[i] = [occluder_quad(pose, camera, side, depth, cover, texture, f"{scene.name}/occluder{i}",
                                scene.index)]
    return out
