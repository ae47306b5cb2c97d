"""Training pairs with exact dense ground truth for the dense correspondence network (Publication IV).

Every item is a dict of fixed-size tensors (a default ``DataLoader`` collates it):

* ``source``, ``target``: ``(3, H, W)`` float32 RGB in ``[0, 1]`` (not ImageNet-normalised);
* ``map``: ``(2, H, W)`` float32, for every TARGET pixel the ``(x, y)`` pixel of its match in the SOURCE
  (OpenCV pixel centres; visloc's dense-matching contract);
* ``mask``: ``(1, H, W)`` bool, the match lies inside the source image's area
  (``-0.5 <= x <= W - 0.5``, the same for ``y``: normalised coordinates in ``[-1, 1]`` for
  ``grid_sample(align_corners=False)``) -- and, for real views, is not occluded;
* ``kind``: ``"homography"``, ``"affine"``, ``"tps"`` or ``"world"``.

Two sources:

* :class:`SyntheticWarpPairs` -- DGC-Net's synthetic pairs: a photograph, a random homography (the four
  image corners moved at random, :func:`cv2.getPerspectiveTransform`), affine or thin-plate-spline
  transform (CNNGeometric's random ranges; the transforms of :mod:`visloc.geometry.warps`), and the target
  made by warping the source with the exact map. As in DGC-Net (``symmetric pad 0.5, crop factor 9/16``),
  the source is the central crop of a larger, mirror-padded *context* image of the photograph, and the
  target samples the context, so target pixels whose match falls outside the source still show real
  content (they are masked out).
* :class:`WorldViewPairs` -- two frames of the same scene of a data set with registered depth and poses
  (the embedded world: ``visloc world make DIR``), chosen by view overlap
  (:func:`visloc.training.pairs.sample_pairs`), with the map of
  :func:`visloc.geometry.depth_flow.correspondence_from_depth` computed directly on the lattice of the
  resized target image.

**Reproducibility.** Every random choice of an item comes from a generator seeded with
``(seed, epoch, index)`` (:func:`visloc.models.preprocess.sample_generator`), never from a global RNG, so an
item is the same whatever the number of DataLoader workers. Call ``set_epoch`` before each epoch.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset
from torchvision.transforms.v2 import functional as TF

from ..datasets import Frame, load_frames
from ..errors import ConfigError, InputError
from ..geometry import Camera
from ..geometry.depth_flow import correspondence_from_depth, resize_depth
from ..geometry.flow import homography_map
from ..geometry.warps import Warp, normalized_to_pixels, pixels_to_normalized
from ..io.images import list_images, read_image
from ..models.preprocess import sample_generator
from ..semantic.data import SyntheticWarpConfig, sample_affine_theta, sample_tps_theta
from .pairs import DepthCache, PairSamplingConfig, RelPosePair, sample_pairs, scene_ids_of, view_angle_deg

#: Transform kinds of :class:`SyntheticWarpPairs`.
WARP_KINDS = ("homography", "affine", "tps")


# --- shared helpers -----------------------------------------------------------------------------------


def _check_size(size: Any, owner: str) -> tuple[int, int]:
    try:
        h, w = (int(s) for s in size)
    except (TypeError, ValueError):
        raise ConfigError(f"{owner}.output_size must be (H, W), got {size!r}") from None
    if (h, w) != tuple(size) or h < 2 or w < 2:
        raise ConfigError(f"{owner}.output_size must be two integers >= 2, got {size!r}")
    return h, w


def _check_jitter(value: float, owner: str) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value < 1.0:
        raise ConfigError(f"{owner}.jitter must be in [0, 1), got {value!r}")


def _check_seed(value: int, owner: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ConfigError(f"{owner}.seed must be a non-negative integer, got {value!r}")


def _uniform(gen: torch.Generator, low: float, high: float) -> float:
    return float(low + (high - low) * torch.rand((), generator=gen, dtype=torch.float64))


def photometric_jitter(image: torch.Tensor, strength: float, gen: torch.Generator) -> torch.Tensor:
    """Brightness, contrast and saturation factors from ``U(1 - s, 1 + s)``, applied in a random order.

    Args:
        image: ``(3, H, W)`` float in ``[0, 1]``.
        strength: ``s`` (0: the image is returned unchanged and nothing is drawn).
        gen: the item's generator.

    Returns:
        ``(3, H, W)`` in ``[0, 1]``.
    """
    if strength <= 0:
        return image
    factors = [_uniform(gen, 1.0 - strength, 1.0 + strength) for _ in range(3)]
    ops = (TF.adjust_brightness, TF.adjust_contrast, TF.adjust_saturation)
    for k in torch.randperm(3, generator=gen).tolist():
        image = ops[k](image, factors[k])
    return image


def _resize_rgb(rgb: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """``(H, W, 3)`` -> ``(h, w, 3)`` with OpenCV's pixel-centre mapping (area when shrinking)."""
    h, w = size
    if rgb.shape[:2] == (h, w):
        return rgb
    shrink = h <= rgb.shape[0] and w <= rgb.shape[1]
    return cv2.resize(rgb, (w, h), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)


