"""Building the synthetic world: room sizes, boxes and posters, camera paths, and the hard preset's test-
traversal changes (moved / removed objects, the lamp, occluders) from the config's random streams.

:func:`build_world` is the one entry point; the geometry types are in :mod:`.scene`.
"""

from __future__ import annotations

import numpy as np

from .changes import change_objects, make_occluders
from .config import WorldConfig, scene_name
from .lighting import place_lamp
from .nuisances import draw_photometric
from .scene import (
    _CHANGES,
    _DIMS,
    _LAYOUT,
    _LIGHTING,
    _OCCLUDERS,
    _PATHS,
    _PHOTOMETRIC,
    _SHARED,
    _SHARED_ALL,
    _TEXTURES,
    CLEARANCE,
    EZ,
    POSTER_OFFSET,
    WALL_THICKNESS,
    Box,
    Quad,
    Scene,
    World,
    horizontal_quad,
    stream,
    vertical_quad,
)
from .textures import FLOOR_SOURCES, Texture, aligned, make_ceiling, make_floor, make_panel, make_wall
from .trajectories import RADIAL_AMPLITUDE, make_loop, make_traversals

# --- building ------------------------------------------------------------------------------------

def _room_size(config: WorldConfig, index: int) -> tuple[float, float, float]:
    rng = stream(config.seed, _DIMS, index)
    w, d, h = rng.uniform(4.6, 6.0), rng.uniform(4.6, 6.0), rng.uniform(2.6, 3.0)
    return float(w), float(d), float(h)


def _place_boxes(rng: np.random.Generator, scene: Scene, band: np.ndarray) -> list[Box]:
    """A central box inside the loop (when it fits) and up to four boxes along the walls."""
    assert scene.loop is not None
    boxes: list[Box] = []
    loop = scene.loop
    lo, hi = scene.bounds
    # Central box, well inside the loop.
    offset = rng.uniform(-0.1, 0.1, size=2)
    r_max = min(loop.rx, loop.ry) * (1 - RADIAL_AMPLITUDE) - CLEARANCE - 0.15
    hx, hy = rng.uniform(0.18, 0.45, size=2)
    height, yaw = rng.uniform(0.45, 0.8), rng.uniform(0.0, 90.0)
    if r_max >= 0.25:
        shrink = min(1.0, r_max / float(np.hypot(hx, hy)))
        box = Box((loop.centre[0] + offset[0], loop.centre[1] + offset[1]), (hx * shrink, hy * shrink), height, yaw)
        if box.distance(band).min() >= CLEARANCE:
            boxes.append(box)
    walls = scene.walls
    target = int(rng.integers(3, 5))
    placed = 0
    for _ in range(200):
        if placed >= target:
            break
        wall = walls[int(rng.integers(4))]
        hw, hd = rng.uniform(0.2, 0.45), rng.uniform(0.18, 0.35)
        height = rng.uniform(0.4, 1.3)
        jitter, gap = rng.uniform(-10.0, 10.0), rng.uniform(0.03, 0.2)
        s = rng.uniform(0.15 + hw, wall.length - 0.15 - hw)
        c = wall.point(s, 0.0, gap + hd)
        yaw = np.degrees(np.arctan2(wall.right[1], wall.right[0])) + jitter
        box = Box((float(c[0]), float(c[1])), (float(hw), float(hd)), float(height), float(yaw))
        corners = box.corners_xy()
        if np.any(corners < lo[:2] + 0.02) or np.any(corners > hi[:2] - 0.02):
            continue
        if any(np.hypot(box.centre[0] - b.centre[0], box.centre[1] - b.centre[1])
               < box.circumradius + b.circumradius + 0.05 for b in boxes):
            continue
        if box.distance(band).min() < CLEARANCE:
            continue
        boxes.append(box)
        placed += 1
    return boxes


def _place_posters(rng: np.random.Generator, scene: Scene, textures: list[Texture],
                   sizes: list[tuple[float, float]]) -> list[Quad]:
    """Hang posters on random walls, away from corners, the plain section and each other."""
    walls = scene.walls
    taken: dict[str, list[tuple[float, float]]] = {w.side: [] for w in walls}
    if scene.plain_wall is not None:
        taken[scene.plain_wall[0]].append(scene.plain_wall[1:])
    out = []
    for k, (tex, (pw, ph)) in enumerate(zip(textures, sizes, strict=True)):
        for _ in range(100):
            wall = walls[int(rng.integers(4))]
            s = float(rng.uniform(0.2 + pw / 2, wall.length - 0.2 - pw / 2))
            zc = float(rng.uniform(1.2, 1.7))
            zc = min(zc, scene.size[2] - 0.2 - ph / 2)
            if any(s - pw / 2 < e + 0.1 and s + pw / 2 > b - 0.1 for b, e in taken[wall.side]):
                continue
            taken[wall.side].append((s - pw / 2, s + pw / 2))
            out.append(vertical_quad(wall.point(s, zc - ph / 2, POSTER_OFFSET), wall.normal, pw, ph, tex,
                                     name=f"{scene.name}/poster{k}", kind="poster", scene=scene.index))
            break
    return out


def _poster_texture(rng: np.random.Generator, density: float, name: str) -> tuple[Texture, tuple[float, float]]:
    pw, ph = float(rng.uniform(0.6, 1.0)), float(rng.uniform(0.5, 0.9))
    tw, th = aligned(pw * density), aligned(ph * density)
    return Texture(make_panel(rng, tw, th), name), (pw, ph)


