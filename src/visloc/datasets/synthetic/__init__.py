"""The embedded synthetic world: textured rooms with exact ground truth, made on the fly.

Several rooms (each with a few boxes, posters and photo-mosaic walls textured with scikit-image's
photographs) share ONE world frame (**z up, metres**, rooms side by side along +x). Frames are
rendered exactly (pinhole, per-pixel ray/plane intersection, z-buffer, trilinear mip-mapping) with
depth, along several training traversals and one test traversal per room, and written in the 7-Scenes
layout by :func:`make_world`.

Quick use::

    from visloc.datasets.synthetic import WorldConfig, build_world, make_world, render

    root = make_world("data/synthetic")                 # 4 scenes, 460 frames, seconds
    world = build_world(WorldConfig())                  # the same world in memory
    scene = world.scenes[0]
    rgb, depth = render(world, world.camera, scene.traversals[0].poses[0])

    hard = make_world("data/hard", WorldConfig.preset("hard"))   # + object_queries.txt / .json
    layers = render_frame(build_world(WorldConfig.preset("hard")), 0, 3, 0)  # a test frame as written

Poses are visloc :class:`~visloc.geometry.Pose` (``cam_from_world``); ``pose.txt`` files hold the
inverse (camera-to-world), as real 7-Scenes does.
"""

from .changes import object_id
from .config import GENERATOR_VERSION, SCENE_NAMES, WORLD_PRESETS, WorldConfig, scene_name, world_config
from .layout import build_scene, build_world
from .lighting import Lighting, traversal_lighting
from .nuisances import Photometric, QueryDegradation, draw_photometric
from .objects import (
    OBJECT_QUERIES_JSON,
    OBJECT_QUERIES_TXT,
    ObjectQuery,
    ObjectQueryConfig,
    object_queries,
    write_object_queries,
)
from .render import NEAR, RenderResult, quad_list, render, render_frame, render_layers
from .scene import (
    CLEARANCE,
    WALL_THICKNESS,
    Box,
    Quad,
    Scene,
    World,
    frame_rng,
    horizontal_quad,
    vertical_quad,
)
from .textures import PHOTO_SOURCES, Texture, photo
from .trajectories import LoopSpec, PathNoise, Traversal, look_rotation
from .writer import dataset_metadata, frame_stem, make_world, pose_text

__all__ = [
    "CLEARANCE",
    "GENERATOR_VERSION",
    "NEAR",
    "OBJECT_QUERIES_JSON",
    "OBJECT_QUERIES_TXT",
    "PHOTO_SOURCES",
    "SCENE_NAMES",
    "WALL_THICKNESS",
    "WORLD_PRESETS",
    "Box",
    "Lighting",
    "LoopSpec",
    "ObjectQuery",
    "ObjectQueryConfig",
    "PathNoise",
    "Photometric",
    "Quad",
    "QueryDegradation",
    "RenderResult",
    "Scene",
    "Texture",
    "Traversal",
    "World",
    "WorldConfig",
    "build_scene",
    "build_world",
    "dataset_metadata",
    "draw_photometric",
    "frame_rng",
    "frame_stem",
    "horizontal_quad",
    "look_rotation",
    "make_world",
    "object_id",
    "object_queries",
    "photo",
    "pose_text",
    "quad_list",
    "render",
    "render_frame",
    "render_layers",
    "scene_name",
    "traversal_lighting",
    "vertical_quad",
    "world_config",
    "write_object_queries",
]
