"""Training of the image-retrieval network from scratch (Publication III's descriptors, cirtorch's recipe).

:func:`train_retrieval` trains a :class:`~visloc.models.retrieval_net.RetrievalNet` with a contrastive
(default) or triplet loss on tuples ``(query, positive, n_1 .. n_k)`` through
:func:`visloc.training.loop.fit` (devices, AMP on CUDA, DDP under torchrun, checkpoints, exact resume and
``metrics.json`` as there). No ImageNet weights are needed: the default backbone is ``tiny`` from random
initialisation.

**Positives.** Two sources, usable together:

* *posed frames* (a 7-Scenes-layout data set with depth, e.g. the embedded world): two frames of one scene
  are a positive pair when their symmetric view overlap (:func:`~visloc.training.pairs.frame_overlap`:
  depth-based visibility, the pose-only proxy without depth) is at least ``overlap.positive_overlap``
  (0.5); each epoch a query's positive is drawn at random among its positives. Frames of one scene whose
  overlap is at most ``overlap.negative_overlap`` (0), and frames of other scenes, are negatives; pairs
  in between are neither. Overlaps are measured once per scene for every pair that passes a generous
  pose filter (``max_center_distance``, ``max_view_angle_deg``); pairs outside it count as overlap 0.
* *photo folders* (``photos``, any images, e.g. real photographs without poses): the query and the
  positive are two random views of one photo (a random homography: crop and scale, rotation and
  perspective, then colour jitter); every other photo and every frame is a negative. The photos must show
  different places (two photos of one building would be pushed apart).

**Hard negatives** (cirtorch, Radenović et al.): before every epoch, the first one included, the current
model (eval mode) describes the epoch's queries and a pool of at most ``mining.pool_size`` training images
(a random subset when there are more), and each query takes the ``mining.num_negatives`` most similar
pool images among its negatives (other scenes and photos included). In a distributed run rank 0 mines and
sends the tuples to the others.

**Loss** of one tuple with anchor ``a``, positive ``p`` and negatives ``n_i`` (unit vectors; ``d`` the
Euclidean distance), summed over the pairs of the tuple as cirtorch and averaged over the tuples of a batch:

* ``contrastive``: ``1/2 d(a, p)^2 + sum_i 1/2 max(0, margin - d(a, n_i))^2`` (cirtorch's margin for GeM:
  0.7);
* ``triplet``: ``sum_i max(0, margin + d(a, p)^2 - d(a, n_i)^2)`` (squared distances, as cirtorch).

**Images.** Every image is resized as a whole so that its longer side is ``image_size``
(:func:`~visloc.models.preprocess.long_side_tensor`, the preprocessing of the ``cnn`` global descriptor);
training frames of another aspect ratio than the first one are resized to its shape. Training images get
colour jitter and random erasing (an occluder-like patch of one random colour); mining and validation use
the plain resized images.

**Learned whitening** (``whitening_init``, on by default when the model has a whitening layer): before
the first epoch it is set to the PCA whitening of the pooled descriptors of the initial model on (a pool
of) the training images (:meth:`~visloc.models.retrieval_net.RetrievalNet.init_whitening`), then trained.

**Validation** (``val_split="holdout"``): every ``val_every``-th training frame of each sequence is held
out (:func:`~visloc.training.relpose.holdout_split`): it is never trained on nor mined, and serves as a
query against the remaining training frames. The validation metric is Recall@1: the top-1 retrieved
frame is correct when it is of the query's scene and its overlap with the query is at least
``overlap.positive_overlap``; queries without any such frame are left out. ``fit`` selects ``best.pt`` by
the lowest validation loss, which here is ``1 - Recall@1``; each epoch of ``metrics.json`` also has
``val_recall_at_1``. The test split is never used unless ``val_split`` names it.

Outputs in ``out_dir`` (rank 0 only): ``last.pt`` / ``best.pt`` (resumable), ``model.pt`` (the best
weights, :func:`~visloc.models.checkpoint.save_model`, whose ``metrics["preprocess"]`` is
``{"image_size": S}``, read by the ``cnn`` global descriptor) and ``metrics.json``.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import Dataset
from torchvision.transforms.v2 import functional as TF

from ..datasets import Frame, load_frames
from ..errors import ConfigError, InputError
from ..io.images import IMAGE_SUFFIXES, read_image
from ..models.checkpoint import save_model
from ..models.preprocess import long_side_shape, long_side_uint8, normalize, sample_generator
from ..models.retrieval_net import RetrievalNet, RetrievalNetConfig
from ..registry import config_to_dict
from .checkpoint import LAST, load_checkpoint
from .config_cli import ConfigOptions
from .loop import LoopConfig, LossFn, fit, init_distributed, seed_everything, shutdown_distributed
from .pairs import DepthCache, PairSamplingConfig, _candidates, frame_overlap
from .relpose import HOLDOUT, MODEL_FILE, holdout_split

logger = logging.getLogger(__name__)

#: The losses of :class:`TrainRetrievalConfig`.
LOSSES = ("contrastive", "triplet")
#: Scene label of photo-folder images (frames carry their data set's scene name).
PHOTO = None


@dataclass(frozen=True)
class OverlapConfig:
    """Which frames are positives and negatives of each other (view overlap, :mod:`visloc.training.pairs`).

    Attributes:
        positive_overlap: smallest symmetric overlap of a positive pair (frames of one scene); also what
            makes a retrieved frame correct in the validation Recall@1.
        negative_overlap: largest overlap of a negative pair of one scene (frames of other scenes are
            always negatives); pairs in between are neither.
        grid_step: pixel stride of the grid whose points are tested for visibility.
        depth_tolerance: relative depth agreement for a point to count as visible.
        max_center_distance: metres; pairs further apart are not measured (overlap 0).
        max_view_angle_deg: degrees between optical axes; wider pairs are not measured (overlap 0).
    """

    positive_overlap: float = 0.5
    negative_overlap: float = 0.0
    grid_step: int = 16
    depth_tolerance: float = 0.1
    max_center_distance: float = 10.0
    max_view_angle_deg: float = 150.0

    def __post_init__(self) -> None:
        if not 0.0 <= self.negative_overlap < self.positive_overlap <= 1.0:
            raise ConfigError("need 0 <= negative_overlap < positive_overlap <= 1, got "
                              f"{self.negative_overlap} and {self.positive_overlap}")

    def sampling(self) -> PairSamplingConfig:
        """The same settings as the pair sampler's config (for :func:`frame_overlap`)."""
        return PairSamplingConfig(grid_step=self.grid_step, depth_tolerance=self.depth_tolerance,
                                  max_center_distance=self.max_center_distance,
                                  max_view_angle_deg=self.max_view_angle_deg)


