"""Inference preprocessing: resize, centre crop, ImageNet normalisation; the per-sample generator."""

from __future__ import annotations

import numpy as np
import torch
from torchvision.transforms.v2 import functional as TF

from visloc.models.backbones import IMAGENET_MEAN, IMAGENET_STD, imagenet_normalize
from visloc.models.preprocess import eval_batch, eval_transform, normalize, sample_generator


def test_eval_batch_resizes_the_shorter_side_then_takes_the_centre_crop() -> None:
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, shape, dtype=np.uint8) for shape in ((40, 60, 3), (50, 30, 3))]
    batch = eval_batch(images, resize=20, crop=16)
    assert batch.shape == (2, 3, 16, 16) and batch.dtype == torch.float32
    for img, out in zip(images, batch, strict=True):
        resized = TF.resize(torch.from_numpy(img).permute(2, 0, 1), [20], antialias=True)
        assert min(resized.shape[1:]) == 20
        torch.testing.assert_close(out, eval_transform(resized, 16))
    assert images[0].flags.writeable and images[0].shape == (40, 60, 3)  # the input is not touched


def test_eval_transform_is_the_centre_crop_normalised_by_hand() -> None:
    img = torch.randint(0, 256, (3, 10, 14), dtype=torch.uint8)
    out = eval_transform(img, 6)
    crop = img[:, 2:8, 4:10].float() / 255.0
    mean, std = torch.tensor(IMAGENET_MEAN).view(3, 1, 1), torch.tensor(IMAGENET_STD).view(3, 1, 1)
    torch.testing.assert_close(out, (crop - mean) / std)
    torch.testing.assert_close(normalize(crop), imagenet_normalize(crop[None])[0])


def test_sample_generator_depends_on_seed_epoch_and_index_only() -> None:
    def draw(*key: int) -> torch.Tensor:
        return torch.rand(4, generator=sample_generator(*key))

    torch.manual_seed(1)
    a = draw(0, 1, 2)
    torch.manual_seed(2)
    assert torch.equal(a, draw(0, 1, 2))
    for other in ((1, 1, 2), (0, 2, 2), (0, 1, 3)):
        assert not torch.equal(a, draw(*other))
