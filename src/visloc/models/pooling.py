"""Global pooling of a CNN feature map ``(B, C, H, W)`` into an image descriptor: MAC, SPoC, GeM, R-MAC,
saliency-weighted R-MAC (Publication III) and NetVLAD.

Definitions follow the references cirtorch users know (Radenović et al., ``cirtorch/layers``):

* ``mac``: global max; ``spoc``: global mean; ``gem``: ``(mean(clamp(x, eps)^p))^(1/p)`` (p = 1 is SPoC,
  p → ∞ tends to MAC); :class:`GeM` learns ``p`` (initialised to 3). These three return the *raw*
  pooled vector, like cirtorch's pooling layers: the network L2-normalises afterwards (:func:`l2n`).
* ``rmac_regions``: Tolias et al.'s region grid (the one of cirtorch's ``rmac``/``roipool`` and Gordo et
  al.'s ``get_rmac_region_coordinates``). ``rmac`` max-pools each region, L2-normalises each region
  vector, sums them and L2-normalises the sum. cirtorch's ``rmac`` also adds the whole-map MAC as one
  more region; pass ``include_global=True`` for that. Tolias/Gordo (and Publication III) do not.
* ``weighted_rmac``: Publication III's saliency-weighted R-MAC: region vector ``v_r`` (L2-normalised) is
  scaled by ``w_r`` = the **max** of the saliency map inside region ``r`` (the SA.py code feeds the
  saliency map through the ROI *max*-pooling), then summed and L2-normalised. ``weighting="mean"`` is
  offered as a variant. :func:`saliency_map` computes the saliency the paper uses: ReLU'd activations
  summed over channels, divided by their maximum.
* :class:`NetVLAD` (Arandjelović et al. 2016), with the standard initialisation of pytorch-NetVLAD /
  hloc ("vladv1"): centroids from k-means on L2-normalised descriptors, assignment conv weights
  ``alpha * c_k / ||c_k||`` without bias, ``alpha = -log(0.01) / mean(d1 - d2)`` where ``d1``, ``d2``
  are each descriptor's largest and second-largest dot product with the normalised centroids (so a
  descriptor's nearest centroid gets on average 100x the weight of its second nearest).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ConfigError

__all__ = [
    "GeM",
    "NetVLAD",
    "gem",
    "l2n",
    "mac",
    "rmac",
    "rmac_region_vectors",
    "rmac_regions",
    "saliency_map",
    "spoc",
    "weighted_rmac",
]

#: Candidate numbers of regions along the long side of the map at level 1 (Tolias et al.).
_RMAC_STEPS = (2, 3, 4, 5, 6, 7)


def _check_map(x: torch.Tensor) -> None:
    if x.ndim != 4:
        raise ValueError(f"expected a feature map (B, C, H, W), got shape {tuple(x.shape)}")


def l2n(x: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """L2-normalise along dim 1: ``(B, D, ...) -> (B, D, ...)`` (``x / (||x|| + eps)``, as cirtorch)."""
    return x / (torch.linalg.vector_norm(x, dim=1, keepdim=True) + eps)


def mac(x: torch.Tensor) -> torch.Tensor:
    """Maximum activation of convolutions: ``(B, C, H, W) -> (B, C)``, the max over ``H, W``."""
    _check_map(x)
    return x.amax(dim=(-2, -1))


def spoc(x: torch.Tensor) -> torch.Tensor:
    """Sum-pooled convolutional features (as cirtorch, the mean): ``(B, C, H, W) -> (B, C)``."""
    _check_map(x)
    return x.mean(dim=(-2, -1))


def gem(x: torch.Tensor, p: float | torch.Tensor = 3.0, eps: float = 1e-6) -> torch.Tensor:
    """Generalised mean pooling: ``(B, C, H, W) -> (B, C)``, ``(mean_{h,w} max(x, eps)^p)^(1/p)``.

    ``p`` is a float or a tensor broadcastable to ``(B, C, 1, 1)`` (a learnable scalar in :class:`GeM`).
    Activations are clamped to ``eps`` first so that fractional powers and the gradient are defined.
    """
    _check_map(x)
    if isinstance(p, torch.Tensor) and p.ndim == 1:
        p = p.view(1, -1, 1, 1)
    pooled = x.clamp(min=eps).pow(p).mean(dim=(-2, -1), keepdim=True).pow(1.0 / p)
    return pooled.flatten(1)


class GeM(nn.Module):
    """GeM pooling with a learnable exponent: ``(B, C, H, W) -> (B, C)`` (not normalised).

    ``p`` is a single parameter of shape ``(1,)`` shared by all channels (cirtorch's ``GeM``),
    initialised to ``p``.
    """

    def __init__(self, p: float = 3.0, eps: float = 1e-6) -> None:
        super().__init__()
        self.p = nn.Parameter(torch.ones(1) * p)
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return gem(x, p=self.p, eps=self.eps)

    def extra_repr(self) -> str:
        return f"p={self.p.item():.4f}, eps={self.eps}"


def rmac_regions(height: int, width: int, levels: int = 3, overlap: float = 0.4) -> torch.Tensor:
    """Tolias et al.'s R-MAC regions of an ``height x width`` map: ``(R, 4)`` int64 boxes
    ``(x0, y0, x1, y1)``, half-open (``x[..., y0:y1, x0:x1]`` is the region; ``x1 - x0 == y1 - y0``).

    With ``w = min(H, W)``: the number ``n`` of level-1 regions along the long side is chosen from
    2..7 so that ``1 - b / w`` (``b = (max(H, W) - w) / (n - 1)``, the spacing of square regions of side
    ``w``) is closest to ``overlap`` (first on ties); ``extra = n - 1`` (0 for a square map). At level
    ``l = 1..levels`` the regions are squares of side ``s = floor(2 w / (l + 1))``, ``l + extra`` of
    them along the long side and ``l`` along the short one, evenly spread with starts
    ``floor(i (L - s) / (k - 1))`` for ``i = 0..k-1`` (``L`` the side length, ``k`` the count; 0 when
    ``k = 1``), so the last one ends at the border. Ordered by level, then row (y), then column (x), as
    cirtorch. Starts are computed in exact integer arithmetic (cirtorch's float32 ``floor`` can be one
    pixel off where ``i (L - s) / (k - 1)`` is a whole number). Levels whose side is 0 add nothing.
    """
    if height < 1 or width < 1:
        raise ValueError(f"R-MAC regions need a non-empty map, got {height}x{width}")
    if levels < 1:
        raise ConfigError(f"R-MAC needs levels >= 1, got {levels}")
    w = min(height, width)
    long_side = max(height, width)
    extra = 0
    if height != width:
        errors = [abs((1.0 - (long_side - w) / (n - 1) / w) - overlap) for n in _RMAC_STEPS]
        extra = _RMAC_STEPS[errors.index(min(errors))] - 1
    extra_w, extra_h = (extra, 0) if width > height else (0, extra)

    def starts(side: int, size: int, count: int) -> list[int]:
        if count == 1:
            return [0]
        return [(i * (side - size)) // (count - 1) for i in range(count)]

    boxes: list[tuple[int, int, int, int]] = []
    for level in range(1, levels + 1):
        size = (2 * w) // (level + 1)
        if size == 0:
            continue
        for y0 in starts(height, size, level + extra_h):
            for x0 in starts(width, size, level + extra_w):
                boxes.append((x0, y0, x0 + size, y0 + size))
    return torch.tensor(boxes, dtype=torch.int64).reshape(-1, 4)


def rmac_region_vectors(
    x: torch.Tensor, levels: int = 3, overlap: float = 0.4, include_global: bool = False, eps: float = 1e-6
) -> torch.Tensor:
    """Per-region MAC vectors, each L2-normalised: ``(B, C, H, W) -> (B, R, C)``.

    Regions are :func:`rmac_regions` (preceded by the whole map when ``include_global``). This is the
    point where Gordo et al.'s pipeline applies its per-region PCA/whitening before summing.
    """
    _check_map(x)
    boxes = rmac_regions(x.shape[-2], x.shape[-1], levels, overlap).tolist()
    if include_global:
        boxes.insert(0, [0, 0, x.shape[-1], x.shape[-2]])
    vecs = torch.stack([x[..., y0:y1, x0:x1].amax(dim=(-2, -1)) for x0, y0, x1, y1 in boxes], dim=1)
    return vecs / (torch.linalg.vector_norm(vecs, dim=2, keepdim=True) + eps)


def rmac(
    x: torch.Tensor, levels: int = 3, overlap: float = 0.4, include_global: bool = False, eps: float = 1e-6
) -> torch.Tensor:
    """R-MAC: ``(B, C, H, W) -> (B, C)``, L2-normalised sum of the L2-normalised region MACs.

    ``include_global=True`` adds the whole-map MAC as one more region, as cirtorch's ``rmac`` does.
    """
    return l2n(rmac_region_vectors(x, levels, overlap, include_global, eps).sum(dim=1), eps=eps)


def saliency_map(x: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    """Publication III's saliency: ``(B, C, H, W) -> (B, H, W)`` in ``[0, 1]``: ``ReLU(x)`` summed over
    channels, divided by its per-image maximum (an all-zero map stays zero)."""
    _check_map(x)
    s = x.clamp(min=0).sum(dim=1)
    return s / s.amax(dim=(-2, -1), keepdim=True).clamp(min=eps)


def weighted_rmac(
    x: torch.Tensor,
    saliency: torch.Tensor,
    levels: int = 3,
    overlap: float = 0.4,
    weighting: str = "max",
    include_global: bool = False,
    eps: float = 1e-6,
) -> torch.Tensor:
    """Saliency-weighted R-MAC (Publication III): ``x (B, C, H, W)``, ``saliency (B, H, W)`` -> ``(B, C)``.

    Each L2-normalised region MAC ``v_r`` is multiplied by ``w_r``, the max (``weighting="max"``, the
    paper's code) or the mean (``"mean"``) of ``saliency`` inside region ``r``; the weighted vectors are
    summed and L2-normalised. With a constant saliency this is :func:`rmac`.
    """
    _check_map(x)
    if saliency.shape != (x.shape[0], *x.shape[-2:]):
        raise ValueError(
            f"saliency must be (B, H, W) = {(x.shape[0], *x.shape[-2:])}, got {tuple(saliency.shape)}"
        )
    if weighting not in ("max", "mean"):
        raise ConfigError(f"weighting must be 'max' or 'mean', got {weighting!r}")
    boxes = rmac_regions(x.shape[-2], x.shape[-1], levels, overlap).tolist()
    if include_global:
        boxes.insert(0, [0, 0, x.shape[-1], x.shape[-2]])
    reduce = torch.amax if weighting == "max" else torch.mean
    weights = torch.stack([reduce(saliency[:, y0:y1, x0:x1], dim=(-2, -1)) for x0, y0, x1, y1 in boxes], 1)
    vecs = rmac_region_vectors(x, levels, overlap, include_global, eps)  # (B, R, C)
    return l2n((weights.unsqueeze(-1).to(vecs.dtype) * vecs).sum(dim=1), eps=eps)


def _kmeans(x: torch.Tensor, k: int, iterations: int, seed: int) -> torch.Tensor:
    """Plain Lloyd k-means with k-means++ seeding: ``(N, D) -> (k, D)`` centroids (deterministic)."""
    gen = torch.Generator().manual_seed(seed)
    n = x.shape[0]
    centroids = [x[torch.randint(n, (1,), generator=gen)].squeeze(0)]
    d2 = ((x - centroids[0]) ** 2).sum(1)
    for _ in range(1, k):
        if float(d2.sum()) <= 0:
            idx = torch.randint(n, (1,), generator=gen)
        else:
            idx = torch.multinomial(d2, 1, generator=gen)
        centroids.append(x[idx].squeeze(0))
        d2 = torch.minimum(d2, ((x - centroids[-1]) ** 2).sum(1))
    c = torch.stack(centroids)
    for _ in range(iterations):
        assign = torch.cdist(x, c).argmin(dim=1)
        new = torch.zeros_like(c).index_add_(0, assign, x)
        counts = torch.bincount(assign, minlength=k).to(x.dtype)
        empty = counts == 0
        new = new / counts.clamp(min=1).unsqueeze(1)
        new[empty] = c[empty]  # keep a centroid that lost all its points
        if torch.equal(new, c):
            break
        c = new
    return c


class NetVLAD(nn.Module):
    """NetVLAD layer: ``(B, C, H, W) -> (B, K * C)``, L2-normalised.

    Local descriptors (the map's columns) are L2-normalised, softly assigned to ``K`` clusters by a 1x1
    convolution and a softmax over clusters, residuals to the centroids are summed per cluster,
    intra-normalised (each cluster's ``C``-vector L2-normalised), flattened cluster-major and
    L2-normalised. Call :meth:`init_from` with training descriptors before use (random otherwise).
    """

    def __init__(self, num_clusters: int = 64, dim: int = 512, normalize_input: bool = True) -> None:
        super().__init__()
        if num_clusters < 1 or dim < 1:
            raise ConfigError(f"NetVLAD needs num_clusters, dim >= 1, got {num_clusters}, {dim}")
        self.num_clusters = num_clusters
        self.dim = dim
        self.normalize_input = normalize_input
        self.alpha = 0.0
        self.conv = nn.Conv2d(dim, num_clusters, kernel_size=1, bias=False)
        self.centroids = nn.Parameter(torch.rand(num_clusters, dim))

    @property
    def output_dim(self) -> int:
        return self.num_clusters * self.dim

    @torch.no_grad()
    def init_from(
        self,
        descriptors: torch.Tensor,
        centroids: torch.Tensor | None = None,
        iterations: int = 50,
        seed: int = 0,
    ) -> NetVLAD:
        """Initialise from training descriptors ``(N, C)`` (pytorch-NetVLAD's "vladv1" init).

        ``centroids (K, C)``: given, or k-means (seeded) on the L2-normalised descriptors. Sets
        ``alpha = -log(0.01) / mean(d1 - d2)`` (``d1 >= d2`` the two largest dot products of each
        normalised descriptor with the normalised centroids), conv weights ``alpha * c_k / ||c_k||``.
        Returns ``self``.
        """
        desc = torch.as_tensor(descriptors).detach().cpu().to(torch.float64)
        if desc.ndim != 2 or desc.shape[1] != self.dim:
            raise ValueError(f"init_from needs descriptors (N, {self.dim}), got {tuple(desc.shape)}")
        if desc.shape[0] < self.num_clusters:
            raise ValueError(f"init_from needs at least {self.num_clusters} descriptors, got {desc.shape[0]}")
        if self.normalize_input:
            desc = F.normalize(desc, dim=1)
        if centroids is None:
            clusters = _kmeans(desc, self.num_clusters, iterations, seed)
        else:
            clusters = torch.as_tensor(centroids).detach().cpu().to(torch.float64)
            if clusters.shape != (self.num_clusters, self.dim):
                raise ValueError(
                    f"centroids must be ({self.num_clusters}, {self.dim}), got {tuple(clusters.shape)}"
                )
        assign_dirs = F.normalize(clusters, dim=1)
        if self.num_clusters > 1:
            top2 = (desc @ assign_dirs.T).topk(2, dim=1).values
            gap = float((top2[:, 0] - top2[:, 1]).mean())
            self.alpha = -math.log(0.01) / max(gap, 1e-12)
        else:
            self.alpha = 1.0
        dtype = self.conv.weight.dtype
        self.centroids.copy_(clusters.to(dtype))
        self.conv.weight.copy_((self.alpha * assign_dirs).to(dtype).view(self.num_clusters, self.dim, 1, 1))
        return self

    def soft_assign(self, x: torch.Tensor) -> torch.Tensor:
        """Soft assignment of each location: ``(B, C, H, W) -> (B, K, H, W)``, summing to 1 over ``K``."""
        _check_map(x)
        if self.normalize_input:
            x = F.normalize(x, dim=1)
        return F.softmax(self.conv(x), dim=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _check_map(x)
        if x.shape[1] != self.dim:
            raise ValueError(f"NetVLAD expects {self.dim} channels, got {x.shape[1]}")
        if self.normalize_input:
            x = F.normalize(x, dim=1)
        a = F.softmax(self.conv(x), dim=1).flatten(2)  # (B, K, N)
        feats = x.flatten(2)  # (B, C, N)
        # sum_n a_kn (x_n - c_k) = (A X^T)_k - (sum_n a_kn) c_k
        vlad = torch.bmm(a, feats.transpose(1, 2)) - a.sum(dim=2, keepdim=True) * self.centroids.unsqueeze(0)
        vlad = F.normalize(vlad, dim=2)  # intra-normalisation, (B, K, C)
        return F.normalize(vlad.flatten(1), dim=1)