@dataclass(frozen=True)
class MiningConfig:
    """Training tuples and their hard negatives.

    Attributes:
        num_negatives: negatives per tuple (cirtorch: 5).
        queries_per_epoch: tuples per epoch, a random subset of the queries when there are more
            (cirtorch: 2000); the queries are the training frames that have a positive, and each photo
            ``photo_repeats`` times.
        pool_size: training images described each epoch to mine negatives from (a random subset when
            there are more; cirtorch: 20000).
        photo_repeats: tuples per photo and epoch (each with new random views).
        describe_batch_size: images per forward pass when describing images for mining and validation.
    """

    num_negatives: int = 5
    queries_per_epoch: int = 2000
    pool_size: int = 20000
    photo_repeats: int = 1
    describe_batch_size: int = 32

    def __post_init__(self) -> None:
        for name in ("num_negatives", "queries_per_epoch", "pool_size", "photo_repeats", "describe_batch_size"):
            if int(getattr(self, name)) < 1:
                raise ConfigError(f"{name} must be at least 1, got {getattr(self, name)}")


@dataclass(frozen=True)
class AugmentConfig:
    """Training-image augmentation.

    Attributes:
        jitter: brightness, contrast and saturation factors drawn from ``[1 - j, 1 + j]``, in random order;
            0 disables it.
        erase_prob: probability of erasing a random rectangle (one random colour: occluder-like).
        erase_max_area: largest share of the image an erased rectangle covers (the smallest is 0.02).
        photo_min_scale: photo views: smallest share of the photo's area a view shows.
        photo_max_rotation_deg: photo views: largest in-plane rotation.
        photo_perspective: photo views: corner displacement of the homography, as a share of the view's
            sides.
        night_prob: probability of a night-like exposure (:func:`night_view`): uneven dim light with a colour
            cast, sensor noise and quantisation at the dim level, then a gain back to a normal brightness.
        edge_occluder_prob: probability of a board at the left, right or bottom edge (:func:`edge_occluder`),
            plain or textured with a patch of the image, covering up to ``edge_occluder_max`` of the side.
        edge_occluder_max: largest share of the width (height for a bottom board) an edge board covers.
    """

    jitter: float = 0.4
    erase_prob: float = 0.5
    erase_max_area: float = 0.25
    night_prob: float = 0.0
    edge_occluder_prob: float = 0.0
    edge_occluder_max: float = 0.5
    photo_min_scale: float = 0.3
    photo_max_rotation_deg: float = 20.0
    photo_perspective: float = 0.15

    def __post_init__(self) -> None:
        if not 0.0 <= self.jitter < 1.0:
            raise ConfigError(f"jitter must be in [0, 1), got {self.jitter}")
        if not 0.0 <= self.erase_prob <= 1.0 or not 0.02 <= self.erase_max_area <= 1.0:
            raise ConfigError(f"need erase_prob in [0, 1] and erase_max_area in [0.02, 1], got {self.erase_prob} "
                              f"and {self.erase_max_area}")
        if not 0.0 < self.photo_min_scale <= 1.0:
            raise ConfigError(f"photo_min_scale must be in (0, 1], got {self.photo_min_scale}")
        if not (0.0 <= self.night_prob <= 1.0 and 0.0 <= self.edge_occluder_prob <= 1.0
                and 0.05 <= self.edge_occluder_max <= 0.9):
            raise ConfigError("need night_prob and edge_occluder_prob in [0, 1] and edge_occluder_max in [0.05, 0.9], "
                              f"got {self.night_prob}, {self.edge_occluder_prob}, {self.edge_occluder_max}")
        if not 0.0 <= self.photo_perspective < 0.5 or self.photo_max_rotation_deg < 0:
            raise ConfigError("need 0 <= photo_perspective < 0.5 and photo_max_rotation_deg >= 0")


@dataclass(frozen=True)
class TrainRetrievalConfig:
    """Everything that determines a retrieval training run.

    Attributes:
        model: the network (default: ``tiny`` backbone from random initialisation, GeM, learned whitening
            to 128 dimensions).
        train_split: split whose frames are trained on.
        val_split: ``"holdout"`` (default: every ``val_every``-th training frame of each sequence is held out
            as a validation query against the other training frames), a split name (its frames are the
            queries; then model selection has seen that split), or ``None`` (no validation).
        val_every: hold-out period of ``"holdout"`` validation.
        exclude_scenes: scenes left out of training and validation.
        photos: folders of photos (searched recursively) whose random views are positives of each other.
        image_size: longer side of every image fed to the network (stored with the model for inference).
        loss: ``contrastive`` (cirtorch's default) or ``triplet``.
        margin: the loss margin (cirtorch: 0.7 for the contrastive loss with GeM; 0.1 for its triplet loss).
        whitening_init: set the whitening layer to PCA whitening of the initial model's pooled training
            descriptors before training (when the model has one).
        overlap: positives and negatives among posed frames.
        mining: tuples and hard-negative mining.
        augment: training-image augmentation.
        cache_images: keep the resized images in memory (for small data sets).
        loop: optimisation settings; here 8 tuples per step and process, 20 epochs, Adam at lr 1e-3 x0.1
            after epoch 14.
    """

    model: RetrievalNetConfig = RetrievalNetConfig(whitening_dim=128)
    train_split: str = "train"
    val_split: str | None = HOLDOUT
    val_every: int = 10
    exclude_scenes: tuple[str, ...] = ()
    photos: tuple[str, ...] = ()
    image_size: int = 160
    loss: str = "contrastive"
    margin: float = 0.7
    whitening_init: bool = True
    overlap: OverlapConfig = OverlapConfig()
    mining: MiningConfig = MiningConfig()
    augment: AugmentConfig = AugmentConfig()
    cache_images: bool = False
    loop: LoopConfig = LoopConfig(epochs=20, batch_size=8, lr=1e-3, milestones=(14,), seed=0)

    def __post_init__(self) -> None:
        object.__setattr__(self, "exclude_scenes", tuple(self.exclude_scenes))
        object.__setattr__(self, "photos", tuple(str(p) for p in self.photos))
        if self.loss not in LOSSES:
            raise ConfigError(f"unknown loss {self.loss!r}; known: {', '.join(LOSSES)}")
        if not self.margin > 0:
            raise ConfigError(f"margin must be positive, got {self.margin}")
        if self.image_size < 16:
            raise ConfigError(f"image_size must be at least 16, got {self.image_size}")

    def to_dict(self) -> dict[str, Any]:
        """Plain-data form embedded in checkpoints and ``metrics.json``."""
        return {"task": "retrieval", **config_to_dict(self)}


