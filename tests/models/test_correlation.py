"""Correlation volumes and NC-Net consensus: explicit loops, hand-computed cases, symmetry, known matches."""

from __future__ import annotations

import itertools

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from visloc.errors import ConfigError
from visloc.models import cnngeometric
from visloc.models.correlation import (
    ConsensusBlock,
    ConsensusConfig,
    Conv4d,
    NeighbourhoodConsensus,
    corr3d_to_4d,
    corr4d_to_3d,
    correlation_4d,
    correlation_to_matches,
    feature_l2_norm,
    global_correlation,
    mutual_matching,
    swap_source_target,
)

HS, WS, HT, WT = 5, 7, 6, 4  # non-square, different source and target grids


def _features(batch: int, channels: int, h: int, w: int, seed: int) -> torch.Tensor:
    return torch.randn(batch, channels, h, w, generator=torch.Generator().manual_seed(seed))


def _swap(corr4d: torch.Tensor) -> torch.Tensor:
    """Source <-> target, written independently of the module: out[b, c, i, j, k, l] = x[b, c, k, l, i, j]."""
    return torch.einsum("bcklij->bcijkl", corr4d)


def _naive_conv4d(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """Zero-padded "same" 4-D convolution with an explicit Python loop over all k^4 kernel offsets."""
    k = weight.shape[-1]
    p = k // 2
    b, _, hs, ws, ht, wt = x.shape
    padded = torch.zeros(b, x.shape[1], hs + 2 * p, ws + 2 * p, ht + 2 * p, wt + 2 * p, dtype=x.dtype)
    padded[:, :, p : p + hs, p : p + ws, p : p + ht, p : p + wt] = x
    out = torch.zeros(b, weight.shape[0], hs, ws, ht, wt, dtype=x.dtype)
    for di, dj, dk, dl in itertools.product(range(k), repeat=4):
        window = padded[:, :, di : di + hs, dj : dj + ws, dk : dk + ht, dl : dl + wt]
        out += torch.einsum("oc,bcijkl->boijkl", weight[:, :, di, dj, dk, dl], window)
    if bias is not None:
        out += bias.view(1, -1, 1, 1, 1, 1)
    return out


# --- correlation volumes -----------------------------------------------------------------------------


def test_global_correlation_matches_explicit_loop_over_positions() -> None:
    source, target = _features(2, 3, HS, WS, seed=0), _features(2, 3, HT, WT, seed=1)
    corr = global_correlation(source, target)
    assert corr.shape == (2, HS * WS, HT, WT)
    expected = torch.zeros(2, HS * WS, HT, WT)
    for ys, xs, yt, xt in itertools.product(range(HS), range(WS), range(HT), range(WT)):
        expected[:, ys * WS + xs, yt, xt] = (source[:, :, ys, xs] * target[:, :, yt, xt]).sum(dim=1)
    torch.testing.assert_close(corr, expected)


def test_correlation_4d_matches_einsum_and_3d_layouts_agree() -> None:
    source, target = _features(2, 3, HS, WS, seed=2), _features(2, 3, HT, WT, seed=3)
    corr4d = correlation_4d(source, target)
    assert corr4d.shape == (2, 1, HS, WS, HT, WT)
    torch.testing.assert_close(corr4d[:, 0], torch.einsum("bcij,bckl->bijkl", source, target))
    corr3d = corr4d_to_3d(corr4d)
    torch.testing.assert_close(corr3d, global_correlation(source, target))
    torch.testing.assert_close(corr3d_to_4d(corr3d, HS, WS), corr4d)
    # round trip from an arbitrary 3-D volume, and one hand-picked entry of the row-major layout
    volume = torch.randn(2, HS * WS, HT, WT)
    torch.testing.assert_close(corr4d_to_3d(corr3d_to_4d(volume, HS, WS)), volume)
    assert corr3d_to_4d(volume, HS, WS)[1, 0, 3, 2, 5, 1] == volume[1, 3 * WS + 2, 5, 1]
    with pytest.raises(ValueError):
        corr3d_to_4d(volume, WS, HS + 1)
    with pytest.raises(ValueError):
        correlation_4d(source, _features(2, 4, HT, WT, seed=0))


def test_global_correlation_layout_differs_from_cnngeometric_column_major() -> None:
    source, target = _features(1, 4, HS, WS, seed=4), _features(1, 4, HT, WT, seed=5)
    ours = global_correlation(source, target).view(1, HS, WS, HT, WT)  # channel ys * ws + xs
    theirs = cnngeometric.feature_correlation(source, target).view(1, WS, HS, HT, WT)  # xs * hs + ys
    torch.testing.assert_close(ours, theirs.transpose(1, 2))
    assert not torch.allclose(
        global_correlation(source, target), cnngeometric.feature_correlation(source, target)
    )
    torch.testing.assert_close(
        global_correlation(source, target), cnngeometric.feature_correlation(source.transpose(2, 3), target)
    )
    assert feature_l2_norm is cnngeometric.feature_l2_norm  # one implementation, re-exported


# --- mutual matching ---------------------------------------------------------------------------------


def test_mutual_matching_hand_computed() -> None:
    # source grid 2x1 (rows a), target grid 1x3 (columns b): scores M[a, b]
    m = torch.tensor([[4.0, 2.0, 1.0], [1.0, 3.0, 6.0]])
    corr4d = m.view(1, 1, 2, 1, 1, 3)
    # M * (M / column max over sources [4, 3, 6]) * (M / row max over targets [4, 6])
    expected = torch.tensor([[4.0, 2 / 3, 1 / 24], [1 / 24, 3 / 2, 6.0]]).view(1, 1, 2, 1, 1, 3)
    torch.testing.assert_close(mutual_matching(corr4d, eps=0.0), expected)
    torch.testing.assert_close(mutual_matching(corr4d), expected, rtol=1e-5, atol=1e-5)
    zeros = mutual_matching(torch.zeros(1, 1, 2, 2, 3, 3))  # eps keeps an empty volume at zero, no NaN
    assert torch.equal(zeros, torch.zeros_like(zeros))


# --- Conv4d ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kernel_size", [3, 5])
def test_conv4d_matches_naive_loop(kernel_size: int) -> None:
    torch.manual_seed(kernel_size)
    conv = Conv4d(2, 3, kernel_size)
    x = torch.randn(2, 2, 4, 5, 3, 6)
    with torch.no_grad():
        out = conv(x)
        expected = _naive_conv4d(x, conv.weight, conv.bias)
    assert out.shape == (2, 3, 4, 5, 3, 6)
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=1e-5)
    no_bias = Conv4d(2, 1, kernel_size, bias=False)
    assert no_bias.bias is None
    with torch.no_grad():
        torch.testing.assert_close(no_bias(x), _naive_conv4d(x, no_bias.weight, None), atol=1e-5, rtol=1e-5)


