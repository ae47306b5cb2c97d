"""Image and depth loading that copes with what real folders contain.

* EXIF orientation is applied (phones store rotated JPEGs), as in hloc's ``read_image``.
* Grey, RGBA, palette, 16-bit and float images come back as 8-bit RGB (or grey on request).
* A missing, unreadable or truncated file raises :class:`~visloc.errors.InputError` naming the file.
* So does a file whose header declares more pixels than Pillow's decompression-bomb limit (twice
  ``PIL.Image.MAX_IMAGE_PIXELS``): a corrupt or hostile header must not abort a batch.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from ..errors import InputError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".ppm", ".pgm", ".webp")


def _declared_size(path: Path) -> tuple[int, int] | None:
    """``(width, height)`` that the header of ``path`` declares, read by the format plug-in that
    accepts the file without Pillow's pixel limit (the file is not decoded); ``None`` if none does."""
    Image.init()
    try:
        with open(path, "rb") as fp:
            prefix = fp.read(16)
            for fmt in Image.ID:
                factory, accept = Image.OPEN[fmt]
                accepted = accept(prefix) if accept is not None else True
                if not accepted or isinstance(accepted, str):  # a string is Pillow's "almost" warning
                    continue
                fp.seek(0)
                try:
                    width, height = factory(fp, str(path)).size
                    return int(width), int(height)
                except Exception:  # this plug-in cannot parse the header either: try the next one
                    continue
    except OSError:
        return None
    return None


def too_many_pixels_error(path: str | Path, error: Exception) -> InputError:
    """The :class:`InputError` for an image that Pillow refused as a decompression bomb (``error``):
    it names the file and the size its header declares."""
    path = Path(path)
    limit = 2 * (Image.MAX_IMAGE_PIXELS or 0)
    size = _declared_size(path)
    if size is None:
        return InputError(path, f"image declares too many pixels ({error})")
    width, height = size
    return InputError(
        path,
        f"image declares {width}x{height} pixels ({width * height / 1e6:.0f} megapixels), more than the "
        f"{limit / 1e6:.0f}-megapixel limit (a corrupt header or a decompression bomb); not decoded",
    )


def _open(path: Path) -> Image.Image:
    if not path.is_file():
        raise InputError(path, "image file does not exist")
    try:
        img = Image.open(path)
        img.load()  # forces decoding, so truncated files fail here
    except Image.DecompressionBombError as e:
        raise too_many_pixels_error(path, e) from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        raise InputError(path, f"cannot decode image ({e})") from None
    return img


def _to_uint8(arr: np.ndarray) -> np.ndarray:
    """8-bit copy of an image array; the scale depends on the dtype only, never on the content."""
    if arr.dtype == np.uint8:
        return arr
    if arr.dtype == bool:
        return arr.astype(np.uint8) * 255
    if arr.dtype == np.uint16:
        top = 65535.0
    elif np.issubdtype(arr.dtype, np.integer):
        # PIL's 32-bit mode "I" usually carries 16-bit data; wider values use the dtype's range.
        top = 65535.0 if int(arr.max(initial=0)) <= 65535 else float(np.iinfo(arr.dtype).max)
    else:
        top = 1.0  # float images are taken to be in [0, 1]
    return np.clip(np.round(arr.astype(np.float64) * (255.0 / top)), 0, 255).astype(np.uint8)


def read_image(path: str | Path, grayscale: bool = False) -> np.ndarray:
    """Read an image as ``uint8``.

    Args:
        path: image file.
        grayscale: return ``(H, W)`` luminance instead of ``(H, W, 3)`` RGB.

    Returns:
        ``(H, W, 3)`` RGB or ``(H, W)`` grey ``uint8`` array, EXIF orientation applied.
    """
    return image_to_array(_open(Path(path)), grayscale)


def image_to_array(img: Image.Image, grayscale: bool = False) -> np.ndarray:
    """A decoded Pillow image as :func:`read_image` returns it: EXIF orientation applied, 8-bit ``(H, W, 3)``
    RGB (transparency over white) or ``(H, W)`` grey."""
    try:
        img = ImageOps.exif_transpose(img)
    except Exception:  # malformed EXIF must not make a readable image unusable
        pass
    if img.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        arr = _to_uint8(np.asarray(img))
        rgb = np.repeat(arr[..., None], 3, axis=2)
    elif img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        rgb = np.asarray(Image.alpha_composite(background, rgba).convert("RGB"))
    else:
        rgb = np.asarray(img.convert("RGB"))
    if grayscale:
        # ITU-R 601 luma, the weights PIL and OpenCV use.
        grey = rgb.astype(np.float32) @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
        return np.clip(np.round(grey), 0, 255).astype(np.uint8)
    return np.ascontiguousarray(rgb)


def read_depth(path: str | Path, scale: float = 1000.0, invalid: int | None = 65535) -> np.ndarray:
    """Read a 16-bit depth PNG as metres (``float32``; invalid and zero pixels become NaN).

    Args:
        scale: stored units per metre (1000 for millimetres, 5000 for TUM RGB-D).
        invalid: raw value that marks a missing measurement (7-Scenes uses 65535).
    """
    path = Path(path)
    img = _open(path)
    raw = np.asarray(img)
    if raw.ndim != 2 or not np.issubdtype(raw.dtype, np.integer):
        raise InputError(path, f"expected a single-channel integer depth image, got mode {img.mode}")
    depth = raw.astype(np.float32) / float(scale)
    bad = raw == 0
    if invalid is not None:
        bad |= raw == invalid
    depth[bad] = np.nan
    return depth


def write_depth(
    path: str | Path, depth_m: np.ndarray, scale: float = 1000.0, invalid: int = 65535, compress_level: int = 6
) -> None:
    """Write metres as a 16-bit PNG (NaN / out of range -> ``invalid``), the 7-Scenes encoding.

    ``compress_level`` is zlib's (0-9): 1 is several times faster than the default 6 for a few
    percent more bytes."""
    from .atomic import atomic_path

    raw = np.round(np.nan_to_num(depth_m, nan=-1.0) * scale)
    raw = np.where((raw <= 0) | (raw >= invalid), invalid, raw).astype(np.uint16)
    with atomic_path(path) as tmp:
        Image.fromarray(raw).save(tmp, format="PNG", compress_level=compress_level)


def list_images(folder: str | Path) -> list[Path]:
    """All image files under ``folder`` (recursive, sorted). An empty result is an error."""
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(folder, "folder does not exist")
    files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    if not files:
        raise InputError(folder, f"no images found (looked for {', '.join(IMAGE_SUFFIXES)})")
    return files
