"""Textures of the synthetic world, made from the photographs scikit-image ships (no download).

A :class:`Texture` is an RGB ``uint8`` image plus its mip pyramid. Texel centres sit at integer
coordinates (the OpenCV convention), and a texture's sides are multiples of ``2**MIP_LEVELS`` texels so
that every mip level covers exactly the same area (level ``l`` texel ``i`` is centred on level-0
coordinate ``2**l * (i + 0.5) - 0.5``).

The generators (:func:`make_panel`, :func:`make_wall`, :func:`make_floor`, :func:`make_ceiling`) take a
:class:`numpy.random.Generator` and are deterministic given its state.
"""

from __future__ import annotations

import functools

import cv2
import numpy as np

#: Number of mip levels below level 0 that every texture supports (sides are multiples of 2**MIP_LEVELS).
MIP_LEVELS = 5
_ALIGN = 2**MIP_LEVELS

#: Colour photographs usable as posters / box prints.
COLOUR_SOURCES = ("astronaut", "chelsea", "coffee", "hubble_deep_field", "immunohistochemistry",
                  "retina", "rocket", "motorcycle_left", "motorcycle_right")
#: Grey photographs (tinted when used as posters).
GREY_SOURCES = ("brick", "camera", "coins", "grass", "gravel", "moon", "text", "page", "clock")
#: Every photograph the world uses; all ship inside scikit-image (no network access needed).
PHOTO_SOURCES = COLOUR_SOURCES + GREY_SOURCES
#: Photographs with writing (never mirrored) and without an up direction (also flipped upside down).
TEXT_SOURCES = frozenset({"text", "page", "clock"})
ORIENTATION_FREE = frozenset({"brick", "coins", "grass", "gravel", "moon", "hubble_deep_field",
                              "immunohistochemistry", "retina"})
#: Floor materials, one per scene in turn.
FLOOR_SOURCES = ("gravel", "brick", "grass", "moon")


@functools.cache
def photo(name: str) -> np.ndarray:
    """A scikit-image photograph as RGB ``uint8`` ``(H, W, 3)`` (read-only, cached).

    Args:
        name: one of :data:`PHOTO_SOURCES`.
    """
    import skimage.data

    if name not in PHOTO_SOURCES:
        raise KeyError(f"unknown photo source {name!r}; known: {', '.join(PHOTO_SOURCES)}")
    if name.startswith("motorcycle_"):
        left, right, _ = skimage.data.stereo_motorcycle()
        img = left if name == "motorcycle_left" else right
    else:
        img = getattr(skimage.data, name)()
    img = np.asarray(img)
    if img.dtype != np.uint8:
        img = np.clip(np.round(img.astype(np.float64) * (255.0 / max(float(img.max()), 1.0))), 0, 255)
        img = img.astype(np.uint8)
    if img.ndim == 2:
        img = np.repeat(img[..., None], 3, axis=2)
    img = np.ascontiguousarray(img[..., :3])
    img.setflags(write=False)
    return img


def is_grey(name: str) -> bool:
    return name in GREY_SOURCES


def aligned(n_texels: float) -> int:
    """Round a texel count to a positive multiple of ``2**MIP_LEVELS``."""
    return max(_ALIGN, int(round(n_texels / _ALIGN)) * _ALIGN)


