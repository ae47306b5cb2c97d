"""Datasets for pose regression: image pairs with relative-pose labels, and single posed images.

Preprocessing follows Publication V (``construct_minibatch.lua``):

* every image is resized so that its shorter side is ``resize`` (256; antialiased bilinear);
* training: a random ``crop`` x ``crop`` crop (224) and colour jitter (brightness, contrast, saturation
  factors drawn from ``[1 - j, 1 + j]``, j = 0.4, applied in a random order, as fb.resnet.torch's and
  torchvision's ``ColorJitter``); each image of a pair gets its own crop and jitter, as the original;
* evaluation: the centre crop;
* ImageNet mean/std normalisation;
* training pairs: with probability ``swap_prob`` (0.5) the two images change places and the label is
  replaced by the exact label of the swapped pair (:func:`visloc.geometry.relative_pose.swap_label`).

The evaluation transform and the per-sample generator are :mod:`visloc.models.preprocess` (inference uses
them too).

**Reproducibility.** Every random choice of a sample comes from a generator seeded with
``(seed, epoch, index)``, never from the global RNG, so a sample is the same whatever the number of
DataLoader workers or processes. Call :meth:`set_epoch` before each epoch (before the DataLoader
iterator is created; do not use ``persistent_workers``, which would keep a stale copy of the epoch).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset
from torchvision.transforms.v2 import functional as TF

from ..datasets import Frame
from ..errors import ConfigError
from ..geometry.relative_pose import check_frame, swap_label
from ..io.images import read_image
from ..models.preprocess import eval_transform, normalize, sample_generator
from .pairs import RelPosePair


@dataclass(frozen=True)
class TransformConfig:
    """Image preprocessing.

    Attributes:
        resize: length in pixels of the shorter image side after resizing (Pub V: 256).
        crop: side of the square crop fed to the network (Pub V: 224); at most ``resize``.
        jitter: colour-jitter strength for brightness, contrast and saturation (Pub V: 0.4); 0 disables it.
        random_crop: training crops at a random position (Pub V); ``False`` takes the centre crop of
            evaluation. A shifted crop looks like a small camera rotation while the label stays the
            same, so random crops teach the network to ignore exactly the image motion that separates
            a query from its nearest database images.
    """

    resize: int = 256
    crop: int = 224
    jitter: float = 0.4
    random_crop: bool = True

    def __post_init__(self) -> None:
        if not 0 < self.crop <= self.resize:
            raise ConfigError(f"need 0 < crop <= resize, got crop={self.crop}, resize={self.resize}")
        if not 0.0 <= self.jitter < 1.0:
            raise ConfigError(f"jitter must be in [0, 1), got {self.jitter}")


def _uniform(gen: torch.Generator, low: float, high: float) -> float:
    return float(low + (high - low) * torch.rand((), generator=gen, dtype=torch.float64))


def load_resized(path: str | Path, resize: int) -> torch.Tensor:
    """Read an image and resize its shorter side to ``resize``.

    Returns:
        ``(3, H, W)`` ``uint8`` RGB with ``min(H, W) == resize``.
    """
    img = torch.from_numpy(np.array(read_image(path))).permute(2, 0, 1).contiguous()  # own, writable copy
    return TF.resize(img, [resize], antialias=True)


def train_transform(img: torch.Tensor, crop: int, jitter: float, gen: torch.Generator,
                    random_crop: bool = True) -> torch.Tensor:
    """Random (or centre) crop, colour jitter (random order) and normalisation, all drawn from ``gen``.

    Args:
        img: ``(3, H, W)`` ``uint8`` (already resized).
        crop: output side.
        jitter: brightness/contrast/saturation strength.
        gen: the sample's generator.
        random_crop: ``False``: the centre crop (no position is drawn).

    Returns:
        ``(3, crop, crop)`` float32, ImageNet-normalised.
    """
    _, h, w = img.shape
    if random_crop:
        top = int(torch.randint(0, h - crop + 1, (), generator=gen))
        left = int(torch.randint(0, w - crop + 1, (), generator=gen))
    else:  # the same rounding as torchvision's center_crop
        top, left = int(round((h - crop) / 2.0)), int(round((w - crop) / 2.0))
    out = TF.to_dtype(img[:, top : top + crop, left : left + crop], torch.float32, scale=True)
    if jitter > 0:
        factors = [_uniform(gen, 1.0 - jitter, 1.0 + jitter) for _ in range(3)]
        ops = (TF.adjust_brightness, TF.adjust_contrast, TF.adjust_saturation)
        for k in torch.randperm(3, generator=gen).tolist():
            out = ops[k](out, factors[k])
    return normalize(out)


class _Images:
    """Image loading with an optional in-memory cache of the resized ``uint8`` images.

    The cache lives in the process that fills it: DataLoader workers (re-created every epoch) lose what
    they add, so fill it in the main process first (:meth:`RelPosePairs.preload`); forked workers then
    share it.
    """

    def __init__(self, resize: int, cache: bool) -> None:
        self.resize = resize
        self.cache = cache
        self._items: OrderedDict[Path, torch.Tensor] = OrderedDict()

    def __call__(self, path: Path) -> torch.Tensor:
        if not self.cache:
            return load_resized(path, self.resize)
        if path not in self._items:
            self._items[path] = load_resized(path, self.resize)
        return self._items[path]


class RelPosePairs(Dataset):
    """Image pairs with relative-pose labels (Publication V).

    Items are ``(img_db, img_query, t, q)``: ``(3, crop, crop)`` float32 images (database first) and
    the ``(3,)`` / ``(4,)`` float32 label in frame ``translation_frame``.

    Args:
        images: where the images named in the pairs are: the folder the names are relative to (the
            data set root), or a mapping name -> image file (e.g. from the frames of a data set).
        pairs: the pairs (from :func:`~visloc.training.pairs.sample_pairs` or a pair file).
        translation_frame: frame of the labels (needed for the exact swapped label).
        transform: resize / crop / jitter settings.
        train: random crop, jitter and pair swap; ``False``: centre crop, no swap.
        seed: seed of the per-sample randomness.
        swap_prob: probability of swapping a training pair.
        cache_images: keep resized images in memory (per worker process).
    """

    def __init__(
        self,
        images: str | Path | Mapping[str, Path],
        pairs: Sequence[RelPosePair],
        translation_frame: str,
        transform: TransformConfig = TransformConfig(),
        train: bool = True,
        seed: int = 0,
        swap_prob: float = 0.5,
        cache_images: bool = False,
    ) -> None:
        self.images = dict(images) if isinstance(images, Mapping) else Path(images)
        self.pairs = list(pairs)
        if isinstance(self.images, dict):
            unknown = sorted({n for p in self.pairs for n in (p.db, p.query)} - set(self.images))
            if unknown:
                raise ConfigError(f"{len(unknown)} image names of the pairs are not known (first: {unknown[0]})")
        self.translation_frame = check_frame(translation_frame)
        self.transform = transform
        self.train = train
        self.seed = seed
        self.swap_prob = swap_prob
        self.epoch = 0
        self._images = _Images(transform.resize, cache_images)

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose random draws :meth:`__getitem__` makes."""
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.pairs)

    def path(self, name: str) -> Path:
        """The image file of ``name``."""
        return self.images[name] if isinstance(self.images, dict) else self.images / name

    def preload(self) -> None:
        """Read every image into the cache now (only with ``cache_images``)."""
        if self._images.cache:
            for name in sorted({n for p in self.pairs for n in (p.db, p.query)}):
                self._images(self.path(name))

    def label(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The stored label of pair ``index`` (database first), float32 ``(3,)`` and ``(4,)``."""
        p = self.pairs[index]
        return torch.tensor(p.t, dtype=torch.float32), torch.tensor(p.q, dtype=torch.float32)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        p = self.pairs[index]
        img_db, img_query = self._images(self.path(p.db)), self._images(self.path(p.query))
        t = torch.tensor(p.t, dtype=torch.float64)
        q = torch.tensor(p.q, dtype=torch.float64)
        if not self.train:
            crop = self.transform.crop
            return eval_transform(img_db, crop), eval_transform(img_query, crop), t.float(), q.float()
        gen = sample_generator(self.seed, self.epoch, index)
        if float(torch.rand((), generator=gen)) < self.swap_prob:
            img_db, img_query = img_query, img_db
            t, q = swap_label(t, q, self.translation_frame)
        crop, jitter = self.transform.crop, self.transform.jitter
        a = train_transform(img_db, crop, jitter, gen, self.transform.random_crop)
        b = train_transform(img_query, crop, jitter, gen, self.transform.random_crop)
        return a, b, t.float(), q.float()


class PoseNetImages(Dataset):
    """Single images with absolute-pose labels (the PoseNet baseline).

    Items are ``(img, t, q)``: a ``(3, crop, crop)`` float32 image and the label of
    :func:`visloc.models.posenet.posenet_label` of the frame's pose.

    Args:
        frames: frames with poses.
        transform: resize / crop / jitter settings.
        train: random crop and jitter; ``False``: centre crop.
        seed: seed of the per-sample randomness.
        cache_images: keep resized images in memory (per worker process).
    """

    def __init__(
        self,
        frames: Sequence[Frame],
        transform: TransformConfig = TransformConfig(),
        train: bool = True,
        seed: int = 0,
        cache_images: bool = False,
    ) -> None:
        from ..models.posenet import posenet_label

        missing = [f.name for f in frames if f.pose is None]
        if missing:
            raise ConfigError(f"{len(missing)} frames have no pose (first: {missing[0]})")
        self.frames = list(frames)
        self.transform = transform
        self.train = train
        self.seed = seed
        self.epoch = 0
        self._images = _Images(transform.resize, cache_images)
        labels = [posenet_label(f.pose) for f in self.frames]
        self._t = [torch.as_tensor(np.asarray(t), dtype=torch.float32).reshape(3) for t, _ in labels]
        self._q = [torch.as_tensor(np.asarray(q), dtype=torch.float32).reshape(4) for _, q in labels]

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose random draws :meth:`__getitem__` makes."""
        self.epoch = int(epoch)

    def preload(self) -> None:
        """Read every image into the cache now (only with ``cache_images``)."""
        if self._images.cache:
            for f in self.frames:
                self._images(f.image_path)

    def __len__(self) -> int:
        return len(self.frames)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        img = self._images(self.frames[index].image_path)
        if self.train:
            gen = sample_generator(self.seed, self.epoch, index)
            out = train_transform(img, self.transform.crop, self.transform.jitter, gen, self.transform.random_crop)
        else:
            out = eval_transform(img, self.transform.crop)
        return out, self._t[index], self._q[index]
