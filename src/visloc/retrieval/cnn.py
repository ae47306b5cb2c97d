"""CNN global descriptors of a :class:`~visloc.models.retrieval_net.RetrievalNet`, with Publication III's
query representations (``visloc map build --global-descriptor cnn``).

* Database images: ``descriptor(image)`` (``database="plain"``: the configured pooling of the last map;
  ``"saliency_boxes"``: Publication III's database side, the plain descriptor plus the attended,
  saliency-weighted R-MAC of every salient blob, :mod:`.attention`).
* Queries: ``descriptor.describe_query(image, box)`` with ``box = (x0, y0, x1, y1)`` in pixels of the
  original image, ``query`` one of :data:`QUERY_MODES` (the baselines and the model of Publication III);
  without a box every mode is ``full``.

The image is resized as a whole so that its longer side is ``image_size * scale`` (ImageNet-normalised,
no crop); several ``scales`` give the L2-normalised sum of the per-scale descriptors (Publication III's
550/800/1050 is ``image_size=800, scales=(0.6875, 1, 1.3125)``).

``pooling``: ``"model"`` is the network's own pooling and head (learned whitening + L2); ``mac``,
``spoc``, ``gem`` (p = 3), ``rmac`` and ``wrmac`` (saliency-weighted R-MAC) pool the network's last map
(ReLU'd), L2-normalised. Region vectors (R-MAC regions of Tolias et al., ``rmac_levels`` levels) are
L2-normalised region MACs (Gordo et al.'s ROI max-pooling); with ``pooling="model"`` a region is pooled by
the network's own pooling (MAC for an ``rmac`` network) and passed through its head, as Gordo's per-region
PCA.

``whitening="pca"``: PCA whitening learned on the database's raw descriptors when the map is built
(:meth:`CNNDescriptor.fit_vectors`, stored in ``MAP/global_state.npz``) and applied by
:meth:`CNNDescriptor.retrieval_part` to database and query vectors alike; the map keeps the raw vectors
in ``global_features.h5``. It keeps at most ``N - 1`` dimensions (the rank of ``N`` centred vectors).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np

from ..errors import ConfigError, InputError
from ..features.base import LocalFeatures
from ..settings import shipped_model
from .registry import global_descriptors

logger = logging.getLogger(__name__)

#: The retrieval network shipped in the package (written by ``visloc train retrieval``).
DEFAULT_MODEL = "retrieval_tiny_world.pt"
#: ``pooling`` choices.
POOLINGS = ("model", "mac", "spoc", "gem", "rmac", "wrmac")
#: ``query`` choices: Publication III's baselines (``full``, ``cropped_roi``, ``cropped_activation``), its
#: attention with the configured pooling (``attention``) and its model (``attention_wrmac``).
QUERY_MODES = ("full", "cropped_roi", "cropped_activation", "attention", "attention_wrmac")
#: ``database`` choices.
DATABASE_MODES = ("plain", "saliency_boxes")
WHITENINGS = ("none", "pca")

Box = tuple[float, float, float, float]


def _as_scales(value: object) -> tuple[float, ...]:
    """``scales`` from a tuple/list, a number or a string ``"0.75,1,1.25"`` (the command line's form)."""
    if isinstance(value, str):
        parts = [p for p in value.replace(" ", ",").split(",") if p]
        try:
            return tuple(float(p) for p in parts)
        except ValueError:
            raise ConfigError(f"cnn scales must be numbers like '0.75,1,1.25', got {value!r}") from None
    if isinstance(value, (int, float)):
        return (float(value),)
    try:
        return tuple(float(v) for v in value)  # type: ignore[union-attr]
    except (TypeError, ValueError):
        raise ConfigError(f"cnn scales must be a list of numbers, got {value!r}") from None


@dataclass(frozen=True)
class CNNDescriptorConfig:
    """Attributes:
    model: a :class:`~visloc.models.retrieval_net.RetrievalNet` checkpoint (``visloc train retrieval``);
        ``None`` uses the model shipped with visloc (``retrieval_tiny_world.pt``).
    image_size: longer side of the resized image at scale 1; 0 (default) uses the size the model was
        trained at (``metrics["preprocess"]["image_size"]`` of its checkpoint, 320 when it has none).
    scales: factors of ``image_size``; several give the L2-normalised sum of the per-scale descriptors.
        A string ``"0.75,1,1.25"`` is accepted (``--global-set scales=0.75,1,1.25``).
    pooling: one of :data:`POOLINGS`.
    rmac_levels: R-MAC levels of ``rmac``, ``wrmac`` and the saliency-weighted query/database descriptors.
    whitening: ``none`` or ``pca`` (learned on the database at map build).
    whitening_dim: dimensions kept by the PCA whitening; 0 keeps all (at most ``N - 1`` for ``N``
        database images).
    query: one of :data:`QUERY_MODES` (used when a query comes with a box). Default ``attention``: the best
        measured on the hard world's object queries (``benchmarks/retrieval.py``); the paper's full model is
        ``attention_wrmac``.
    database: one of :data:`DATABASE_MODES`.
    lambda1, lambda2, phi: the attention gain ``g = lambda1 + lambda2 * s**phi``.
    saliency_threshold, top_activations: database side: saliency values kept to find salient blobs.
    device: torch device.
    """

    model: str | None = None
    image_size: int = 0
    scales: tuple[float, ...] = (1.0,)
    pooling: str = "model"
    rmac_levels: int = 3
    whitening: str = "none"
    whitening_dim: int = 0
    query: str = "attention"
    database: str = "plain"
    lambda1: float = 0.5
    lambda2: float = 0.4
    phi: float = 4.0
    saliency_threshold: float = 0.7
    top_activations: int = 200
    device: str = "cpu"

    def __post_init__(self) -> None:
        object.__setattr__(self, "scales", _as_scales(self.scales))
        for name, choices in (("pooling", POOLINGS), ("whitening", WHITENINGS), ("query", QUERY_MODES),
                              ("database", DATABASE_MODES)):
            if getattr(self, name) not in choices:
                raise ConfigError(f"cnn {name} must be one of {', '.join(choices)}, got {getattr(self, name)!r}")
        if not self.scales or any(not (s > 0 and np.isfinite(s)) for s in self.scales):
            raise ConfigError(f"cnn scales must be positive numbers, got {self.scales}")
        if int(self.image_size) < 0:
            raise ConfigError(f"cnn image_size must be >= 0 (0: the model's training size), got {self.image_size}")
        for name in ("rmac_levels", "top_activations"):
            if int(getattr(self, name)) < 1:
                raise ConfigError(f"cnn {name} must be >= 1, got {getattr(self, name)}")
        if int(self.whitening_dim) < 0:
            raise ConfigError(f"cnn whitening_dim must be >= 0, got {self.whitening_dim}")
        if not 0.0 <= self.saliency_threshold < 1.0:
            raise ConfigError(f"cnn saliency_threshold must be in [0, 1), got {self.saliency_threshold}")
        if not self.phi > 0:
            raise ConfigError(f"cnn phi must be positive, got {self.phi}")


def _check_box(box: Box | np.ndarray, width: int, height: int) -> np.ndarray:
    """A query box as float64 ``(4,)``, clipped to the image; ValueError if malformed or outside it."""
    b = np.asarray(box, dtype=np.float64).reshape(-1)
    if b.shape != (4,) or not np.all(np.isfinite(b)) or b[2] <= b[0] or b[3] <= b[1]:
        raise ValueError(f"a box is (x0, y0, x1, y1) with x1 > x0 and y1 > y0, got {tuple(np.ravel(box))}")
    clipped = np.array([max(b[0], 0.0), max(b[1], 0.0), min(b[2], float(width)), min(b[3], float(height))])
    if clipped[2] <= clipped[0] or clipped[3] <= clipped[1]:
        raise ValueError(f"box {tuple(b)} lies outside the {width}x{height} image")
    return clipped


def _slice_cells(x0: int, y0: int, x1: int, y1: int, h: int, w: int) -> tuple[int, int, int, int]:
    """Cells clipped to an ``h x w`` map and widened to at least one cell (a crop cannot be empty)."""
    x0, y0 = min(max(x0, 0), w - 1), min(max(y0, 0), h - 1)
    return x0, y0, min(max(x1, x0 + 1), w), min(max(y1, y0 + 1), h)


@global_descriptors.register("cnn", CNNDescriptorConfig)
class CNNDescriptor:
    """Global descriptors of a trained retrieval network; see the module docstring.

    ``descriptor(image, features=None) -> (D,)`` float32 describes a database image (``features`` is not
    used), :meth:`describe_query` a query.
    """

    needs_fit = False
    #: Whether ``descriptor(image, features)`` needs the local features (reads the image itself).
    needs_local_features = False

    def __init__(self, config: CNNDescriptorConfig = CNNDescriptorConfig()) -> None:
        self.config = config
        self.path = Path(config.model).expanduser() if config.model else shipped_model(DEFAULT_MODEL)
        if not self.path.is_file():
            hint = ("the shipped model is not there: train one with `visloc train retrieval` and give it with "
                    "model=PATH (--global-set model=PATH)" if config.model is None
                    else "give a checkpoint written by `visloc train retrieval`")
            raise InputError(self.path, f"retrieval model not found ({hint})")
        self.whitening_mean: np.ndarray | None = None
        self.whitening_projection: np.ndarray | None = None

    # --- the network ---------------------------------------------------------------------------------
    @cached_property
    def net(self):
        """The loaded :class:`~visloc.models.retrieval_net.RetrievalNet` (eval mode)."""
        from ..models.checkpoint import load_model
        from ..models.retrieval_net import RetrievalNet

        model = load_model(self.path, self.config.device).eval()
        if not isinstance(model, RetrievalNet):
            raise InputError(self.path, f"not a retrieval network checkpoint (holds a {type(model).__name__})")
        return model

    @cached_property
    def image_size(self) -> int:
        """Longer side at scale 1: the config's, else the size the model was trained at (320 if unknown)."""
        if self.config.image_size:
            return int(self.config.image_size)
        from ..models.checkpoint import read_checkpoint

        preprocess = read_checkpoint(self.path).get("metrics", {}).get("preprocess", {})
        return int(preprocess.get("image_size", 320))

    @cached_property
    def tap_stride(self) -> int:
        """Total stride of the attention tap."""
        from ..models.backbones import tap_stride

        return tap_stride(self.net.config.attention_tap)

    @cached_property
    def last_stride(self) -> int:
        """Total stride of the last map (the tap's stride times the rest's, probed on a 64x64 tap map)."""
        import torch

        with torch.inference_mode():
            probe = torch.zeros(1, self.net.tap_channels, 64, 64, device=self.config.device)
            out = self.net.features_from_tap(probe)
        return self.tap_stride * max(1, round(64 / out.shape[-1]))

    @property
    def fits_on_vectors(self) -> bool:
        """Whether the map fits this descriptor on the database's raw vectors (PCA whitening)."""
        return self.config.whitening == "pca"

    # --- pooling -------------------------------------------------------------------------------------
    def pool(self, fmap):
        """The configured pooling of a last map: ``(B, C, h, w) -> (B, D)``, L2-normalised."""
        from ..models import pooling as P
        from . import attention as A

        kind, levels = self.config.pooling, self.config.rmac_levels
        if kind == "model":
            return self.net.head(self.net.pool(fmap))
        if kind == "mac":
            return P.l2n(P.mac(fmap))
        if kind == "spoc":
            return P.l2n(P.spoc(fmap))
        if kind == "gem":
            return P.l2n(P.gem(fmap))
        if kind == "rmac":
            return P.rmac(fmap, levels=levels)
        return A.weighted_sum(self.region_vectors(fmap), A.region_weights(fmap, levels))

    def region_vectors(self, fmap):
        """Per-region vectors of the R-MAC regions of a last map: ``(B, C, h, w) -> (B, R, D)``, each
        L2-normalised (see the module docstring)."""
        import torch

        from ..models import pooling as P

        kind = self.config.pooling
        boxes = P.rmac_regions(fmap.shape[-2], fmap.shape[-1], self.config.rmac_levels).tolist()
        vecs = []
        for x0, y0, x1, y1 in boxes:
            crop = fmap[..., y0:y1, x0:x1]
            if kind == "model":
                net = self.net
                v = P.l2n(P.mac(crop)) if net.config.pooling in ("mac", "rmac") else net.pool(crop)
                v = net.head(v)
            elif kind == "spoc":
                v = P.l2n(P.spoc(crop))
            elif kind == "gem":
                v = P.l2n(P.gem(crop))
            else:
                v = P.l2n(P.mac(crop))
            vecs.append(v)
        return torch.stack(vecs, dim=1)

    def weighted_rmac(self, fmap):
        """Saliency-weighted sum of :meth:`region_vectors`: ``(B, C, h, w) -> (B, D)``."""
        from . import attention as A

        return A.weighted_sum(self.region_vectors(fmap), A.region_weights(fmap, self.config.rmac_levels))

    # --- describing ----------------------------------------------------------------------------------
    def _resized(self, image: np.ndarray, scale: float):
        """``(1, 3, H', W')`` input at ``scale`` and the resize ratio of the original image."""
        from ..models.preprocess import long_side_tensor

        size = max(1, round(self.image_size * scale))
        x = long_side_tensor(image, size).unsqueeze(0).to(self.config.device)
        return x, size / max(image.shape[0], image.shape[1])

    def _attended(self, tap, cells, weighted: bool):
        from . import attention as A

        c = self.config
        last = self.net.features_from_tap(A.attend(tap, cells, c.lambda1, c.lambda2, c.phi))
        return self.weighted_rmac(last) if weighted else self.pool(last)

    def _query_at(self, image: np.ndarray, scale: float, box: np.ndarray | None):
        """One scale of a query descriptor ``(1, D)``."""
        from . import attention as A

        mode = self.config.query if box is not None else "full"
        x, ratio = self._resized(image, scale)
        if mode == "cropped_roi":
            h, w = x.shape[-2:]
            x0, y0, x1, y1 = (int(v) for v in np.round(box * ratio))
            x0, y0, x1, y1 = _slice_cells(x0, y0, x1, y1, h, w)
            return self.pool(self.net.features(x[..., y0:y1, x0:x1]))
        tap = self.net.features_until_tap(x).clamp(min=0)
        if mode in ("attention", "attention_wrmac"):
            cells = A.box_to_cells(box, ratio, self.tap_stride, tuple(tap.shape[-2:]))
            return self._attended(tap, cells, weighted=mode == "attention_wrmac")
        last = self.net.features_from_tap(tap)
        if mode == "cropped_activation":
            h, w = last.shape[-2:]
            x0, y0, x1, y1 = _slice_cells(*A.box_to_cells(box, ratio, self.last_stride, (h, w)), h, w)
            return self.pool(last[..., y0:y1, x0:x1])
        return self.pool(last)

    def _database_at(self, image: np.ndarray, scale: float):
        """One scale of a database descriptor ``(1, D)``."""
        from ..models.pooling import l2n, saliency_map
        from . import attention as A

        x, _ = self._resized(image, scale)
        tap = self.net.features_until_tap(x).clamp(min=0)
        last = self.net.features_from_tap(tap)
        d = self.pool(last)
        if self.config.database == "plain":
            return d
        boxes = A.saliency_boxes(saliency_map(last)[0], tuple(tap.shape[-2:]), self.config.saliency_threshold,
                                 self.config.top_activations)
        for cells in boxes:
            d = d + self._attended(tap, cells, weighted=True)
        return l2n(d)

    def local_features(self, image: np.ndarray):
        """The network's last feature map of an ``(H, W, 3)`` uint8 image at scale 1: ``(C, h, w)`` torch
        tensor covering the whole image (local descriptors for verification's ``S_L``)."""
        import torch

        with torch.inference_mode():
            x, _ = self._resized(image, 1.0)
            return self.net.features(x)[0].float().cpu()

    def _multiscale(self, describe) -> np.ndarray:
        """``describe(scale) -> (1, D)`` summed over the scales, L2-normalised: ``(D,)`` float32."""
        import torch

        with torch.inference_mode():
            total = sum(describe(s) for s in self.config.scales)[0].double().cpu().numpy()
        norm = float(np.linalg.norm(total))
        return (total / norm if norm > 0 else total).astype(np.float32)

    def __call__(self, image: np.ndarray, features: LocalFeatures | None = None) -> np.ndarray:
        """Database descriptor ``(D,)`` float32 (unit norm) of an ``(H, W, 3)`` uint8 image."""
        return self._multiscale(lambda s: self._database_at(image, s))

    def describe_query(self, image: np.ndarray, box: Box | np.ndarray | None = None) -> np.ndarray:
        """Query descriptor ``(D,)`` float32 (unit norm) of an ``(H, W, 3)`` uint8 image; ``box``
        ``(x0, y0, x1, y1)`` in its pixels (clipped to it) selects the object of interest.

        Raises:
            ValueError: a malformed box, or one outside the image.
        """
        b = None if box is None else _check_box(box, image.shape[1], image.shape[0])
        return self._multiscale(lambda s: self._query_at(image, s, b))

    # --- PCA whitening -------------------------------------------------------------------------------
    def fit_vectors(self, vectors: np.ndarray) -> CNNDescriptor:
        """Learn the PCA whitening from the database's raw ``(N, D)`` descriptors (``whitening="pca"``)."""
        from .whitening import fit_pca_whitening

        if not self.fits_on_vectors:
            return self
        x = np.asarray(vectors, dtype=np.float64)
        if x.ndim != 2 or len(x) < 2:
            raise ConfigError(f"PCA whitening needs at least 2 database descriptors, got {x.shape[0] if x.ndim else 0}")
        rank = min(x.shape[1], len(x) - 1)
        dim = self.config.whitening_dim or rank
        if dim > rank:
            logger.warning("cnn whitening_dim=%d but %d database descriptors of dimension %d span at most %d "
                           "dimensions: keeping %d", dim, len(x), x.shape[1], rank, rank)
            dim = rank
        mean, projection = fit_pca_whitening(x, dim=dim)
        return self.load_state(mean, projection)

    def state(self) -> dict[str, np.ndarray]:
        if self.whitening_mean is None or self.whitening_projection is None:
            return {}
        return {"whitening_mean": self.whitening_mean, "whitening_projection": self.whitening_projection}

    def load_state(self, whitening_mean: np.ndarray, whitening_projection: np.ndarray) -> CNNDescriptor:
        mean = np.asarray(whitening_mean, dtype=np.float64)
        projection = np.asarray(whitening_projection, dtype=np.float64)
        if projection.ndim != 2 or mean.shape != (projection.shape[1],):
            raise ValueError(f"whitening mean {mean.shape} and projection {projection.shape} do not fit")
        self.whitening_mean, self.whitening_projection = mean, projection
        return self

    def retrieval_part(self, vectors: np.ndarray) -> np.ndarray:
        """What is searched for raw ``(N, D)`` descriptors: their PCA-whitened, L2-normalised
        ``(N, whitening dim)`` form with ``whitening="pca"``, the vectors themselves otherwise."""
        if not self.fits_on_vectors:
            return vectors
        if self.whitening_projection is None:
            raise RuntimeError("cnn PCA whitening is not fitted (fit_vectors on the database, or load_state)")
        from .whitening import apply_whitening

        return apply_whitening(np.asarray(vectors, dtype=np.float32), self.whitening_mean,
                               self.whitening_projection).astype(np.float32)