def test_conv4d_initialisation_is_pytorch_default() -> None:
    # nn.Conv2d(2 * 3 * 3, 4, 3) has the same number of weights and the same fan_in (2 * 3^4) as
    # Conv4d(2, 4, 3): PyTorch's default initialisation draws the same numbers from the same seed.
    torch.manual_seed(7)
    conv4d = Conv4d(2, 4, 3)
    torch.manual_seed(7)
    reference = nn.Conv2d(2 * 3 * 3, 4, 3)
    torch.testing.assert_close(conv4d.weight.detach().flatten(), reference.weight.detach().flatten())
    torch.testing.assert_close(conv4d.bias.detach(), reference.bias.detach())


def test_conv4d_rejects_bad_arguments() -> None:
    with pytest.raises(ConfigError):
        Conv4d(1, 1, 4)
    with pytest.raises(ConfigError):
        Conv4d(0, 1, 3)
    with pytest.raises(ValueError):
        Conv4d(2, 1, 3)(torch.zeros(1, 1, 3, 3, 3, 3))


# --- neighbourhood consensus -------------------------------------------------------------------------


def test_consensus_config_validation() -> None:
    assert ConsensusConfig() == ConsensusConfig(kernel_sizes=(3, 3), channels=(16, 1), symmetric=True)
    for bad in [
        {"kernel_sizes": (3,), "channels": (16, 1)},
        {"kernel_sizes": (), "channels": ()},
        {"kernel_sizes": (3, 4), "channels": (16, 1)},
        {"kernel_sizes": (3, 3), "channels": (16, 2)},
        {"kernel_sizes": (3, 3), "channels": (0, 1)},
    ]:
        with pytest.raises(ConfigError):
            ConsensusConfig(**bad)


def test_swap_source_target_is_independent_transpose() -> None:
    x = torch.randn(2, 1, HS, WS, HT, WT)
    torch.testing.assert_close(swap_source_target(x), _swap(x))
    assert swap_source_target(x).shape == (2, 1, HT, WT, HS, WS)


def test_symmetric_consensus_commutes_with_swapping_source_and_target() -> None:
    torch.manual_seed(0)
    x = torch.rand(2, 1, HS, WS, HT, WT)
    symmetric = NeighbourhoodConsensus(ConsensusConfig(kernel_sizes=(3, 3), channels=(4, 1)))
    with torch.no_grad():
        torch.testing.assert_close(symmetric(_swap(x)), _swap(symmetric(x)), atol=1e-6, rtol=1e-5)
        # the property is not automatic: the one-directional stack breaks it
        torch.manual_seed(0)
        one_way = NeighbourhoodConsensus(
            ConsensusConfig(kernel_sizes=(3, 3), channels=(4, 1), symmetric=False)
        )
        assert not torch.allclose(one_way(_swap(x)), _swap(one_way(x)), atol=1e-4)
        block = ConsensusBlock(ConsensusConfig(kernel_sizes=(3, 3), channels=(4, 1)))
        torch.testing.assert_close(block(_swap(x)), _swap(block(x)), atol=1e-6, rtol=1e-5)


