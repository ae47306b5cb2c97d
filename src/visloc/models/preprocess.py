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


__all__ = ["eval_batch", "eval_transform", "normalize", "sample_generator"]
