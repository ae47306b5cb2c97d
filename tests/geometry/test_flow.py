"""Correspondence maps: hand conversions, integer-shift warps, exact affine resizing, cyclic consistency."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from visloc.geometry.flow import (
    cyclic_consistency,
    homography_map,
    identity_map,
    in_bounds,
    normalized_to_pixel,
    pixel_to_normalized,
    resize_map,
    warp_with_map,
)


def test_identity_map_by_hand() -> None:
    out = identity_map(2, 2, 3, dtype=torch.float64)
    assert out.shape == (2, 2, 2, 3)
    expected_x = torch.tensor([[0.0, 1, 2], [0, 1, 2]], dtype=torch.float64)
    expected_y = torch.tensor([[0.0, 0, 0], [1, 1, 1]], dtype=torch.float64)
    for b in range(2):
        torch.testing.assert_close(out[b, 0], expected_x)
        torch.testing.assert_close(out[b, 1], expected_y)


def test_pixel_normalized_by_hand_and_round_trip() -> None:
    # source 5 rows x 4 columns: x = 0 -> -0.75, x = -0.5 -> -1, x = 3.5 -> 1; y = 2 (centre row) -> 0
    corr = torch.zeros(1, 2, 1, 3)
    corr[0, 0, 0] = torch.tensor([0.0, -0.5, 3.5])
    corr[0, 1, 0] = torch.tensor([2.0, -0.5, 4.5])
    norm = pixel_to_normalized(corr, (5, 4))
    torch.testing.assert_close(norm[0, 0, 0], torch.tensor([-0.75, -1.0, 1.0]))
    torch.testing.assert_close(norm[0, 1, 0], torch.tensor([0.0, -1.0, 1.0]))
    g = torch.Generator().manual_seed(0)
    pix = torch.rand(3, 2, 7, 9, generator=g, dtype=torch.float64) * 50 - 10
    back = normalized_to_pixel(pixel_to_normalized(pix, (31, 47)), (31, 47))
    torch.testing.assert_close(back, pix, rtol=0, atol=1e-12)


def test_normalized_identity_samples_the_image_unchanged() -> None:
    # the convention matches grid_sample(align_corners=False): sampling at every pixel centre is exact
    g = torch.Generator().manual_seed(1)
    image = torch.rand(2, 3, 6, 11, generator=g, dtype=torch.float64)
    grid = pixel_to_normalized(identity_map(2, 6, 11, dtype=torch.float64), (6, 11))
    out = F.grid_sample(image, grid.permute(0, 2, 3, 1), align_corners=False)
    torch.testing.assert_close(out, image, rtol=0, atol=1e-12)


def test_warp_with_integer_shift_equals_a_slice() -> None:
    g = torch.Generator().manual_seed(2)
    source = torch.rand(1, 3, 10, 12, generator=g, dtype=torch.float64)
    dx, dy = 2, 1
    corr = identity_map(1, 6, 7, dtype=torch.float64)
    corr[:, 0] += dx
    corr[:, 1] += dy
    warped, mask = warp_with_map(source, corr)
    assert warped.shape == (1, 3, 6, 7) and mask.shape == (1, 1, 6, 7) and mask.dtype == torch.bool
    torch.testing.assert_close(warped, source[:, :, dy : dy + 6, dx : dx + 7], rtol=0, atol=1e-12)
    assert bool(mask.all())
    # shifted past the right/bottom edges: only the columns / rows that stay inside are valid
    corr = identity_map(1, 6, 7, dtype=torch.float64)
    corr[:, 0] += 8  # x + 8 <= 11 for x <= 3
    corr[:, 1] += 6  # y + 6 <= 9 for y <= 3
    warped, mask = warp_with_map(source, corr)
    expected = torch.zeros(1, 1, 6, 7, dtype=torch.bool)
    expected[..., :4, :4] = True
    assert torch.equal(mask, expected)
    torch.testing.assert_close(warped[..., :4, :4], source[:, :, 6:10, 8:12], rtol=0, atol=1e-12)
    # half a pixel beyond the last centre, bilinear mixes in the zero padding: half the value
    corr = identity_map(1, 1, 1, dtype=torch.float64)
    corr[:, 0] = 11.5
    warped, mask = warp_with_map(source, corr)
    torch.testing.assert_close(warped[0, :, 0, 0], 0.5 * source[0, :, 0, 11])
    assert not bool(mask.any())


def test_in_bounds_rejects_nan() -> None:
    corr = torch.tensor([[[[0.0, float("nan"), 4.0]], [[0.0, 1.0, 2.0]]]])
    assert in_bounds(corr, (3, 5)).flatten().tolist() == [True, False, True]


def _affine_map(a: torch.Tensor, t: torch.Tensor, hw: tuple[int, int]) -> torch.Tensor:
    """``m(p) = A p + t`` over an ``hw`` lattice, by explicit loops."""
    h, w = hw
    out = torch.zeros(1, 2, h, w, dtype=torch.float64)
    for y in range(h):
        for x in range(w):
            out[0, :, y, x] = a @ torch.tensor([float(x), float(y)], dtype=torch.float64) + t
    return out


@pytest.mark.parametrize(
    ("old_t", "new_t", "old_s", "new_s"),
    [((12, 16), (30, 20), (40, 50), (20, 25)), ((15, 15), (240, 240), (240, 240), (240, 240)),
     ((9, 13), (4, 5), (33, 21), (66, 7))],
)
def test_resize_affine_map_is_the_affine_map_at_the_new_size(old_t, new_t, old_s, new_s) -> None:
    a = torch.tensor([[0.9, -0.2], [0.15, 1.1]], dtype=torch.float64)
    t = torch.tensor([3.0, -2.0], dtype=torch.float64)
    corr = _affine_map(a, t, old_t)
    out = resize_map(corr, new_t, old_s, new_s)
    # new target pixel p' sits at old target pixel p = (p' + 0.5) * old / new - 0.5 (per axis); its match
    # A p + t in old source pixels moves to (x + 0.5) * new_s / old_s - 0.5
    st = torch.diag(torch.tensor([old_t[1] / new_t[1], old_t[0] / new_t[0]], dtype=torch.float64))
    ss = torch.diag(torch.tensor([new_s[1] / old_s[1], new_s[0] / old_s[0]], dtype=torch.float64))
    a_new = ss @ a @ st
    t_new = ss @ (a @ (0.5 * torch.diag(st) - 0.5) + t + 0.5) - 0.5
    torch.testing.assert_close(out, _affine_map(a_new, t_new, new_t), rtol=0, atol=1e-9)


def test_resize_map_keeps_a_same_size_map() -> None:
    g = torch.Generator().manual_seed(3)
    corr = torch.rand(2, 2, 5, 6, generator=g, dtype=torch.float64) * 10
    torch.testing.assert_close(resize_map(corr, (5, 6), (10, 10), (10, 10)), corr, rtol=0, atol=1e-12)


def test_cyclic_consistency_flags_exactly_the_broken_pixels() -> None:
    # target 5x6, source 7x9; forward: target (x, y) -> source (x + 2, y + 1); backward: the inverse shift
    dx, dy = 2, 1
    fwd = identity_map(1, 5, 6, dtype=torch.float64)
    fwd[:, 0] += dx
    fwd[:, 1] += dy
    bwd = identity_map(1, 7, 9, dtype=torch.float64)
    bwd[:, 0] -= dx
    bwd[:, 1] -= dy
    assert bool(cyclic_consistency(fwd, bwd, 0.5).all())
    # break three source pixels: (x=4, y=3) by 3 px, (x=7, y=5) by 0.4 px (within tolerance),
    # (x=2, y=1) by 1 px in y, and one target pixel (x=5, y=4) maps out of the source
    bwd[0, 0, 3, 4] += 3.0
    bwd[0, 0, 5, 7] += 0.4
    bwd[0, 1, 1, 2] -= 1.0
    fwd[0, 0, 4, 5] = 9.5
    mask = cyclic_consistency(fwd, bwd, 0.5)
    expected = torch.ones(1, 1, 5, 6, dtype=torch.bool)
    expected[0, 0, 3 - dy, 4 - dx] = False
    expected[0, 0, 1 - dy, 2 - dx] = False
    expected[0, 0, 4, 5] = False
    assert torch.equal(mask, expected)
    # a tolerance of 3 keeps the 3-px error and the 1-px one, not the out-of-bounds pixel
    expected = torch.ones(1, 1, 5, 6, dtype=torch.bool)
    expected[0, 0, 4, 5] = False
    assert torch.equal(cyclic_consistency(fwd, bwd, 3.0), expected)


def test_bad_shapes() -> None:
    with pytest.raises(ValueError, match=r"\(B, 2, H, W\)"):
        pixel_to_normalized(torch.zeros(1, 3, 4, 4), (4, 4))
    with pytest.raises(ValueError, match="source_hw"):
        normalized_to_pixel(torch.zeros(1, 2, 4, 4), (0, 4))
    with pytest.raises(ValueError, match="batch"):
        warp_with_map(torch.zeros(2, 3, 4, 4), torch.zeros(1, 2, 4, 4))
    with pytest.raises(ValueError, match="tolerance"):
        cyclic_consistency(torch.zeros(1, 2, 4, 4), torch.zeros(1, 2, 4, 4), -1.0)


def test_homography_map_matches_opencv() -> None:
    H = np.array([[1.1, 0.05, 3.0], [-0.02, 0.95, -2.0], [1e-4, -2e-4, 1.0]])
    m = homography_map(H, (7, 9)).numpy()
    assert homography_map(torch.from_numpy(H), (7, 9), torch.float32).dtype == torch.float32
    pts = np.stack(np.meshgrid(np.arange(9.0), np.arange(7.0)), -1).reshape(-1, 1, 2)
    ref = cv2.perspectiveTransform(pts, H).reshape(7, 9, 2)
    np.testing.assert_allclose(m.transpose(1, 2, 0), ref, atol=1e-4)