def _shared_posters(config: WorldConfig) -> list[list[tuple[Texture, tuple[float, float]]]]:
    """``shared[i]``: the identical posters hung in both scene ``i`` and scene ``i + 1``."""
    if not config.repeated_textures:
        return []
    out = []
    for i in range(config.num_scenes - 1):
        rng = stream(config.seed, _SHARED, i)
        out.append([_poster_texture(rng, config.texel_density, f"shared/{i}-{k}") for k in range(2)])
    return out


def _posters_everywhere(config: WorldConfig) -> list[tuple[Texture, tuple[float, float]]]:
    """The ``repeated_posters`` designs hung in every room."""
    out = []
    for k in range(config.repeated_posters):
        rng = stream(config.seed, _SHARED_ALL, k)
        out.append(_poster_texture(rng, config.texel_density, f"shared/all-{k}"))
    return out


def build_scene(config: WorldConfig, index: int, x0: float,
                shared: list[tuple[Texture, tuple[float, float]]] | None = None) -> Scene:
    """Build room ``index`` with its west wall at ``x = x0``.

    Args:
        config: world config.
        index: scene index.
        x0: world x of the west wall.
        shared: posters (texture, (width, height) in m) that also hang in another scene.

    Returns:
        The :class:`Scene` with quads, boxes, nominal loop and traversals.
    """
    name = scene_name(index)
    w, d, h = _room_size(config, index)
    scene = Scene(index=index, name=name, x0=x0, size=(w, d, h))
    layout = stream(config.seed, _LAYOUT, index)
    rx = float(np.clip(w / 2 - 1.4, 0.9, 1.6))
    ry = float(np.clip(d / 2 - 1.4, 0.9, 1.6))
    scene.loop = make_loop(layout, (x0 + w / 2, d / 2), rx, ry)
    band = scene.loop.band()
    scene.boxes = _place_boxes(layout, scene, band)
    walls = scene.walls
    if config.low_texture:
        wall = walls[int(layout.integers(4))]
        length = float(layout.uniform(1.2, 1.6))
        start = float(layout.uniform(0.4, wall.length - 0.4 - length))
        scene.plain_wall = (wall.side, start, start + length)

    tex_rng = stream(config.seed, _TEXTURES, index)
    density = config.texel_density
    quads: list[Quad] = []
    for k, box in enumerate(scene.boxes):
        textures = [Texture(make_panel(tex_rng, aligned(fw * density), aligned(fh * density)), f"{name}/box{k}/{f}")
                    for f, (fw, fh) in enumerate(box.face_sizes())]
        quads += box.quads(textures, f"{name}/box{k}", index)
    posters = [_poster_texture(tex_rng, density, f"{name}/poster{k}") for k in range(2)]
    posters += list(shared or [])
    quads += _place_posters(layout, scene, [p[0] for p in posters], [p[1] for p in posters])
    for wall in walls:
        plain = None
        if scene.plain_wall is not None and scene.plain_wall[0] == wall.side:
            plain = scene.plain_wall[1:]
        tex = Texture(make_wall(tex_rng, wall.length, h, density, plain), f"{name}/wall-{wall.side}")
        quads.append(vertical_quad(wall.point(wall.length / 2), wall.normal, wall.length, h, tex,
                                   name=f"{name}/wall-{wall.side}", kind="wall", scene=index))
    centre = np.array([x0 + w / 2, d / 2, 0.0])
    floor = Texture(make_floor(tex_rng, w, d, 0.75 * density, FLOOR_SOURCES[index % len(FLOOR_SOURCES)]),
                    f"{name}/floor")
    quads.append(horizontal_quad(centre, np.array([1.0, 0, 0]), w, d, True, floor,
                                 name=f"{name}/floor", kind="floor", scene=index))
    ceiling = Texture(make_ceiling(tex_rng, w, d, density, plain=config.low_texture), f"{name}/ceiling")
    quads.append(horizontal_quad(centre + h * EZ, np.array([1.0, 0, 0]), w, d, False, ceiling,
                                 name=f"{name}/ceiling", kind="ceiling", scene=index))
    scene.quads = quads

    photo_rng = stream(config.seed, _PHOTOMETRIC, index)
    photometrics = [draw_photometric(photo_rng, config) for _ in range(config.train_traversals + 1)]
    scene.traversals = make_traversals(stream(config.seed, _PATHS, index), name, scene.loop,
                                       config.train_traversals, config.frames_per_train_traversal,
                                       config.frames_per_test_traversal, photometrics)
    if config.has_scene_changes:
        change_objects(stream(config.seed, _CHANGES, index), scene, config)
    if config.test_lamp_power > 0:
        scene.lamp = place_lamp(stream(config.seed, _LIGHTING, index), scene)
    if config.test_occluders > 0:
        scene.occluders = make_occluders(config, scene, lambda i: stream(config.seed, _OCCLUDERS, index, i))
    return scene


def build_world(config: WorldConfig | None = None) -> World:
    """Build the in-memory world (geometry, textures, traversals) of ``config``.

    Deterministic: the same config gives the same world. Takes about a second for the default config.
    """
    config = config or WorldConfig()
    shared = _shared_posters(config)
    everywhere = _posters_everywhere(config)
    scenes = []
    x0 = 0.0
    for i in range(config.num_scenes):
        mine = []
        if i > 0 and i - 1 < len(shared):
            mine += shared[i - 1]
        if i < len(shared):
            mine += shared[i]
        mine += everywhere
        scene = build_scene(config, i, x0, mine)
        scenes.append(scene)
        x0 += scene.size[0] + WALL_THICKNESS
    return World(config=config, scenes=scenes)