#: The options of ``visloc train retrieval``: one per leaf field of :class:`TrainRetrievalConfig`, named after
#: the field but for these (:mod:`visloc.training.config_cli`).
RETRIEVAL_OPTIONS = ConfigOptions(TrainRetrievalConfig(), names={
    "model.backbone.name": "backbone",
    "exclude_scenes": "exclude_scene",
    "loop.seed": "seed",
})


def tiny_retrieval_config(**overrides: Any) -> TrainRetrievalConfig:
    """The default (CPU-sized) run with ``overrides`` by option name (``epochs=2``, ``image_size=80``) or
    whole top-level fields (:meth:`~visloc.training.config_cli.ConfigOptions.replace`)."""
    return RETRIEVAL_OPTIONS.replace(TrainRetrievalConfig(), **overrides)


# --- losses -------------------------------------------------------------------------------------------
def _squared_distances(anchor: torch.Tensor, others: torch.Tensor) -> torch.Tensor:
    """``(B, D)`` and ``(B, K, D)`` -> ``(B, K)`` squared Euclidean distances."""
    return (anchor[:, None, :] - others).pow(2).sum(-1)


def contrastive_loss(anchor: torch.Tensor, positive: torch.Tensor, negatives: torch.Tensor,
                     margin: float = 0.7) -> torch.Tensor:
    """Per-tuple contrastive loss ``1/2 d(a, p)^2 + sum_i 1/2 max(0, margin - d(a, n_i))^2``.

    Args:
        anchor: ``(B, D)`` query descriptors.
        positive: ``(B, D)``.
        negatives: ``(B, K, D)``.
        margin: distance beyond which a negative costs nothing.

    Returns:
        ``(B,)`` losses.
    """
    d_pos = _squared_distances(anchor, positive[:, None, :])[:, 0]
    d_neg = _squared_distances(anchor, negatives).clamp(min=1e-12).sqrt()
    return 0.5 * d_pos + 0.5 * (margin - d_neg).clamp(min=0).pow(2).sum(-1)


def triplet_loss(anchor: torch.Tensor, positive: torch.Tensor, negatives: torch.Tensor,
                 margin: float = 0.1) -> torch.Tensor:
    """Per-tuple triplet loss ``sum_i max(0, margin + d(a, p)^2 - d(a, n_i)^2)`` (shapes as
    :func:`contrastive_loss`)."""
    d_pos = _squared_distances(anchor, positive[:, None, :])
    return (margin + d_pos - _squared_distances(anchor, negatives)).clamp(min=0).sum(-1)


def tuple_loss(descriptors: torch.Tensor, loss: str = "contrastive", margin: float = 0.7) -> torch.Tensor:
    """Mean over tuples of the loss of ``(B, 2 + K, D)`` descriptors ordered query, positive, negatives."""
    if descriptors.ndim != 3 or descriptors.shape[1] < 3:
        raise ValueError(f"expected (B, 2 + K, D) tuple descriptors, got {tuple(descriptors.shape)}")
    fn = {"contrastive": contrastive_loss, "triplet": triplet_loss}[loss]
    return fn(descriptors[:, 0], descriptors[:, 1], descriptors[:, 2:], margin).mean()


# --- mining -------------------------------------------------------------------------------------------
def mine_hard_negatives(queries: torch.Tensor, pool: torch.Tensor, allowed: torch.Tensor | np.ndarray,
                        k: int) -> np.ndarray:
    """For each query, the ``k`` pool items most similar to it (dot product) among those ``allowed``.

    Args:
        queries: ``(Q, D)`` descriptors.
        pool: ``(P, D)`` descriptors.
        allowed: ``(Q, P)`` bool, the pool items that are negatives of each query.
        k: negatives per query.

    Returns:
        ``(Q, k)`` int64 pool indices, most similar first; ``-1`` where a query has fewer than ``k``
        allowed items.
    """
    allowed = torch.as_tensor(np.asarray(allowed), dtype=torch.bool)
    sim = queries.float() @ pool.float().T
    sim = sim.masked_fill(~allowed, -math.inf)
    k_eff = min(k, sim.shape[1])
    values, index = sim.topk(k_eff, dim=1) if k_eff else (sim[:, :0], sim[:, :0].long())
    index = index.masked_fill(torch.isinf(values), -1).numpy().astype(np.int64)
    if k_eff < k:
        index = np.concatenate([index, np.full((len(index), k - k_eff), -1, np.int64)], axis=1)
    return index


# --- overlap ------------------------------------------------------------------------------------------
def scene_overlaps(frames: Sequence[Frame], config: OverlapConfig = OverlapConfig()) -> np.ndarray:
    """``(N, N)`` symmetric overlap of the frames of ONE scene (1 on the diagonal): measured by
    :func:`~visloc.training.pairs.frame_overlap` for the pairs that pass the pose filter, 0 for the others."""
    n = len(frames)
    out = np.eye(n, dtype=np.float32)
    sampling = config.sampling()
    cache = DepthCache(max(2, n))
    for i, j in _candidates(list(frames), None, sampling):
        out[i, j] = out[j, i] = frame_overlap(frames[i], frames[j], sampling, cache)
    return out


@dataclass(frozen=True)
class TrainImage:
    """One image of a retrieval run.

    Attributes:
        key: the frame name, or ``photo:<folder index>/<relative path>``.
        path: the image file.
        scene: the frame's scene; ``None`` for a photo.
        shape: ``(height, width)`` as known before reading (frames: the camera's), else ``None``.
    """

    key: str
    path: Path
    scene: str | None = None
    shape: tuple[int, int] | None = None


