"""Correlation volumes and NC-Net's neighbourhood consensus (Rocco et al., NeurIPS 2018), as implemented upstream.

Building blocks of the DGC-Net-style dense matcher of Publication IV:

* :func:`global_correlation` -- every source location against every target location, ``(B, hs*ws, ht, wt)``
  with the source locations flattened **row-major** (channel ``k = ys * ws + xs``);
* :func:`correlation_4d` -- the same scores as NC-Net's 4-D volume ``(B, 1, hs, ws, ht, wt)``;
  :func:`corr4d_to_3d` / :func:`corr3d_to_4d` convert between the two without copying;
* :func:`local_correlation` -- PWC-Net's cost volume: each target location against the source locations
  within a radius of the same position, ``(B, (2r+1)^2, h, w)``;
* :func:`mutual_matching` -- NC-Net's soft mutual nearest-neighbour filter;
* :class:`Conv4d` -- a "same"-padded 4-D convolution built from :func:`torch.nn.functional.conv3d`;
* :class:`NeighbourhoodConsensus` -- NC-Net's stack of Conv4d + ReLU, optionally symmetric in source and
  target;
* :class:`ConsensusBlock` -- mutual matching, neighbourhood consensus, mutual matching (NC-Net's pipeline);
* :func:`correlation_to_matches` -- the hard argmax read-out of a 4-D volume as pixel coordinates.

Layout versus :func:`~visloc.models.cnngeometric.feature_correlation`: CNNGeometric (and DGC-Net) flatten
the source grid **column-major** (channel ``k = xs * hs + ys``); :func:`global_correlation` flattens it
row-major, as NC-Net's ``view`` of the 4-D volume does. Both hold the same scores; for square grids the
channel index of one is the transposed index of the other, for non-square grids the channel counts agree
but the orders differ. ``feature_correlation`` is left unchanged because trained CNNGeometric / relpose
weights depend on its order; ``global_correlation(s, t) == feature_correlation(s.transpose(2, 3), t)``.

The per-location L2 normalisation (:func:`feature_l2_norm`) is CNNGeometric's, re-exported here.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ConfigError
from .cnngeometric import L2_EPS, feature_l2_norm

__all__ = [
    "L2_EPS",
    "ConsensusBlock",
    "ConsensusConfig",
    "Conv4d",
    "NeighbourhoodConsensus",
    "corr3d_to_4d",
    "corr4d_to_3d",
    "correlation_4d",
    "correlation_to_matches",
    "feature_l2_norm",
    "global_correlation",
    "local_correlation",
    "mutual_matching",
    "swap_source_target",
]


# --- correlation volumes -----------------------------------------------------------------------------


def _check_features(source: torch.Tensor, target: torch.Tensor) -> None:
    if source.ndim != 4 or target.ndim != 4 or source.shape[:2] != target.shape[:2]:
        raise ValueError(
            f"expected (B, C, h, w) features with the same B and C, got {tuple(source.shape)} and "
            f"{tuple(target.shape)}"
        )


def _check_corr4d(corr4d: torch.Tensor, channels: int | None = 1) -> None:
    if corr4d.ndim != 6 or (channels is not None and corr4d.shape[1] != channels):
        c = "C" if channels is None else str(channels)
        raise ValueError(f"expected a 4-D correlation (B, {c}, hs, ws, ht, wt), got {tuple(corr4d.shape)}")


def correlation_4d(source: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """NC-Net's 4-D correlation: the dot product of every source location with every target location.

    ``out[b, 0, ys, xs, yt, xt] = <source[b, :, ys, xs], target[b, :, yt, xt]>`` (no normalisation; L2-normalise
    the features first with :func:`feature_l2_norm` for cosine scores).

    Args:
        source: ``(B, C, hs, ws)`` source features.
        target: ``(B, C, ht, wt)`` target features.

    Returns:
        ``(B, 1, hs, ws, ht, wt)``.
    """
    _check_features(source, target)
    b, c, hs, ws = source.shape
    ht, wt = target.shape[-2:]
    scores = torch.bmm(source.reshape(b, c, hs * ws).transpose(1, 2), target.reshape(b, c, ht * wt))
    return scores.view(b, 1, hs, ws, ht, wt)


def corr4d_to_3d(corr4d: torch.Tensor) -> torch.Tensor:
    """The 4-D volume with the source grid flattened row-major into channels (a view).

    Args:
        corr4d: ``(B, 1, hs, ws, ht, wt)``.

    Returns:
        ``(B, hs*ws, ht, wt)``, channel ``k = ys * ws + xs``.
    """
    _check_corr4d(corr4d)
    b, _, hs, ws, ht, wt = corr4d.shape
    return corr4d.reshape(b, hs * ws, ht, wt)


def corr3d_to_4d(corr3d: torch.Tensor, hs: int, ws: int) -> torch.Tensor:
    """Inverse of :func:`corr4d_to_3d` (a view).

    Args:
        corr3d: ``(B, hs*ws, ht, wt)``, channel ``k = ys * ws + xs``.
        hs: source grid height.
        ws: source grid width.

    Returns:
        ``(B, 1, hs, ws, ht, wt)``.
    """
    if corr3d.ndim != 4 or corr3d.shape[1] != hs * ws:
        raise ValueError(f"expected a correlation (B, {hs}*{ws}, ht, wt), got {tuple(corr3d.shape)}")
    b, _, ht, wt = corr3d.shape
    return corr3d.reshape(b, 1, hs, ws, ht, wt)


def global_correlation(source: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Every source location against every target location, source grid flattened row-major.

    ``out[b, ys * ws + xs, yt, xt] = <source[b, :, ys, xs], target[b, :, yt, xt]>``. This differs from
    :func:`~visloc.models.cnngeometric.feature_correlation`, whose channel is ``xs * hs + ys`` (see the module
    docstring).

    Args:
        source: ``(B, C, hs, ws)`` source features.
        target: ``(B, C, ht, wt)`` target features.

    Returns:
        ``(B, hs*ws, ht, wt)``.
    """
    return corr4d_to_3d(correlation_4d(source, target))