def test_consensus_block_shapes_for_non_square_grids() -> None:
    torch.manual_seed(0)
    source, target = F.relu(_features(2, 8, HS, WS, seed=6)), F.relu(_features(2, 8, HT, WT, seed=7))
    corr4d = correlation_4d(feature_l2_norm(source), feature_l2_norm(target))
    for config in [
        ConsensusConfig(),
        ConsensusConfig(kernel_sizes=(5, 3, 3), channels=(4, 4, 1), symmetric=False),
    ]:
        out = ConsensusBlock(config)(corr4d)
        assert out.shape == (2, 1, HS, WS, HT, WT)
        assert torch.isfinite(out).all()
    with pytest.raises(ValueError):
        ConsensusBlock()(corr4d_to_3d(corr4d))


def test_consensus_block_equals_mutual_consensus_mutual() -> None:
    torch.manual_seed(1)
    block = ConsensusBlock(ConsensusConfig(kernel_sizes=(3, 3), channels=(4, 1)))
    x = torch.rand(1, 1, 3, 4, 4, 3)
    with torch.no_grad():
        torch.testing.assert_close(block(x), mutual_matching(block.consensus(mutual_matching(x))))


def test_gradients_reach_every_conv4d_weight() -> None:
    source, target = F.relu(_features(1, 8, HS, WS, seed=8)), F.relu(_features(1, 8, HT, WT, seed=9))
    corr4d = correlation_4d(feature_l2_norm(source), feature_l2_norm(target))
    for config in [ConsensusConfig(), ConsensusConfig(kernel_sizes=(3, 3, 3), channels=(16, 16, 1))]:
        torch.manual_seed(2)
        block = ConsensusBlock(config)
        block(corr4d).sum().backward()
        convs = [m for m in block.modules() if isinstance(m, Conv4d)]
        assert len(convs) == len(config.channels)
        for conv in convs:
            assert conv.weight.grad is not None and conv.weight.grad.abs().sum() > 0
            assert conv.bias.grad is not None and conv.bias.grad.abs().sum() > 0


# --- read-out ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("direction", ["target", "source"])
def test_correlation_to_matches_recovers_known_permutation(direction: str) -> None:
    g = torch.Generator().manual_seed(10)
    # the "from" grid (one match per position) has 24 positions, the "to" grid 35 distinct unit features
    h_from, w_from, h_to, w_to = HT, WT, HS, WS
    pool = feature_l2_norm(torch.randn(1, 16, h_to, w_to, generator=g))
    chosen = torch.randperm(h_to * w_to, generator=g)[: h_from * w_from]  # "to" index of each "from" position
    matched = pool.flatten(2)[:, :, chosen].view(1, 16, h_from, w_from)
    if direction == "target":  # target positions pick among source positions
        corr4d = correlation_4d(pool, matched)
    else:  # source positions pick among target positions
        corr4d = correlation_4d(matched, pool)
    coords, scores = correlation_to_matches(corr4d, direction=direction)
    assert coords.shape == (1, 2, h_from, w_from) and scores.shape == (1, 1, h_from, w_from)
    expected_x = (chosen % w_to).float().view(h_from, w_from)
    expected_y = (chosen // w_to).float().view(h_from, w_from)
    torch.testing.assert_close(coords[0, 0], expected_x)
    torch.testing.assert_close(coords[0, 1], expected_y)
    torch.testing.assert_close(scores, torch.ones_like(scores))  # unit features matched with themselves


def test_correlation_to_matches_hand_picked_entry_and_errors() -> None:
    corr4d = torch.zeros(1, 1, 2, 3, 2, 2)
    corr4d[0, 0, 1, 2, 0, 1] = 5.0  # target (x=1, y=0) <- source (x=2, y=1)
    coords, scores = correlation_to_matches(corr4d)
    assert coords[0, :, 0, 1].tolist() == [2.0, 1.0] and scores[0, 0, 0, 1] == 5.0
    coords, scores = correlation_to_matches(corr4d, direction="source")
    assert coords.shape == (1, 2, 2, 3) and coords[0, :, 1, 2].tolist() == [1.0, 0.0]
    with pytest.raises(ValueError):
        correlation_to_matches(corr4d, direction="both")


def test_local_correlation_by_hand() -> None:
    from visloc.models.correlation import local_correlation

    torch.manual_seed(0)
    source, target = torch.randn(2, 3, 5, 6), torch.randn(2, 3, 5, 6)
    r = 1
    out = local_correlation(source, target, r)
    assert out.shape == (2, 9, 5, 6)
    for b in range(2):
        for y in range(5):
            for x in range(6):
                for dy in range(-r, r + 1):
                    for dx in range(-r, r + 1):
                        k = (dy + r) * 3 + (dx + r)
                        ys, xs = y + dy, x + dx
                        inside = 0 <= ys < 5 and 0 <= xs < 6
                        want = float(source[b, :, ys, xs] @ target[b, :, y, x]) if inside else 0.0
                        assert float(out[b, k, y, x]) == pytest.approx(want, abs=1e-5)
    # radius 0 is the per-location dot product
    torch.testing.assert_close(local_correlation(source, target, 0)[:, 0], (source * target).sum(1))
    with pytest.raises(ValueError):
        local_correlation(source, target[:, :2], 1)
