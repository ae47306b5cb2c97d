"""Small helpers shared by the dataset readers (private)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TypeVar

from PIL import Image, UnidentifiedImageError

from ..errors import ConfigError, InputError
from ..io.images import too_many_pixels_error

T = TypeVar("T")

#: EXIF orientations that turn the stored image by 90 degrees (width and height swap when applied).
_EXIF_TRANSPOSED = (5, 6, 7, 8)
_EXIF_ORIENTATION = 0x0112


def image_size(path: Path) -> tuple[int, int]:
    """``(width, height)`` of an image as :func:`visloc.io.images.read_image` returns it.

    Only the header is read. EXIF orientations 5-8 swap the two, because ``read_image`` applies them.

    Raises:
        InputError: the file is missing, is not an image, or its header declares more pixels than
            Pillow's decompression-bomb limit.
    """
    if not path.is_file():
        raise InputError(path, "image file does not exist")
    try:
        with Image.open(path) as img:
            width, height = img.size
            try:
                orientation = img.getexif().get(_EXIF_ORIENTATION, 1)
            except Exception:  # malformed EXIF: read_image ignores it too
                orientation = 1
    except Image.DecompressionBombError as e:
        raise too_many_pixels_error(path, e) from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        raise InputError(path, f"cannot read image header ({e})") from None
    if orientation in _EXIF_TRANSPOSED:
        width, height = height, width
    return int(width), int(height)


def unknown_split(split: str, allowed: Sequence[str], source: str, note: str = "") -> ConfigError:
    """The error for a ``split`` a reader does not define: it names the split, then the valid ones.

    Args:
        allowed: the split names the reader accepts.
        source: the reader's data, as the message calls it ("7-Scenes", "an image folder").
        note: appended in parentheses (e.g. aliases the reader also takes).
    """
    extra = f" ({note})" if note else ""
    return ConfigError(f"split {split!r}: {source} has no such split; choose one of {', '.join(allowed)}{extra}")


def select_split(items: Sequence[T], split: str, allowed: Sequence[str], source: str) -> list[T]:
    """Select ``all`` / ``even`` / ``odd`` items by position (the caller sorts ``items`` first).

    Args:
        items: the candidates, in their canonical order (time order for sequences).
        split: ``all``, ``even`` or ``odd``.
        allowed: the split names the calling reader accepts (for the error message).
        source: the reader's name, for the error message.

    Raises:
        ConfigError: ``split`` is not one of ``all``, ``even``, ``odd``.
    """
    if split == "all":
        return list(items)
    if split == "even":
        return list(items[0::2])
    if split == "odd":
        return list(items[1::2])
    raise unknown_split(split, allowed, source)
