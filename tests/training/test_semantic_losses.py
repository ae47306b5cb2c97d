"""Semantic-matching losses against closed forms and hand-computed point sets."""

from __future__ import annotations

import math

import pytest
import torch

from visloc.errors import ConfigError
from visloc.geometry.warps import (
    Warp,
    affine_target_to_source,
    identity_theta,
    invert_affine,
    tps_control_points,
)
from visloc.training.semantic_losses import (
    PUBLICATION_I,
    PUBLICATION_II_CHAMFER,
    PUBLICATION_II_NN,
    SemanticLossConfig,
    chamfer_loss,
    cyclic_grid_loss,
    cyclic_keypoint_loss,
    grid_loss,
    keypoint_reprojection_loss,
    nearest_neighbour_loss,
    semantic_loss,
    unit_grid,
)

NAN = float("nan")


def _translation(dx: float, dy: float, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    return torch.tensor([[1.0, 0.0, dx, 0.0, 1.0, dy]], dtype=dtype)


def _scale(s: float, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    return torch.tensor([[s, 0.0, 0.0, 0.0, s, 0.0]], dtype=dtype)


def _as_tps(theta_affine: torch.Tensor) -> torch.Tensor:
    ctrl = tps_control_points(dtype=theta_affine.dtype).expand(theta_affine.shape[0], 9, 2)
    return affine_target_to_source(theta_affine, ctrl).transpose(1, 2).reshape(-1, 18)


def _mean_square_grid(grid_size: int) -> float:
    """Mean of ||g||^2 on the grid: 2 mean(x^2), mean(x^2) = (G + 1) / (3 (G - 1)) on linspace(-1, 1, G)."""
    return 2 * (grid_size + 1) / (3 * (grid_size - 1))


def test_unit_grid() -> None:
    grid = unit_grid(20, dtype=torch.float64)
    assert grid.shape == (1, 400, 2)
    assert grid.min() == -1 and grid.max() == 1
    assert math.isclose(grid.pow(2).sum(-1).mean().item(), _mean_square_grid(20), rel_tol=1e-12)


@pytest.mark.parametrize("kind", ["affine", "tps"])
def test_grid_loss_of_a_translation(kind: str) -> None:
    dx, dy = 0.3, -0.2
    translation = _translation(dx, dy)
    if kind == "tps":
        translation = _as_tps(translation)
    loss = grid_loss(identity_theta(kind, dtype=torch.float64), translation, kind)
    assert math.isclose(loss.item(), dx**2 + dy**2, rel_tol=1e-9)


def test_grid_loss_of_a_scale_and_of_mixed_kinds() -> None:
    s = 1.5
    loss = grid_loss(identity_theta("affine", dtype=torch.float64), _scale(s), "affine", grid_size=7)
    assert math.isclose(loss.item(), (s - 1) ** 2 * _mean_square_grid(7), rel_tol=1e-9)
    # a two-stage warp (identity TPS after a translation) against the affine translation: 0
    two_stage = Warp(affine=_translation(0.1, 0.2), tps=identity_theta("tps", dtype=torch.float64))
    assert grid_loss(two_stage, Warp(affine=_translation(0.1, 0.2))).item() < 1e-20
    with pytest.raises(ConfigError):
        grid_loss(_translation(0.1, 0.2), _translation(0.0, 0.0))  # tensors need their kind


def test_keypoint_reprojection_loss_by_hand() -> None:
    theta = _translation(0.1, 0.0)  # target (x, y) -> source (x + 0.1, y)
    target = torch.tensor([[[0.0, 0.0], [0.5, 0.5], [NAN, NAN]]], dtype=torch.float64)
    source = torch.tensor(
        [[[0.1, 0.0], [0.6, 0.8], [7.0, 7.0]]], dtype=torch.float64
    )  # second is off by 0.3 in y
    mask = torch.tensor([[True, True, False]])
    loss = keypoint_reprojection_loss(theta, "affine", target, source, mask)
    assert math.isclose(loss.item(), (0.0 + 0.09) / 2, rel_tol=1e-9)
    loss = keypoint_reprojection_loss(theta, "affine", target, source, mask, squared=False)
    assert math.isclose(loss.item(), (0.0 + 0.3) / 2, rel_tol=1e-9)


def test_cyclic_grid_loss_is_zero_for_an_exact_inverse() -> None:
    theta = torch.tensor([[1.1, 0.2, -0.1, -0.15, 0.9, 0.05]], dtype=torch.float64)
    assert cyclic_grid_loss(theta, invert_affine(theta), "affine").item() < 1e-20
    assert cyclic_grid_loss(invert_affine(theta), theta, "affine").item() < 1e-20


def test_cyclic_grid_loss_of_a_translation_and_a_scale() -> None:
    # theta_ab: B -> A translation t, theta_ba: A -> B scale s.
    # Cycle of B's grid: s (g + t) - g = (s - 1) g + s t;
    # the grid is centred, so the loss is (s - 1)^2 E||g||^2 + s^2 ||t||^2.
    t, s, size = (0.2, -0.1), 0.8, 20
    loss = cyclic_grid_loss(_translation(*t), _scale(s), "affine", grid_size=size)
    t2 = t[0] ** 2 + t[1] ** 2
    assert math.isclose(loss.item(), (s - 1) ** 2 * _mean_square_grid(size) + s**2 * t2, rel_tol=1e-9)
    # the other order is another cycle: (s - 1) g + t
    loss = cyclic_grid_loss(_scale(s), _translation(*t), "affine", grid_size=size)
    assert math.isclose(loss.item(), (s - 1) ** 2 * _mean_square_grid(size) + t2, rel_tol=1e-9)


def test_cyclic_keypoint_loss_with_masks_and_tps() -> None:
    points = torch.tensor([[[0.5, 0.5], [-0.2, 0.1], [NAN, 3.0]]], dtype=torch.float64)
    mask = torch.tensor([[True, True, False]])
    theta_ab = _as_tps(_translation(0.3, 0.4))  # B -> A, as a TPS
    theta_ba = _as_tps(identity_theta("affine", dtype=torch.float64))
    loss = cyclic_keypoint_loss(theta_ab, theta_ba, "tps", points, mask)
    assert math.isclose(loss.item(), 0.25, rel_tol=1e-9)  # every point comes back off by (0.3, 0.4)
    loss = cyclic_keypoint_loss(theta_ab, theta_ba, "tps", points, mask, squared=False)
    assert math.isclose(loss.item(), 0.5, rel_tol=1e-9)


def _sets() -> tuple[torch.Tensor, torch.Tensor]:
    warped = torch.tensor([[[0.0, 0.0], [1.0, 0.0]]], dtype=torch.float64)
    target = torch.tensor([[[0.0, 0.5], [3.0, 0.0]]], dtype=torch.float64)
    return warped, target


def test_nearest_neighbour_and_chamfer_by_hand() -> None:
    warped, target = _sets()
    # warped -> target: (0,0)->(0,0.5): 0.25; (1,0)->(0,0.5): 1.25 (not (3,0): 4). Mean 0.75.
    # target -> warped: (0,0.5)->(0,0): 0.25; (3,0)->(1,0): 4. Mean 2.125.
    assert math.isclose(nearest_neighbour_loss(warped, target).item(), 0.75, rel_tol=1e-12)
    assert math.isclose(nearest_neighbour_loss(target, warped).item(), 2.125, rel_tol=1e-12)
    chamfer = chamfer_loss(warped, target).item()
    assert math.isclose(chamfer, 2.875, rel_tol=1e-12)
    assert not math.isclose(chamfer / 2, 0.75)  # asymmetric sets: NN is not half the Chamfer distance
    nn_dist = nearest_neighbour_loss(warped, target, squared=False).item()
    assert math.isclose(nn_dist, (0.5 + math.sqrt(1.25)) / 2, rel_tol=1e-12)
    assert math.isclose(
        chamfer_loss(warped, target, squared=False).item(), nn_dist + (0.5 + 2.0) / 2, rel_tol=1e-12
    )


def test_point_set_masks_ignore_padding_and_empty_pairs() -> None:
    warped, target = _sets()
    # pair 0: the hand-made sets plus padding (NaN and a point that would be everyone's nearest neighbour)
    w = torch.cat([warped, torch.tensor([[[NAN, NAN]]], dtype=torch.float64)], dim=1)
    t = torch.cat([target, torch.tensor([[[0.9, 0.0]]], dtype=torch.float64)], dim=1)
    # pair 1: one point each at distance^2 0.04; pair 2: no real target point (skipped)
    w = torch.cat([w, torch.tensor([[[0.1, 0.1], [5.0, 5.0], [NAN, 0.0]]], dtype=torch.float64), w], dim=0)
    t = torch.cat([t, torch.tensor([[[0.1, 0.3], [NAN, NAN], [0.0, 0.0]]], dtype=torch.float64), t], dim=0)
    mask_w = torch.tensor([[True, True, False], [True, False, False], [True, True, False]])
    mask_t = torch.tensor([[True, True, False], [True, False, False], [False, False, False]])
    w.requires_grad_(True)
    nn_loss = nearest_neighbour_loss(w, t, mask_w, mask_t)
    assert math.isclose(nn_loss.item(), (0.75 + 0.04) / 2, rel_tol=1e-12)
    chamfer = chamfer_loss(w, t, mask_w, mask_t)
    assert math.isclose(chamfer.item(), (0.75 + 0.04) / 2 + (2.125 + 0.04) / 2, rel_tol=1e-12)
    chamfer.backward()
    assert torch.isfinite(w.grad).all()
    assert w.grad[0, 2].abs().sum() == 0 and w.grad[2].abs().sum() == 0  # padding and skipped pair
    # no real pair at all: 0, still differentiable
    empty = nearest_neighbour_loss(w, t, mask_w, torch.zeros_like(mask_t))
    assert empty.item() == 0 and empty.requires_grad


def test_gradcheck_of_chamfer_and_grid_losses() -> None:
    g = torch.Generator().manual_seed(0)
    warped = torch.rand(2, 4, 2, generator=g, dtype=torch.float64).requires_grad_(True)
    target = torch.rand(2, 3, 2, generator=g, dtype=torch.float64).requires_grad_(True)
    mask = torch.tensor([[True, True, True, False], [True, True, False, False]])
    assert torch.autograd.gradcheck(
        lambda a, b: chamfer_loss(a, b, mask, None), (warped, target), fast_mode=True
    )
    theta = identity_theta("tps", 2, dtype=torch.float64) + 0.1 * torch.rand(
        2, 18, generator=g, dtype=torch.float64
    )
    theta.requires_grad_(True)
    gt = identity_theta("tps", 2, dtype=torch.float64)
    assert torch.autograd.gradcheck(lambda t: grid_loss(t, gt, "tps", grid_size=5), (theta,), fast_mode=True)
    theta_ba = _as_tps(_scale(0.9)).expand(2, 18).clone().requires_grad_(True)
    assert torch.autograd.gradcheck(
        lambda a, b: cyclic_grid_loss(a, b, "tps", grid_size=4), (theta, theta_ba), fast_mode=True
    )


def test_publication_i_combination() -> None:
    theta_ab = _translation(0.1, 0.0).requires_grad_(True)
    theta_ba = _scale(0.8)
    gt_ab, gt_ba = _translation(0.0, 0.2), _scale(1.0)
    out = semantic_loss(PUBLICATION_I, theta_ab, theta_ba, kind="affine", gt_ab=gt_ab, gt_ba=gt_ba)
    assert set(out) == {"supervised", "cyclic", "total"}
    supervised = (grid_loss(theta_ab, gt_ab, "affine") + grid_loss(theta_ba, gt_ba, "affine")) / 2
    cyclic = (
        cyclic_grid_loss(theta_ab, theta_ba, "affine") + cyclic_grid_loss(theta_ba, theta_ab, "affine")
    ) / 2
    torch.testing.assert_close(out["supervised"], supervised)
    torch.testing.assert_close(out["cyclic"], cyclic)
    torch.testing.assert_close(out["total"], supervised + cyclic)
    assert math.isclose(
        out["supervised"].item(), (0.01 + 0.04 + 0.04 * _mean_square_grid(20)) / 2, rel_tol=1e-9
    )
    out["total"].backward()
    assert theta_ab.grad is not None and theta_ab.grad.abs().sum() > 0


def test_publication_ii_combinations_with_two_stage_warps() -> None:
    points_a = torch.tensor([[[0.0, 0.0], [0.5, 0.0], [NAN, NAN]]], dtype=torch.float64)
    points_b = torch.tensor([[[0.1, 0.1], [0.6, 0.1]]], dtype=torch.float64)
    mask_a = torch.tensor([[True, True, False]])
    identity_tps = identity_theta("tps", dtype=torch.float64)
    warp_ab = Warp(affine=_translation(-0.1, -0.1), tps=identity_tps)  # B -> A: exact for these points
    warp_ba = Warp(affine=_translation(0.1, 0.0), tps=identity_tps)  # A -> B: off by 0.1 in y
    config = SemanticLossConfig(
        supervised=0.0, nearest_neighbour=1.0, cyclic=0.5, cyclic_on="keypoints", symmetric=False
    )
    out = semantic_loss(config, warp_ab, warp_ba, points_a=points_a, points_b=points_b, mask_a=mask_a)
    assert math.isclose(out["nearest_neighbour"].item(), 0.0, abs_tol=1e-20)
    # A's points: A -> B (+0.1, 0) -> A (-0.1, -0.1): off by (0, -0.1)
    assert math.isclose(out["cyclic"].item(), 0.01, rel_tol=1e-9)
    assert math.isclose(out["total"].item(), 0.005, rel_tol=1e-9)
    # symmetric adds the other direction: A's points moved into B by warp_ba, (0.1, 0) and (0.6, 0), against
    # B's points (0.1, 0.1) and (0.6, 0.1): 0.01 each
    out = semantic_loss(
        PUBLICATION_II_NN, warp_ab, warp_ba, points_a=points_a, points_b=points_b, mask_a=mask_a
    )
    assert math.isclose(out["nearest_neighbour"].item(), (0.0 + 0.01) / 2, rel_tol=1e-9)
    out = semantic_loss(
        PUBLICATION_II_CHAMFER, warp_ab, warp_ba, points_a=points_a, points_b=points_b, mask_a=mask_a
    )
    assert math.isclose(out["chamfer"].item(), (0.0 + 0.02) / 2, rel_tol=1e-9)
    # the thesis' literal direction: A's points moved into B with the inverse of warp_ab, compared with B's
    literal = SemanticLossConfig(
        supervised=0.0, nearest_neighbour=1.0, symmetric=False, warp_source_points=True
    )
    out = semantic_loss(literal, warp_ab, points_a=points_a, points_b=points_b, mask_a=mask_a)
    assert math.isclose(out["nearest_neighbour"].item(), 0.0, abs_tol=1e-12)


def test_supervised_keypoints_and_missing_inputs() -> None:
    points_a = torch.tensor([[[0.1, 0.0], [0.6, 0.8]]], dtype=torch.float64)
    points_b = torch.tensor([[[0.0, 0.0], [0.5, 0.5]]], dtype=torch.float64)
    config = SemanticLossConfig(symmetric=False)
    out = semantic_loss(
        config,
        _translation(0.1, 0.0),
        kind="affine",
        points_a=points_a,
        points_b=points_b,
        correspondences=True,
    )
    assert math.isclose(out["supervised"].item(), 0.09 / 2, rel_tol=1e-9)
    with pytest.raises(ValueError, match="supervised"):
        semantic_loss(config, _translation(0.1, 0.0), kind="affine")
    with pytest.raises(ValueError, match="theta_ba"):
        semantic_loss(SemanticLossConfig(), _translation(0.1, 0.0), kind="affine", gt_ab=_translation(0, 0))
    with pytest.raises(ConfigError):
        SemanticLossConfig(supervised=0.0)
    with pytest.raises(ConfigError):
        SemanticLossConfig(cyclic_on="pixels")