def local_correlation(source: torch.Tensor, target: torch.Tensor, radius: int) -> torch.Tensor:
    """Each target location against the source locations within ``radius`` cells of the same position.

    ``out[b, (dy + r) * (2r + 1) + (dx + r), y, x] = <source[b, :, y + dy, x + dx], target[b, :, y, x]>``
    (zero where ``y + dy`` or ``x + dx`` falls outside): PWC-Net's cost volume. On L2-normalised features
    (:func:`feature_l2_norm`) the scores are cosine similarities, whatever the encoder's width.

    Args:
        source: ``(B, C, h, w)`` (typically source features warped by the current estimate).
        target: ``(B, C, h, w)``.
        radius: ``r >= 0``.

    Returns:
        ``(B, (2r+1)^2, h, w)``.
    """
    if source.ndim != 4 or source.shape != target.shape:
        raise ValueError(f"expected two (B, C, h, w) maps of one shape, got {tuple(source.shape)} and "
                         f"{tuple(target.shape)}")
    if radius < 0:
        raise ValueError(f"radius must be >= 0, got {radius}")
    b, c, h, w = source.shape
    k = 2 * radius + 1
    patches = F.unfold(source, kernel_size=k, padding=radius).reshape(b, c, k * k, h, w)
    return (patches * target.unsqueeze(2)).sum(dim=1)


def swap_source_target(corr4d: torch.Tensor) -> torch.Tensor:
    """Exchange the roles of source and target: ``(B, C, hs, ws, ht, wt) -> (B, C, ht, wt, hs, ws)`` (a view)."""
    _check_corr4d(corr4d, channels=None)
    return corr4d.permute(0, 1, 4, 5, 2, 3)


