"""Datasets for semantic matching: CNNGeometric-style synthetic pairs, and real keypoint-annotated pairs.

* :class:`SyntheticWarpPairs` -- strong supervision from single photographs (CNNGeometric ``SynthPairTnf``
  with random theta, ``data/synth_dataset.py``): a photograph is symmetrically padded, the source is its
  central crop, the target is the same padded photograph warped by a random theta. The ground truth is
  exact: ``target(g) = source(T_theta(g))`` wherever ``T_theta(g)`` falls inside the source crop, and the
  padding supplies real (mirrored) content outside it.
* :class:`KeypointPairs` -- real image pairs (:class:`~visloc.datasets.semantic.SemanticPair`) resized to
  the network size, with their keypoints in normalised coordinates, for weak fine-tuning (Publication II)
  and evaluation.

Conventions: images are returned as ``(3, H, W)`` float32 **ImageNet-normalised**
(:func:`visloc.models.preprocess.normalize`), as the relative-pose networks' inputs are and as CNNGeometric
does (``NormalizeImageDict``); pass ``normalize=False`` for ``[0, 1]`` RGB. Normalised coordinates follow
the team convention (``align_corners=True``: ``x_n = 2 x / (W - 1) - 1``); theta maps target coordinates
to source coordinates (:mod:`visloc.geometry.warps`).

**Reproducibility.** Every random choice of a sample comes from a generator seeded with
``(seed, epoch, index)`` (:func:`visloc.models.preprocess.sample_generator`), never from a global RNG, so a
sample is the same whatever the number of DataLoader workers. Call ``set_epoch`` before each epoch.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from ..datasets.semantic import KeypointImage, SemanticPair
from ..errors import ConfigError, InputError
from ..geometry.warps import Warp, identity_theta
from ..io.images import read_image
from ..models.preprocess import normalize, sample_generator

#: Transform kinds of :class:`SyntheticWarpPairs` and the length of their theta.
SYNTHETIC_KINDS = {"affine": 6, "tps": 18, "two_stage": 24}


# --- synthetic pairs ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class SyntheticWarpConfig:
    """Synthetic pair generation (defaults: CNNGeometric's ``SynthPairTnf`` / ``SynthDataset``).

    Attributes:
        kind: ``"affine"`` (theta ``(6,)``), ``"tps"`` (``(18,)``) or ``"two_stage"``: a random affine and a
            random TPS composed as ``T = A o TPS`` (theta ``(24,)`` = the affine's 6 then the TPS's 18).
        output_size: ``(H, W)`` of source and target (CNNGeometric: 240 x 240; 120-240 on a CPU).
        padding_factor: symmetric (mirror) padding on each side, as a fraction of the image side (0.5).
        crop_factor: the source is the central ``crop_factor`` of the photograph in normalised units (9/16).
        random_alpha: rotation ``alpha ~ U(-pi * random_alpha, pi * random_alpha)`` (1/6: +-30 degrees).
        random_s: each matrix entry scaled by ``1 + U(-random_s, random_s)`` (0.5).
        random_t: translation ``U(-random_t, random_t)`` (0.5).
        random_t_tps: TPS control points moved by ``U(-random_t_tps, random_t_tps)`` (0.4).
        normalize: ImageNet mean/std normalisation of the returned images.
    """

    kind: str = "affine"
    output_size: tuple[int, int] = (240, 240)
    padding_factor: float = 0.5
    crop_factor: float = 9 / 16
    random_alpha: float = 1 / 6
    random_s: float = 0.5
    random_t: float = 0.5
    random_t_tps: float = 0.4
    normalize: bool = True

    def __post_init__(self) -> None:
        if self.kind not in SYNTHETIC_KINDS:
            raise ConfigError(f"unknown synthetic transform kind {self.kind!r}; known: {', '.join(SYNTHETIC_KINDS)}")
        h, w = self.output_size
        if h < 2 or w < 2:
            raise ConfigError(f"output_size must be at least 2 x 2, got {self.output_size}")
        if not 0.0 <= self.padding_factor <= 1.0:
            raise ConfigError(f"padding_factor must be in [0, 1], got {self.padding_factor}")
        if not 0.0 < self.crop_factor <= 1.0:
            raise ConfigError(f"crop_factor must be in (0, 1], got {self.crop_factor}")
        if min(self.random_alpha, self.random_s, self.random_t, self.random_t_tps) < 0:
            raise ConfigError("random ranges must be >= 0")


def _uniform(gen: torch.Generator, n: int, half_width: float) -> torch.Tensor:
    """``n`` float64 draws from ``U(-half_width, half_width)``."""
    return (torch.rand(n, generator=gen, dtype=torch.float64) * 2.0 - 1.0) * half_width


def sample_affine_theta(gen: torch.Generator, config: SyntheticWarpConfig = SyntheticWarpConfig()) -> torch.Tensor:
    """A random affine theta as CNNGeometric's ``SynthDataset(random_sample=True)`` draws it.

    ``alpha ~ U(-pi a, pi a)``; ``theta = [(1+s0) cos(alpha), -(1+s1) sin(alpha), t0,
    (1+s3) sin(alpha), (1+s4) cos(alpha), t1]`` with ``s_i ~ U(-s, s)`` and ``t_i ~ U(-t, t)``.

    Returns:
        ``(6,)`` float64, row-major ``[A | t]`` (target -> source).
    """
    alpha = float(_uniform(gen, 1, math.pi * config.random_alpha)[0])
    s = 1.0 + _uniform(gen, 4, config.random_s)
    t = _uniform(gen, 2, config.random_t)
    c, si = math.cos(alpha), math.sin(alpha)
    return torch.stack([s[0] * c, -s[1] * si, t[0], s[2] * si, s[3] * c, t[1]])


def sample_tps_theta(gen: torch.Generator, config: SyntheticWarpConfig = SyntheticWarpConfig()) -> torch.Tensor:
    """A random TPS theta: the identity control points plus ``U(-r, r)`` noise on each of the 18 numbers.

    Returns:
        ``(18,)`` float64 (9 X then 9 Y; target -> source).
    """
    return identity_theta("tps", 1, dtype=torch.float64)[0] + _uniform(gen, 18, config.random_t_tps)


def _as_rgb(image: np.ndarray) -> np.ndarray:
    """``(H, W, 3)`` RGB: uint8 kept, anything else as float32 (taken to be in ``[0, 1]``)."""
    arr = np.asarray(image)
    if arr.ndim == 2:
        arr = np.repeat(arr[..., None], 3, axis=2)
    if arr.ndim != 3 or arr.shape[2] < 3:
        raise ValueError(f"expected an (H, W) or (H, W, 3) image, got shape {arr.shape}")
    arr = np.ascontiguousarray(arr[..., :3])
    return arr if arr.dtype == np.uint8 else arr.astype(np.float32)


class SyntheticWarpPairs(Dataset):
    """CNNGeometric-style synthetic training pairs from photographs.

    For sample ``index`` the photograph ``index % len(images)`` is resized to the working size
    ``output_size / crop_factor`` (so that the source crop keeps full resolution), padded by
    ``padding_factor`` of its sides on every side with mirrored content (edge pixel repeated, as
    CNNGeometric's ``symmetricImagePad``), then

    * ``source(g) = padded(D g)`` -- the central ``crop_factor`` of the photograph;
    * ``target(g) = padded(D T(g))`` = the source warped by theta (:meth:`Warp.warp_source_to_target` on
      the padded image with theta expressed in the padded frame),

    for every output pixel's normalised coordinate ``g``. ``D = crop_factor * diag((w-1)/(Wp-1),
    (h-1)/(Hp-1))`` maps the photograph's normalised coordinates to the padded image's (``w``, ``Wp``:
    widths before and after padding) -- the exact form of CNNGeometric's ``padding_factor * crop_factor``
    grid scaling. theta is drawn by :func:`sample_affine_theta` / :func:`sample_tps_theta` from the
    sample's generator.

    Items are dicts: ``source`` and ``target`` ``(3, H, W)`` float32, ``theta`` float32 ``(6,)``,
    ``(18,)`` or ``(24,)`` (two-stage: affine then TPS), ``kind`` (str).

    Args:
        images: photographs: file paths or ``(H, W[, 3])`` arrays (uint8, or float in ``[0, 1]``).
            ``None``: the scikit-image photographs of the embedded world
            (:data:`visloc.datasets.synthetic.textures.PHOTO_SOURCES`, no download).
        config: generation settings.
        length: samples per epoch.
        seed: seed of the per-sample randomness.
    """

    def __init__(
        self,
        images: Sequence[str | Path | np.ndarray] | None = None,
        config: SyntheticWarpConfig = SyntheticWarpConfig(),
        length: int = 1000,
        seed: int = 0,
    ) -> None:
        if images is None:
            from ..datasets.synthetic.textures import PHOTO_SOURCES

            images = list(PHOTO_SOURCES)
            self._photos = True
        else:
            images = list(images)
            self._photos = False
        if not images:
            raise ConfigError("SyntheticWarpPairs needs at least one image")
        if length < 1:
            raise ConfigError(f"length must be positive, got {length}")
        self.images = images
        self.config = config
        self.length = int(length)
        self.seed = int(seed)
        self.epoch = 0
        self._padded: dict[int, tuple[torch.Tensor, tuple[float, float]]] = {}

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose random draws :meth:`__getitem__` makes."""
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return self.length

    def _load(self, k: int) -> np.ndarray:
        item = self.images[k]
        if self._photos:
            from ..datasets.synthetic.textures import photo

            return photo(str(item))
        if isinstance(item, (str, Path)):
            return read_image(item)
        return np.asarray(item)

    def padded_image(self, image_index: int) -> tuple[torch.Tensor, tuple[float, float]]:
        """The padded working image of photograph ``image_index`` and the scale ``D = (Dx, Dy)`` from
        crop-normalised to padded-normalised coordinates (both cached; deterministic).

        Returns:
            ``(3, Hp, Wp)`` float32 in ``[0, 1]``, and ``(Dx, Dy)``.
        """
        k = int(image_index) % len(self.images)
        if k not in self._padded:
            cfg = self.config
            rgb = _as_rgb(self._load(k))
            h = max(2, round(cfg.output_size[0] / cfg.crop_factor))
            w = max(2, round(cfg.output_size[1] / cfg.crop_factor))
            shrink = h < rgb.shape[0] or w < rgb.shape[1]
            work = cv2.resize(rgb, (w, h), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)
            ph, pw = min(int(h * cfg.padding_factor), h), min(int(w * cfg.padding_factor), w)
            padded = np.pad(work, ((ph, ph), (pw, pw), (0, 0)), mode="symmetric")  # edge pixel repeated
            scale = (cfg.crop_factor * (w - 1) / (w + 2 * pw - 1), cfg.crop_factor * (h - 1) / (h + 2 * ph - 1))
            # stored as the input's dtype (uint8 photographs: 4x less memory per worker)
            self._padded[k] = (torch.from_numpy(np.ascontiguousarray(padded.transpose(2, 0, 1))), scale)
        stored, scale = self._padded[k]
        image = stored.to(torch.float32) / 255.0 if stored.dtype == torch.uint8 else stored
        return image, scale

    def sample_theta(self, index: int) -> torch.Tensor:
        """The theta of sample ``index`` in the current epoch: float64 ``(6,)``, ``(18,)`` or ``(24,)``."""
        gen = sample_generator(self.seed, self.epoch, index)
        kind = self.config.kind
        if kind == "affine":
            return sample_affine_theta(gen, self.config)
        if kind == "tps":
            return sample_tps_theta(gen, self.config)
        return torch.cat([sample_affine_theta(gen, self.config), sample_tps_theta(gen, self.config)])

    def warp(self, theta: torch.Tensor, scale: tuple[float, float] = (1.0, 1.0)) -> Warp:
        """The :class:`Warp` of a sample's theta; ``scale = (Dx, Dy)`` re-expresses its output in another
        frame (the padded image's), exactly: affine rows and TPS control point coordinates are scaled
        (a TPS is linear in its control points). For ``two_stage`` only the outer affine is scaled."""
        theta = theta.reshape(1, -1).to(torch.float64)
        sx, sy = scale
        row_scale = theta.new_tensor([sx, sx, sx, sy, sy, sy])
        kind = self.config.kind
        if kind == "affine":
            return Warp(affine=theta * row_scale)
        if kind == "tps":
            return Warp(tps=theta * torch.cat([theta.new_full((9,), sx), theta.new_full((9,), sy)]))
        return Warp(affine=theta[:, :6] * row_scale, tps=theta[:, 6:])

    def __getitem__(self, index: int) -> dict[str, Any]:
        padded, (sx, sy) = self.padded_image(index)
        theta = self.sample_theta(index)
        size = self.config.output_size
        batch = padded.unsqueeze(0)  # float32 pixels; the grid is computed in float64 from theta
        crop = Warp(affine=torch.tensor([[sx, 0.0, 0.0, 0.0, sy, 0.0]], dtype=torch.float64))
        source = crop.warp_source_to_target(batch, size)[0]
        target = self.warp(theta, (sx, sy)).warp_source_to_target(batch, size)[0]
        if self.config.normalize:
            source, target = normalize(source), normalize(target)
        return {"source": source, "target": target, "theta": theta.float(), "kind": self.config.kind}


# --- real keypoint pairs ------------------------------------------------------------------------------


@dataclass(frozen=True)
class KeypointPairsConfig:
    """Preprocessing of real pairs.

    Attributes:
        output_size: ``(H, W)`` the images are resized to (bilinear, ``align_corners=True`` -- the
            normalised coordinates of a point do not change; CNNGeometric resizes the same way).
        max_keypoints: keypoint rows per image after padding; ``None``: the most any image of the pairs has.
        random_crop: WeakAlign's training crop (``ImagePairDataset(random_crop=True)``), drawn per image:
            top/left offsets ``U{0, ..., floor(h/4) - 1}``, bottom/right ends ``floor(3h/4) + U{0, ...,
            floor(h/4) - 1}`` (exclusive); keypoints left outside are masked out.
        normalize: ImageNet mean/std normalisation.
    """

    output_size: tuple[int, int] = (240, 240)
    max_keypoints: int | None = None
    random_crop: bool = False
    normalize: bool = True

    def __post_init__(self) -> None:
        h, w = self.output_size
        if h < 2 or w < 2:
            raise ConfigError(f"output_size must be at least 2 x 2, got {self.output_size}")
        if self.max_keypoints is not None and self.max_keypoints < 1:
            raise ConfigError(f"max_keypoints must be positive, got {self.max_keypoints}")


def crop_normalized_to_pixels(points: torch.Tensor, crop_box: torch.Tensor) -> torch.Tensor:
    """Normalised coordinates of a :class:`KeypointPairs` image -> pixels of the image as shown.

    Args:
        points: ``(..., N, 2)`` normalised ``(x, y)``.
        crop_box: ``(..., 4)`` ``(x0, y0, x1, y1)`` (exclusive ends) as the dataset returns it.

    Returns:
        ``(..., N, 2)`` 0-based pixels: ``x = x0 + (x_n + 1) (x1 - x0 - 1) / 2``.
    """
    box = crop_box.to(points.dtype).unsqueeze(-2)
    origin, extent = box[..., :2], box[..., 2:] - box[..., :2] - 1.0
    return origin + (points + 1.0) * extent / 2.0


class KeypointPairs(Dataset):
    """Real image pairs with keypoints, resized for a network.

    Item ``index`` of pair ``p`` is a dict:

    * ``source``, ``target``: ``(3, H, W)`` float32 (ImageNet-normalised unless ``normalize=False``); an
      image is mirrored first when the pair's flag says so (``flip``: target, ``flip_source``: source);
    * ``source_points``, ``target_points``: ``(N, 2)`` float32 normalised ``(x, y)`` of the keypoints in
      the returned image (``N = max_keypoints``; padding rows are 0); ``source_mask``, ``target_mask``:
      ``(N,)`` bool, ``False`` for padding and for keypoints cut off by a random crop. Row ``i`` of both
      is keypoint ``i`` of the pair (corresponding where the data set has correspondences; for weak pairs
      use them as sets, see :mod:`visloc.datasets.weak_pairs`);
    * ``source_size``, ``target_size``: ``(2,)`` int64 ``(H, W)`` of the original image;
    * ``source_crop``, ``target_crop``: ``(4,)`` float32 ``(x0, y0, x1, y1)`` region of the (mirrored)
      original that was resized (exclusive ends; ``(0, 0, W, H)`` without crop), for
      :func:`crop_normalized_to_pixels`;
    * ``category`` (str), ``flip``, ``flip_source`` (bool), ``index`` (int).

    Args:
        pairs: the pairs (:mod:`visloc.datasets.semantic` readers, :func:`~visloc.datasets.weak_pairs.make_weak_pairs`).
        config: preprocessing.
        seed: seed of the random crops.
        cache_images: keep decoded images in memory (per worker process).

    Raises:
        ConfigError: an image has more keypoints than ``max_keypoints``.
    """

    def __init__(
        self,
        pairs: Sequence[SemanticPair],
        config: KeypointPairsConfig = KeypointPairsConfig(),
        seed: int = 0,
        cache_images: bool = False,
    ) -> None:
        self.pairs = list(pairs)
        most = max((len(im.keypoints) for p in self.pairs for im in (p.source, p.target)), default=0)
        n = config.max_keypoints if config.max_keypoints is not None else max(1, most)
        if most > n:
            raise ConfigError(f"an image has {most} keypoints, more than max_keypoints={n}")
        self.num_keypoints = n
        self.config = config
        self.seed = int(seed)
        self.epoch = 0
        self.cache_images = cache_images
        self._cache: OrderedDict[Path, torch.Tensor] = OrderedDict()

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose random crops :meth:`__getitem__` draws."""
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.pairs)

    def _read(self, path: Path) -> torch.Tensor:
        if self.cache_images and path in self._cache:
            return self._cache[path]
        img = torch.from_numpy(np.array(read_image(path))).permute(2, 0, 1).contiguous()
        if self.cache_images:
            self._cache[path] = img
        return img

    def _crop_box(self, h: int, w: int, gen: torch.Generator | None) -> tuple[int, int, int, int]:
        if gen is None or not self.config.random_crop:
            return 0, 0, w, h
        qh, qw = h // 4, w // 4
        if qh < 1 or qw < 1:
            return 0, 0, w, h

        def draw(n: int) -> int:
            return int(torch.randint(0, n, (), generator=gen))

        top, left = draw(qh), draw(qw)
        bottom, right = (3 * h) // 4 + draw(qh), (3 * w) // 4 + draw(qw)
        return left, top, right, bottom

    def _prepare(self, image: KeypointImage, mirrored: bool, gen: torch.Generator | None) -> dict[str, torch.Tensor]:
        img = self._read(image.path)
        _, h, w = img.shape
        if (h, w) != image.image_size_hw:
            raise InputError(image.path, f"image is {h} x {w} (H x W) but its annotation says {image.image_size_hw}")
        if mirrored:
            img = img.flip(-1)
        keypoints = image.keypoints_in_frame(mirrored)
        x0, y0, x1, y1 = self._crop_box(h, w, gen)
        crop = img[:, y0:y1, x0:x1].to(torch.float32).div(255.0)
        out = F.interpolate(crop.unsqueeze(0), size=self.config.output_size, mode="bilinear", align_corners=True)[0]
        out = out.clamp(0.0, 1.0)
        if self.config.normalize:
            out = normalize(out)
        n = self.num_keypoints
        points = torch.zeros(n, 2, dtype=torch.float64)
        mask = torch.zeros(n, dtype=torch.bool)
        kps = torch.as_tensor(np.asarray(keypoints, dtype=np.float64).reshape(-1, 2))
        if len(kps):
            inside = (kps[:, 0] >= x0) & (kps[:, 0] <= x1 - 1) & (kps[:, 1] >= y0) & (kps[:, 1] <= y1 - 1)
            local = kps - kps.new_tensor([x0, y0])
            extent = kps.new_tensor([max(x1 - x0 - 1, 1), max(y1 - y0 - 1, 1)])
            normed = local * 2.0 / extent - 1.0
            points[: len(kps)] = torch.where(inside.unsqueeze(-1), normed, torch.zeros_like(normed))
            mask[: len(kps)] = inside
        return {
            "image": out,
            "points": points.float(),
            "mask": mask,
            "size": torch.tensor([h, w], dtype=torch.int64),
            "crop": torch.tensor([x0, y0, x1, y1], dtype=torch.float32),
        }

    def __getitem__(self, index: int) -> dict[str, Any]:
        pair = self.pairs[index]
        gen = sample_generator(self.seed, self.epoch, index) if self.config.random_crop else None
        src = self._prepare(pair.source, pair.flip_source, gen)
        tgt = self._prepare(pair.target, pair.flip, gen)
        item: dict[str, Any] = {}
        for prefix, d in (("source", src), ("target", tgt)):
            item[prefix] = d["image"]
            item[f"{prefix}_points"] = d["points"]
            item[f"{prefix}_mask"] = d["mask"]
            item[f"{prefix}_size"] = d["size"]
            item[f"{prefix}_crop"] = d["crop"]
        item.update(category=pair.category, flip=pair.flip, flip_source=pair.flip_source, index=int(index))
        return item


__all__ = [
    "SYNTHETIC_KINDS",
    "KeypointPairs",
    "KeypointPairsConfig",
    "SyntheticWarpConfig",
    "SyntheticWarpPairs",
    "crop_normalized_to_pixels",
    "sample_affine_theta",
    "sample_tps_theta",
]
