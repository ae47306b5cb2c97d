"""2-D transforms on normalised coordinates: hand-computed affine cases, TPS properties, grids, inverses."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from visloc.errors import ConfigError
from visloc.geometry.warps import (
    Warp,
    affine_target_to_source,
    identity_theta,
    invert_affine,
    normalized_to_pixels,
    pixels_to_normalized,
    sampling_grid,
    source_to_target,
    target_to_source,
    tps_control_points,
    tps_target_to_source,
    two_stage_target_to_source,
    warp_source_to_target,
)


def _random_points(batch: int, n: int, seed: int = 0, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(batch, n, 2, generator=g, dtype=dtype) * 2 - 1).to(dtype)


def _random_tps(
    batch: int, amplitude: float = 0.3, seed: int = 1, dtype: torch.dtype = torch.float32
) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    noise = (torch.rand(batch, 18, generator=g, dtype=torch.float64) * 2 - 1) * amplitude
    return (identity_theta("tps", batch, dtype=torch.float64) + noise).to(dtype)


def _tps_from_affine(theta_affine: torch.Tensor) -> torch.Tensor:
    """TPS theta whose control points are moved by the affine (control points X then Y)."""
    ctrl = tps_control_points(dtype=theta_affine.dtype).expand(theta_affine.shape[0], 9, 2)
    moved = affine_target_to_source(theta_affine, ctrl)
    return moved.transpose(1, 2).reshape(-1, 18)


def test_identity_theta_values() -> None:
    torch.testing.assert_close(identity_theta("affine", 2), torch.tensor([[1.0, 0, 0, 0, 1, 0]] * 2))
    x = [-1.0, -1, -1, 0, 0, 0, 1, 1, 1]
    y = [-1.0, 0, 1, -1, 0, 1, -1, 0, 1]
    torch.testing.assert_close(
        identity_theta("tps", 1, dtype=torch.float64), torch.tensor([x + y], dtype=torch.float64)
    )
    with pytest.raises(ConfigError):
        identity_theta("homography")


@pytest.mark.parametrize("kind", ["affine", "tps"])
def test_identity_maps_points_to_themselves(kind: str) -> None:
    points = _random_points(3, 17)
    out = target_to_source(identity_theta(kind, 3), kind, points)
    torch.testing.assert_close(out, points, atol=1e-6, rtol=0)


def test_affine_by_hand() -> None:
    # rotation by +90 degrees (x -> y, y -> -x), then translation (0.1, -0.2)
    theta = torch.tensor([[0.0, -1.0, 0.1, 1.0, 0.0, -0.2]])
    out = affine_target_to_source(theta, torch.tensor([[[0.5, 0.25], [0.0, 0.0]]]))
    torch.testing.assert_close(out, torch.tensor([[[-0.15, 0.3], [0.1, -0.2]]]))
    # anisotropic scale (2, 0.5) and translation (-0.3, 0.4)
    theta = torch.tensor([[2.0, 0.0, -0.3, 0.0, 0.5, 0.4]])
    out = affine_target_to_source(theta, torch.tensor([[[0.5, -0.8]]]))
    torch.testing.assert_close(out, torch.tensor([[[0.7, 0.0]]]))
    # a rotation by 30 degrees moves (1, 0) to (cos, sin)
    c, s = math.cos(math.pi / 6), math.sin(math.pi / 6)
    out = affine_target_to_source(torch.tensor([[c, -s, 0.0, s, c, 0.0]]), torch.tensor([[[1.0, 0.0]]]))
    torch.testing.assert_close(out, torch.tensor([[[c, s]]]))


def test_batch_of_one_broadcasts() -> None:
    points = _random_points(1, 5)
    theta = torch.tensor([[1.0, 0, 0.1, 0, 1, 0], [1.0, 0, 0.2, 0, 1, 0]])
    out = affine_target_to_source(theta, points)
    assert out.shape == (2, 5, 2)
    torch.testing.assert_close(out[1, :, 0] - out[0, :, 0], torch.full((5,), 0.1))
    with pytest.raises(ValueError):
        affine_target_to_source(theta, _random_points(3, 5))


def test_tps_interpolates_its_control_points() -> None:
    theta = _random_tps(4, amplitude=0.4)
    ctrl = tps_control_points().expand(4, 9, 2)
    out = tps_target_to_source(theta, ctrl)
    torch.testing.assert_close(out, theta.reshape(4, 2, 9).transpose(1, 2), atol=2e-6, rtol=0)
    # the regulariser smooths: the control points are then only approximated
    smoothed = tps_target_to_source(theta, ctrl, reg_factor=0.2)
    assert (smoothed - out).abs().max() > 1e-3


def test_tps_of_affine_moved_control_points_is_that_affine() -> None:
    theta_affine = torch.tensor([[1.1, 0.2, -0.1, -0.15, 0.9, 0.05], [0.8, -0.3, 0.2, 0.25, 1.2, -0.1]])
    points = _random_points(2, 50, seed=3) * 1.5  # also outside the control grid
    expected = affine_target_to_source(theta_affine, points)
    for reg in (0.0, 0.2):  # an affine has no bending: the regulariser changes nothing
        out = tps_target_to_source(_tps_from_affine(theta_affine), points, reg_factor=reg)
        torch.testing.assert_close(out, expected, atol=2e-6, rtol=0)


def test_affine_sampling_grid_matches_torch_affine_grid() -> None:
    theta = torch.tensor([[1.1, 0.2, -0.1, -0.15, 0.9, 0.05], [0.7, 0.0, 0.3, 0.1, 1.3, 0.0]])
    grid = sampling_grid(theta, "affine", (5, 7))
    expected = F.affine_grid(theta.reshape(2, 2, 3), [2, 1, 5, 7], align_corners=True)
    torch.testing.assert_close(grid, expected, atol=1e-6, rtol=0)
    # the TPS version of the same affine gives the same grid
    torch.testing.assert_close(
        sampling_grid(_tps_from_affine(theta), "tps", (5, 7)), expected, atol=2e-6, rtol=0
    )


@pytest.mark.parametrize("kind", ["affine", "tps"])
def test_pure_translation_moves_a_known_pixel(kind: str) -> None:
    h, w = 9, 11
    source = torch.zeros(1, 1, h, w)
    source[0, 0, 4, 6] = 1.0  # pixel (x=6, y=4)
    # theta maps target -> source: target pixel (x, y) samples source (x + 2, y - 1)
    tx, ty = 2 * 2 / (w - 1), -1 * 2 / (h - 1)
    theta = torch.tensor([[1.0, 0.0, tx, 0.0, 1.0, ty]])
    if kind == "tps":
        theta = _tps_from_affine(theta)
    warped = warp_source_to_target(source, theta, kind)
    assert warped.shape == (1, 1, h, w)
    expected = torch.zeros(1, 1, h, w)
    expected[0, 0, 5, 4] = 1.0  # the bright pixel appears at (x=4, y=5) in the target
    torch.testing.assert_close(warped, expected, atol=1e-5, rtol=0)


def test_warp_output_size_and_zero_padding() -> None:
    source = torch.ones(2, 3, 8, 8)
    theta = torch.tensor([[1.0, 0, 1.5, 0, 1, 0]] * 2)  # samples right of the source: zeros
    out = warp_source_to_target(source, theta, "affine", size=(4, 5))
    assert out.shape == (2, 3, 4, 5)
    assert out[..., -1].abs().max() == 0
    identity = warp_source_to_target(source, identity_theta("tps", 2), "tps")
    torch.testing.assert_close(identity, source, atol=1e-5, rtol=0)


def test_pixel_normalised_round_trip() -> None:
    size = (5, 9)  # H, W
    pixels = torch.tensor([[0.0, 0.0], [8.0, 4.0], [4.0, 2.0], [2.0, 1.0]])
    normalised = pixels_to_normalized(pixels, size)
    torch.testing.assert_close(normalised, torch.tensor([[-1.0, -1.0], [1.0, 1.0], [0.0, 0.0], [-0.5, -0.5]]))
    batched = torch.rand(2, 6, 2) * torch.tensor([8.0, 4.0])
    torch.testing.assert_close(normalized_to_pixels(pixels_to_normalized(batched, size), size), batched)


def test_affine_inverse_round_trips() -> None:
    theta = torch.tensor([[1.1, 0.2, -0.1, -0.15, 0.9, 0.05], [2.0, 0.0, 0.5, 0.0, 0.5, -0.25]])
    inverse = invert_affine(theta)
    torch.testing.assert_close(inverse[1], torch.tensor([0.5, 0.0, -0.25, 0.0, 2.0, 0.5]))
    torch.testing.assert_close(invert_affine(inverse), theta, atol=1e-6, rtol=0)
    points = _random_points(2, 20)
    torch.testing.assert_close(
        source_to_target(theta, "affine", target_to_source(theta, "affine", points)), points
    )


def test_tps_numerical_inverse_round_trips() -> None:
    theta = _random_tps(3, amplitude=0.4, seed=5)
    points = _random_points(3, 40, seed=6)
    source_points = tps_target_to_source(theta, points)
    back = source_to_target(theta, "tps", source_points)
    torch.testing.assert_close(back, points, atol=2e-6, rtol=0)
    # and the other way round: moving source points to the target, then back with theta
    torch.testing.assert_close(
        tps_target_to_source(theta, source_to_target(theta, "tps", points)), points, atol=2e-6, rtol=0
    )


def test_tps_inverse_gradient_matches_finite_differences() -> None:
    theta = _random_tps(1, amplitude=0.2, seed=7, dtype=torch.float64).requires_grad_(True)
    points = _random_points(1, 3, seed=8, dtype=torch.float64).requires_grad_(True)
    assert torch.autograd.gradcheck(
        lambda t, p: source_to_target(t, "tps", p, iterations=20), (theta, points), fast_mode=True
    )


def test_two_stage_maps_tps_first_then_affine() -> None:
    # TPS: x -> 0.5 x (an affine expressed as a TPS); affine: translation by 0.2 in x
    theta_tps = _tps_from_affine(torch.tensor([[0.5, 0.0, 0.0, 0.0, 1.0, 0.0]]))
    theta_affine = torch.tensor([[1.0, 0.0, 0.2, 0.0, 1.0, 0.0]])
    points = torch.tensor([[[0.6, -0.4], [-1.0, 1.0]]])
    expected = torch.tensor(
        [[[0.5, -0.4], [-0.3, 1.0]]]
    )  # (0.5 x + 0.2, y); the other order gives 0.5 x + 0.1
    torch.testing.assert_close(two_stage_target_to_source(theta_affine, theta_tps, points), expected)
    warp = Warp(affine=theta_affine, tps=theta_tps)
    assert warp.kind == "two_stage" and warp.batch_size == 1
    torch.testing.assert_close(warp.target_to_source(points), expected)
    torch.testing.assert_close(warp.source_to_target(expected), points, atol=1e-6, rtol=0)
    # the two-stage grid equals the affine grid of the composed affine [0.5, 0, 0.2; 0, 1, 0]
    composed = torch.tensor([[0.5, 0.0, 0.2, 0.0, 1.0, 0.0]])
    torch.testing.assert_close(
        warp.sampling_grid((4, 6)), sampling_grid(composed, "affine", (4, 6)), atol=1e-6, rtol=0
    )


def test_warp_type_and_errors() -> None:
    assert Warp.from_theta(identity_theta("affine"), "affine").kind == "affine"
    assert Warp.from_theta(identity_theta("tps"), "tps").kind == "tps"
    with pytest.raises(ConfigError):
        Warp()
    with pytest.raises(ConfigError):
        target_to_source(identity_theta("affine"), "homography", _random_points(1, 2))
    with pytest.raises(ValueError):
        target_to_source(identity_theta("affine"), "tps", _random_points(1, 2))
    with pytest.raises(ValueError):
        Warp(affine=identity_theta("affine", 2), tps=identity_theta("tps", 3))
