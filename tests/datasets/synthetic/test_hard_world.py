"""The hard preset of the embedded world, checked against independent truth: the default world is unchanged
(pinned content of files made before the preset existed), moved objects and occluders have exact depth (a
ray / plane intersection written here), removed objects are gone, lighting changes colour only (shading
recomputed here, shadows by a slab test of the boxes), and object queries see their object (re-rendered)."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from visloc.cli import app
from visloc.datasets.synthetic import (
    WORLD_PRESETS,
    Box,
    WorldConfig,
    build_world,
    dataset_metadata,
    make_world,
    render_frame,
    render_layers,
    traversal_lighting,
)
from visloc.datasets.synthetic.lighting import LAMP_FALLOFF
from visloc.errors import ConfigError
from visloc.io.images import read_depth, read_image

#: The tiny world of test_writer.py, whose content was pinned before the hard options existed.
TINY = WorldConfig(num_scenes=2, train_traversals=2, frames_per_train_traversal=3, frames_per_test_traversal=2,
                   width=160, height=120, focal=131.25, texel_density=100.0)
TINY_CONTENT = "77c0ab75cb34e19ad78709a0c7483ce87eda2e605d9aeab379b94f4226907ea1"
#: The original fields: the default world's dataset.json holds exactly these.
ORIGINAL_FIELDS = ["num_scenes", "train_traversals", "frames_per_train_traversal", "frames_per_test_traversal",
                   "width", "height", "focal", "seed", "exposure", "white_balance", "noise_sigma", "low_texture",
                   "repeated_textures", "texel_density"]

SMALL = {"num_scenes": 2, "frames_per_train_traversal": 8, "frames_per_test_traversal": 10, "width": 160,
         "height": 120, "focal": 131.25, "texel_density": 100.0, "test_occluders": 0.5}
HARD = WorldConfig.preset("hard", **SMALL)


def content_digest(root: Path) -> str:
    """Digest of a world's content: decoded pixels and depth (not PNG bytes), pose and split files, and
    dataset.json without the package version."""
    h = hashlib.sha256()
    for p in sorted(root.rglob("*")):
        if not p.is_file():
            continue
        rel = str(p.relative_to(root))
        h.update(rel.encode())
        if rel.endswith(".color.png"):
            h.update(np.ascontiguousarray(read_image(p)).tobytes())
        elif rel.endswith(".depth.png"):
            h.update(np.ascontiguousarray(read_depth(p)).tobytes())
        elif rel == "dataset.json":
            meta = json.loads(p.read_text())
            meta.pop("version")
            h.update(json.dumps(meta, sort_keys=True).encode())
        else:
            h.update(p.read_bytes())
    return h.hexdigest()


@pytest.fixture(scope="module")
def hard_root(tmp_path_factory) -> Path:
    """The small hard world, made through the command line."""
    out = tmp_path_factory.mktemp("hard") / "world"
    sets = [a for k, v in SMALL.items() if k != "num_scenes" for a in ("--set", f"{k}={v}")]
    result = CliRunner().invoke(app, ["world", "make", str(out), "--preset", "hard", "--scenes", "2", *sets])
    assert result.exit_code == 0, (result.output, result.exception)
    return out


@pytest.fixture(scope="module")
def hard_world():
    return build_world(HARD)


# --- the default world does not change ---------------------------------------------------------------

def test_default_world_content_is_what_it_was(tmp_path):
    root = make_world(tmp_path / "tiny", TINY, progress=False, workers=1)
    assert content_digest(root) == TINY_CONTENT
    assert not (root / "object_queries.txt").exists()
    meta = json.loads((root / "dataset.json").read_text())
    assert list(meta["world"]) == ORIGINAL_FIELDS and "preset" not in meta
    assert all(set(s) == {"name", "bounds_min", "bounds_max", "train", "test", "frames"} for s in meta["scenes"])


def test_presets_and_validation():
    assert WorldConfig.preset("default") == WorldConfig() == WorldConfig.preset()
    assert list(WorldConfig().to_dict()) == ORIGINAL_FIELDS
    hard = WorldConfig.preset("hard")
    assert hard.preset_name == "hard" and hard.has_hard_options and hard.has_test_lighting and hard.has_scene_changes
    for key, value in WORLD_PRESETS["hard"].items():
        assert getattr(hard, key) == value
    assert hard.num_scenes == 4 and (hard.width, hard.height) == (640, 480)
    assert hard.train_traversals * hard.frames_per_train_traversal < 3 * 30  # a sparser database
    # JSON round trip (the lamp colour becomes a list) and overrides.
    again = WorldConfig.from_dict(json.loads(json.dumps(HARD.to_dict())))
    assert again == HARD and again.to_dict() == HARD.to_dict()
    assert WorldConfig.preset("hard", test_lamp_colour="1,0.5,0.25").test_lamp_colour == (1.0, 0.5, 0.25)
    assert WorldConfig.preset("hard", test_ambient=0.5).test_ambient == 0.5
    assert not hard.without_nuisances().has_hard_options
    with pytest.raises(ConfigError, match="unknown world preset"):
        WorldConfig.preset("harder")
    for bad in ({"test_ambient": 0.0}, {"test_lamp_power": -1}, {"test_moved_boxes": -1}, {"test_occluders": 1.5},
                {"test_lamp_colour": (1, 2)}, {"test_shadows": 1}, {"repeated_posters": 2.5},
                {"preset_name": "nope"}):
        with pytest.raises(ConfigError):
            WorldConfig(**bad)


def test_cli_unknown_preset_is_a_config_error(tmp_path):
    result = CliRunner().invoke(app, ["world", "make", str(tmp_path / "w"), "--preset", "nope"])
    assert isinstance(result.exception, ConfigError) and "nope" in str(result.exception)
    result = CliRunner().invoke(app, ["world", "make", str(tmp_path / "w"), "--set", "preset_name=hard"])
    assert isinstance(result.exception, ConfigError)


# --- the hard world's files ---------------------------------------------------------------------------

def test_metadata_records_preset_and_changes(hard_root, hard_world):
    meta = json.loads((hard_root / "dataset.json").read_text())
    assert meta["preset"] == "hard"
    assert WorldConfig.from_dict(meta["world"]) == HARD
    for entry, scene in zip(meta["scenes"], hard_world.scenes, strict=True):
        assert entry["test_changes"] == json.loads(json.dumps(scene.changes))
        kinds = {(c["kind"], c["change"]) for c in entry["test_changes"]}
        assert kinds == {("box", "moved"), ("box", "removed"), ("poster", "moved"), ("poster", "removed")}
        assert entry["lamp"] is not None and entry["train"] == ["seq-01", "seq-02"]
        assert entry["occluded_frames"] == {"seq-03": sorted(scene.occluders)}
    assert dataset_metadata(hard_world)["scenes"] == meta["scenes"]
    # posters repeated in every room: the same design hangs in both rooms
    designs = [{q.texture.name for q in s.quads if q.kind == "poster"} for s in hard_world.scenes]
    assert {f"shared/all-{k}" for k in range(3)} <= designs[0] & designs[1]


def _ray(camera, pose, u: float, v: float) -> tuple[np.ndarray, np.ndarray]:
    """Camera centre and world direction of pixel (u, v) (direction with camera z = 1)."""
    d_cam = np.array([(u - camera.principal_point[0]) / camera.focal[0],
                      (v - camera.principal_point[1]) / camera.focal[1], 1.0])
    return pose.center, pose.R.T @ d_cam


def _hit(centre, direction, corner, e1, e2) -> float:
    """Camera z of the hit of the ray with the rectangle corner + a e1 + b e2 (0 <= a, b <= 1), or inf."""
    n = np.cross(e1, e2)
    denom = n @ direction
    if abs(denom) < 1e-12:
        return np.inf
    s = n @ (corner - centre) / denom  # direction has camera z = 1, so s is the camera z
    p = centre + s * direction - corner
    a, b = p @ e1 / (e1 @ e1), p @ e2 / (e2 @ e2)
    return s if s > 0 and -1e-9 <= a <= 1 + 1e-9 and -1e-9 <= b <= 1 + 1e-9 else np.inf


def _box_faces(box: Box) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """The four sides and the top of an upright box, from its footprint corners and height."""
    c = np.concatenate([box.corners_xy(), np.zeros((4, 1))], axis=1)
    up = np.array([0.0, 0.0, box.height])
    faces = [(c[k], c[(k + 1) % 4] - c[k], up) for k in range(4)]
    faces.append((c[0] + up, c[1] - c[0], c[3] - c[0]))
    return faces


def test_moved_box_and_occluders_have_exact_depth(hard_root, hard_world):
    camera = hard_world.camera
    checked_box = checked_occluder = 0
    for scene in hard_world.scenes:
        test = scene.test_traversals[0]
        moved = next(c for c in scene.changes if c["kind"] == "box" and c["change"] == "moved")
        k = int(moved["object"].rsplit("box", 1)[1])
        box = scene.test_boxes[[b.height for b in scene.test_boxes].index(scene.boxes[k].height)]
        assert np.hypot(box.centre[0] - scene.boxes[k].centre[0], box.centre[1] - scene.boxes[k].centre[1]) >= 1.0
        np.testing.assert_allclose(moved["to"][:2], box.centre, atol=1e-3)
        for i, pose in enumerate(test.poses):
            depth = read_depth(hard_root / scene.name / test.name / f"frame-{i:06d}.depth.png")
            quads = scene.frame_quads(test.sequence, i)
            others = [(q.origin, q.u, q.v) for q in quads if not q.name.startswith(moved["object"] + "/")]
            for u in range(2, camera.width, 9):
                for v in range(3, camera.height, 9):
                    c, d = _ray(camera, pose, u, v)
                    z_box = min(_hit(c, d, *f) for f in _box_faces(box))
                    z_rest = min(_hit(c, d, *f) for f in others)
                    if z_box < z_rest - 1e-3:  # the moved box is what this pixel sees
                        assert depth[v, u] == pytest.approx(z_box, abs=0.0005 + 1e-6)
                        checked_box += 1
            for occluder in scene.occluders.get(i, []):
                # A board parallel to the image plane, closer than anything else: constant depth.
                z = (pose.R @ occluder.origin + pose.t)[2]
                assert 0.25 <= z <= 0.45
                for u in range(0, camera.width, 7):
                    for v in range(0, camera.height, 7):
                        c, d = _ray(camera, pose, u, v)
                        if np.isfinite(_hit(c, d, occluder.origin, occluder.u, occluder.v)):
                            assert depth[v, u] == pytest.approx(z, abs=0.0005 + 1e-6)
                            checked_occluder += 1
    assert checked_box > 10 and checked_occluder > 100


def test_removed_objects_are_absent_from_the_test_traversal(hard_world):
    camera = hard_world.camera
    seen_before = 0
    for scene in hard_world.scenes:
        removed = [c["object"] for c in scene.changes if c["change"] == "removed"]
        test = scene.test_traversals[0]
        for i in range(len(test.poses)):
            names = [q.name for q in scene.frame_quads(test.sequence, i)]
            assert not any(n == r or n.startswith(r + "/") for n in names for r in removed)
        # Where a training view saw a removed object, the same view of the test room sees something behind it.
        for pose in (p for t in scene.train_traversals for p in t.poses):
            before = render_layers(scene.quads, camera, pose)
            after = render_layers(scene.test_quads, camera, pose)
            gone = np.zeros(before.depth.shape, bool)
            for k, q in enumerate(scene.quads):
                if any(q.name == r or q.name.startswith(r + "/") for r in removed):
                    gone |= before.quad_index == k
            if gone.sum() > 20:
                seen_before += 1
                assert np.all(after.depth[gone] > before.depth[gone] - 1e-6)
    assert seen_before >= 2


def _segment_hits_box(p: np.ndarray, q: np.ndarray, box: Box) -> bool:
    """Slab test of the open segment p -> q against an upright box (in the box's own frame)."""
    ex, ey = box.axes
    c = np.array([box.centre[0], box.centre[1], 0.0])
    to_local = np.stack([ex, ey, [0.0, 0.0, 1.0]])
    a, b = to_local @ (p - c), to_local @ (q - c)
    lo = np.array([-box.half_size[0], -box.half_size[1], 0.0])
    hi = np.array([box.half_size[0], box.half_size[1], box.height])
    t0, t1 = 1e-4, 1 - 1e-4
    d = b - a
    for k in range(3):
        if abs(d[k]) < 1e-12:
            if not lo[k] < a[k] < hi[k]:
                return False
            continue
        s0, s1 = sorted(((lo[k] - a[k]) / d[k], (hi[k] - a[k]) / d[k]))
        t0, t1 = max(t0, s0), min(t1, s1)
    return t0 < t1


def test_lighting_changes_colour_not_depth(hard_root, hard_world):
    config, camera = hard_world.config, hard_world.camera
    shadowed = lit = 0
    for s, scene in enumerate(hard_world.scenes):
        test = scene.test_traversals[0]
        light = traversal_lighting(config, scene, test)
        assert traversal_lighting(config, scene, scene.train_traversals[0]).is_identity and not light.is_identity
        frames = [i for i in range(len(test.poses)) if i not in scene.occluders][:3]
        for i in frames:
            pose = test.poses[i]
            bright = render_frame(hard_world, s, test.sequence, i, lit=False)
            dark = render_frame(hard_world, s, test.sequence, i)
            np.testing.assert_array_equal(dark.depth, bright.depth)
            np.testing.assert_array_equal(dark.quad_index, bright.quad_index)
            assert np.abs(dark.rgb.astype(int) - bright.rgb).mean() > 10
            # The written depth is the rendered depth, whatever the light.
            stored = read_depth(hard_root / scene.name / test.name / f"frame-{i:06d}.depth.png")
            assert np.nanmax(np.abs(stored - dark.depth)) <= 0.0005 + 1e-6
            quads = scene.frame_quads(test.sequence, i)
            factors = light.factors(bright.depth, bright.quad_index, quads, camera, pose)
            # Shading recomputed here: point from depth, normal from the quad's edges, shadows by a slab test.
            for u in range(4, camera.width, 11):
                for v in range(4, camera.height, 11):
                    quad = quads[bright.quad_index[v, u]]
                    if quad.kind == "box":  # points on a box surface: its own box does not count
                        continue
                    c, d = _ray(camera, pose, u, v)
                    x = c + float(bright.depth[v, u]) * d
                    n = np.cross(quad.v, quad.u)
                    n /= np.linalg.norm(n)
                    to_lamp = scene.lamp - x
                    dist = np.linalg.norm(to_lamp)
                    cos = max(0.0, n @ to_lamp / dist)
                    blocked = cos > 0 and any(_segment_hits_box(x, scene.lamp, b) for b in scene.test_boxes)
                    strength = 0.0 if blocked else config.test_lamp_power * cos / (1 + (dist / LAMP_FALLOFF) ** 2)
                    expected = config.test_ambient + strength * np.array(config.test_lamp_colour)
                    np.testing.assert_allclose(factors[v, u], expected, atol=2e-3)
                    shadowed += blocked
                    lit += strength > 0.05
            # The colour: round(rgb * factors), then the night exposure (noise of noise_sigma, then the gain).
            dim = np.clip(np.rint(bright.rgb * factors.astype(np.float64)), 0, 255)
            expected = np.clip(np.rint(dim * config.test_night_gain), 0, 255)
            ok = (expected > 30) & (expected < 225)
            residual = dark.rgb[ok] - expected[ok]
            if config.test_night_gain == 1.0:  # no night exposure: exactly the shaded colour
                assert np.abs(residual).max() <= 1  # (float32 shading: a rounding step at most)
                assert (residual == 0).mean() > 0.99
            else:
                assert abs(residual.mean()) < 1.0
                assert 0.7 < residual.std() / (config.test_night_gain * config.noise_sigma) < 1.3
    assert lit > 20 and shadowed > 0


def test_object_queries_see_their_object(hard_root, hard_world):
    spec = json.loads((hard_root / "object_queries.json").read_text())
    lines = (hard_root / "object_queries.txt").read_text().splitlines()
    queries = spec["queries"]
    assert queries and len(lines) == len(queries)
    assert [line.split()[0] for line in lines] == [q["name"] for q in queries]
    assert len({q["name"] for q in queries}) == len(queries)
    criteria = spec["criteria"]
    camera = hard_world.camera
    n_pixels = camera.width * camera.height
    database = spec["database"]
    assert len(database) == 2 * 2 * 8 and all("/seq-03/" not in n for n in database)

    def frame_of(name: str):
        scene_name, seq, frame = name.split("/")
        scene = hard_world.scene(scene_name)
        return scene, int(seq[4:]), int(frame[6:12])

    def pixels(name: str, objects: list[str]) -> int:
        scene, seq, i = frame_of(name)
        quads = scene.frame_quads(seq, i)
        index = render_layers(quads, camera, scene.traversals[seq - 1].poses[i]).quad_index
        mine = [k for k, q in enumerate(quads) if any(q.name == o or q.name.startswith(o + "/") for o in objects)]
        return int(np.isin(index, mine).sum())

    for q, line in zip(queries, lines, strict=True):
        x0, y0, x1, y1 = (int(t) for t in line.split()[1:])
        assert [x0, y0, x1, y1] == q["box"] and 0 <= x0 < x1 <= camera.width and 0 <= y0 < y1 <= camera.height
        assert "/seq-03/" in q["name"]  # a test frame
        scene, seq, i = frame_of(q["name"])
        quads = scene.frame_quads(seq, i)
        index = render_layers(quads, camera, scene.traversals[seq - 1].poses[i]).quad_index
        mine = [k for k, quad in enumerate(quads) if quad.name == q["object"] or quad.name.startswith(q["object"] + "/")]
        mask = np.isin(index, mine)
        rows, cols = np.nonzero(mask)
        assert mask.sum() >= criteria["min_query_fraction"] * n_pixels
        assert [cols.min(), rows.min(), cols.max() + 1, rows.max() + 1] == [x0, y0, x1, y1]
        assert set(q["positives"]) | set(q["negatives"]) | set(q["junk"]) == set(database)
        assert not set(q["positives"]) & set(q["negatives"]) and not set(q["junk"]) & set(q["negatives"])
        assert q["positives"], q["name"]
        for name in q["positives"][:4]:
            assert pixels(name, [q["object"]]) >= criteria["min_positive_fraction"] * n_pixels
        for name in q["negatives"][::5]:
            assert pixels(name, [q["object"], *q["copies"]]) == 0
        for name in q["junk"]:
            seen = pixels(name, [q["object"]])
            assert 0 < seen < criteria["min_positive_fraction"] * n_pixels or pixels(name, q["copies"]) > 0
    # A design repeated in every room: its copies are named and frames seeing only them are junk.
    repeated = [q for q in queries if q["texture_repeated"]]
    for q in repeated:
        assert q["copies"] and all(c != q["object"] for c in q["copies"])


def test_other_config_keeps_object_queries_off(tmp_path):
    config = dataclasses.replace(TINY, repeated_posters=1)
    root = make_world(tmp_path / "w", config, progress=False, workers=1, object_queries=False)
    assert not (root / "object_queries.json").exists()
    assert json.loads((root / "dataset.json").read_text())["preset"] == "default"