class OverlapTable:
    """Overlaps between the posed frames of a run, scene by scene (:func:`scene_overlaps`)."""

    def __init__(self, frames: Sequence[Frame], config: OverlapConfig) -> None:
        self._where: dict[str, tuple[str, int]] = {}
        self._matrices: dict[str, np.ndarray] = {}
        for scene in sorted({f.scene for f in frames}):
            items = sorted((f for f in frames if f.scene == scene), key=lambda f: f.name)
            t0 = time.perf_counter()
            self._matrices[scene] = scene_overlaps(items, config)
            self._where.update({f.name: (scene, i) for i, f in enumerate(items)})
            logger.info("scene %s: overlaps of %d frames in %.1f s", scene, len(items), time.perf_counter() - t0)

    def __call__(self, a: str, b: str) -> float:
        """Overlap of frames ``a`` and ``b`` (0 across scenes)."""
        (sa, ia), (sb, ib) = self._where[a], self._where[b]
        return float(self._matrices[sa][ia, ib]) if sa == sb else 0.0

    def block(self, rows: Sequence[str], cols: Sequence[str]) -> np.ndarray:
        """``(len(rows), len(cols))`` overlaps (0 across scenes and for names not in the table)."""
        out = np.zeros((len(rows), len(cols)), dtype=np.float32)
        col_at: dict[str, list[tuple[int, int]]] = {}
        for j, name in enumerate(cols):
            if name in self._where:
                scene, k = self._where[name]
                col_at.setdefault(scene, []).append((j, k))
        for i, name in enumerate(rows):
            if name not in self._where:
                continue
            scene, k = self._where[name]
            if scene in col_at:
                js, ks = zip(*col_at[scene], strict=True)
                out[i, list(js)] = self._matrices[scene][k, list(ks)]
        return out


# --- images -------------------------------------------------------------------------------------------
def load_long_side(path: str | Path, size: int) -> torch.Tensor:
    """An image resized so that its longer side is ``size``: ``(3, h, w)`` uint8, the same pixels as
    :func:`~visloc.models.preprocess.long_side_tensor` before its normalisation."""
    return long_side_uint8(read_image(path), size)


def as_input(img: torch.Tensor) -> torch.Tensor:
    """``(3, h, w)`` uint8 -> float32 ImageNet-normalised network input."""
    return normalize(TF.to_dtype(img, torch.float32, scale=True))


def _u(gen: torch.Generator, low: float, high: float) -> float:
    return float(low + (high - low) * torch.rand((), generator=gen, dtype=torch.float64))


def color_jitter(img: torch.Tensor, strength: float, gen: torch.Generator) -> torch.Tensor:
    """Brightness, contrast and saturation of ``(3, H, W)`` float ``[0, 1]`` by factors in
    ``[1 - s, 1 + s]``, in random order (as :func:`visloc.training.data.train_transform`)."""
    if strength <= 0:
        return img
    factors = [_u(gen, 1.0 - strength, 1.0 + strength) for _ in range(3)]
    ops = (TF.adjust_brightness, TF.adjust_contrast, TF.adjust_saturation)
    for k in torch.randperm(3, generator=gen).tolist():
        img = ops[k](img, factors[k])
    return img


def random_erase(img: torch.Tensor, prob: float, max_area: float, gen: torch.Generator) -> torch.Tensor:
    """With probability ``prob``, fill a random rectangle (2 % to ``max_area`` of the image, aspect 0.3-3.3)
    of ``(3, H, W)`` float ``[0, 1]`` with one random colour."""
    if _u(gen, 0.0, 1.0) >= prob:
        return img
    _, h, w = img.shape
    area = _u(gen, 0.02, max_area) * h * w
    aspect = math.exp(_u(gen, math.log(0.3), math.log(1 / 0.3)))
    eh, ew = min(h, max(1, round(math.sqrt(area * aspect)))), min(w, max(1, round(math.sqrt(area / aspect))))
    top, left = int(_u(gen, 0, h - eh + 1 - 1e-9)), int(_u(gen, 0, w - ew + 1 - 1e-9))
    colour = torch.rand(3, 1, 1, generator=gen).to(img.dtype)
    out = img.clone()
    out[:, top : top + eh, left : left + ew] = colour
    return out