def _to_tensor(rgb: np.ndarray) -> torch.Tensor:
    """``(H, W, 3)`` uint8 -> ``(3, H, W)`` float32 in ``[0, 1]``."""
    return torch.from_numpy(np.ascontiguousarray(rgb.transpose(2, 0, 1))).to(torch.float32) / 255.0


def inside_mask(map_: np.ndarray, source_hw: tuple[int, int]) -> np.ndarray:
    """Whether each match lies in the source image's area.

    Args:
        map_: ``(2, H, W)`` source pixels.
        source_hw: ``(Hs, Ws)``.

    Returns:
        ``(1, H, W)`` bool: ``-0.5 <= x <= Ws - 0.5`` and ``-0.5 <= y <= Hs - 0.5``.
    """
    hs, ws = source_hw
    x, y = map_[0], map_[1]
    return ((x >= -0.5) & (x <= ws - 0.5) & (y >= -0.5) & (y <= hs - 0.5))[None]


# --- synthetic pairs ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class WarpPairConfig:
    """Synthetic pair generation (defaults: DGC-Net's data, CNNGeometric's random ranges).

    Attributes:
        output_size: ``(H, W)`` of source and target (DGC-Net: 240 x 240).
        kinds: transform kinds drawn from, a subset of :data:`WARP_KINDS`.
        kind_probabilities: probability of each entry of ``kinds`` (normalised to sum 1; DGC-Net's test
            set has 1,000 homographies, 500 affine and 500 TPS pairs: 0.5, 0.25, 0.25).
        homography_shift: each image corner of the target moves by ``U(-s, s)`` times the image side in
            x and y (HomographyNet-style; 0.25 keeps the quadrilateral convex).
        random_alpha: affine rotation ``U(-pi a, pi a)`` (1/6: +-30 degrees).
        random_s: each affine matrix entry scaled by ``1 + U(-s, s)``.
        random_t: affine translation ``U(-t, t)`` in normalised source units (``[-1, 1]`` spans the image).
        random_t_tps: TPS control points moved by ``U(-r, r)``, normalised units.
        crop_factor: the source covers the central ``crop_factor`` of the photograph (9/16).
        padding_factor: mirror padding of the photograph on each side, a fraction of its side (0.5); it
            supplies the target's content outside the source.
        jitter: photometric jitter strength (:func:`photometric_jitter`), drawn independently for source
            and target; 0 (DGC-Net: none) keeps ``target`` exactly the source warped by the map.
        seed: seed of every random choice.
    """

    output_size: tuple[int, int] = (240, 240)
    kinds: tuple[str, ...] = WARP_KINDS
    kind_probabilities: tuple[float, ...] = (0.5, 0.25, 0.25)
    homography_shift: float = 0.25
    random_alpha: float = 1 / 6
    random_s: float = 0.5
    random_t: float = 0.5
    random_t_tps: float = 0.4
    crop_factor: float = 9 / 16
    padding_factor: float = 0.5
    jitter: float = 0.0
    seed: int = 0

    def __post_init__(self) -> None:
        object.__setattr__(self, "output_size", _check_size(self.output_size, "WarpPairConfig"))
        kinds = (self.kinds,) if isinstance(self.kinds, str) else tuple(self.kinds)
        unknown = [k for k in kinds if k not in WARP_KINDS]
        if not kinds or unknown or len(set(kinds)) != len(kinds):
            raise ConfigError(f"WarpPairConfig.kinds must be distinct names from {WARP_KINDS}, got {self.kinds!r}")
        try:
            probs = tuple(float(p) for p in self.kind_probabilities)
        except (TypeError, ValueError):
            raise ConfigError(f"WarpPairConfig.kind_probabilities must be numbers, got {self.kind_probabilities!r}") from None
        if len(probs) != len(kinds) or not all(math.isfinite(p) and p >= 0 for p in probs) or sum(probs) <= 0:
            raise ConfigError(f"WarpPairConfig.kind_probabilities must be {len(kinds)} non-negative numbers with a "
                              f"positive sum (one per kind), got {self.kind_probabilities!r}")
        object.__setattr__(self, "kinds", kinds)
        object.__setattr__(self, "kind_probabilities", probs)
        if not 0.0 <= self.homography_shift < 0.5:
            raise ConfigError(f"WarpPairConfig.homography_shift must be in [0, 0.5), got {self.homography_shift!r}")
        for name in ("random_alpha", "random_s", "random_t", "random_t_tps"):
            if not getattr(self, name) >= 0:
                raise ConfigError(f"WarpPairConfig.{name} must be >= 0, got {getattr(self, name)!r}")
        if not 0.0 < self.crop_factor <= 1.0:
            raise ConfigError(f"WarpPairConfig.crop_factor must be in (0, 1], got {self.crop_factor!r}")
        if not 0.0 <= self.padding_factor <= 1.0:
            raise ConfigError(f"WarpPairConfig.padding_factor must be in [0, 1], got {self.padding_factor!r}")
        _check_jitter(self.jitter, "WarpPairConfig")
        _check_seed(self.seed, "WarpPairConfig")


