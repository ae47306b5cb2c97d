"""Exact pinhole rendering of textured quads with a z-buffer.

For every pixel centre ``(u, v)`` (OpenCV convention: the top-left pixel centre is ``(0, 0)``) the ray
``K^-1 (u, v, 1)`` is intersected with each candidate quad's plane. The inverse depth of a plane is an
affine function of ``(u, v)``, so depth is exact per pixel (float64, stored as float32); the hit point's
rectangle coordinates decide coverage, so edges are exact too (no rasterisation error). Quads are culled
when seen from the back, clipped against the near plane (nothing behind the camera is ever drawn) and
skipped when their projection misses the image.

Colour is sampled trilinearly from the texture's mip pyramid, the level chosen per pixel from the
texel footprint of the pixel (the largest of the two screen-axis derivatives, as OpenGL does), so
minified textures do not alias.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np

from ...geometry import Camera, Pose
from .scene import Quad, Scene, World

#: Default near-plane distance (m): surfaces closer than this to the camera plane are not drawn.
NEAR = 0.01
#: Tolerance (in rectangle coordinates) on quad edges so that adjacent quads leave no cracks.
EDGE_EPS = 1e-9
#: Width of the remap maps the sampled points are packed into (OpenCV's remap accepts at most
#: SHRT_MAX - 1 rows or columns).
_REMAP_COLS = 1024


@dataclass(frozen=True)
class RenderResult:
    """Output of :func:`render_layers`.

    Attributes:
        rgb: ``(H, W, 3)`` ``uint8`` colour (black where nothing is hit).
        depth: ``(H, W)`` ``float32`` camera-frame z in metres, NaN where nothing is hit.
        quad_index: ``(H, W)`` ``int32`` index of the visible quad in :func:`quad_list` of the rendered
            target, -1 where nothing is hit.
    """

    rgb: np.ndarray
    depth: np.ndarray
    quad_index: np.ndarray


def quad_list(target: World | Scene | Sequence[Quad]) -> list[Quad]:
    """The quads of a world, a scene or a plain sequence, in the order ``quad_index`` refers to."""
    if isinstance(target, World):
        return target.quads
    if isinstance(target, Scene):
        return target.quads
    return list(target)


def _candidates(target: World | Scene | Sequence[Quad], pose: Pose) -> tuple[list[Quad], np.ndarray]:
    """Quads that may be visible and their indices in :func:`quad_list`.

    A camera inside a room of a :class:`World` sees only that room (rooms are closed and opaque)."""
    quads = quad_list(target)
    if isinstance(target, World):
        scene = int(target.scene_of_point(pose.center[None])[0])
        if scene >= 0:
            lo, hi = target.quad_offsets[scene], target.quad_offsets[scene + 1]
            return quads[lo:hi], np.arange(lo, hi)
    return quads, np.arange(len(quads))


def _clip_near(points: np.ndarray, near: float) -> np.ndarray:
    """Sutherland-Hodgman clip of a convex polygon ``(N, 3)`` (camera frame) to ``z >= near``."""
    out = []
    n = len(points)
    for i in range(n):
        p, q = points[i], points[(i + 1) % n]
        p_in, q_in = p[2] >= near, q[2] >= near
        if p_in:
            out.append(p)
        if p_in != q_in:
            s = (near - p[2]) / (q[2] - p[2])
            out.append(p + s * (q - p))
    return np.array(out).reshape(-1, 3)


def _shade(quad: Quad, a: np.ndarray, b: np.ndarray, lod: np.ndarray) -> np.ndarray:
    """Trilinear texture lookup at rectangle coordinates ``a, b`` ``(N,)`` with mip level ``lod`` ``(N,)``.

    Level ``l`` texel coordinates are ``(a * W_l - 0.5, b * H_l - 0.5)``; both neighbouring levels are
    read from the texture atlas with one bilinear remap each and blended by the fractional level.

    Returns:
        ``(N,)`` ``uint32``: the RGB0 bytes of each colour packed in one word.
    """
    tex = quad.texture
    n = len(a)
    top = len(tex.levels) - 1
    lod = np.clip(lod, 0.0, float(top))
    base = lod.astype(np.intp)  # floor, since lod >= 0
    lo_level, hi_level = int(base.min()), int(base.max())
    rows = -(-n // _REMAP_COLS)
    # Maps packed into (rows, _REMAP_COLS) images: x, y of the lower level, x, y of the upper one, weight.
    maps = np.zeros((5, rows * _REMAP_COLS), dtype=np.float32)
    for k, shift in enumerate((0, 1)):
        for axis, coord in enumerate((a, b)):
            out = maps[2 * k + axis, :n]
            if lo_level == hi_level:  # one level for the whole quad: scalar arithmetic
                level = min(lo_level + shift, top)
                np.multiply(coord, tex.level_size[level, axis], out=out)
                out += tex.level_origin[level, axis] - np.float32(0.5)
            else:
                level_index = np.minimum(base + shift, top) if shift else base
                np.multiply(coord, np.take(tex.level_size[:, axis], level_index), out=out)
                out += np.take(tex.level_origin[:, axis] - np.float32(0.5), level_index)
    np.subtract(lod, base, out=maps[4, :n])
    maps = maps.reshape(5, rows, _REMAP_COLS)
    lower = cv2.remap(tex.atlas, maps[0], maps[1], cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    upper = cv2.remap(tex.atlas, maps[2], maps[3], cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    col = cv2.blendLinear(lower, upper, 1.0 - maps[4], maps[4])
    return col.view(np.uint32).reshape(-1)[:n]


def _affine(w: np.ndarray, fx: float, fy: float, cx: float, cy: float) -> np.ndarray:
    """Coefficients ``(alpha, beta, gamma)`` of ``w . K^-1 (u, v, 1)`` as a function of pixel ``(u, v)``."""
    return np.array([w[0] / fx, w[1] / fy, w[2] - w[0] * cx / fx - w[1] * cy / fy])


def _affine_eval(c: np.ndarray, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """``c[0] u + c[1] v + c[2]`` for float32 ``u, v`` ``(N,)`` (float32 result)."""
    out = u * np.float32(c[0])
    out += v * np.float32(c[1])
    out += np.float32(c[2])
    return out


def _row_spans(planes: np.ndarray, v: np.ndarray, u0: int, u1: int) -> tuple[np.ndarray, np.ndarray]:
    """Integer column range ``[lo, hi]`` per row ``v`` ``(R,)`` where every ``alpha u + beta v + gamma >= 0``.

    Args:
        planes: ``(P, 3)`` half-plane coefficients in pixel coordinates.
        v: ``(R,)`` row coordinates.
        u0: first column considered.
        u1: last column considered.

    Returns:
        ``lo``, ``hi`` ``(R,)`` int64 (``lo > hi`` for empty rows).
    """
    lo = np.full(len(v), float(u0))
    hi = np.full(len(v), float(u1))
    for alpha, beta, gamma in planes:
        r = -(beta * v + gamma)  # alpha * u >= r
        if alpha > 0:
            lo = np.maximum(lo, r / alpha)
        elif alpha < 0:
            hi = np.minimum(hi, r / alpha)
        else:
            hi = np.where(r <= 0, hi, -np.inf)
    lo = np.clip(np.ceil(lo), u0, u1 + 1).astype(np.int64)
    hi = np.clip(np.floor(hi), u0 - 1, u1).astype(np.int64)
    return lo, hi


def render_layers(target: World | Scene | Sequence[Quad], camera: Camera, pose: Pose, *,
                  near: float = NEAR) -> RenderResult:
    """Render colour, depth and the visible quad of every pixel.

    Args:
        target: a :class:`World` (only the room containing the camera is drawn when there is one), a
            :class:`Scene`, or any sequence of :class:`Quad`.
        camera: pinhole intrinsics (distortion is not supported).
        pose: ``cam_from_world``.
        near: near-plane distance in metres.

    Returns:
        :class:`RenderResult` with ``(H, W, 3)`` rgb, ``(H, W)`` depth and ``(H, W)`` quad index.
    """
    if camera.is_distorted:
        raise ValueError(f"the synthetic renderer is pinhole only, got {camera.model} with distortion")
    (fx, fy), (cx, cy) = camera.focal, camera.principal_point
    W, H = camera.width, camera.height
    R, t = pose.R, pose.t
    inv_depth = np.zeros((H, W))  # z-buffer of 1 / z (0: nothing yet)
    colour = np.zeros((H, W), dtype=np.uint32)  # packed RGB0
    ids = np.full((H, W), -1, dtype=np.int32)

    quads, indices = _candidates(target, pose)
    if not quads:
        return RenderResult(rgb=np.zeros((H, W, 3), np.uint8), depth=np.full((H, W), np.nan, np.float32),
                            quad_index=ids)
    # Camera-frame geometry of every candidate at once.
    Os = np.array([q.origin for q in quads]) @ R.T + t
    Us = np.array([q.u for q in quads]) @ R.T
    Vs = np.array([q.v for q in quads]) @ R.T
    ns = np.cross(Vs, Us)  # front normals (unnormalised)
    hs = np.einsum("ij,ij->i", ns, Os)  # plane n . X = h; the camera (origin) sees the front iff h < 0
    corners = np.stack([Os, Os + Us, Os + Us + Vs, Os + Vs], axis=1)  # (Q, 4, 3)
    jobs = []
    for k in np.flatnonzero(hs < 0):
        poly = corners[k]
        if poly[:, 2].min() < near:
            poly = _clip_near(poly, near)
            if len(poly) < 3:
                continue
        px = fx * poly[:, 0] / poly[:, 2] + cx
        py = fy * poly[:, 1] / poly[:, 2] + cy
        u0, u1 = max(0, int(np.floor(px.min()))), min(W - 1, int(np.ceil(px.max())))
        v0, v1 = max(0, int(np.floor(py.min()))), min(H - 1, int(np.ceil(py.max())))
        if u0 > u1 or v0 > v1:
            continue
        jobs.append((float(poly[:, 2].min()), int(indices[k]), quads[k], Os[k], Us[k], Vs[k], ns[k], float(hs[k]),
                     (v0, v1)))
    jobs.sort(key=lambda j: (j[0], j[1]))  # front to back: fewer texture lookups

    for _, index, quad, O, U, V, n, h, (v0, v1) in jobs:
        # Along the ray d = K^-1 (u, v, 1) (d_z = 1): z = h / D with D = n . d, and the hit point's
        # rectangle coordinates are a = Na / (|U|^2 D), b = Nb / (|V|^2 D) with Na = h U.d - (O.U) D.
        # D, Na, Nb are affine in (u, v), so "in front of the near plane and inside the rectangle" is an
        # intersection of five half-planes of the image: a convex span of columns per row.
        uu, vv = float(U @ U), float(V @ V)
        cD = _affine(n, fx, fy, cx, cy)
        cNa = h * _affine(U, fx, fy, cx, cy) - float(O @ U) * cD
        cNb = h * _affine(V, fx, fy, cx, cy) - float(O @ V) * cD
        planes = np.stack([near * cD - np.array([0.0, 0.0, h]),  # z >= near (implies D < 0)
                           -EDGE_EPS * uu * cD - cNa, cNa - (1 + EDGE_EPS) * uu * cD,  # 0 <= a <= 1
                           -EDGE_EPS * vv * cD - cNb, cNb - (1 + EDGE_EPS) * vv * cD])  # 0 <= b <= 1
        lo, hi = _row_spans(planes, np.arange(v0, v1 + 1, dtype=np.float64), 0, W - 1)
        rows_ok = np.flatnonzero(lo <= hi)
        if len(rows_ok) == 0:
            continue
        r0, r1 = int(rows_ok[0]), int(rows_ok[-1])
        lo, hi = lo[r0:r1 + 1], hi[r0:r1 + 1]
        v0, v1, u0, u1 = v0 + r0, v0 + r1, int(lo.min()), int(hi.max())
        us = np.arange(u0, u1 + 1)
        vs = np.arange(v0, v1 + 1, dtype=np.float64)
        inv_z = (cD[0] / h) * us[None, :] + ((cD[1] / h) * vs + cD[2] / h)[:, None]  # 1 / z = D / h
        sub = inv_depth[v0:v1 + 1, u0:u1 + 1]
        ok = (us[None, :] >= lo[:, None]) & (us[None, :] <= hi[:, None]) & (inv_z > sub)
        iz = inv_z[ok]
        if len(iz) == 0:
            continue
        # Per-pixel work in float32 (relative error ~1e-7: well below 1e-2 texel on these textures).
        uf = np.broadcast_to(us.astype(np.float32), ok.shape)[ok]
        vf = np.repeat(vs.astype(np.float32), np.count_nonzero(ok, axis=1))
        inv_d = (1.0 / h) / iz.astype(np.float32)  # 1 / D
        a = _affine_eval(cNa / uu, uf, vf)
        a *= inv_d
        np.clip(a, 0.0, 1.0, out=a)
        b = _affine_eval(cNb / vv, uf, vf)
        b *= inv_d
        np.clip(b, 0.0, 1.0, out=b)
        # Texel footprint of one pixel: derivatives of (W_tex a, H_tex b) along the image axes,
        # d a / d u = (cNa_u / |U|^2 - a cD_u) / D.
        tw, th = quad.texture.width, quad.texture.height
        f = np.float32
        da_du = f(cNa[0] / uu) - a * f(cD[0])
        da_dv = f(cNa[1] / uu) - a * f(cD[1])
        db_du = f(cNb[0] / vv) - b * f(cD[0])
        db_dv = f(cNb[1] / vv) - b * f(cD[1])
        ku, kv = f(tw * tw), f(th * th)
        rho2 = np.maximum(ku * da_du * da_du + kv * db_du * db_du, ku * da_dv * da_dv + kv * db_dv * db_dv)
        rho2 *= inv_d * inv_d
        lod = cv2.log(np.maximum(rho2, f(1e-12)).reshape(-1, 1)).reshape(-1)  # natural log, fast
        lod *= f(0.5 / np.log(2.0))  # 0.5 log2(rho^2)
        sub[ok] = iz
        colour[v0:v1 + 1, u0:u1 + 1][ok] = _shade(quad, a, b, lod)
        ids[v0:v1 + 1, u0:u1 + 1][ok] = index

    rgb = cv2.cvtColor(colour.view(np.uint8).reshape(H, W, 4), cv2.COLOR_RGBA2RGB)
    with np.errstate(divide="ignore"):
        depth = np.where(inv_depth > 0, 1.0 / inv_depth, np.nan).astype(np.float32)
    return RenderResult(rgb=rgb, depth=depth, quad_index=ids)


def render(target: World | Scene | Sequence[Quad], camera: Camera, pose: Pose, *,
           near: float = NEAR) -> tuple[np.ndarray, np.ndarray]:
    """Render one view.

    Args:
        target: a :class:`World`, a :class:`Scene` or a sequence of :class:`Quad`.
        camera: pinhole intrinsics.
        pose: ``cam_from_world``.
        near: near-plane distance in metres.

    Returns:
        ``rgb`` ``(H, W, 3)`` ``uint8`` and ``depth`` ``(H, W)`` ``float32`` (camera z in metres, NaN
        where nothing is hit). No photometric nuisance is applied.
    """
    result = render_layers(target, camera, pose, near=near)
    return result.rgb, result.depth


def render_frame(world: World, scene_index: int, sequence: int, frame: int, *, lit: bool = True) -> RenderResult:
    """Render frame ``frame`` of sequence ``sequence`` (1-based) of scene ``scene_index`` as it is written:
    the room as it is in that traversal (moved / removed objects, occluders: :meth:`Scene.frame_quads`) and,
    when ``lit``, the traversal's lighting (its night exposure noise is drawn from a generator of its own per
    frame, so the result is deterministic); no photometric nuisance.

    Returns:
        :class:`RenderResult`; ``quad_index`` indexes ``world.scenes[scene_index].frame_quads(sequence, frame)``.
    """
    from .lighting import traversal_lighting

    scene = world.scenes[scene_index]
    traversal = scene.traversals[sequence - 1]
    pose = traversal.poses[frame]
    quads = scene.frame_quads(sequence, frame)
    result = render_layers(quads, world.camera, pose)
    light = traversal_lighting(world.config, scene, traversal)
    if not lit or light.is_identity:
        return result
    from .scene import NIGHT_NOISE_STREAM, stream

    rng = stream(world.config.seed, NIGHT_NOISE_STREAM, scene_index, sequence, frame)
    rgb = light.apply(result.rgb, result.depth, result.quad_index, quads, world.camera, pose, rng)
    return RenderResult(rgb=rgb, depth=result.depth, quad_index=result.quad_index)