def night_view(img: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """A night-like exposure of ``(3, H, W)`` float ``[0, 1]``: the image under uneven dim light (ambient
    0.1-0.4 plus a lamp-like radial falloff from a random point, times a random colour cast), quantised to 8
    bits with Gaussian noise of 1-3 grey levels at that dim level, then amplified back to the original mean
    brightness (gain at most 8): dark parts come out grainy and posterised, bright ones clip."""
    _, h, w = img.shape
    ambient, power = _u(gen, 0.1, 0.4), _u(gen, 0.0, 1.5)
    cy, cx, radius = _u(gen, -0.5, 1.5) * h, _u(gen, -0.5, 1.5) * w, _u(gen, 0.3, 1.0) * max(h, w)
    yy = torch.arange(h, dtype=img.dtype).view(h, 1)
    xx = torch.arange(w, dtype=img.dtype).view(1, w)
    light = ambient + power / (1.0 + ((yy - cy) ** 2 + (xx - cx) ** 2) / radius**2)
    cast = torch.tensor([1.0, _u(gen, 0.6, 1.0), _u(gen, 0.35, 1.0)], dtype=img.dtype).view(3, 1, 1)
    dim = (img * light * cast).clamp(0, 1)
    noise = torch.randn(dim.shape, generator=gen, dtype=img.dtype) * (_u(gen, 1.0, 3.0) / 255.0)
    dim = torch.round((dim + noise).clamp(0, 1) * 255.0) / 255.0
    gain = min(8.0, float(img.mean()) / max(float(dim.mean()), 1e-3))
    return (dim * max(gain, 1.0)).clamp(0, 1)


def edge_occluder(img: torch.Tensor, prob: float, max_share: float, gen: torch.Generator,
                  texture: torch.Tensor | None = None) -> torch.Tensor:
    """With probability ``prob``, a board over the left, right or bottom edge of ``(3, H, W)`` float ``[0, 1]``
    (10 % to ``max_share`` of the width, or height for the bottom), of one colour or textured with a random
    patch of ``texture`` ``(3, H', W')`` (another image: a near object; default: the image itself)."""
    if _u(gen, 0.0, 1.0) >= prob:
        return img
    _, h, w = img.shape
    side = int(torch.randint(3, (1,), generator=gen))
    share = _u(gen, 0.1, max_share)
    out = img.clone()
    rows, cols = (slice(0, h), slice(0, max(1, round(share * w)))) if side == 0 else (
        (slice(0, h), slice(w - max(1, round(share * w)), w)) if side == 1 else
        (slice(h - max(1, round(share * h)), h), slice(0, w)))
    bh, bw = rows.stop - rows.start, cols.stop - cols.start
    if _u(gen, 0.0, 1.0) < 0.5:
        out[:, rows, cols] = torch.rand(3, 1, 1, generator=gen).to(img.dtype)
    else:  # a patch of the texture, enlarged to the board (seen from close by)
        source = img if texture is None else texture
        sh, sw = source.shape[-2:]
        ph, pw = max(1, min(sh, bh // 3)), max(1, min(sw, bw // 3))
        top, left = int(_u(gen, 0, sh - ph + 1 - 1e-9)), int(_u(gen, 0, sw - pw + 1 - 1e-9))
        patch = source[:, top : top + ph, left : left + pw]
        out[:, rows, cols] = TF.resize(patch, [bh, bw], antialias=True)
    return out


def photo_view(img: torch.Tensor, out_hw: tuple[int, int], gen: torch.Generator,
               augment: AugmentConfig = AugmentConfig()) -> tuple[torch.Tensor, np.ndarray]:
    """A random geometric view of a photo: a quadrilateral of it (random scale and position, rotation and
    perspective, inside the photo) warped onto an ``out_hw`` image.

    Args:
        img: ``(3, h, w)`` uint8 photo.
        out_hw: ``(H, W)`` of the view.
        gen: the sample's generator.
        augment: scale, rotation and perspective ranges.

    Returns:
        The view ``(3, H, W)`` float ``[0, 1]`` and the ``(3, 3)`` homography from view to photo pixel
        coordinates (pixel ``(x, y)`` covers ``[x, x + 1) x [y, y + 1)``; its centre is ``(x + 0.5, y + 0.5)``).
    """
    _, h, w = img.shape
    out_h, out_w = out_hw
    area = _u(gen, augment.photo_min_scale, 1.0) * h * w
    aspect = out_w / out_h * math.exp(_u(gen, -math.log(4 / 3), math.log(4 / 3)))
    rw, rh = math.sqrt(area * aspect), math.sqrt(area / aspect)
    corners = np.array([[-rw, -rh], [rw, -rh], [rw, rh], [-rw, rh]]) / 2.0
    theta = math.radians(_u(gen, -augment.photo_max_rotation_deg, augment.photo_max_rotation_deg))
    rot = np.array([[math.cos(theta), -math.sin(theta)], [math.sin(theta), math.cos(theta)]])
    corners = corners @ rot.T
    p = augment.photo_perspective
    corners += np.array([[_u(gen, -p, p) * rw, _u(gen, -p, p) * rh] for _ in range(4)])
    lo, hi = corners.min(0), corners.max(0)
    shrink = min(1.0, w / (hi[0] - lo[0]), h / (hi[1] - lo[1]))
    corners *= shrink
    lo, hi = corners.min(0), corners.max(0)
    centre = np.array([_u(gen, -lo[0], w - hi[0]), _u(gen, -lo[1], h - hi[1])])
    quad = corners + centre
    view_corners = np.array([[0.0, 0.0], [out_w, 0.0], [out_w, out_h], [0.0, out_h]])
    hom = cv2.getPerspectiveTransform(np.float32(view_corners), np.float32(quad)).astype(np.float64)
    ys, xs = np.mgrid[0:out_h, 0:out_w]
    pts = np.stack([xs.ravel() + 0.5, ys.ravel() + 0.5, np.ones(xs.size)])
    mapped = hom @ pts
    sx, sy = mapped[0] / mapped[2], mapped[1] / mapped[2]
    grid = torch.from_numpy(np.stack([2 * sx / w - 1, 2 * sy / h - 1], axis=-1).reshape(1, out_h, out_w, 2))
    src = TF.to_dtype(img, torch.float32, scale=True)[None]
    view = F.grid_sample(src, grid.float(), mode="bilinear", padding_mode="border", align_corners=False)[0]
    return view.clamp(0, 1), hom


def list_photos(folders: Sequence[str | Path]) -> list[TrainImage]:
    """The images under ``folders`` (recursively, sorted), keyed ``photo:<k>/<relative path>``.

    Raises:
        InputError: a folder is missing or holds no image.
    """
    out = []
    for k, folder in enumerate(folders):
        folder = Path(folder).expanduser()
        if not folder.is_dir():
            raise InputError(folder, "photo folder not found")
        found = sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
        if not found:
            raise InputError(folder, f"photo folder holds no image ({', '.join(IMAGE_SUFFIXES)})")
        out += [TrainImage(f"photo:{k}/{p.relative_to(folder).as_posix()}", p) for p in found]
    return out


class ImageStore:
    """Images resized to a longer side, optionally kept in memory (fill it in the main process first:
    forked DataLoader workers share what it holds)."""

    def __init__(self, cache: bool) -> None:
        self.cache = cache
        self._items: dict[tuple[Path, int], torch.Tensor] = {}

    def __call__(self, path: Path, size: int) -> torch.Tensor:
        key = (Path(path), int(size))
        if key in self._items:
            return self._items[key]
        img = load_long_side(path, size)
        if self.cache:
            self._items[key] = img
        return img


@torch.no_grad()
def describe(model: nn.Module, inputs: Sequence[torch.Tensor], batch_size: int = 32,
             pooled: bool = False) -> torch.Tensor:
    """Descriptors ``(N, D)`` (CPU float32) of network inputs ``(3, h, w)`` (of any sizes), in eval mode;
    ``pooled``: the pooled vectors before the head (for :meth:`RetrievalNet.init_whitening`)."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    out: list[torch.Tensor | None] = [None] * len(inputs)
    by_shape: dict[tuple[int, ...], list[int]] = {}
    for i, x in enumerate(inputs):
        by_shape.setdefault(tuple(x.shape), []).append(i)
    try:
        for idx in by_shape.values():
            for s in range(0, len(idx), batch_size):
                chunk = idx[s : s + batch_size]
                x = torch.stack([inputs[i] for i in chunk]).to(device)
                d = model.pool(model.features(x)) if pooled else model(x)
                for i, v in zip(chunk, d.float().cpu(), strict=True):
                    out[i] = v
    finally:
        model.train(was_training)
    dim = model.pooled_dim if pooled else model.descriptor_dim
    return torch.stack(out) if out else torch.zeros(0, dim)  # type: ignore[arg-type]


# --- datasets -----------------------------------------------------------------------------------------
class RetrievalTuples(Dataset):
    """Training tuples ``(query, positive, negatives)`` re-mined with the current model each epoch.

    Items are ``(T, 3, H, W)`` float32 stacks (``T = 2 + num_negatives``, ImageNet-normalised). Call
    :meth:`set_epoch` before each epoch (:func:`~visloc.training.loop.fit` does): it draws the epoch's
    queries and positives and mines their hard negatives with ``model``.

    Args:
        images: the training images (posed frames of the training scenes and photos).
        overlaps: overlaps of the frames (:class:`OverlapTable`), for positives and negatives.
        model: the network being trained (mining runs it in eval mode).
        config: the run.
        train_shape: ``(H, W)`` of every training image.
        store: the image loader (and cache).
    """

    def __init__(self, images: Sequence[TrainImage], overlaps: OverlapTable | None, model: nn.Module,
                 config: TrainRetrievalConfig, train_shape: tuple[int, int], store: ImageStore) -> None:
        self.images = list(images)
        self.model = model
        self.config = config
        self.train_shape = train_shape
        self.store = store
        self.seed = config.loop.seed
        self.epoch = -1
        self.tuples: list[tuple[int, int, tuple[int, ...]]] = []
        frames = [i for i, im in enumerate(self.images) if im.scene is not PHOTO]
        photos = [i for i, im in enumerate(self.images) if im.scene is PHOTO]
        self.overlap = np.zeros((len(frames), len(frames)), np.float32)
        if frames and overlaps is not None:
            names = [self.images[i].key for i in frames]
            self.overlap = overlaps.block(names, names)
        self._frame_row = {img: r for r, img in enumerate(frames)}
        ov = self.config.overlap
        self.positives: dict[int, list[int]] = {}
        for r, i in enumerate(frames):
            pos = [frames[c] for c in np.flatnonzero(self.overlap[r] >= ov.positive_overlap) if frames[c] != i]
            if pos:
                self.positives[i] = pos
        self.queries = sorted(self.positives) + [i for i in photos for _ in range(config.mining.photo_repeats)]
        self.length = min(config.mining.queries_per_epoch, len(self.queries))
        if self.length == 0:
            raise ConfigError("no training queries: no frame has a positive with overlap >= "
                              f"{ov.positive_overlap} and no photos are given; lower positive_overlap or add photos")
        self._frames = np.array(frames, dtype=np.int64)

    def __len__(self) -> int:
        return self.length

    # --- mining -----------------------------------------------------------------------------------------
    def negatives_mask(self, queries: Sequence[int], pool: Sequence[int]) -> np.ndarray:
        """``(Q, P)`` bool: which pool images are negatives of each query (image indices)."""
        ov_max = self.config.overlap.negative_overlap
        mask = np.ones((len(queries), len(pool)), dtype=bool)
        is_frame_q = np.array([self.images[q].scene is not PHOTO for q in queries], bool)
        is_frame_p = np.array([self.images[p].scene is not PHOTO for p in pool], bool)
        mask &= np.asarray(queries)[:, None] != np.asarray(pool)[None, :]
        if is_frame_q.any() and is_frame_p.any():
            qi = [k for k in range(len(queries)) if is_frame_q[k]]
            pj = [k for k in range(len(pool)) if is_frame_p[k]]
            rows = [self._frame_row[queries[k]] for k in qi]
            cols = [self._frame_row[pool[k]] for k in pj]
            scene_q = np.array([self.images[queries[k]].scene for k in qi], dtype=object)
            scene_p = np.array([self.images[pool[k]].scene for k in pj], dtype=object)
            same = scene_q[:, None] == scene_p[None, :]
            block = ~same | (self.overlap[np.ix_(rows, cols)] <= ov_max)
            mask[np.ix_(qi, pj)] &= block
        return mask

    def eval_input(self, index: int) -> torch.Tensor:
        """The plain network input of image ``index`` (longer side ``image_size``)."""
        return as_input(self.store(self.images[index].path, self.config.image_size))

    def mine(self, epoch: int) -> list[tuple[int, int, tuple[int, ...]]]:
        """The tuples of ``epoch``: queries and positives drawn from ``(seed, epoch)``, negatives mined with the
        current model."""
        rng = np.random.default_rng([self.seed, epoch, 17])
        pick = np.sort(rng.choice(len(self.queries), self.length, replace=False))
        queries = [self.queries[k] for k in pick]
        positives = [int(rng.choice(self.positives[q])) if q in self.positives else q for q in queries]
        everyone = np.arange(len(self.images))
        pool_size = self.config.mining.pool_size
        pool = everyone if len(everyone) <= pool_size else np.sort(rng.choice(everyone, pool_size, replace=False))
        unique = sorted(set(queries) | set(pool.tolist()))
        at = {img: k for k, img in enumerate(unique)}
        t0 = time.perf_counter()
        desc = describe(self.model, [self.eval_input(i) for i in unique], self.config.mining.describe_batch_size)
        q_desc = desc[[at[q] for q in queries]]
        p_desc = desc[[at[p] for p in pool]]
        k = self.config.mining.num_negatives
        chosen = mine_hard_negatives(q_desc, p_desc, self.negatives_mask(queries, pool.tolist()), k)
        tuples = []
        for q, p, row in zip(queries, positives, chosen, strict=True):
            found = [int(pool[c]) for c in row if c >= 0]
            if not found:
                raise ConfigError(f"image {self.images[q].key} has no negative in the mining pool; add scenes or "
                                  "photos, or raise pool_size")
            found += [found[-1]] * (k - len(found))
            tuples.append((int(q), int(p), tuple(found)))
        logger.info("epoch %d: mined %d tuples from a pool of %d images in %.1f s", epoch + 1, len(tuples),
                    len(pool), time.perf_counter() - t0)
        return tuples

    def set_epoch(self, epoch: int) -> None:
        """Draw the tuples of ``epoch`` (rank 0 mines, the other ranks receive its tuples)."""
        import torch.distributed as dist

        epoch = int(epoch)
        if epoch == self.epoch and self.tuples:
            return
        distributed = dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1
        if not distributed or dist.get_rank() == 0:
            tuples = self.mine(epoch)
        else:
            tuples = None
        if distributed:
            box = [tuples]
            dist.broadcast_object_list(box, src=0)
            tuples = box[0]
        self.tuples, self.epoch = tuples, epoch  # type: ignore[assignment]

    # --- samples ----------------------------------------------------------------------------------------
    def train_view(self, index: int, gen: torch.Generator) -> torch.Tensor:
        """A training view of image ``index``: a random photo view, or the resized frame; colour jitter, optionally
        a night-like exposure and an edge board, random erasing; ImageNet-normalised ``(3, H, W)``."""
        aug = self.config.augment
        image = self.images[index]
        if image.scene is PHOTO:
            source = self.store(image.path, round(1.5 * self.config.image_size))
            x, _ = photo_view(source, self.train_shape, gen, aug)
        else:
            img = self.store(image.path, self.config.image_size)
            if tuple(img.shape[1:]) != self.train_shape:
                img = TF.resize(img, list(self.train_shape), antialias=True)
            x = TF.to_dtype(img, torch.float32, scale=True)
        x = color_jitter(x, aug.jitter, gen)
        if aug.night_prob and _u(gen, 0.0, 1.0) < aug.night_prob:
            x = night_view(x.clamp(0, 1), gen)
        if aug.edge_occluder_prob:  # (textured with the image itself: boards textured with other training
            # images gave a worse model on the hard world, R@1 36 % against 58 %)
            x = edge_occluder(x, aug.edge_occluder_prob, aug.edge_occluder_max, gen)
        x = random_erase(x, aug.erase_prob, aug.erase_max_area, gen)
        return normalize(x.clamp(0, 1))

    def __getitem__(self, index: int) -> tuple[torch.Tensor]:
        """``((T, 3, H, W),)``: a one-tensor sample (batches are lists of tensors in :func:`fit`)."""
        if not self.tuples:
            self.set_epoch(max(self.epoch, 0))
        q, p, negatives = self.tuples[index]
        gen = sample_generator(self.seed, self.epoch, index)
        return (torch.stack([self.train_view(i, gen) for i in (q, p, *negatives)]),)

    def preload(self) -> None:
        """Read every image into the cache now (only with ``cache_images``)."""
        if self.store.cache:
            for i, image in enumerate(self.images):
                self.eval_input(i)
                if image.scene is PHOTO:
                    self.store(image.path, round(1.5 * self.config.image_size))


class RecallValidation(Dataset):
    """Validation queries of :func:`train_retrieval`: items are query indices; :meth:`correct` tells whether
    the top-1 database frame of each is a positive (same scene, overlap >= ``positive_overlap``).

    Descriptors are computed once per training epoch (``version()`` changes) with the model given to
    :meth:`correct`.
    """

    def __init__(self, queries: Sequence[TrainImage], database: Sequence[TrainImage], overlaps: OverlapTable,
                 positive_overlap: float, inputs: Callable[[TrainImage], torch.Tensor],
                 version: Callable[[], int], batch_size: int = 32) -> None:
        db_names = [d.key for d in database]
        relevant = overlaps.block([q.key for q in queries], db_names) >= positive_overlap
        answerable = relevant.any(axis=1)
        self.skipped = int((~answerable).sum())
        self.queries = [q for q, ok in zip(queries, answerable, strict=True) if ok]
        self.relevant = relevant[answerable]
        self.database = list(database)
        self.inputs = inputs
        self.version = version
        self.batch_size = batch_size
        self._cache: tuple[int, torch.Tensor] | None = None

    def __len__(self) -> int:
        return len(self.queries)

    def __getitem__(self, index: int) -> tuple[torch.Tensor]:
        return (torch.tensor(index, dtype=torch.int64),)

    def top1(self, model: nn.Module) -> torch.Tensor:
        """``(Q,)`` index of each query's most similar database frame."""
        version = self.version()
        if self._cache is None or self._cache[0] != version:
            q = describe(model, [self.inputs(x) for x in self.queries], self.batch_size)
            d = describe(model, [self.inputs(x) for x in self.database], self.batch_size)
            self._cache = (version, (q @ d.T).argmax(dim=1))
        return self._cache[1]

    def correct(self, model: nn.Module, index: torch.Tensor) -> torch.Tensor:
        """``(B,)`` bool: whether the queries ``index`` retrieve a positive first."""
        top = self.top1(model)[index.cpu()]
        return torch.from_numpy(self.relevant[index.cpu().numpy(), top.numpy()])

    def recall_at_1(self, model: nn.Module) -> float:
        """Recall@1 over all the queries."""
        if not self.queries:
            return float("nan")
        return float(self.correct(model, torch.arange(len(self.queries))).float().mean())


def _loss(config: TrainRetrievalConfig, validation: RecallValidation | None) -> LossFn:
    def loss_fn(model: nn.Module, batch: list[torch.Tensor]) -> torch.Tensor:
        x = batch[0]
        if x.ndim == 5:  # training tuples (B, T, 3, H, W): one forward pass over all their images
            b, t = x.shape[:2]
            d = model(x.flatten(0, 1)).float().view(b, t, -1)
            return tuple_loss(d, config.loss, config.margin)
        if validation is None:
            raise RuntimeError("a validation batch without a validation set")
        core = model.module if hasattr(model, "module") else model
        return 1.0 - validation.correct(core, x).float().mean()

    return loss_fn


# --- the run ------------------------------------------------------------------------------------------
def _frames(data_root: Path | None, config: TrainRetrievalConfig) -> tuple[list[Frame], list[Frame]]:
    """Training frames and validation queries (posed, excluded scenes removed)."""
    if data_root is None:
        return [], []
    all_train = load_frames(data_root, split=config.train_split)
    unknown = sorted(set(config.exclude_scenes) - set(all_train.scenes))
    if unknown:
        raise ConfigError(f"cannot exclude unknown scene(s) {unknown}; scenes: {all_train.scenes}")

    def keep(frames: Sequence[Frame]) -> list[Frame]:
        return [f for f in frames if f.pose is not None and f.scene not in config.exclude_scenes]

    unposed = sum(f.pose is None for f in all_train.frames)
    if unposed:
        logger.warning("%d training frames without a pose are ignored", unposed)
    if config.val_split == HOLDOUT:
        train, val = holdout_split(all_train, config.val_every)
        return keep(train.frames), keep(val.frames)
    val = load_frames(data_root, split=config.val_split).frames if config.val_split else []
    return keep(all_train.frames), keep(val)


def _as_image(frame: Frame) -> TrainImage:
    return TrainImage(frame.name, frame.image_path, frame.scene, (frame.camera.height, frame.camera.width))


def train_retrieval(
    data_root: str | Path | None,
    out_dir: str | Path,
    config: TrainRetrievalConfig = TrainRetrievalConfig(),
    resume: bool = False,
) -> dict[str, Any]:
    """Train a retrieval network on the posed frames of a data set and/or photo folders.

    Start it as a plain call for one process, or under ``torchrun --nproc_per_node N`` (each process calls
    this function; only rank 0 writes).

    Args:
        data_root: a 7-Scenes-layout data set with poses (and depth, e.g. the embedded world); ``None``
            trains on ``config.photos`` only (then without validation).
        out_dir: output folder (created).
        config: the training run.
        resume: continue from ``out_dir/last.pt``.

    Returns:
        The metrics written to ``out_dir/metrics.json``: per-epoch losses, ``val_recall_at_1`` and seconds,
        parameter count, best epoch, image counts and the model file.

    Raises:
        InputError: a missing data set or photo folder.
        ConfigError: inconsistent settings, no training queries, or a resume with a changed config.
    """
    out_dir = Path(out_dir)
    root = None if data_root is None else Path(data_root)
    if root is None and not config.photos:
        raise ConfigError("nothing to train on: give a data set, photo folders or both")
    ctx = init_distributed(config.loop.device)
    try:
        seed_everything(config.loop.seed)
        model = RetrievalNet(config.model)
        train_frames, val_frames = _frames(root, config)
        photos = list_photos(config.photos)
        images = [_as_image(f) for f in train_frames] + photos
        t0 = time.perf_counter()
        overlaps = OverlapTable(train_frames + val_frames, config.overlap) if train_frames else None
        overlap_seconds = time.perf_counter() - t0
        shape = next((im.shape for im in images if im.shape is not None), None)
        train_shape = long_side_shape(*(shape or (3, 4)), config.image_size)
        store = ImageStore(config.cache_images)
        train_set = RetrievalTuples(images, overlaps, model, config, train_shape, store)
        val_set = None
        if val_frames and overlaps is not None:
            val_set = RecallValidation(
                [_as_image(f) for f in val_frames], [_as_image(f) for f in train_frames], overlaps,
                config.overlap.positive_overlap, lambda im: as_input(store(im.path, config.image_size)),
                lambda: train_set.epoch, config.mining.describe_batch_size)
            if val_set.skipped:
                logger.warning("%d validation queries have no positive among the training frames and are left out",
                               val_set.skipped)
            if not len(val_set):
                val_set = None
        train_set.preload()
        if ctx.is_main:
            out_dir.mkdir(parents=True, exist_ok=True)
            logger.info("retrieval training: %d frames (%d queries with a positive), %d photos, %d tuples per "
                        "epoch at %dx%d, %d validation queries, %d process(es) on %s", len(train_frames),
                        len(train_set.positives), len(photos), len(train_set), train_shape[1], train_shape[0],
                        len(val_set) if val_set else 0, ctx.world_size, ctx.device)
        ctx.barrier()
        resuming = resume and (out_dir / LAST).is_file()
        if model.whiten is not None and config.whitening_init and not resuming:
            pool = np.arange(len(images))
            if len(pool) > config.mining.pool_size:
                rng = np.random.default_rng([config.loop.seed, 23])
                pool = np.sort(rng.choice(pool, config.mining.pool_size, replace=False))
            pooled = describe(model, [train_set.eval_input(int(i)) for i in pool],
                              config.mining.describe_batch_size, pooled=True)
            model.init_whitening(pooled)
        result = fit(model, _loss(config, val_set), train_set, val_set, out_dir, config.loop,
                     run_config=config.to_dict(), resume=resume, ctx=ctx, run_defaults=type(config)().to_dict())
        metrics = result.metrics
        for row in metrics["epochs"]:
            row["val_recall_at_1"] = None if row["val_loss"] is None else 1.0 - row["val_loss"]
        metrics = {
            "task": "retrieval", **metrics,
            "best_recall_at_1": None if val_set is None or metrics["best_loss"] is None else 1.0 - metrics["best_loss"],
            "images": {"frames": len(train_frames), "queries_with_positive": len(train_set.positives),
                       "photos": len(photos), "tuples_per_epoch": len(train_set),
                       "val_queries": len(val_set) if val_set else 0,
                       "val_queries_without_positive": val_set.skipped if val_set else 0},
            "train_shape": list(train_shape),
            "overlap_seconds": overlap_seconds,
            "model_file": str(out_dir / MODEL_FILE),
        }
        if ctx.is_main:
            finalize(model, config, result.best_checkpoint, out_dir, metrics)
        ctx.barrier()
        return metrics
    finally:
        shutdown_distributed(ctx)


def finalize(model: nn.Module, config: TrainRetrievalConfig, best: Path, out_dir: Path, metrics: dict[str, Any]) -> None:
    """Write the best weights as ``model.pt`` with ``metrics["preprocess"] = {"image_size": S}`` and
    ``metrics.json``."""
    from ..io.atomic import write_json

    model.load_state_dict(load_checkpoint(best)["model"])
    summary = {k: metrics[k] for k in ("best_epoch", "best_loss", "best_metric", "best_recall_at_1", "parameters")
               if k in metrics}
    summary["preprocess"] = {"image_size": config.image_size}
    save_model(out_dir / MODEL_FILE, model.cpu(), config.model, metrics={**summary, "epochs": len(metrics["epochs"])})
    write_json(out_dir / "metrics.json", metrics)


__all__ = [
    "LOSSES",
    "RETRIEVAL_OPTIONS",
    "AugmentConfig",
    "MiningConfig",
    "OverlapConfig",
    "RecallValidation",
    "RetrievalTuples",
    "TrainRetrievalConfig",
    "contrastive_loss",
    "mine_hard_negatives",
    "photo_view",
    "scene_overlaps",
    "tiny_retrieval_config",
    "train_retrieval",
    "triplet_loss",
    "tuple_loss",
]