@dataclass(frozen=True, eq=False)
class WarpSample:
    """The random transform of one synthetic item.

    Attributes:
        kind: ``"homography"``, ``"affine"`` or ``"tps"``.
        image_index: the photograph used.
        homography: ``(3, 3)`` float64 source -> target pixels (homography kind only; the map applies its
            inverse to the target pixels).
        theta: ``(6,)`` or ``(18,)`` float64 target -> source on normalised coordinates of
            :mod:`visloc.geometry.warps` (``align_corners=True``; affine / TPS kinds only).
    """

    kind: str
    image_index: int
    homography: np.ndarray | None = None
    theta: torch.Tensor | None = None


def _theta_map(theta: torch.Tensor, kind: str, size: tuple[int, int]) -> np.ndarray:
    """``(2, H, W)`` source pixels of every target pixel under a :mod:`~visloc.geometry.warps` theta."""
    h, w = size
    vs, us = torch.meshgrid(torch.arange(h, dtype=torch.float64), torch.arange(w, dtype=torch.float64), indexing="ij")
    pixels = torch.stack([us.reshape(-1), vs.reshape(-1)], dim=-1).unsqueeze(0)
    warp = Warp.from_theta(theta.reshape(1, -1).to(torch.float64), kind)
    src = normalized_to_pixels(warp.target_to_source(pixels_to_normalized(pixels, size)), size)
    return src[0].T.reshape(2, h, w).numpy()


