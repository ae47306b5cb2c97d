"""Image and depth loading on files written here with PIL / OpenCV (values known by construction)."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from visloc.errors import InputError
from visloc.io.images import list_images, read_depth, read_image, write_depth


def _rgb_png(path: Path) -> np.ndarray:
    rng = np.random.default_rng(0)
    arr = rng.integers(0, 256, size=(12, 16, 3), dtype=np.uint8)
    Image.fromarray(arr).save(path)
    return arr


def test_rgb_png_round_trip(tmp_path: Path) -> None:
    arr = _rgb_png(tmp_path / "x.png")
    out = read_image(tmp_path / "x.png")
    assert out.dtype == np.uint8 and out.shape == (12, 16, 3)
    np.testing.assert_array_equal(out, arr)


def test_grayscale_output_is_601_luma(tmp_path: Path) -> None:
    arr = np.array([[[255, 0, 0], [0, 255, 0], [0, 0, 255], [10, 20, 30]]], dtype=np.uint8)
    Image.fromarray(arr).save(tmp_path / "c.png")
    grey = read_image(tmp_path / "c.png", grayscale=True)
    assert grey.shape == (1, 4) and grey.dtype == np.uint8
    # 0.299 R + 0.587 G + 0.114 B, by hand
    np.testing.assert_array_equal(grey, [[76, 150, 29, 18]])


def test_grey_png_becomes_rgb(tmp_path: Path) -> None:
    arr = np.array([[0, 7, 128, 255]], dtype=np.uint8)
    Image.fromarray(arr, mode="L").save(tmp_path / "g.png")
    out = read_image(tmp_path / "g.png")
    assert out.shape == (1, 4, 3) and out.dtype == np.uint8
    np.testing.assert_array_equal(out, np.repeat(arr[..., None], 3, axis=2))


def test_rgba_png_is_composited_on_white(tmp_path: Path) -> None:
    arr = np.array([[[10, 20, 30, 255], [10, 20, 30, 0], [10, 20, 30, 128]]], dtype=np.uint8)
    Image.fromarray(arr, mode="RGBA").save(tmp_path / "a.png")
    out = read_image(tmp_path / "a.png")
    assert out.shape == (1, 3, 3)
    a = 128 / 255  # by hand: v * a + 255 * (1 - a)
    expected = [[10, 20, 30], [255, 255, 255], [10 * a + 255 * (1 - a), 20 * a + 255 * (1 - a), 30 * a + 255 * (1 - a)]]
    np.testing.assert_allclose(out[0], expected, atol=1)


def test_palette_png_uses_the_palette(tmp_path: Path) -> None:
    img = Image.new("P", (3, 1))
    img.putpalette([255, 0, 0, 0, 128, 0, 7, 8, 9] + [0] * (3 * 253))
    img.putdata([2, 0, 1])
    img.save(tmp_path / "p.png")
    assert Image.open(tmp_path / "p.png").mode == "P"
    np.testing.assert_array_equal(read_image(tmp_path / "p.png")[0], [[7, 8, 9], [255, 0, 0], [0, 128, 0]])


def test_palette_png_with_transparency(tmp_path: Path) -> None:
    img = Image.new("P", (2, 1))
    img.putpalette([255, 0, 0, 0, 0, 255] + [0] * (3 * 254))
    img.putdata([0, 1])
    img.save(tmp_path / "pt.png", transparency=1)  # index 1 fully transparent -> white
    np.testing.assert_array_equal(read_image(tmp_path / "pt.png")[0], [[255, 0, 0], [255, 255, 255]])


def test_16bit_grey_png_is_scaled_to_8bit(tmp_path: Path) -> None:
    raw = np.array([[0, 257 * 100, 65535, 257 * 3]], dtype=np.uint16)
    Image.fromarray(raw).save(tmp_path / "g16.png")
    out = read_image(tmp_path / "g16.png")
    assert out.dtype == np.uint8 and out.shape == (1, 4, 3)
    np.testing.assert_array_equal(out[..., 0], [[0, 100, 255, 3]])
    np.testing.assert_array_equal(out[..., 0], out[..., 2])


def test_dark_16bit_png_is_scaled_like_any_16bit_png(tmp_path: Path) -> None:
    raw = np.array([[0, 100, 200]], dtype=np.uint16)  # 16-bit values: all nearly black
    Image.fromarray(raw).save(tmp_path / "dark16.png")
    np.testing.assert_array_equal(read_image(tmp_path / "dark16.png")[..., 0], [[0, 0, 1]])


def test_16bit_rgb_png_is_scaled_to_8bit(tmp_path: Path) -> None:
    bgr = np.zeros((2, 2, 3), dtype=np.uint16)
    bgr[0, 0] = [65535, 0, 257 * 100]  # OpenCV writes BGR
    bgr[1, 1] = [257 * 9, 257 * 8, 257 * 7]
    assert cv2.imwrite(str(tmp_path / "c16.png"), bgr)
    out = read_image(tmp_path / "c16.png")
    assert out.dtype == np.uint8
    np.testing.assert_array_equal(out[0, 0], [100, 0, 255])
    np.testing.assert_array_equal(out[1, 1], [7, 8, 9])


def test_exif_rotated_jpeg_comes_back_rotated(tmp_path: Path) -> None:
    stored = np.zeros((40, 80, 3), dtype=np.uint8)  # 80 wide, 40 high
    stored[:, :40] = [255, 0, 0]  # left half red
    stored[:, 40:] = [0, 0, 255]  # right half blue
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 deg clockwise to display"
    Image.fromarray(stored).save(tmp_path / "r.jpg", exif=exif, quality=95)
    out = read_image(tmp_path / "r.jpg")
    # turned clockwise: 40 wide, 80 high, the left (red) half is now on top
    assert out.shape == (80, 40, 3)
    np.testing.assert_allclose(out[:35].reshape(-1, 3).mean(0), [255, 0, 0], atol=12)
    np.testing.assert_allclose(out[45:].reshape(-1, 3).mean(0), [0, 0, 255], atol=12)
    # JPEG chroma blurs the red/blue edge, so compare mean errors: clockwise, not counter-clockwise
    err_cw = np.abs(out.astype(float) - np.rot90(stored, k=-1)).mean()
    err_ccw = np.abs(out.astype(float) - np.rot90(stored, k=1)).mean()
    assert err_cw < 5 < 50 < err_ccw, (err_cw, err_ccw)


@pytest.mark.parametrize("kind", ["truncated", "garbage", "empty"])
def test_unreadable_image_names_the_file(tmp_path: Path, kind: str) -> None:
    good = tmp_path / "good.jpg"
    Image.fromarray(np.random.default_rng(1).integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(good)
    data = good.read_bytes()
    bad = tmp_path / f"{kind}.jpg"
    bad.write_bytes({"truncated": data[: len(data) // 2], "garbage": b"\x89PNG nonsense" * 10, "empty": b""}[kind])
    with pytest.raises(InputError) as err:
        read_image(bad)
    assert err.value.path == bad
    assert str(bad) in str(err.value)


def test_missing_image_names_the_file(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="does not exist") as err:
        read_image(tmp_path / "nope.png")
    assert err.value.path == tmp_path / "nope.png"


def test_depth_millimetres_and_invalid(tmp_path: Path) -> None:
    raw = np.array([[0, 1000, 2500, 65535]], dtype=np.uint16)
    Image.fromarray(raw).save(tmp_path / "d.png")
    depth = read_depth(tmp_path / "d.png")
    assert depth.dtype == np.float32
    np.testing.assert_array_equal(np.isnan(depth), [[True, False, False, True]])
    np.testing.assert_allclose(depth[0, 1:3], [1.0, 2.5])
    # TUM: 5000 units per metre
    np.testing.assert_allclose(read_depth(tmp_path / "d.png", scale=5000.0)[0, 1:3], [0.2, 0.5])


def test_depth_round_trip(tmp_path: Path) -> None:
    depth = np.array([[0.5, 1.234, np.nan], [70.0, -1.0, 3.0]], dtype=np.float32)
    write_depth(tmp_path / "d.png", depth)
    raw = np.asarray(Image.open(tmp_path / "d.png"))
    np.testing.assert_array_equal(raw, [[500, 1234, 65535], [65535, 65535, 3000]])  # 70 m overflows
    back = read_depth(tmp_path / "d.png")
    np.testing.assert_allclose(back[0, :2], [0.5, 1.234], atol=5e-4)
    assert np.isnan(back[0, 2]) and np.isnan(back[1, 0]) and np.isnan(back[1, 1])


def test_depth_rejects_colour_image(tmp_path: Path) -> None:
    _rgb_png(tmp_path / "rgb.png")
    with pytest.raises(InputError, match="single-channel") as err:
        read_depth(tmp_path / "rgb.png")
    assert err.value.path == tmp_path / "rgb.png"


def test_list_images(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="does not exist"):
        list_images(tmp_path / "nope")
    with pytest.raises(InputError, match="no images"):
        list_images(tmp_path)
    (tmp_path / "b").mkdir()
    _rgb_png(tmp_path / "b" / "z.PNG")
    _rgb_png(tmp_path / "a.jpg")
    (tmp_path / "notes.txt").write_text("x")
    assert list_images(tmp_path) == [tmp_path / "a.jpg", tmp_path / "b" / "z.PNG"]


def _png_declaring(path: Path, width: int, height: int) -> Path:
    """A real 4x4 PNG whose IHDR is rewritten to declare ``width`` x ``height`` (CRC recomputed)."""
    import struct
    import zlib

    Image.fromarray(np.zeros((4, 4, 3), dtype=np.uint8)).save(path)
    data = bytearray(path.read_bytes())
    assert data[12:16] == b"IHDR"  # 8-byte signature, 4-byte length, then the first chunk's type
    data[16:24] = struct.pack(">II", width, height)
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])))
    path.write_bytes(bytes(data))
    return path


def test_decompression_bomb_is_an_input_error_with_the_declared_size(tmp_path: Path) -> None:
    bomb = _png_declaring(tmp_path / "bomb.png", 60000, 60000)
    # Pillow itself refuses the header (the case this guards)
    with pytest.raises(Image.DecompressionBombError):
        Image.open(bomb)
    for read in (read_image, read_depth):
        with pytest.raises(InputError, match="declares 60000x60000 pixels") as err:
            read(bomb)
        assert err.value.path == bomb
        assert str(err.value).startswith(str(bomb))
    # a header under the limit is still an ordinary (here: truncated) image, not a "bomb"
    small = _png_declaring(tmp_path / "small.png", 5000, 5000)
    with pytest.raises(InputError, match="cannot decode") as err:
        read_image(small)
    assert "declares" not in str(err.value)
