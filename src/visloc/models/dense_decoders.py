"""Decoders of the dense matcher (:mod:`visloc.models.dense`): DGC-Net's correspondence map decoders, the
universal block-wise decoder of Publication IV (UCMD) and DGCM-Net's matchability head.

* :class:`ConvDecoder` -- ``[conv3x3 + BN + ReLU]`` blocks with per-block dilations, then a final convolution
  (DGC-Net's ``CMDTop`` / ``CMD60x60`` / ``CMD120x120`` / ``CMD240x240`` and the matchability net);
* :class:`PairDecoder` -- a :class:`ConvDecoder` on ``[warped source features, target features, extra]``
  (DGC-Net's per-level decoders, whose input width depends on the encoder);
* :class:`BlockwisePairDecoder` -- UCMD: the feature channels are cut into blocks of ``N'`` (zero-padded to a
  multiple of ``N'``); every block ``k`` goes as ``[warped_k, target_k, extra]`` through one shared first
  block, the results are averaged over ``k`` and the remaining layers follow. Its weights do not depend on
  the encoder's channel count, so one decoder serves every encoder.

DGC-Net's layer plan (per level, on a 240x240 input): ``CMDTop`` 128, 128, 96, 64, 32 (dilation 1) at 15x15
and 30x30; 128, 96, 64, 32 with dilations 1, 2, 3, 4 at 60x60; 1, 4, 6, 8 at 120x120; 1, 4, 12, 16 at 240x240;
final conv3x3 -> 2. Matchability: conv3x3 64, 32, 16 + BN + ReLU, conv1x1 -> 1.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

#: DGC-Net's dilations of the four decoder blocks at each total stride; ``None``: ``CMDTop`` (five blocks,
#: the first width doubled, dilation 1).
DGC_DILATIONS: dict[int, tuple[int, ...] | None] = {
    16: None,
    8: None,
    4: (1, 2, 3, 4),
    2: (1, 4, 6, 8),
    1: (1, 4, 12, 16),
}
#: DGCM-Net's matchability widths (scaled like the decoders).
MATCHABILITY_CHANNELS = (64, 32, 16)


def conv_bn_relu(in_channels: int, out_channels: int, dilation: int = 1) -> nn.Sequential:
    """``conv3x3`` ("same" padding, dilated) + BatchNorm + ReLU."""
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, 3, padding=dilation, dilation=dilation),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
    )


def cmdtop_plan(channels: tuple[int, ...]) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """DGC-Net's ``CMDTop`` widths and dilations from the decoder widths: the first width doubled, dilation 1
    (``(128, 96, 64, 32)`` -> ``(128, 128, 96, 64, 32)``)."""
    widths = (channels[0], *channels)
    return widths, (1,) * len(widths)


class ConvDecoder(nn.Module):
    """``[conv3x3 + BN + ReLU]`` per width, then a ``head_kernel`` convolution to ``out_channels``.

    Args:
        in_channels: input channels.
        channels: widths of the blocks (may be empty: the head alone).
        dilations: one per block.
        out_channels: 2 (a grid) or 1 (a logit).
        head_kernel: 3 (DGC-Net's grid decoders) or 1 (the matchability head).

    Shape:
        ``(B, in_channels, h, w) -> (B, out_channels, h, w)``.
    """

    def __init__(
        self,
        in_channels: int,
        channels: tuple[int, ...],
        dilations: tuple[int, ...],
        out_channels: int = 2,
        head_kernel: int = 3,
    ) -> None:
        super().__init__()
        if len(channels) != len(dilations):
            raise ValueError(f"one dilation per block needed, got {channels} and {dilations}")
        blocks: list[nn.Module] = []
        c_in = in_channels
        for c_out, d in zip(channels, dilations, strict=True):
            blocks.append(conv_bn_relu(c_in, c_out, d))
            c_in = c_out
        self.in_channels = in_channels
        self.blocks = nn.Sequential(*blocks)
        self.head = nn.Conv2d(c_in, out_channels, head_kernel, padding=head_kernel // 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 4 or x.shape[1] != self.in_channels:
            raise ValueError(f"expected (B, {self.in_channels}, h, w) input, got {tuple(x.shape)}")
        return self.head(self.blocks(x))


def _check_pair(warped_source: torch.Tensor, target: torch.Tensor, extra: torch.Tensor | None) -> None:
    if warped_source.ndim != 4 or warped_source.shape != target.shape:
        raise ValueError(
            f"warped source and target features must have the same (B, C, h, w) shape, got "
            f"{tuple(warped_source.shape)} and {tuple(target.shape)}"
        )
    if extra is not None and (extra.ndim != 4 or extra.shape[0] != target.shape[0]
                              or extra.shape[-2:] != target.shape[-2:]):
        raise ValueError(f"extra input {tuple(extra.shape)} does not fit features {tuple(target.shape)}")


class PairDecoder(nn.Module):
    """DGC-Net's level decoder: a :class:`ConvDecoder` on ``[warped source, target, extra]`` channels.

    Args:
        feature_channels: ``C`` of each feature map (the input has ``2 C + extra_channels`` channels).
        extra_channels: 2 (the upsampled grid) or 0.
        channels, dilations, out_channels, head_kernel: as :class:`ConvDecoder`.

    Shape:
        ``(B, C, h, w), (B, C, h, w), (B, extra_channels, h, w) -> (B, out_channels, h, w)``.
    """

    def __init__(
        self,
        feature_channels: int,
        extra_channels: int,
        channels: tuple[int, ...],
        dilations: tuple[int, ...],
        out_channels: int = 2,
        head_kernel: int = 3,
    ) -> None:
        super().__init__()
        self.extra_channels = extra_channels
        self.decoder = ConvDecoder(
            2 * feature_channels + extra_channels, channels, dilations, out_channels, head_kernel
        )

    def forward(
        self, warped_source: torch.Tensor, target: torch.Tensor, extra: torch.Tensor | None = None
    ) -> torch.Tensor:
        _check_pair(warped_source, target, extra)
        parts = [warped_source, target] + ([extra] if extra is not None else [])
        return self.decoder(torch.cat(parts, dim=1))


class BlockwisePairDecoder(nn.Module):
    """UCMD: the universal correspondence map decoder of Publication IV.

    The ``C`` feature channels of both maps are zero-padded to ``K * N'`` and cut into ``K`` blocks of
    ``N' = block_channels``. Each block ``[warped_k, target_k, extra]`` (``2 N' + extra_channels`` channels)
    goes through the same first ``conv3x3 + BN + ReLU`` (one batch of ``B * K``, so BatchNorm sees all
    blocks); the ``K`` results are averaged, then the remaining blocks and the head follow.

    Args:
        block_channels: ``N'`` (Publication IV: 16).
        extra_channels: 2 (the upsampled grid) or 0.
        channels: widths (the first one is the shared block-wise layer; at least one).
        dilations: one per width.
        out_channels, head_kernel: as :class:`ConvDecoder`.

    Shape:
        ``(B, C, h, w), (B, C, h, w), (B, extra_channels, h, w) -> (B, out_channels, h, w)`` for any ``C``.
    """

    def __init__(
        self,
        block_channels: int,
        extra_channels: int,
        channels: tuple[int, ...],
        dilations: tuple[int, ...],
        out_channels: int = 2,
        head_kernel: int = 3,
    ) -> None:
        super().__init__()
        if not channels or len(channels) != len(dilations):
            raise ValueError(f"one dilation per block (at least one) needed, got {channels}, {dilations}")
        self.block_channels = block_channels
        self.extra_channels = extra_channels
        self.first = conv_bn_relu(2 * block_channels + extra_channels, channels[0], dilations[0])
        self.rest = ConvDecoder(channels[0], channels[1:], dilations[1:], out_channels, head_kernel)

    def split_blocks(self, features: torch.Tensor) -> torch.Tensor:
        """``(B, C, h, w) -> (B, K, N', h, w)``, zero channels appended up to ``K * N'``."""
        b, c, h, w = features.shape
        n = self.block_channels
        k = -(-c // n)
        if k * n != c:
            features = F.pad(features, (0, 0, 0, 0, 0, k * n - c))
        return features.reshape(b, k, n, h, w)

    def forward(
        self, warped_source: torch.Tensor, target: torch.Tensor, extra: torch.Tensor | None = None
    ) -> torch.Tensor:
        _check_pair(warped_source, target, extra)
        if (extra is None) != (self.extra_channels == 0) or (
            extra is not None and extra.shape[1] != self.extra_channels
        ):
            raise ValueError(f"UCMD expects {self.extra_channels} extra channels")
        src, tgt = self.split_blocks(warped_source), self.split_blocks(target)
        b, k, _, h, w = src.shape
        parts = [src, tgt]
        if extra is not None:
            parts.append(extra.unsqueeze(1).expand(b, k, self.extra_channels, h, w))
        blocks = torch.cat(parts, dim=2).reshape(b * k, -1, h, w)
        pooled = self.first(blocks).reshape(b, k, -1, h, w).mean(dim=1)
        return self.rest(pooled)


__all__ = [
    "DGC_DILATIONS",
    "MATCHABILITY_CHANNELS",
    "BlockwisePairDecoder",
    "ConvDecoder",
    "PairDecoder",
    "cmdtop_plan",
    "conv_bn_relu",
]
