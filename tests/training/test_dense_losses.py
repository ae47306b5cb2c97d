"""Dense-matching losses and per-level ground truth against hand-computed tiny cases."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from visloc.training.dense_losses import (
    grid_from_map,
    gt_grids_for_levels,
    map_from_grid,
    masked_l1,
    matchability_loss,
    multilevel_l1_loss,
)


def _lattice(h: int, w: int, dtype: torch.dtype = torch.float64) -> tuple[torch.Tensor, torch.Tensor]:
    v, u = torch.meshgrid(torch.arange(h, dtype=dtype), torch.arange(w, dtype=dtype), indexing="ij")
    return u, v


def _identity_map(h: int, w: int, batch: int = 1) -> torch.Tensor:
    u, v = _lattice(h, w)
    return torch.stack([u, v]).unsqueeze(0).repeat(batch, 1, 1, 1)


def test_grid_from_map_uses_the_align_corners_false_convention() -> None:
    map_ = torch.tensor([[-0.5, 0.0, 3.0, 3.5], [-0.5, 0.0, 1.0, 1.5]], dtype=torch.float64).view(1, 2, 1, 4)
    grid = grid_from_map(map_, (2, 4))  # Hs = 2, Ws = 4
    expected = torch.tensor([[-1.0, -0.75, 0.75, 1.0], [-1.0, -0.5, 0.5, 1.0]], dtype=torch.float64).view(1, 2, 1, 4)
    torch.testing.assert_close(grid, expected)
    torch.testing.assert_close(map_from_grid(grid, (2, 4)), map_)
    # grid_sample reads source pixel (x, y) exactly at grid_from_map's coordinates
    source = torch.arange(8, dtype=torch.float64).view(1, 1, 2, 4)
    pick = torch.tensor([[2.0, 0.0], [0.0, 1.0]], dtype=torch.float64).view(1, 2, 1, 2)  # (2, 0) and (0, 1)
    sampled = F.grid_sample(source, grid_from_map(pick, (2, 4)).permute(0, 2, 3, 1), align_corners=False)
    torch.testing.assert_close(sampled.view(-1), torch.tensor([2.0, 4.0], dtype=torch.float64))


@pytest.mark.parametrize("sizes", [[(4, 6), (8, 12), (16, 24), (32, 48)], [(5, 7), (11, 9)]])
def test_identity_map_gives_the_identity_grid_at_every_level(sizes) -> None:
    map_ = _identity_map(32, 48, batch=2)
    mask = torch.ones(2, 1, 32, 48, dtype=torch.bool)
    levels = gt_grids_for_levels(map_, mask, sizes, (32, 48))
    assert len(levels) == len(sizes)
    for (h, w), (grid, level_mask) in zip(sizes, levels, strict=True):
        identity = F.affine_grid(torch.eye(2, 3, dtype=torch.float64).unsqueeze(0).repeat(2, 1, 1), [2, 1, h, w],
                                 align_corners=False).permute(0, 3, 1, 2)
        assert grid.shape == (2, 2, h, w)
        torch.testing.assert_close(grid, identity)
        assert level_mask.dtype == torch.bool and level_mask.shape == (2, 1, h, w) and level_mask.all()


def test_affine_map_is_sampled_at_the_level_pixel_centres() -> None:
    # x = 2u + 3, y = -v + 1 on an 8 x 8 target; level 2 x 4: pixel centres at u = (j + 0.5) * 2 - 0.5,
    # v = (i + 0.5) * 4 - 0.5.
    u, v = _lattice(8, 8)
    map_ = torch.stack([2 * u + 3, -v + 1]).unsqueeze(0)
    [(grid, _)] = gt_grids_for_levels(map_, torch.ones(1, 1, 8, 8, dtype=torch.bool), [(2, 4)], (10, 20))
    lu = torch.tensor([0.5, 2.5, 4.5, 6.5], dtype=torch.float64)
    lv = torch.tensor([1.5, 5.5], dtype=torch.float64)
    x = (2 * lu + 3).expand(2, 4)
    y = (-lv + 1).unsqueeze(1).expand(2, 4)
    expected = torch.stack([(2 * x + 1) / 20 - 1, (2 * y + 1) / 10 - 1]).unsqueeze(0)
    torch.testing.assert_close(grid, expected)


def test_a_level_pixel_is_valid_only_if_every_pixel_it_covers_is() -> None:
    mask = torch.ones(1, 1, 4, 4, dtype=torch.bool)
    mask[0, 0, 1, 2] = False
    map_ = _identity_map(4, 4)
    map_[0, :, 1, 2] = float("nan")  # garbage under the invalid pixel must not reach valid level pixels
    [(grid, level_mask)] = gt_grids_for_levels(map_, mask, [(2, 2)], (4, 4))
    assert level_mask[0, 0].tolist() == [[True, False], [True, True]]
    assert torch.isfinite(grid[0, :, 0, 0]).all() and torch.isfinite(grid[0, :, 1, :]).all()
    # 5 x 5 -> 2 x 2: adaptive windows cover rows / columns 0..2 and 2..4 (they share index 2)
    mask = torch.ones(1, 1, 5, 5, dtype=torch.bool)
    mask[0, 0, 2, 0] = False
    [(_, level_mask)] = gt_grids_for_levels(_identity_map(5, 5), mask, [(2, 2)], (5, 5))
    assert level_mask[0, 0].tolist() == [[False, True], [False, True]]
    # the full resolution level is the map itself
    [(grid, level_mask)] = gt_grids_for_levels(_identity_map(5, 5), mask, [(5, 5)], (5, 5))
    torch.testing.assert_close(grid, grid_from_map(_identity_map(5, 5), (5, 5)))
    assert torch.equal(level_mask, mask)


def test_level_larger_than_the_map_is_an_error() -> None:
    with pytest.raises(ValueError, match="level size"):
        gt_grids_for_levels(_identity_map(4, 4), torch.ones(1, 1, 4, 4), [(8, 8)], (4, 4))
    with pytest.raises(ValueError, match="mask"):
        gt_grids_for_levels(_identity_map(4, 4), torch.ones(1, 1, 4, 3), [(2, 2)], (4, 4))


def test_masked_l1_on_a_hand_computed_2x2_case() -> None:
    gt = torch.zeros(1, 2, 2, 2, dtype=torch.float64)
    gt[0, :, 1, 1] = float("nan")  # invalid pixel holding garbage
    pred = torch.tensor([[[[0.1, -0.2], [0.3, 5.0]], [[0.0, 0.4], [-0.5, 7.0]]]], dtype=torch.float64,
                        requires_grad=True)
    mask = torch.tensor([[[[True, True], [True, False]]]])
    loss = masked_l1(pred, gt, mask)
    # valid pixels: (0,0): 0.1 + 0; (0,1): 0.2 + 0.4; (1,0): 0.3 + 0.5 -> 1.5 over 3 pixels
    assert loss.item() == pytest.approx(0.5)
    loss.backward()
    expected_grad = torch.tensor([[[[1.0, -1.0], [1.0, 0.0]], [[0.0, 1.0], [-1.0, 0.0]]]], dtype=torch.float64) / 3
    torch.testing.assert_close(pred.grad, expected_grad)
    # no valid pixel: 0, not NaN
    empty = masked_l1(pred, gt, torch.zeros_like(mask))
    assert empty.item() == 0.0


def test_multilevel_l1_sums_the_levels_with_their_weights() -> None:
    coarse_gt = torch.zeros(2, 2, 1, 1)
    coarse_pred = torch.tensor([0.2, -0.1, 0.4, 0.0]).view(2, 2, 1, 1)
    coarse_mask = torch.tensor([True, False]).view(2, 1, 1, 1)  # only the first sample: 0.2 + 0.1
    fine_gt = torch.ones(2, 2, 2, 2)
    fine_pred = torch.ones(2, 2, 2, 2)
    fine_pred[1, 0, 0, 0] = 0.0  # |error| 1 at one of the 8 valid pixels
    fine_mask = torch.ones(2, 1, 2, 2, dtype=torch.bool)
    total, per_level = multilevel_l1_loss([coarse_pred, fine_pred],
                                          [(coarse_gt, coarse_mask), (fine_gt, fine_mask)])
    assert [x.item() for x in per_level] == pytest.approx([0.3, 1 / 8])
    assert total.item() == pytest.approx(0.3 + 1 / 8)
    total, _ = multilevel_l1_loss([coarse_pred, fine_pred], [(coarse_gt, coarse_mask), (fine_gt, fine_mask)],
                                  weights=[2.0, 0.5])
    assert total.item() == pytest.approx(0.6 + 1 / 16)
    with pytest.raises(ValueError, match="levels"):
        multilevel_l1_loss([coarse_pred], [(coarse_gt, coarse_mask), (fine_gt, fine_mask)])
    with pytest.raises(ValueError, match="weights"):
        multilevel_l1_loss([coarse_pred], [(coarse_gt, coarse_mask)], weights=[1.0, 1.0])
    with pytest.raises(ValueError, match="shape"):
        multilevel_l1_loss([fine_pred], [(coarse_gt, coarse_mask)])


def test_multilevel_loss_of_the_ground_truth_levels_is_zero() -> None:
    map_ = _identity_map(16, 16, batch=2) * 0.5 + 2.0
    mask = torch.ones(2, 1, 16, 16, dtype=torch.bool)
    mask[:, :, :3] = False
    levels = gt_grids_for_levels(map_, mask, [(2, 2), (4, 4), (8, 8), (16, 16)], (12, 12))
    total, per_level = multilevel_l1_loss([g.clone() for g, _ in levels], levels)
    assert total.item() == 0.0 and all(x.item() == 0.0 for x in per_level)


def test_matchability_loss_is_the_binary_cross_entropy_of_the_logits() -> None:
    logits = torch.tensor([2.0, -1.0, 0.5, 0.0]).view(1, 1, 2, 2)
    mask = torch.tensor([True, False, False, True]).view(1, 1, 2, 2)

    def sigmoid(x: float) -> float:
        return 1.0 / (1.0 + math.exp(-x))

    expected = -(math.log(sigmoid(2.0)) + math.log(1 - sigmoid(-1.0)) + math.log(1 - sigmoid(0.5))
                 + math.log(sigmoid(0.0))) / 4
    assert matchability_loss(logits, mask).item() == pytest.approx(expected, rel=1e-6)
    with pytest.raises(ValueError, match="logits"):
        matchability_loss(logits, mask.view(1, 1, 4, 1))