class SyntheticWarpPairs(Dataset):
    """DGC-Net-style synthetic pairs with an exact ground-truth map (see the module docstring).

    Item ``index`` uses photograph ``index % len(images)``: it is resized to the working size
    ``output_size / crop_factor``, mirror-padded by ``padding_factor`` of its sides (the *context*), and
    the source is the ``output_size`` crop at the centre of the context (integer offset). The transform
    (kind, then its parameters) is drawn from the item's generator (:meth:`sample_warp`), its map computed
    on the target lattice (:meth:`warp_map`), and the target is the context bilinearly sampled at the map
    shifted by the crop offset (``grid_sample``, ``align_corners=False``, reflection beyond the context):
    wherever the match lies inside the source, ``target`` is exactly the source warped by ``map``.

    Args:
        images: photographs: a folder (every image in it, recursively), a list of image files, or ``None``
            for the scikit-image photographs of the embedded world
            (:data:`visloc.datasets.synthetic.textures.PHOTO_SOURCES`, no download).
        config: generation settings.
        length: items per epoch.

    Raises:
        InputError: a folder without images, or a listed file that does not exist (a file that does not
            decode raises when its item is loaded).
        ConfigError: no image or ``length < 1``.
    """

    def __init__(
        self,
        images: str | Path | Sequence[str | Path] | None = None,
        config: WarpPairConfig = WarpPairConfig(),
        length: int = 1000,
    ) -> None:
        if images is None:
            from ..datasets.synthetic.textures import PHOTO_SOURCES

            self._photos = True
            self.images: list[str | Path] = list(PHOTO_SOURCES)
        else:
            self._photos = False
            if isinstance(images, (str, Path)):
                self.images = list(list_images(images))
            else:
                self.images = [Path(p) for p in images]
                for path in self.images:
                    if not Path(path).is_file():
                        raise InputError(path, "image file does not exist")
        if not self.images:
            raise ConfigError("SyntheticWarpPairs needs at least one image")
        if isinstance(length, bool) or not isinstance(length, int) or length < 1:
            raise ConfigError(f"length must be a positive integer, got {length!r}")
        self.config = config
        self.length = length
        self.epoch = 0
        self._ranges = SyntheticWarpConfig(
            random_alpha=config.random_alpha, random_s=config.random_s, random_t=config.random_t,
            random_t_tps=config.random_t_tps, output_size=config.output_size,
        )
        self._probabilities = torch.tensor(config.kind_probabilities, dtype=torch.float64)
        self._contexts: dict[int, tuple[torch.Tensor, tuple[int, int]]] = {}

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose random draws :meth:`__getitem__` makes."""
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return self.length

    def _load(self, k: int) -> np.ndarray:
        if self._photos:
            from ..datasets.synthetic.textures import photo

            return photo(str(self.images[k]))
        return read_image(self.images[k])

    def context(self, image_index: int) -> tuple[torch.Tensor, tuple[int, int]]:
        """The context image of photograph ``image_index`` and the source crop's offset (cached).

        Returns:
            ``(3, Hc, Wc)`` uint8 and ``(ox, oy)``: ``source = context[:, oy:oy + H, ox:ox + W]``.
        """
        k = int(image_index) % len(self.images)
        if k not in self._contexts:
            cfg = self.config
            h, w = cfg.output_size
            work = _resize_rgb(self._load(k), (max(h, round(h / cfg.crop_factor)), max(w, round(w / cfg.crop_factor))))
            ph, pw = (int(side * cfg.padding_factor) for side in work.shape[:2])
            padded = np.pad(work, ((ph, ph), (pw, pw), (0, 0)), mode="symmetric")
            offset = ((padded.shape[1] - w) // 2, (padded.shape[0] - h) // 2)
            self._contexts[k] = (torch.from_numpy(np.ascontiguousarray(padded.transpose(2, 0, 1))), offset)
        return self._contexts[k]

    def _draw(self, index: int) -> tuple[WarpSample, torch.Generator]:
        cfg = self.config
        gen = sample_generator(cfg.seed, self.epoch, index)
        kind = cfg.kinds[int(torch.multinomial(self._probabilities, 1, generator=gen))]
        image_index = int(index) % len(self.images)
        if kind == "homography":
            h, w = cfg.output_size
            corners = np.array([[0, 0], [w - 1, 0], [w - 1, h - 1], [0, h - 1]], dtype=np.float64)
            shift = (torch.rand(4, 2, generator=gen, dtype=torch.float64).numpy() * 2 - 1) * cfg.homography_shift
            moved = corners + shift * np.array([w, h], dtype=np.float64)
            h_st = cv2.getPerspectiveTransform(corners.astype(np.float32), moved.astype(np.float32))
            return WarpSample(kind, image_index, homography=np.asarray(h_st, dtype=np.float64)), gen
        sampler = sample_affine_theta if kind == "affine" else sample_tps_theta
        return WarpSample(kind, image_index, theta=sampler(gen, self._ranges)), gen

    def sample_warp(self, index: int) -> WarpSample:
        """The transform of item ``index`` in the current epoch."""
        return self._draw(index)[0]

    def warp_map(self, sample: WarpSample) -> np.ndarray:
        """``(2, H, W)`` float64 source pixels of every target pixel under ``sample``'s transform."""
        size = self.config.output_size
        if sample.kind == "homography":
            assert sample.homography is not None
            return homography_map(np.linalg.inv(sample.homography), size).numpy()
        assert sample.theta is not None
        return _theta_map(sample.theta, sample.kind, size)

    def __getitem__(self, index: int) -> dict[str, Any]:
        if not 0 <= index < self.length:
            raise IndexError(f"index {index} out of range for {self.length} items")
        sample, gen = self._draw(index)
        map_ = self.warp_map(sample)
        context, (ox, oy) = self.context(sample.image_index)
        hc, wc = context.shape[-2:]
        h, w = self.config.output_size
        grid = np.stack([(2.0 * (map_[0] + ox) + 1.0) / wc - 1.0, (2.0 * (map_[1] + oy) + 1.0) / hc - 1.0], axis=-1)
        image = context.unsqueeze(0).to(torch.float32) / 255.0
        target = F.grid_sample(image, torch.from_numpy(grid).to(torch.float32).unsqueeze(0), mode="bilinear",
                               padding_mode="reflection", align_corners=False)[0]
        source = image[0, :, oy:oy + h, ox:ox + w]
        source = photometric_jitter(source, self.config.jitter, gen)
        target = photometric_jitter(target, self.config.jitter, gen)
        return {
            "source": source.contiguous(),
            "target": target.contiguous(),
            "map": torch.from_numpy(map_.astype(np.float32)),
            "mask": torch.from_numpy(inside_mask(map_, (h, w))),
            "kind": sample.kind,
        }


