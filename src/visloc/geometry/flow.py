"""Dense correspondence maps: pixel <-> normalised conversions, warping, resizing, cyclic consistency.

Conventions (the dense-matching contract of the whole project):

* Pixels follow OpenCV: the centre of the top-left pixel is ``(0, 0)``.
* A **correspondence map** is a float tensor ``(B, 2, Ht, Wt)``: for every pixel of the *target* image the
  ``(x, y)`` pixel coordinate (x first) of its match in the *source* image of size ``(Hs, Ws)``.
* Its **normalised** form has the same layout with values in the ``grid_sample(..., align_corners=False)``
  convention: ``x_n = (2 x + 1) / Ws - 1``, ``y_n = (2 y + 1) / Hs - 1`` (``-1`` / ``1`` are the outer
  edges of the border pixels, not their centres). ``grid_sample`` wants it as ``(B, Ht, Wt, 2)``:
  ``grid.permute(0, 2, 3, 1)``.
* Resizing an image from ``n`` to ``n'`` pixels maps pixel ``p`` to ``(p + 0.5) n' / n - 0.5`` (the
  ``align_corners=False`` / OpenCV ``resize`` convention), so normalised coordinates do not change.

Everything here is pure torch and differentiable where it makes sense (not the boolean masks).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from kornia.geometry import create_meshgrid


def _check_map(corr: torch.Tensor, name: str = "map") -> None:
    if corr.ndim != 4 or corr.shape[1] != 2:
        raise ValueError(f"{name} must have shape (B, 2, H, W), got {tuple(corr.shape)}")


def _check_hw(hw: tuple[int, int], name: str) -> tuple[int, int]:
    if len(hw) != 2 or min(int(hw[0]), int(hw[1])) < 1:
        raise ValueError(f"{name} must be a positive (height, width), got {hw}")
    return int(hw[0]), int(hw[1])


def _size_tensor(hw: tuple[int, int], like: torch.Tensor) -> torch.Tensor:
    """``(1, 2, 1, 1)`` tensor ``(W, H)`` (x first) on ``like``'s device and dtype."""
    return like.new_tensor([float(hw[1]), float(hw[0])]).view(1, 2, 1, 1)


def identity_map(
    b: int, h: int, w: int, device: torch.device | str | None = None, dtype: torch.dtype = torch.float32
) -> torch.Tensor:
    """The correspondence map of an image onto itself: every pixel maps to its own coordinates.

    Args:
        b: batch size ``B``.
        h: height.
        w: width.

    Returns:
        ``(B, 2, h, w)`` with ``out[:, 0, y, x] = x`` and ``out[:, 1, y, x] = y``.
    """
    grid = create_meshgrid(h, w, normalized_coordinates=False, device=device, dtype=dtype)  # (1, h, w, 2)
    return grid.permute(0, 3, 1, 2).expand(b, 2, h, w).contiguous()


def pixel_to_normalized(corr: torch.Tensor, source_hw: tuple[int, int]) -> torch.Tensor:
    """Pixel coordinates of the source image -> ``grid_sample`` (``align_corners=False``) coordinates.

    ``x_n = (2 x + 1) / Ws - 1`` and ``y_n = (2 y + 1) / Hs - 1``.

    Args:
        corr: ``(B, 2, H, W)`` correspondence map, values in source pixels ``(x, y)``.
        source_hw: ``(Hs, Ws)``, the size of the image the values point into.

    Returns:
        ``(B, 2, H, W)`` normalised map.
    """
    _check_map(corr)
    size = _size_tensor(_check_hw(source_hw, "source_hw"), corr)
    return (2.0 * corr + 1.0) / size - 1.0


def normalized_to_pixel(grid: torch.Tensor, source_hw: tuple[int, int]) -> torch.Tensor:
    """Inverse of :func:`pixel_to_normalized`: ``x = ((x_n + 1) Ws - 1) / 2``.

    Args:
        grid: ``(B, 2, H, W)`` normalised map (``x_n`` first).
        source_hw: ``(Hs, Ws)``.

    Returns:
        ``(B, 2, H, W)`` correspondence map in source pixels.
    """
    _check_map(grid, "grid")
    size = _size_tensor(_check_hw(source_hw, "source_hw"), grid)
    return ((grid + 1.0) * size - 1.0) / 2.0