def mutual_matching(corr4d: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """NC-Net's soft mutual nearest-neighbour filtering.

    Every score ``s`` is multiplied by ``s / (max over source positions + eps)`` and
    ``s / (max over target positions + eps)``, so mutual best matches keep their score and the others are
    damped. Meant for non-negative scores (NC-Net correlates ReLU features); ``eps`` is added to the maxima
    as upstream, so an all-zero volume stays zero.

    Args:
        corr4d: ``(B, C, hs, ws, ht, wt)``.
        eps: added to the maxima.

    Returns:
        ``(B, C, hs, ws, ht, wt)``.
    """
    _check_corr4d(corr4d, channels=None)
    max_over_source = corr4d.amax(dim=(2, 3), keepdim=True)
    max_over_target = corr4d.amax(dim=(4, 5), keepdim=True)
    return corr4d * (corr4d / (max_over_source + eps)) * (corr4d / (max_over_target + eps))


def correlation_to_matches(
    corr4d: torch.Tensor, direction: str = "target"
) -> tuple[torch.Tensor, torch.Tensor]:
    """Hard argmax read-out of a 4-D correlation, in pixel coordinates of the correlation's grids.

    ``direction="target"``: for every target position, the source position of highest score (a coarse
    correspondence map); ``direction="source"``: for every source position, the best target position.
    Coordinates follow OpenCV's convention at the feature-map resolution (the centre of the top-left cell is
    ``(0, 0)``), x first. Ties go to the first position in row-major order.

    Args:
        corr4d: ``(B, 1, hs, ws, ht, wt)``.
        direction: ``"target"`` or ``"source"``.

    Returns:
        ``coords``: ``(B, 2, ht, wt)`` source (x, y) per target position (``(B, 2, hs, ws)`` target (x, y) per
        source position for ``"source"``); ``scores``: ``(B, 1, ht, wt)`` (``(B, 1, hs, ws)``), the maximal
        scores.
    """
    _check_corr4d(corr4d)
    if direction == "source":
        corr4d = swap_source_target(corr4d)
    elif direction != "target":
        raise ValueError(f"direction must be 'target' or 'source', got {direction!r}")
    b, _, h_from, w_from, h_to, w_to = corr4d.shape
    scores, index = corr4d.reshape(b, h_from * w_from, h_to, w_to).max(dim=1, keepdim=True)
    coords = torch.cat([index % w_from, index.div(w_from, rounding_mode="floor")], dim=1)
    return coords.to(corr4d.dtype), scores


# --- neighbourhood consensus -------------------------------------------------------------------------


class Conv4d(nn.Module):
    """4-D convolution with zero "same" padding, as a loop of :func:`~torch.nn.functional.conv3d` over the
    first kernel dimension.

    ``out[:, o, i, j, k, l] = bias[o] + sum_{c, di, dj, dk, dl} weight[o, c, di, dj, dk, dl] *
    x_padded[:, c, i + di, j + dj, k + dk, l + dl]`` with ``p = kernel_size // 2`` zeros on every side.
    Weights and bias are initialised as PyTorch's ``nn.Conv*`` (Kaiming-uniform with ``a = sqrt(5)``, bias
    uniform in ``±1 / sqrt(fan_in)``, ``fan_in = in_channels * kernel_size ** 4``).

    Args:
        in_channels: ``Cin``.
        out_channels: ``Cout``.
        kernel_size: odd side of the ``k^4`` kernel.
        bias: learn an additive bias.

    Shape:
        ``(B, Cin, hs, ws, ht, wt) -> (B, Cout, hs, ws, ht, wt)``.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, bias: bool = True) -> None:
        super().__init__()
        if kernel_size < 1 or kernel_size % 2 == 0:
            raise ConfigError(f"Conv4d needs an odd positive kernel size, got {kernel_size}")
        if in_channels < 1 or out_channels < 1:
            raise ConfigError(f"Conv4d needs positive channel counts, got {in_channels} -> {out_channels}")
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.kernel_size = kernel_size
        k = kernel_size
        self.weight = nn.Parameter(torch.empty(out_channels, in_channels, k, k, k, k))
        self.bias = nn.Parameter(torch.empty(out_channels)) if bias else None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """PyTorch's default convolution initialisation (as ``nn.Conv3d.reset_parameters``)."""
        nn.init.kaiming_uniform_(self.weight, a=5**0.5)
        if self.bias is not None:
            fan_in, _ = nn.init._calculate_fan_in_and_fan_out(self.weight)
            bound = 1 / fan_in**0.5 if fan_in > 0 else 0.0
            nn.init.uniform_(self.bias, -bound, bound)

    def extra_repr(self) -> str:
        return (
            f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
            f"bias={self.bias is not None}"
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 6 or x.shape[1] != self.in_channels:
            raise ValueError(f"expected (B, {self.in_channels}, hs, ws, ht, wt) input, got {tuple(x.shape)}")
        b, c, hs, ws, ht, wt = x.shape
        p = self.kernel_size // 2
        # hs first, so each shifted window over the padded hs axis is a contiguous (hs * B) batch of 3-D volumes
        padded = F.pad(x.permute(2, 0, 1, 3, 4, 5), (0, 0, 0, 0, 0, 0, 0, 0, 0, 0, p, p))
        out = None
        for i in range(self.kernel_size):
            window = padded[i : i + hs].reshape(hs * b, c, ws, ht, wt)
            term = F.conv3d(window, self.weight[:, :, i], padding=p)
            out = term if out is None else out + term
        assert out is not None  # kernel_size >= 1
        if self.bias is not None:
            out = out + self.bias.view(1, -1, 1, 1, 1)
        return out.view(hs, b, self.out_channels, ws, ht, wt).permute(1, 2, 0, 3, 4, 5)


@dataclass(frozen=True)
class ConsensusConfig:
    """Attributes:
    kernel_sizes: odd kernel side of each Conv4d (NC-Net InLoc: 3, 3; PF-Pascal: 5, 5, 5).
    channels: output channels of each Conv4d; the first input has 1 channel and the last output must be 1
        (InLoc: 16, 1; PF-Pascal: 16, 16, 1).
    symmetric: apply the stack to the volume and to its source/target-swapped version and add the results
        (NC-Net's symmetric mode), which makes the block invariant to exchanging the two images.
    """

    kernel_sizes: tuple[int, ...] = (3, 3)
    channels: tuple[int, ...] = (16, 1)
    symmetric: bool = True

    def __post_init__(self) -> None:
        if not self.kernel_sizes or len(self.kernel_sizes) != len(self.channels):
            raise ConfigError(
                f"neighbourhood consensus needs as many kernel sizes as channels (at least one), got "
                f"{self.kernel_sizes} and {self.channels}"
            )
        if any(k < 1 or k % 2 == 0 for k in self.kernel_sizes):
            raise ConfigError(
                f"neighbourhood consensus kernel sizes must be odd and positive: {self.kernel_sizes}"
            )
        if min(self.channels) < 1 or self.channels[-1] != 1:
            raise ConfigError(
                f"neighbourhood consensus channels must be positive and end with 1: {self.channels}"
            )


class NeighbourhoodConsensus(nn.Module):
    """NC-Net's neighbourhood consensus: ``[Conv4d + ReLU]`` per layer of the config, 1 channel in and out.

    In symmetric mode the output is ``f(x) + swap(f(swap(x)))`` with ``swap`` = :func:`swap_source_target`.

    Args:
        config: kernels, channels, symmetric mode.

    Shape:
        ``(B, 1, hs, ws, ht, wt) -> (B, 1, hs, ws, ht, wt)``.
    """

    def __init__(self, config: ConsensusConfig = ConsensusConfig()) -> None:
        super().__init__()
        self.config = config
        layers: list[nn.Module] = []
        c_in = 1
        for k, c_out in zip(config.kernel_sizes, config.channels, strict=True):
            layers += [Conv4d(c_in, c_out, k), nn.ReLU(inplace=True)]
            c_in = c_out
        self.layers = nn.Sequential(*layers)

    def forward(self, corr4d: torch.Tensor) -> torch.Tensor:
        _check_corr4d(corr4d)
        out = self.layers(corr4d)
        if self.config.symmetric:
            out = out + swap_source_target(self.layers(swap_source_target(corr4d)))
        return out


class ConsensusBlock(nn.Module):
    """NC-Net's filtering of a 4-D correlation: :func:`mutual_matching`, :class:`NeighbourhoodConsensus`,
    :func:`mutual_matching`.

    Args:
        config: the consensus network.

    Shape:
        ``(B, 1, hs, ws, ht, wt) -> (B, 1, hs, ws, ht, wt)``.

    Example:
        >>> block = ConsensusBlock(ConsensusConfig())
        >>> block(torch.rand(2, 1, 5, 7, 6, 4)).shape
        torch.Size([2, 1, 5, 7, 6, 4])
    """

    def __init__(self, config: ConsensusConfig = ConsensusConfig()) -> None:
        super().__init__()
        self.config = config
        self.consensus = NeighbourhoodConsensus(config)

    def forward(self, corr4d: torch.Tensor) -> torch.Tensor:
        return mutual_matching(self.consensus(mutual_matching(corr4d)))
