"""Datasets: swapped labels, deterministic evaluation crops, reproducible augmentation."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader
from torchvision.transforms.v2 import functional as TF

from visloc.datasets import load_frames
from visloc.errors import ConfigError
from visloc.geometry.relative_pose import relative_pose_label
from visloc.models.backbones import IMAGENET_MEAN, IMAGENET_STD
from visloc.models.posenet import posenet_label
from visloc.training.data import PoseNetImages, RelPosePairs, TransformConfig, load_resized
from visloc.training.pairs import PairSamplingConfig, RelPosePair, sample_pairs

SMALL = TransformConfig(resize=48, crop=40, jitter=0.4)


@pytest.fixture(scope="module")
def frames(tiny_world: Path):
    return load_frames(tiny_world, split="train")


@pytest.fixture(scope="module")
def pairs(frames):
    return sample_pairs(frames, PairSamplingConfig(max_pairs_per_scene=6, seed=1), translation_frame="camera")


def _dataset(frames, pairs, **kw) -> RelPosePairs:
    paths = {f.name: f.image_path for f in frames.frames}
    return RelPosePairs(paths, pairs, kw.pop("translation_frame", "camera"), kw.pop("transform", SMALL), **kw)


def _normalized(img_uint8: torch.Tensor) -> torch.Tensor:
    mean = torch.tensor(IMAGENET_MEAN).view(3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(3, 1, 1)
    return (img_uint8.float() / 255.0 - mean) / std


@pytest.mark.parametrize("frame", ["camera", "world"])
def test_swapped_pair_gets_the_exact_swapped_label(frames, frame: str) -> None:
    poses = frames.poses()
    pairs = sample_pairs(frames, PairSamplingConfig(max_pairs_per_scene=3, seed=2), translation_frame=frame)
    always = _dataset(frames, pairs, translation_frame=frame, swap_prob=1.0)
    never = _dataset(frames, pairs, translation_frame=frame, swap_prob=0.0)
    for i, p in enumerate(pairs):
        _, _, t, q = always[i]
        t_ref, q_ref = relative_pose_label(poses[p.query], poses[p.db], frame)
        np.testing.assert_allclose(t.numpy(), t_ref, atol=1e-5)
        np.testing.assert_allclose(q.numpy(), q_ref, atol=1e-6)
        _, _, t, q = never[i]
        t_ref, q_ref = relative_pose_label(poses[p.db], poses[p.query], frame)
        np.testing.assert_allclose(t.numpy(), t_ref, atol=1e-5)
        np.testing.assert_allclose(q.numpy(), q_ref, atol=1e-6)


def test_swap_exchanges_the_images(tmp_path: Path) -> None:
    red, blue = tmp_path / "red.png", tmp_path / "blue.png"
    Image.new("RGB", (16, 16), (255, 0, 0)).save(red)
    Image.new("RGB", (16, 16), (0, 0, 255)).save(blue)
    pair = RelPosePair("red.png", "blue.png", 0, (0.1, 0.2, 0.3), (1.0, 0.0, 0.0, 0.0))
    flat = TransformConfig(resize=16, crop=16, jitter=0.0)
    a, b, t, _ = RelPosePairs(tmp_path, [pair], "world", flat, swap_prob=1.0)[0]
    assert a[2].mean() > a[0].mean() and b[0].mean() > b[2].mean(), "blue first after the swap"
    np.testing.assert_allclose(t.numpy(), [-0.1, -0.2, -0.3], atol=1e-7)
    a, b, t, _ = RelPosePairs(tmp_path, [pair], "world", flat, train=False)[0]
    assert a[0].mean() > a[2].mean(), "evaluation never swaps"


def test_eval_transform_is_the_deterministic_centre_crop(frames, pairs) -> None:
    ds = _dataset(frames, pairs, train=False, transform=TransformConfig(resize=60, crop=50))
    a1, b1, _, _ = ds[0]
    a2, b2, _, _ = ds[0]
    assert torch.equal(a1, a2) and torch.equal(b1, b2)
    assert a1.shape == (3, 50, 50)
    resized = load_resized(ds.path(pairs[0].db), 60)
    assert min(resized.shape[1:]) == 60 and resized.shape[1:] == (60, 80)  # 320x240 images
    top, left = (60 - 50) // 2, (80 - 50) // 2
    manual = _normalized(resized[:, top : top + 50, left : left + 50])
    torch.testing.assert_close(a1, manual, atol=1e-6, rtol=0)
    # The resize itself: torchvision's antialiased bilinear resize of the decoded image.
    full = torch.from_numpy(np.array(Image.open(ds.path(pairs[0].db)).convert("RGB"))).permute(2, 0, 1)
    assert torch.equal(resized, TF.resize(full, [60], antialias=True))


def test_train_augmentation_is_reproducible_by_seed_and_epoch(frames, pairs) -> None:
    ds1, ds2 = _dataset(frames, pairs, seed=7), _dataset(frames, pairs, seed=7)
    for i in (0, 3):
        for x, y in zip(ds1[i], ds2[i], strict=True):
            assert torch.equal(x, y)
    other_seed = _dataset(frames, pairs, seed=8)[0][0]
    assert not torch.equal(ds1[0][0], other_seed)
    ds2.set_epoch(1)
    assert not torch.equal(ds1[0][0], ds2[0][0]), "each epoch draws new crops and jitter"
    assert ds1[0][0].shape == (3, SMALL.crop, SMALL.crop)


def test_dataloader_batches_do_not_depend_on_worker_count(frames, pairs) -> None:
    ds = _dataset(frames, pairs, seed=3)
    ds.set_epoch(2)
    batches = {}
    for workers in (0, 2):
        loader = DataLoader(ds, batch_size=4, shuffle=False, num_workers=workers)
        batches[workers] = [b for b in loader]
    assert len(batches[0]) == len(batches[2])
    for b0, b2 in zip(batches[0], batches[2], strict=True):
        for x, y in zip(b0, b2, strict=True):
            assert torch.equal(x, y)


def test_posenet_images(frames) -> None:
    scene_frames = [f for f in frames.frames if f.scene == frames.scenes[0]][:5]
    ds = PoseNetImages(scene_frames, SMALL, train=True, seed=1)
    img, c, q = ds[2]
    assert img.shape == (3, SMALL.crop, SMALL.crop) and c.shape == (3,) and q.shape == (4,)
    c_ref, q_ref = posenet_label(scene_frames[2].pose)
    np.testing.assert_allclose(c.numpy(), c_ref, atol=1e-5)
    np.testing.assert_allclose(q.numpy(), q_ref, atol=1e-6)
    assert torch.equal(img, PoseNetImages(scene_frames, SMALL, train=True, seed=1)[2][0])
    ev = PoseNetImages(scene_frames, SMALL, train=False)
    assert torch.equal(ev[0][0], ev[0][0])


def test_bad_transform_and_unknown_names(frames, pairs) -> None:
    with pytest.raises(ConfigError):
        TransformConfig(resize=64, crop=80)
    with pytest.raises(ConfigError, match="not known"):
        RelPosePairs({}, pairs, "camera")
    with pytest.raises(ConfigError, match="translation frame"):
        _dataset(frames, pairs, translation_frame="body")


def test_centre_crop_training_keeps_the_image_geometry() -> None:
    from visloc.models.preprocess import eval_transform, sample_generator
    from visloc.training.data import train_transform

    img = torch.randint(0, 256, (3, 40, 57), dtype=torch.uint8)
    centre = eval_transform(img, 32)
    # no colour jitter: the centre-crop training transform is exactly the evaluation transform ...
    for index in range(5):
        assert torch.equal(train_transform(img, 32, 0.0, sample_generator(0, 0, index), random_crop=False), centre)
    # ... while random crops move (this image offers 9 x 26 positions)
    moved = [train_transform(img, 32, 0.0, sample_generator(0, 0, i)) for i in range(5)]
    assert any(not torch.equal(m, centre) for m in moved)
    assert TransformConfig().random_crop and not TransformConfig(random_crop=False).random_crop
