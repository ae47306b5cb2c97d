"""Image preprocessing of the pose networks (Publication V, ``construct_minibatch.lua``), shared by training
and inference.

* :func:`eval_batch` -- in-memory images -> the network input: shorter side resized to ``resize``
  (antialiased bilinear), the centre ``crop`` x ``crop`` crop, ImageNet mean/std normalisation;
* :func:`eval_transform` / :func:`normalize` -- its steps on one resized ``uint8`` image;
* :func:`sample_generator` -- the generator every random choice of a training sample is drawn from, seeded by
  ``(seed, epoch, index)`` only, so that a sample does not depend on the number of DataLoader workers.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torchvision.transforms.v2 import functional as TF

from .backbones import IMAGENET_MEAN, IMAGENET_STD


def sample_generator(seed: int, epoch: int, index: int) -> torch.Generator:
    """A CPU generator determined by ``(seed, epoch, index)`` only."""
    state = np.random.SeedSequence([int(seed), int(epoch), int(index)]).generate_state(1, np.uint64)[0]
    return torch.Generator().manual_seed(int(state) & ((1 << 63) - 1))


def normalize(img: torch.Tensor) -> torch.Tensor:
    """``(3, H, W)`` float in ``[0, 1]`` -> ImageNet-normalised ``(3, H, W)``."""
    return TF.normalize(img, list(IMAGENET_MEAN), list(IMAGENET_STD))


def eval_transform(img: torch.Tensor, crop: int) -> torch.Tensor:
    """Centre crop and normalise.

    Args:
        img: ``(3, H, W)`` ``uint8`` (already resized).
        crop: output side.

    Returns:
        ``(3, crop, crop)`` float32, ImageNet-normalised.
    """
    img = TF.center_crop(img, [crop, crop])
    return normalize(TF.to_dtype(img, torch.float32, scale=True))


def eval_batch(images: Sequence[np.ndarray], resize: int, crop: int) -> torch.Tensor:
    """Inference preprocessing of in-memory images, identical to the evaluation transform of training.

    Args:
        images: ``(H, W, 3)`` uint8 RGB arrays.
        resize: shorter side after resizing.
        crop: side of the centre crop.

    Returns:
        ``(N, 3, crop, crop)`` float32, ImageNet-normalised.
    """
    out = []
    for img in images:
        x = torch.from_numpy(np.array(img, dtype=np.uint8)).permute(2, 0, 1)  # writable copy
        out.append(eval_transform(TF.resize(x, [resize], antialias=True), crop))
    return torch.stack(out)


def long_side_shape(height: int, width: int, size: int) -> tuple[int, int]:
    """``(h, w)`` of a ``height x width`` image resized so that its longer side is ``size`` (aspect kept)."""
    scale = size / max(height, width)
    return max(1, round(height * scale)), max(1, round(width * scale))


def long_side_uint8(image: np.ndarray, size: int) -> torch.Tensor:
    """One ``(H, W, 3)`` uint8 image resized (antialiased bilinear) so that its longer side is ``size``:
    ``(3, H', W')`` uint8 (:func:`long_side_tensor` before its normalisation).

    Raises:
        ValueError: not an ``(H, W, 3)`` image or ``size < 1``.
    """
    img = np.asarray(image)
    if img.ndim != 3 or img.shape[2] != 3:
        raise ValueError(f"expected an (H, W, 3) image, got shape {img.shape}")
    if size < 1:
        raise ValueError(f"size must be positive, got {size}")
    hw = list(long_side_shape(img.shape[0], img.shape[1], size))
    x = torch.from_numpy(np.array(img, dtype=np.uint8)).permute(2, 0, 1).contiguous()
    return TF.resize(x, hw, antialias=True) if hw != list(x.shape[1:]) else x


def long_side_tensor(image: np.ndarray, size: int) -> torch.Tensor:
    """One ``(H, W, 3)`` uint8 image resized (antialiased bilinear) so that its longer side is ``size``,
    aspect ratio kept, ImageNet-normalised: ``(3, H', W')`` float32 (the retrieval networks' input; whole
    image, no crop).

    Raises:
        ValueError: not an ``(H, W, 3)`` image or ``size < 1``.
    """
    return normalize(TF.to_dtype(long_side_uint8(image, size), torch.float32, scale=True))


__all__ = ["eval_batch", "eval_transform", "long_side_shape", "long_side_tensor", "long_side_uint8", "normalize",
           "sample_generator"]
