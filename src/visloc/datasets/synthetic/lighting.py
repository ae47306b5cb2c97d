"""The test traversal's lighting in the harder world: dimmed ambient light and a coloured point lamp.

Shading is computed per pixel from the exact geometry of the rendered frame: the 3D point of the pixel
(back-projected from the exact depth) and the front normal of its quad. A surface point ``X`` with unit
normal ``n`` gets, per colour channel ``c``::

    factor_c = ambient + power * colour_c * visible * max(0, n . l) / (1 + (d / LAMP_FALLOFF)^2)

where ``l`` is the unit vector to the lamp, ``d`` its distance and ``visible`` 0 when a box or an occluder
lies on the segment from ``X`` to the lamp (``shadows``), else 1; the rendered colour is multiplied by
``factor`` (clipped to 255). A night-like ``gain`` > 1 then exposes that dim image as a camera would at
night: quantised to 8 bits with Gaussian sensor noise (``noise_sigma`` grey levels) at its low level, then
amplified by ``gain`` (so the noise and the quantisation steps grow by ``gain``; bright parts clip).
Lighting changes colour only, never depth: the written depth is the rendered depth whatever the light.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ...geometry import Camera, Pose

#: Distance (m) at which the lamp's light has halved.
LAMP_FALLOFF = 1.5
#: Quad kinds that cast shadows (walls, floor and ceiling bound a convex room and cannot shadow its
#: inside; a poster could only shadow the wall right behind it, which it hides).
SHADOW_CASTERS = frozenset({"box", "occluder"})


def place_lamp(rng: np.random.Generator, scene) -> np.ndarray:
    """A standing lamp near a wall of ``scene``, 1.7-2.1 m high, clear of every box (``(3,)`` world)."""
    boxes = list(scene.boxes) + list(scene.test_boxes or [])
    walls = scene.walls
    point = None
    for _ in range(200):
        wall = walls[int(rng.integers(4))]
        s = float(rng.uniform(0.4, wall.length - 0.4))
        z = min(float(rng.uniform(1.7, 2.1)), scene.size[2] - 0.3)
        point = wall.point(s, z, float(rng.uniform(0.25, 0.45)))
        if all(b.distance(point[None])[0] > 0.2 for b in boxes):
            break
    assert point is not None
    return np.asarray(point, dtype=np.float64)


@dataclass(frozen=True)
class Lighting:
    """The light of one traversal.

    Attributes:
        ambient: factor on every surface's colour without the lamp.
        lamp: ``(3,)`` world position of the point lamp, or ``None``.
        power: the lamp's strength (see the module docstring).
        colour: the lamp's RGB colour.
        shadows: boxes and occluders block the lamp.
        gain: night-like amplification of the dim image (1: none).
        noise_sigma: sensor noise (grey levels) before the ``gain``.
    """

    ambient: float = 1.0
    lamp: np.ndarray | None = None
    power: float = 0.0
    colour: tuple[float, float, float] = (1.0, 1.0, 1.0)
    shadows: bool = False
    gain: float = 1.0
    noise_sigma: float = 0.0

    @property
    def is_identity(self) -> bool:
        return self.ambient == 1.0 and (self.lamp is None or self.power == 0.0) and self.gain == 1.0

    def factors(self, depth: np.ndarray, quad_index: np.ndarray, quads: Sequence, camera: Camera,
                pose: Pose) -> np.ndarray:
        """Per-pixel colour factors ``(H, W, 3)`` float32 of a frame rendered with ``render_layers(quads, ...)``.

        Args:
            depth: ``(H, W)`` camera z (NaN where nothing is hit).
            quad_index: ``(H, W)`` index into ``quads`` (-1 where nothing is hit).
            quads: the rendered quads.
            camera: pinhole intrinsics.
            pose: ``cam_from_world``.
        """
        H, W = depth.shape
        out = np.full((H, W, 3), self.ambient, dtype=np.float32)
        if self.lamp is None or self.power == 0.0:
            return out
        hit = quad_index >= 0
        vs, us = np.nonzero(hit)
        if len(vs) == 0:
            return out
        (fx, fy), (cx, cy) = camera.focal, camera.principal_point
        z = depth[vs, us].astype(np.float64)
        x_cam = np.stack([(us - cx) / fx * z, (vs - cy) / fy * z, z], axis=1)
        X = (x_cam - pose.t) @ pose.R  # world points: R^T (x - t)
        idx = quad_index[vs, us]
        normals = np.array([q.normal for q in quads])
        to_lamp = self.lamp - X
        dist = np.linalg.norm(to_lamp, axis=1)
        cos = np.einsum("ij,ij->i", normals[idx], to_lamp) / np.maximum(dist, 1e-9)
        strength = np.maximum(cos, 0.0) / (1.0 + (dist / LAMP_FALLOFF) ** 2)
        if self.shadows:
            lit = strength > 0
            blocked = shadowed(X[lit], idx[lit], self.lamp, quads)
            sub = strength[lit]
            sub[blocked] = 0.0
            strength[lit] = sub
        light = self.power * np.outer(strength, np.asarray(self.colour, dtype=np.float64))
        out[vs, us] += light.astype(np.float32)
        return out

    def apply(self, rgb: np.ndarray, depth: np.ndarray, quad_index: np.ndarray, quads: Sequence, camera: Camera,
              pose: Pose, rng: np.random.Generator | None = None) -> np.ndarray:
        """``rgb`` ``(H, W, 3)`` uint8 under this light: ``round(rgb * factors)`` clipped to 255, then the night
        exposure when ``gain != 1`` (its noise drawn from ``rng``, needed when ``noise_sigma > 0``)."""
        if self.is_identity:
            return rgb
        f = self.factors(depth, quad_index, quads, camera, pose)
        out = np.clip(np.rint(rgb.astype(np.float32) * f), 0, 255).astype(np.uint8)
        if self.gain != 1.0:
            out = night_exposure(out, self.gain, self.noise_sigma, rng)
        return out


def night_exposure(dim: np.ndarray, gain: float, noise_sigma: float, rng: np.random.Generator | None) -> np.ndarray:
    """``round(gain * clip(dim + noise))``, clipped: a dim 8-bit exposure (with rounded Gaussian noise of
    ``noise_sigma`` grey levels) amplified by ``gain``."""
    out = dim.astype(np.float32)
    if noise_sigma > 0:
        if rng is None:
            raise ValueError("night_exposure with noise needs a random generator")
        out += np.rint(rng.normal(0.0, noise_sigma, size=out.shape)).astype(np.float32)
        np.clip(out, 0, 255, out=out)
    return np.clip(np.rint(out * np.float32(gain)), 0, 255).astype(np.uint8)


def shadowed(points: np.ndarray, own: np.ndarray, lamp: np.ndarray, quads: Sequence) -> np.ndarray:
    """Boolean ``(N,)``: a shadow-casting quad (:data:`SHADOW_CASTERS`) other than the point's own quad
    ``own`` ``(N,)`` crosses the segment from each point ``(N, 3)`` to the ``lamp``."""
    out = np.zeros(len(points), dtype=bool)
    seg = lamp - points  # (N, 3): X + s * seg, 0 < s < 1
    for k, q in enumerate(quads):
        if q.kind not in SHADOW_CASTERS:
            continue
        n = np.cross(q.v, q.u)
        denom = seg @ n
        with np.errstate(divide="ignore", invalid="ignore"):
            s = ((q.origin - points) @ n) / denom
        cand = (s > 1e-6) & (s < 1 - 1e-6) & (own != k) & ~out
        if not cand.any():
            continue
        hit = points[cand] + s[cand, None] * seg[cand] - q.origin
        a = hit @ q.u / float(q.u @ q.u)
        b = hit @ q.v / float(q.v @ q.v)
        inside = (a >= 0) & (a <= 1) & (b >= 0) & (b <= 1)
        sub = out[cand]
        sub |= inside
        out[cand] = sub
    return out


def traversal_lighting(config, scene, traversal) -> Lighting:
    """The light of ``traversal``: unchanged for training traversals, the config's test light for the test one."""
    if traversal.split != "test" or not config.has_test_lighting:
        return Lighting()
    return Lighting(ambient=config.test_ambient, lamp=scene.lamp, power=config.test_lamp_power,
                    colour=tuple(config.test_lamp_colour), shadows=config.test_shadows,
                    gain=config.test_night_gain, noise_sigma=config.noise_sigma)