def homography_map(
    H_target_to_source: np.ndarray | torch.Tensor,
    target_hw: tuple[int, int],
    dtype: torch.dtype = torch.float64,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """The correspondence map of a homography: every target pixel ``(x, y)`` mapped by ``H_target_to_source``.

    Args:
        H_target_to_source: ``(3, 3)``, ``[x_s, y_s, 1] ~ H [x_t, y_t, 1]`` in pixels (OpenCV convention).
        target_hw: ``(Ht, Wt)``.
        dtype, device: of the result (computed in float64).

    Returns:
        ``(2, Ht, Wt)`` source pixels, non-finite where a target pixel maps to infinity.
    """
    H = torch.as_tensor(np.asarray(H_target_to_source.detach().cpu() if isinstance(H_target_to_source, torch.Tensor)
                                   else H_target_to_source, dtype=np.float64))
    if H.shape != (3, 3):
        raise ValueError(f"H must be (3, 3), got {tuple(H.shape)}")
    ht, wt = _check_hw(target_hw, "target_hw")
    ys, xs = torch.meshgrid(torch.arange(ht, dtype=torch.float64), torch.arange(wt, dtype=torch.float64),
                            indexing="ij")
    mapped = H @ torch.stack([xs, ys, torch.ones_like(xs)]).reshape(3, -1)
    return (mapped[:2] / mapped[2:]).reshape(2, ht, wt).to(device=device, dtype=dtype)


def in_bounds(corr: torch.Tensor, source_hw: tuple[int, int]) -> torch.Tensor:
    """Where a correspondence map points inside the source image's pixel centres.

    Args:
        corr: ``(B, 2, Ht, Wt)`` in source pixels.
        source_hw: ``(Hs, Ws)``.

    Returns:
        ``(B, 1, Ht, Wt)`` bool: finite and ``0 <= x <= Ws - 1``, ``0 <= y <= Hs - 1`` (there bilinear
        sampling uses source pixels only, no padding).
    """
    _check_map(corr)
    hs, ws = _check_hw(source_hw, "source_hw")
    x, y = corr[:, 0:1], corr[:, 1:2]
    return (x >= 0) & (x <= ws - 1) & (y >= 0) & (y <= hs - 1)  # NaN compares False


def warp_with_map(
    source_image: torch.Tensor, corr: torch.Tensor, mode: str = "bilinear"
) -> tuple[torch.Tensor, torch.Tensor]:
    """Resample the source image onto the target lattice: ``out[..., p] = source(corr[p])``.

    Args:
        source_image: ``(B, C, Hs, Ws)``.
        corr: ``(B, 2, Ht, Wt)`` correspondence map in source pixels.
        mode: ``grid_sample`` interpolation, ``"bilinear"`` or ``"nearest"``.

    Returns:
        ``(B, C, Ht, Wt)`` warped image (zeros where the map leaves the image) and the ``(B, 1, Ht, Wt)``
        bool mask of :func:`in_bounds` (pixels whose value comes from source pixels only).
    """
    _check_map(corr)
    if source_image.ndim != 4 or source_image.shape[0] != corr.shape[0]:
        raise ValueError(
            f"expected a (B, C, Hs, Ws) source image with the map's batch size, got "
            f"{tuple(source_image.shape)} and {tuple(corr.shape)}"
        )
    source_hw = (source_image.shape[-2], source_image.shape[-1])
    grid = pixel_to_normalized(corr.to(source_image.dtype), source_hw).permute(0, 2, 3, 1)
    warped = F.grid_sample(source_image, grid, mode=mode, padding_mode="zeros", align_corners=False)
    return warped, in_bounds(corr, source_hw)


def _resample_axis(values: torch.Tensor, new_size: int, dim: int) -> torch.Tensor:
    """Linear resampling of ``values`` along ``dim`` onto ``new_size`` cells (``align_corners=False``
    positions), extrapolating linearly beyond the outer cell centres so that affine maps stay exact."""
    old_size = values.shape[dim]
    if old_size == new_size:
        return values
    if old_size == 1:
        return values.expand(*values.shape[:dim], new_size, *values.shape[dim + 1 :]).contiguous()
    cells = torch.arange(new_size, device=values.device, dtype=values.dtype)
    pos = (cells + 0.5) * (old_size / new_size) - 0.5
    low = pos.floor().clamp(0, old_size - 2).long()
    frac = pos - low.to(values.dtype)
    shape = [1] * values.ndim
    shape[dim] = new_size
    frac = frac.view(shape)
    v0 = values.index_select(dim, low)
    v1 = values.index_select(dim, low + 1)
    return v0 + (v1 - v0) * frac


def resize_map(
    corr: torch.Tensor,
    new_target_hw: tuple[int, int],
    old_source_hw: tuple[int, int],
    new_source_hw: tuple[int, int],
) -> torch.Tensor:
    """The correspondence map between the resized target and the resized source images.

    The target lattice is resampled bilinearly at the ``align_corners=False`` positions of the new pixels
    (linear extrapolation past the outer pixel centres, so an affine map stays exactly affine), and the
    values are rescaled from ``old_source_hw`` to ``new_source_hw`` pixels: ``x' = (x + 0.5) Ws' / Ws - 0.5``.

    Args:
        corr: ``(B, 2, Ht, Wt)`` map in pixels of a ``old_source_hw`` source.
        new_target_hw: ``(Ht', Wt')``.
        old_source_hw: ``(Hs, Ws)``.
        new_source_hw: ``(Hs', Ws')``.

    Returns:
        ``(B, 2, Ht', Wt')`` in pixels of a ``new_source_hw`` source.
    """
    _check_map(corr)
    ht, wt = _check_hw(new_target_hw, "new_target_hw")
    old = _size_tensor(_check_hw(old_source_hw, "old_source_hw"), corr)
    new = _size_tensor(_check_hw(new_source_hw, "new_source_hw"), corr)
    out = _resample_axis(_resample_axis(corr, ht, 2), wt, 3)
    return (out + 0.5) * (new / old) - 0.5


def cyclic_consistency(
    forward_map: torch.Tensor, backward_map: torch.Tensor, tolerance_px: float
) -> torch.Tensor:
    """Target pixels whose match maps back to themselves.

    A target pixel ``p`` is consistent when ``forward(p)`` lies inside the source (:func:`in_bounds`) and
    ``|| backward(forward(p)) - p || <= tolerance_px``, ``backward`` sampled bilinearly.

    Args:
        forward_map: ``(B, 2, Ht, Wt)`` target pixel -> source pixel.
        backward_map: ``(B, 2, Hs, Ws)`` source pixel -> target pixel.
        tolerance_px: distance allowed, in target pixels (``>= 0``).

    Returns:
        ``(B, 1, Ht, Wt)`` bool.
    """
    _check_map(forward_map, "forward_map")
    _check_map(backward_map, "backward_map")
    if tolerance_px < 0:
        raise ValueError(f"tolerance_px must be >= 0, got {tolerance_px}")
    back, inside = warp_with_map(backward_map.to(forward_map.dtype), forward_map)
    b, _, ht, wt = forward_map.shape
    start = identity_map(b, ht, wt, device=forward_map.device, dtype=forward_map.dtype)
    error = torch.linalg.vector_norm(back - start, dim=1, keepdim=True)
    return inside & (error <= tolerance_px)


__all__ = [
    "cyclic_consistency",
    "homography_map",
    "identity_map",
    "in_bounds",
    "normalized_to_pixel",
    "pixel_to_normalized",
    "resize_map",
    "warp_with_map",
]