# --- pairs of real (or rendered) views ----------------------------------------------------------------


@dataclass(frozen=True)
class WorldPairConfig:
    """Pairs of posed views with registered depth.

    Attributes:
        output_size: ``(H, W)`` both images are resized to (each axis on its own; OpenCV pixel centres).
        split: frames of this split of the data set (``train``, ``test``, ``all`` ...).
        scenes: only these scenes (``None``: all).
        exclude_scenes: scenes left out (e.g. a held-out test room).
        sampling: pair selection (:class:`~visloc.training.pairs.PairSamplingConfig`): the overlap band
            ``[min_overlap, max_overlap]``, caps and seed; pairs are sampled once, when the dataset is made.
        occlusion_tolerance: relative depth agreement of a visible point
            (:func:`~visloc.geometry.depth_flow.correspondence_from_depth`).
        depth_edge_tolerance: largest relative depth step between the target pixels a resized target
            pixel is interpolated from (:func:`~visloc.geometry.depth_flow.resize_depth`); a larger step is
            a depth edge, left out of the mask.
        depth_cache: depth maps kept in memory per process.
        jitter: photometric jitter strength (:func:`photometric_jitter`); 0: off.
        seed: seed of the jitter draws.
    """

    output_size: tuple[int, int] = (240, 240)
    split: str = "train"
    scenes: tuple[str, ...] | None = None
    exclude_scenes: tuple[str, ...] = ()
    sampling: PairSamplingConfig = PairSamplingConfig()
    occlusion_tolerance: float = 0.02
    depth_edge_tolerance: float = 0.05
    depth_cache: int = 64
    jitter: float = 0.0
    seed: int = 0

    def __post_init__(self) -> None:
        object.__setattr__(self, "output_size", _check_size(self.output_size, "WorldPairConfig"))
        if not isinstance(self.split, str) or not self.split:
            raise ConfigError(f"WorldPairConfig.split must be a split name, got {self.split!r}")
        for name in ("scenes", "exclude_scenes"):
            value = getattr(self, name)
            if value is None and name == "scenes":
                continue
            value = (value,) if isinstance(value, str) else tuple(value)
            if not all(isinstance(s, str) and s for s in value):
                raise ConfigError(f"WorldPairConfig.{name} must be scene names, got {getattr(self, name)!r}")
            object.__setattr__(self, name, value)
        if self.scenes is not None and not self.scenes:
            raise ConfigError("WorldPairConfig.scenes is empty; use None for every scene")
        both = sorted(set(self.scenes or ()) & set(self.exclude_scenes))
        if both:
            raise ConfigError(f"scene(s) {both} are both included and excluded")
        if not isinstance(self.sampling, PairSamplingConfig):
            raise ConfigError(f"WorldPairConfig.sampling must be a PairSamplingConfig, got {type(self.sampling).__name__}")
        if isinstance(self.occlusion_tolerance, bool) or not self.occlusion_tolerance > 0:
            raise ConfigError(f"WorldPairConfig.occlusion_tolerance must be positive, got {self.occlusion_tolerance!r}")
        if isinstance(self.depth_edge_tolerance, bool) or not self.depth_edge_tolerance > 0:
            raise ConfigError(f"WorldPairConfig.depth_edge_tolerance must be positive, got {self.depth_edge_tolerance!r}")
        if isinstance(self.depth_cache, bool) or not isinstance(self.depth_cache, int) or self.depth_cache < 2:
            raise ConfigError(f"WorldPairConfig.depth_cache must be an integer >= 2, got {self.depth_cache!r}")
        _check_jitter(self.jitter, "WorldPairConfig")
        _check_seed(self.seed, "WorldPairConfig")


