"""The image-retrieval network: a registered backbone, a global pooling and an optional learned whitening.

``RetrievalNet(config)(images) -> (B, D)`` L2-normalised global descriptors, as cirtorch's
``ImageRetrievalNet`` (Radenović et al.): the backbone's last feature map (ReLU'd), a pooling of
:mod:`visloc.models.pooling` (``mac``, ``spoc``, ``gem`` with a learnable exponent, ``rmac`` over Tolias
regions, ``netvlad``), L2 normalisation, then optionally a learned whitening (a fully connected layer with
bias, initialisable from PCA whitening of training descriptors) and L2 normalisation again.

The backbone is split at a named tap (:data:`~visloc.models.backbones.TAPS`, default ``stride16``) so that
Publication III's query attention can modulate the intermediate map and run the rest again
(:meth:`RetrievalNet.features_until_tap`, :meth:`RetrievalNet.features_from_tap`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from ..errors import ConfigError
from . import pooling as P
from .backbones import TAPS, BackboneConfig, build_backbone, split_at_tap
from .registry import networks

#: The poolings a :class:`RetrievalNet` can use.
POOLINGS = ("mac", "spoc", "gem", "rmac", "netvlad")


@dataclass(frozen=True)
class RetrievalNetConfig:
    """Attributes:
    backbone: the encoder (``tiny`` from scratch by default: no ImageNet weights are needed).
    pooling: one of :data:`POOLINGS`.
    gem_p: initial exponent of the learnable GeM pooling.
    rmac_levels: R-MAC levels (regions of Tolias et al., overlap 0.4).
    netvlad_clusters: NetVLAD clusters (descriptor ``clusters x channels`` before whitening).
    whitening_dim: output size of the learned whitening layer; 0 for none (the pooled vector is the
        descriptor).
    attention_tap: the backbone tap where the query attention of Publication III modulates the features.
    """

    backbone: BackboneConfig = BackboneConfig(name="tiny", weights="none", allow_random_init=True)
    pooling: str = "gem"
    gem_p: float = 3.0
    rmac_levels: int = 3
    netvlad_clusters: int = 16
    whitening_dim: int = 0
    attention_tap: str = "stride16"

    def __post_init__(self) -> None:
        if self.pooling not in POOLINGS:
            raise ConfigError(f"unknown retrieval pooling {self.pooling!r}; known: {', '.join(POOLINGS)}")
        if self.attention_tap not in TAPS:
            raise ConfigError(f"unknown attention tap {self.attention_tap!r}; taps: {', '.join(TAPS)}")
        for name in ("rmac_levels", "netvlad_clusters"):
            if int(getattr(self, name)) < 1:
                raise ConfigError(f"retrieval net {name} must be positive, got {getattr(self, name)}")
        if int(self.whitening_dim) < 0:
            raise ConfigError(f"retrieval net whitening_dim must be >= 0, got {self.whitening_dim}")
        if not self.gem_p > 0:
            raise ConfigError(f"retrieval net gem_p must be positive, got {self.gem_p}")


@networks.register("retrieval", RetrievalNetConfig)
class RetrievalNet(nn.Module):
    """Global-descriptor network.

    Args:
        config: the architecture.
        load_weights: initialise the encoder as ``config.backbone.weights`` says; ``False`` builds the
            architecture only (a checkpoint's state dict then replaces the random weights).

    Example:
        >>> net = RetrievalNet(RetrievalNetConfig(whitening_dim=64))
        >>> net(torch.rand(2, 3, 96, 128)).shape
        torch.Size([2, 64])
    """

    def __init__(self, config: RetrievalNetConfig = RetrievalNetConfig(), load_weights: bool = True) -> None:
        super().__init__()
        self.config = config
        self.encoder = build_backbone(config.backbone, load_weights=load_weights)
        head, tail, self.tap_channels = split_at_tap(self.encoder, config.attention_tap)
        self._parts = (head, tail)  # plain tuple: the parts share the encoder's modules
        channels = self.feature_channels
        self.gem = P.GeM(config.gem_p) if config.pooling == "gem" else None
        self.netvlad = P.NetVLAD(config.netvlad_clusters, channels) if config.pooling == "netvlad" else None
        pooled = self.netvlad.output_dim if self.netvlad is not None else channels
        self.pooled_dim = pooled
        self.whiten = nn.Linear(pooled, config.whitening_dim, bias=True) if config.whitening_dim else None

    @property
    def feature_channels(self) -> int:
        """Channels ``C`` of the last feature map."""
        convs = [m for m in self._parts[1].modules() if isinstance(m, nn.Conv2d)]
        return convs[-1].out_channels if convs else self.tap_channels

    @property
    def descriptor_dim(self) -> int:
        """Size ``D`` of the descriptor."""
        return self.config.whitening_dim or self.pooled_dim

    # --- features ------------------------------------------------------------------------------------
    def features_until_tap(self, images: torch.Tensor) -> torch.Tensor:
        """``(B, 3, H, W)`` ImageNet-normalised -> the map at the attention tap ``(B, C_tap, h, w)``."""
        return self._parts[0](images)

    def features_from_tap(self, tap_map: torch.Tensor) -> torch.Tensor:
        """The rest of the backbone from the tap's map: ``(B, C_tap, h, w) -> (B, C, h', w')``, ReLU'd."""
        return self._parts[1](tap_map).clamp(min=0)

    def features(self, images: torch.Tensor) -> torch.Tensor:
        """Last feature map ``(B, C, H / s, W / s)`` (ReLU'd) of ``(B, 3, H, W)`` ImageNet-normalised images."""
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"expected images of shape (B, 3, H, W), got {tuple(images.shape)}")
        return self.features_from_tap(self.features_until_tap(images))

    # --- pooling and head ----------------------------------------------------------------------------
    def pool(self, fmap: torch.Tensor) -> torch.Tensor:
        """The configured pooling of a feature map, L2-normalised: ``(B, C, h, w) -> (B, pooled_dim)``."""
        kind = self.config.pooling
        if kind == "mac":
            v = P.mac(fmap)
        elif kind == "spoc":
            v = P.spoc(fmap)
        elif kind == "gem":
            v = self.gem(fmap)
        elif kind == "rmac":
            v = P.rmac(fmap, levels=self.config.rmac_levels)
        else:
            v = self.netvlad(fmap)
        return P.l2n(v)

    def head(self, pooled: torch.Tensor) -> torch.Tensor:
        """Whitening (if any) and L2 normalisation: ``(B, pooled_dim) -> (B, D)``."""
        if self.whiten is not None:
            pooled = self.whiten(pooled)
        return P.l2n(pooled)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """``(B, 3, H, W)`` ImageNet-normalised -> ``(B, D)`` unit-norm descriptors."""
        return self.head(self.pool(self.features(images)))

    @torch.no_grad()
    def init_whitening(self, pooled: torch.Tensor | np.ndarray, eps: float = 1e-6) -> RetrievalNet:
        """Set the whitening layer to PCA whitening of pooled training descriptors ``(N, pooled_dim)``:
        ``W x + b = diag(1 / sqrt(lambda)) U^T (x - mean)`` over the top ``whitening_dim`` components
        (Radenović et al.'s learned whitening starts from it). Returns ``self``.

        Components whose variance is at most ``eps`` times the largest one (the null space when there are
        fewer descriptors than dimensions) are left out: their rows of ``W`` and ``b`` are zero (still
        trainable) instead of amplifying numerical noise. So are the rows beyond ``pooled_dim``."""
        if self.whiten is None:
            raise ConfigError("this retrieval net has no whitening layer (whitening_dim=0)")
        x = torch.as_tensor(np.asarray(pooled), dtype=torch.float64)
        dim = self.config.whitening_dim
        if x.ndim != 2 or x.shape[1] != self.pooled_dim or x.shape[0] < 2:
            raise ValueError(f"init_whitening needs (N >= 2, {self.pooled_dim}) descriptors, got {tuple(x.shape)}")
        mean = x.mean(0)
        cov = torch.cov((x - mean).T)
        eigval, eigvec = torch.linalg.eigh(cov)
        order = eigval.argsort(descending=True)[:dim]
        eigval, eigvec = eigval[order], eigvec[:, order]
        if not eigval[0] > 0:
            raise ValueError("init_whitening: the descriptors do not vary")
        kept = eigval > eps * eigval[0]
        eigval, eigvec = eigval[kept], eigvec[:, kept]
        weight = eigvec.T / eigval.sqrt()[:, None]  # (k, D)
        k = weight.shape[0]
        w = torch.zeros(dim, self.pooled_dim, dtype=torch.float64)
        w[:k] = weight
        b = torch.zeros(dim, dtype=torch.float64)
        b[:k] = -(weight @ mean)
        self.whiten.weight.copy_(w.to(self.whiten.weight.dtype))
        self.whiten.bias.copy_(b.to(self.whiten.bias.dtype))
        return self


__all__ = ["POOLINGS", "RetrievalNet", "RetrievalNetConfig"]