class Texture:
    """An RGB texture with its mip pyramid, stored as one atlas image for the renderer.

    Args:
        image: ``(H, W, 3)`` ``uint8``; ``H`` and ``W`` must be multiples of ``2**MIP_LEVELS``.
        name: label used in ground-truth listings (identical textures in two scenes share one object
            and one name).

    Attributes:
        levels: ``levels[l]`` is the ``(H / 2**l, W / 2**l, 4)`` ``uint8`` image of level ``l`` (RGB plus
            a zero byte, so that the renderer can move a pixel as one 32-bit word); level ``l + 1`` is a
            centred 2x2 average of a lightly blurred level ``l``. Each level is a view into ``atlas``.
        atlas: ``(Ha, Wa, 4)`` ``uint8``: level 0 on the left, the smaller levels stacked on its right,
            each surrounded by a one-texel replicated border (so bilinear lookups never bleed).
        level_origin: ``(L, 2)`` float32 atlas coordinates ``(x, y)`` of texel ``(0, 0)`` of each level.
        level_size: ``(L, 2)`` float32 ``(width, height)`` of each level.
    """

    def __init__(self, image: np.ndarray, name: str = "") -> None:
        image = np.asarray(image, dtype=np.uint8)
        if image.ndim != 3 or image.shape[2] != 3:
            raise ValueError(f"texture must be (H, W, 3), got {image.shape}")
        h, w = image.shape[:2]
        if h % _ALIGN or w % _ALIGN:
            raise ValueError(f"texture sides must be multiples of {_ALIGN}, got {w}x{h}")
        self.name = name
        rgba = np.zeros((h, w, 4), dtype=np.uint8)
        rgba[..., :3] = image
        pyramid = [rgba]
        for _ in range(MIP_LEVELS):
            prev = pyramid[-1]
            blurred = cv2.GaussianBlur(prev, (3, 3), 0.5, borderType=cv2.BORDER_REFLECT)
            pyramid.append(cv2.resize(blurred, (prev.shape[1] // 2, prev.shape[0] // 2),
                                      interpolation=cv2.INTER_AREA))
        # Atlas layout with a 1-texel border around every level.
        origins = [(1, 1)]
        y = 1
        for level in pyramid[1:]:
            origins.append((w + 3, y))
            y += level.shape[0] + 2
        atlas = np.zeros((max(h + 2, y - 1), w + 3 + w // 2 + 1, 4), dtype=np.uint8)
        views = []
        for (x0, y0), level in zip(origins, pyramid, strict=True):
            lh, lw = level.shape[:2]
            atlas[y0 - 1:y0 + lh + 1, x0 - 1:x0 + lw + 1] = cv2.copyMakeBorder(level, 1, 1, 1, 1, cv2.BORDER_REPLICATE)
            views.append(atlas[y0:y0 + lh, x0:x0 + lw])
        atlas.setflags(write=False)
        self.atlas = atlas
        self.levels: list[np.ndarray] = views
        self.level_origin = np.array(origins, dtype=np.float32)
        self.level_size = np.array([(v.shape[1], v.shape[0]) for v in views], dtype=np.float32)

    @property
    def image(self) -> np.ndarray:
        """Level 0 as ``(H, W, 3)`` ``uint8`` (a view)."""
        return self.levels[0][..., :3]

    @property
    def width(self) -> int:
        return self.levels[0].shape[1]

    @property
    def height(self) -> int:
        return self.levels[0].shape[0]

    def __repr__(self) -> str:
        return f"Texture({self.name!r}, {self.width}x{self.height})"


# --- building blocks ----------------------------------------------------------------------------

def _resize(img: np.ndarray, width: int, height: int) -> np.ndarray:
    shrink = width < img.shape[1] and height < img.shape[0]
    return cv2.resize(img, (width, height), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)


def _random_colour(rng: np.random.Generator, lo: float, hi: float) -> np.ndarray:
    return rng.uniform(lo, hi, size=3)


def _lut(img: np.ndarray, curves: np.ndarray) -> np.ndarray:
    """Apply per-channel tone curves ``(256, 3)`` (float, clipped and rounded) to ``uint8`` ``(H, W, 3)``."""
    table = np.clip(np.rint(curves), 0, 255).astype(np.uint8).reshape(1, 256, 3)
    return cv2.LUT(np.ascontiguousarray(img), table)


_LEVELS = np.arange(256, dtype=np.float64)[:, None]


def _paint(rng: np.random.Generator, width: int, height: int, base: np.ndarray, gradient: float) -> np.ndarray:
    """Plain paint: a base colour with a slight linear gradient and very faint smooth blotches."""
    sw, sh = max(2, width // 16), max(2, height // 16)
    y = np.linspace(-0.5, 0.5, sh, dtype=np.float32)[:, None, None]
    x = np.linspace(-0.5, 0.5, sw, dtype=np.float32)[None, :, None]
    gx, gy = rng.uniform(-gradient, gradient, size=2)
    small = base.astype(np.float32)[None, None, :] * (1.0 + gx * x + gy * y)
    blotch = rng.normal(0.0, 1.0, size=(max(2, sh // 4), max(2, sw // 4))).astype(np.float32)
    small = small + 1.5 * cv2.resize(blotch, (sw, sh), interpolation=cv2.INTER_CUBIC)[..., None]
    small = np.clip(np.rint(small), 0, 255).astype(np.uint8)
    return cv2.resize(small, (width, height), interpolation=cv2.INTER_LINEAR)


def make_panel(rng: np.random.Generator, width: int, height: int, source: str | None = None,
               frame: bool = True) -> np.ndarray:
    """A poster: a random crop of a photograph with random flips, colour shift and a thin frame.

    Photographs are mirrored at random (except those with writing) and turned upside down at random
    when they have no natural up direction.

    Args:
        rng: random generator (consumed).
        width: panel width in texels.
        height: panel height in texels.
        source: photograph name (default: drawn from :data:`PHOTO_SOURCES`).
        frame: draw a thin dark or light frame around the print.

    Returns:
        ``(height, width, 3)`` ``uint8``.
    """
    if source is None:
        source = PHOTO_SOURCES[int(rng.integers(len(PHOTO_SOURCES)))]
    src = photo(source)
    sh, sw = src.shape[:2]
    aspect = width / height
    # Largest crop with the panel's aspect, then a random fraction of it at a random place.
    cw, ch = (sw, sw / aspect) if sw / aspect <= sh else (sh * aspect, sh)
    scale = rng.uniform(0.6, 1.0)
    cw, ch = max(8, int(cw * scale)), max(8, int(ch * scale))
    x0 = int(rng.integers(0, sw - cw + 1))
    y0 = int(rng.integers(0, sh - ch + 1))
    img = _resize(src[y0:y0 + ch, x0:x0 + cw], width, height)
    mirror, upside_down = rng.random(2)
    if mirror < 0.5 and source not in TEXT_SOURCES:
        img = img[:, ::-1]
    if upside_down < 0.5 and source in ORIENTATION_FREE:
        img = img[::-1]
    if is_grey(source):
        # Duotone print: map grey levels between a dark and a light random colour.
        dark = _random_colour(rng, 0, 90)
        light = _random_colour(rng, 150, 255)
        curves = dark + (light - dark) * (_LEVELS / 255.0)
        img = _lut(img[..., :1].repeat(3, axis=2), curves)
    else:
        curves = _LEVELS * rng.uniform(0.85, 1.15, size=3) + rng.uniform(-15, 15)
        img = _lut(img, curves)
    if frame:
        border = max(2, round(0.015 * min(width, height)))
        colour = _random_colour(rng, 10, 50) if rng.random() < 0.6 else _random_colour(rng, 210, 245)
        colour = np.rint(colour).astype(np.uint8)
        img[:border] = colour
        img[-border:] = colour
        img[:, :border] = colour
        img[:, -border:] = colour
    return img


def make_wall(rng: np.random.Generator, width_m: float, height_m: float, density: float,
              plain_span: tuple[float, float] | None = None) -> np.ndarray:
    """A wall: painted background densely covered by a mosaic of photo panels about 1 m wide.

    Texture row 0 is the top of the wall and column 0 its left end as seen from inside the room.

    Args:
        rng: random generator (consumed).
        width_m: wall length in metres.
        height_m: wall height in metres.
        density: texels per metre.
        plain_span: ``(start, end)`` in metres along the wall left as plain paint (low-texture
            nuisance), or ``None``.

    Returns:
        ``(aligned(height_m * density), aligned(width_m * density), 3)`` ``uint8``.
    """
    tw, th = aligned(width_m * density), aligned(height_m * density)
    sx, sy = tw / width_m, th / height_m  # exact texels per metre of this texture
    paint = _random_colour(rng, 170, 235)
    img = _paint(rng, tw, th, paint, gradient=0.08)
    # Skirting board along the floor.
    skirting = int(round(0.08 * sy))
    img[th - skirting:] = np.clip(paint * 0.45, 0, 255).astype(np.uint8)
    x = rng.uniform(0.08, 0.2)
    while True:
        col_w = rng.uniform(0.75, 1.2)
        if x + col_w > width_m - 0.08:
            break
        gap = rng.uniform(0.05, 0.15)
        if plain_span is not None and x < plain_span[1] and x + col_w > plain_span[0]:
            x += col_w + gap
            continue
        # Two or three panels stacked from 0.12-0.22 m below the ceiling to 0.25-0.4 m above the floor.
        top, bottom = 0.12 + rng.uniform(0.0, 0.1), height_m - 0.25 - rng.uniform(0.0, 0.15)
        n_rows = 2 if rng.random() < 0.6 else 3
        if n_rows == 2:
            cuts = np.array([rng.uniform(0.4, 0.6)])
        else:
            cuts = np.array([rng.uniform(0.28, 0.38), rng.uniform(0.62, 0.72)])
        edges = np.concatenate([[0.0], cuts, [1.0]]) * (bottom - top) + top
        for r in range(n_rows):
            y0, y1 = edges[r] + 0.03, edges[r + 1] - 0.03
            inset = rng.uniform(0.0, 0.08)
            px0, px1 = round((x + inset) * sx), round((x + col_w - rng.uniform(0.0, 0.08)) * sx)
            py0, py1 = round(y0 * sy), round(y1 * sy)
            if px1 - px0 < 16 or py1 - py0 < 16:
                continue
            img[py0:py1, px0:px1] = make_panel(rng, px1 - px0, py1 - py0)
        x += col_w + gap
    return img


def make_floor(rng: np.random.Generator, width_m: float, depth_m: float, density: float,
               source: str) -> np.ndarray:
    """A tiled floor: ``source`` tiles with random flips / quarter turns and slight shade changes.

    Args:
        rng: random generator (consumed).
        width_m: floor extent along the texture columns, metres.
        depth_m: floor extent along the texture rows, metres.
        density: texels per metre.
        source: photograph used for the tiles (one of :data:`FLOOR_SOURCES`).

    Returns:
        ``(aligned(depth_m * density), aligned(width_m * density), 3)`` ``uint8``.
    """
    tw, th = aligned(width_m * density), aligned(depth_m * density)
    src = photo(source)
    tint = _random_colour(rng, 0.6, 1.0)
    tile = int(round(0.6 * density))
    out = np.empty((th, tw, 3), dtype=np.uint8)
    side = min(src.shape[0], src.shape[1])
    for y0 in range(0, th, tile):
        for x0 in range(0, tw, tile):
            crop_side = int(side * rng.uniform(0.7, 1.0))
            cy = int(rng.integers(0, src.shape[0] - crop_side + 1))
            cx = int(rng.integers(0, src.shape[1] - crop_side + 1))
            piece = _resize(src[cy:cy + crop_side, cx:cx + crop_side], tile, tile)
            piece = np.rot90(piece, int(rng.integers(4)))
            if rng.random() < 0.5:
                piece = piece[:, ::-1]
            piece = _lut(piece, _LEVELS * (tint * rng.uniform(0.9, 1.1)))
            h, w = min(tile, th - y0), min(tile, tw - x0)
            out[y0:y0 + h, x0:x0 + w] = piece[:h, :w]
    # Grout lines between the tiles.
    grout = max(1, int(round(0.006 * density)))
    for y0 in range(0, th, tile):
        out[y0:y0 + grout] //= 3
    for x0 in range(0, tw, tile):
        out[:, x0:x0 + grout] //= 3
    return out


def make_ceiling(rng: np.random.Generator, width_m: float, depth_m: float, density: float,
                 plain: bool) -> np.ndarray:
    """The ceiling: plain paint with a slight gradient (low-texture nuisance) or acoustic tiles.

    Args:
        rng: random generator (consumed).
        width_m: extent along the texture columns, metres.
        depth_m: extent along the texture rows, metres.
        density: texels per metre for the tiled ceiling (the plain one uses a coarse texture).
        plain: plain ceiling if ``True``.

    Returns:
        ``(H, W, 3)`` ``uint8`` (sides multiples of ``2**MIP_LEVELS``).
    """
    base = np.full(3, rng.uniform(215, 240)) * rng.uniform(0.97, 1.0, size=3)
    if plain:
        return _paint(rng, aligned(width_m * 64), aligned(depth_m * 64), base, gradient=0.12)
    tw, th = aligned(width_m * density * 0.5), aligned(depth_m * density * 0.5)
    img = np.empty((th, tw, 3), dtype=np.uint8)
    tile = int(round(0.6 * density * 0.5))
    src = photo("gravel")
    for y0 in range(0, th, tile):
        for x0 in range(0, tw, tile):
            side = int(rng.integers(128, 512))
            cy, cx = (int(v) for v in rng.integers(0, 512 - side + 1, size=2))
            piece = _resize(src[cy:cy + side, cx:cx + side], tile, tile)
            piece = _lut(piece, base * (0.8 + 0.2 * _LEVELS / 255.0))
            h, w = min(tile, th - y0), min(tile, tw - x0)
            img[y0:y0 + h, x0:x0 + w] = piece[:h, :w]
    line = np.rint(base * 0.55).astype(np.uint8)
    img[::tile] = line
    img[:, ::tile] = line
    return img