def _resized_camera(camera: Camera, size: tuple[int, int]) -> Camera:
    """Intrinsics of the image resized to ``size`` = ``(H, W)`` (pixel-centre aware)."""
    h, w = size
    scaled = camera.scaled(w / camera.width, h / camera.height)
    return Camera(scaled.model, w, h, scaled.params)


class WorldViewPairs(Dataset):
    """Pairs of frames of the same scene, with the exact map from their depth and poses.

    The frames of ``config.split`` are read with :func:`visloc.datasets.load_frames` (any layout with
    registered depth and poses: the embedded world, 7-Scenes-style folders with ``dataset.json``), the
    scenes filtered, and pairs drawn per scene with overlap in the band of ``config.sampling``
    (:func:`visloc.training.pairs.sample_pairs`; pair order random). Item ``index`` of pair ``p`` has
    ``source`` = ``p.db``, ``target`` = ``p.query``, both resized to ``output_size``. Its map is computed on
    the resized target's lattice: the target depth is resampled there
    (:func:`~visloc.geometry.depth_flow.resize_depth`: exact on planes, depth edges invalid; across a
    crease the map is off by a fraction of a pixel), the target camera scaled
    (:meth:`~visloc.geometry.Camera.scaled`), the correspondences found against the full-resolution source
    depth, and their values scaled to the resized source (``x' = (x + 0.5) W' / W - 0.5``).

    Items carry, besides the common keys, ``view_angle_deg`` (angle between the optical axes) and
    ``overlap`` (the pair's symmetric view overlap), float32 scalars, and ``scene``, ``source_name``,
    ``target_name`` (str); ``kind`` is ``"world"``.

    Args:
        root: the data set folder.
        config: pair selection and preprocessing.

    Raises:
        InputError: the folder is not a data set, or a frame has no registered depth.
        ConfigError: an unknown scene is included or excluded, every scene is excluded, or no pair lies in
            the overlap band.
    """

    def __init__(self, root: str | Path, config: WorldPairConfig = WorldPairConfig()) -> None:
        self.root = Path(root)
        self.config = config
        frames = load_frames(self.root, split=config.split).frames
        frames = [f for f in frames if f.pose is not None]
        known = sorted({f.scene for f in frames})
        unknown = sorted((set(config.scenes or ()) | set(config.exclude_scenes)) - set(known))
        if unknown:
            raise ConfigError(f"unknown scene(s) {unknown} in {self.root}; scenes: {known}")
        kept = [f for f in frames if (config.scenes is None or f.scene in config.scenes)
                and f.scene not in config.exclude_scenes]
        if not kept:
            raise ConfigError(f"every scene of {self.root} is excluded; nothing to pair")
        no_depth = [f.name for f in kept if f.depth_path is None]
        if no_depth:
            raise InputError(self.root, f"{len(no_depth)} frames have no registered depth (first: {no_depth[0]}); "
                                        "dense ground truth needs depth registered to the colour images")
        self.frames: dict[str, Frame] = {f.name: f for f in kept}
        self.pairs: list[RelPosePair] = sample_pairs(kept, config.sampling, scene_ids=scene_ids_of(frames))
        if not self.pairs:
            s = config.sampling
            raise ConfigError(f"no pair of {self.root} has a view overlap in [{s.min_overlap}, {s.max_overlap}]")
        self.epoch = 0
        self._depths = DepthCache(config.depth_cache)

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose random draws (photometric jitter) :meth:`__getitem__` makes."""
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.pairs)

    def _image(self, frame: Frame) -> np.ndarray:
        rgb = read_image(frame.image_path)
        if rgb.shape[:2] != (frame.camera.height, frame.camera.width):
            raise InputError(frame.image_path, f"image is {rgb.shape[1]}x{rgb.shape[0]} but its camera is "
                                               f"{frame.camera.width}x{frame.camera.height}")
        return _resize_rgb(rgb, self.config.output_size)

    def correspondence(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """``map`` ``(2, H, W)`` float32 and ``mask`` ``(1, H, W)`` bool of pair ``index`` at the output size."""
        pair = self.pairs[index]
        source, target = self.frames[pair.db], self.frames[pair.query]
        size = self.config.output_size
        h, w = size
        target_depth = resize_depth(self._depths.get(target), size, self.config.depth_edge_tolerance)
        map_, mask = correspondence_from_depth(
            target_depth, _resized_camera(target.camera, size), target.pose,
            self._depths.get(source), source.camera, source.pose, self.config.occlusion_tolerance,
        )
        scale = np.array([w / source.camera.width, h / source.camera.height], dtype=np.float64).reshape(2, 1, 1)
        return ((map_.astype(np.float64) + 0.5) * scale - 0.5).astype(np.float32), mask

    def __getitem__(self, index: int) -> dict[str, Any]:
        if not 0 <= index < len(self.pairs):
            raise IndexError(f"index {index} out of range for {len(self.pairs)} pairs")
        pair = self.pairs[index]
        source, target = self.frames[pair.db], self.frames[pair.query]
        map_, mask = self.correspondence(index)
        src, tgt = _to_tensor(self._image(source)), _to_tensor(self._image(target))
        if self.config.jitter > 0:
            gen = sample_generator(self.config.seed, self.epoch, index)
            src = photometric_jitter(src, self.config.jitter, gen)
            tgt = photometric_jitter(tgt, self.config.jitter, gen)
        assert source.pose is not None and target.pose is not None
        return {
            "source": src,
            "target": tgt,
            "map": torch.from_numpy(map_),
            "mask": torch.from_numpy(mask),
            "kind": "world",
            "view_angle_deg": torch.tensor(view_angle_deg(source.pose, target.pose), dtype=torch.float32),
            "overlap": torch.tensor(float(pair.overlap if pair.overlap is not None else math.nan), dtype=torch.float32),
            "scene": source.scene,
            "source_name": source.name,
            "target_name": target.name,
        }


__all__ = [
    "WARP_KINDS",
    "SyntheticWarpPairs",
    "WarpPairConfig",
    "WarpSample",
    "WorldPairConfig",
    "WorldViewPairs",
    "inside_mask",
    "photometric_jitter",
]
