"""Dense answers without a network (identity, SIFT homography), point sampling and the network wrapper."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import skimage.data
import torch

from visloc.geometry.flow import homography_map
from visloc.matching.dense import (
    DenseMatcherSettings,
    DenseNetworkMatcher,
    cyclic_mask,
    sample_correspondences,
)
from visloc.matching.dense_baselines import (
    DenseCorrespondence,
    SiftHomography,
    identity_correspondence,
    scaled_lattice,
)
from visloc.models.checkpoint import save_model
from visloc.models.dense import DenseMatcher, DenseMatcherConfig


@pytest.fixture(scope="module")
def photo() -> np.ndarray:
    return np.ascontiguousarray(skimage.data.astronaut()[::2, ::2])  # (256, 256, 3)


def test_scaled_lattice_by_hand() -> None:
    lat = scaled_lattice((2, 4), (4, 8))  # target 4 wide -> source 8 wide: x -> 2 x + 0.5
    np.testing.assert_allclose(lat[0, 0].numpy(), [0.5, 2.5, 4.5, 6.5])
    np.testing.assert_allclose(lat[1, :, 0].numpy(), [0.5, 2.5])
    same = identity_correspondence(np.zeros((3, 5, 3), np.uint8), np.zeros((3, 5, 3), np.uint8)).map
    ys, xs = np.mgrid[0:3, 0:5]
    np.testing.assert_array_equal(same.numpy(), np.stack([xs, ys]).astype(np.float32))


def test_sift_homography_recovers_a_known_warp(photo: np.ndarray) -> None:
    """Target = source warped by a known homography: the SIFT map is the inverse warp within 1 px."""
    H_st = np.array([[0.9, 0.1, 12.0], [-0.08, 0.95, 20.0], [2e-4, 1e-4, 1.0]])  # source -> target
    target = cv2.warpPerspective(photo, H_st, (256, 256), flags=cv2.INTER_LINEAR)
    dense = SiftHomography()(photo, target)
    truth = homography_map(np.linalg.inv(H_st), (256, 256))
    inside = (truth[0] > 10) & (truth[0] < 245) & (truth[1] > 10) & (truth[1] < 245)
    err = torch.linalg.vector_norm(dense.map - truth, dim=0)[inside]
    assert float(err.median()) < 0.5 and float(err.max()) < 2.0
    blank = np.zeros_like(photo)  # no features: the identity
    assert torch.equal(SiftHomography()(blank, blank).map, scaled_lattice((256, 256), (256, 256)))


def test_sample_correspondences_one_per_cell_most_confident_first() -> None:
    ht, wt = 8, 8
    ys, xs = torch.meshgrid(torch.arange(ht, dtype=torch.float32), torch.arange(wt, dtype=torch.float32),
                            indexing="ij")
    corr = torch.stack([xs + 1.0, ys])  # shift by one pixel in x
    corr[0, :, 7] = 7.0  # except the last column, which stays inside the source
    corr[0, 0, 7] = 8.0
    conf = torch.zeros(1, ht, wt)
    conf[0, 1, 2], conf[0, 5, 6], conf[0, 6, 1] = 0.9, 0.5, 0.7
    conf[0, 0, 7] = 0.99  # its match (x = 8) leaves the 8-wide source: dropped: its cell gives nothing
    t, s, sc = sample_correspondences(DenseCorrespondence(corr, conf), (8, 8), cell=4, min_confidence=0.1)
    np.testing.assert_array_equal(t, [[2, 1], [1, 6], [6, 5]])
    np.testing.assert_array_equal(s, [[3, 1], [2, 6], [7, 5]])
    np.testing.assert_allclose(sc, [0.9, 0.7, 0.5])
    mask = torch.ones(1, ht, wt, dtype=torch.bool)
    mask[0, 1, 2] = False
    t, _, _ = sample_correspondences(DenseCorrespondence(corr, conf), (8, 8), cell=4, min_confidence=0.1,
                                     max_matches=1, mask=mask)
    np.testing.assert_array_equal(t, [[1, 6]])
    t, _, sc = sample_correspondences(DenseCorrespondence(corr), (8, 8), cell=4)  # no confidence: cell centres
    assert {tuple(p) for p in t} == {(2, 2), (2, 6), (6, 2), (6, 6)} and np.all(sc == 1)  # x 7 + 1 = 7: inside


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    config = DenseMatcherConfig(decoder="ucmd", refine_strides=(8, 4))
    model = DenseMatcher(config)
    path = tmp_path_factory.mktemp("dense") / "model.pt"
    save_model(path, model, config, {"preprocess": {"image_size": 96}})
    return path


def test_network_matcher_returns_original_sizes(tiny_model: Path, photo: np.ndarray) -> None:
    source, target = photo[:200, :250], photo[20:140, 10:190]
    matcher = DenseNetworkMatcher(tiny_model)
    assert matcher.image_size == 96  # from the checkpoint
    dense = matcher(source, target)
    assert dense.map.shape == (2, 120, 180) and dense.confidence.shape == (1, 120, 180)
    assert float(dense.confidence.min()) >= 0 and float(dense.confidence.max()) <= 1
    native = DenseNetworkMatcher(tiny_model, DenseMatcherSettings(image_size=None))
    assert native.image_size is None and native(source, target).map.shape == (2, 120, 180)


def test_match_many_batches_equal_single_calls(tiny_model: Path, photo: np.ndarray) -> None:
    """Batched pairs (two input-size groups, a batch smaller than a group) give each pair's own answer."""
    matcher = DenseNetworkMatcher(tiny_model)
    pairs = [(photo, photo[20:220, 10:250]), (photo[:200, :250], photo), (photo, photo[::-1].copy()),
             (photo[:120], photo[30:150])]
    batched = matcher.match_many(pairs, batch_size=2)
    for (source, target), got in zip(pairs, batched, strict=True):
        alone = matcher(source, target)
        assert got.map.shape == (2, *target.shape[:2])
        torch.testing.assert_close(got.map, alone.map, atol=1e-3, rtol=0)
        torch.testing.assert_close(got.confidence, alone.confidence, atol=1e-4, rtol=0)


def test_network_matcher_rescales_the_map_exactly(tiny_model: Path, photo: np.ndarray) -> None:
    """The map computed at 96 px is the one at full size up to the exact change of pixel units: resizing both
    images by 2 leaves the source coordinates (in original pixels) of matching target pixels unchanged."""
    matcher = DenseNetworkMatcher(tiny_model)
    full = matcher(photo, photo)
    half_imgs = [cv2.resize(photo, (128, 128), interpolation=cv2.INTER_AREA)] * 2
    half = matcher(*half_imgs)
    # target pixel (2x + 0.5) at full size is pixel x at half size; source pixels scale the same way
    sub = full.map[:, 0::2, 0::2]  # full-size pixels 0, 2, 4 ... = half-size pixel centres - 0.25
    np.testing.assert_allclose(((sub + 0.5) / 2 - 0.5).numpy(), half.map.numpy(), atol=0.6)


def test_cyclic_mask_of_consistent_and_inconsistent_matchers(photo: np.ndarray) -> None:
    shift = 3.0

    def shifting(source: np.ndarray, target: np.ndarray) -> DenseCorrespondence:
        lat = scaled_lattice(target.shape[:2], source.shape[:2])
        return DenseCorrespondence(lat + torch.tensor([shift, 0.0])[:, None, None])

    _, _, mask = cyclic_mask(shifting, photo, photo, tolerance_px=1.0)
    assert not mask.any()  # forward +3 then backward +3: off by 6
    _, _, mask = cyclic_mask(lambda s, t: identity_correspondence(s, t), photo, photo, tolerance_px=0.5)
    assert mask.all()


def test_export_pair_writes_hloc_files_consistent_with_the_map(tiny_model: Path, photo: np.ndarray,
                                                               tmp_path: Path) -> None:
    """features.h5 / matches.h5 in hloc's layout: keypoint i of image 0 (the map's target) matches keypoint i of
    image 1 (its source), at the map's value; image sizes (width, height); a rerun replaces the files."""
    import h5py

    from visloc.io.h5 import names_to_pair
    from visloc.matching.dense import export_pair

    image0, image1 = photo[:200, :240], photo[30:230, 10:250]
    matcher = DenseNetworkMatcher(tiny_model)
    n = export_pair(matcher, image0, image1, "a/0.png", "b/1.png", tmp_path, max_matches=300)
    dense = matcher(image1, image0)
    with h5py.File(tmp_path / "features.h5") as f, h5py.File(tmp_path / "matches.h5") as m:
        k0, k1 = f["a/0.png/keypoints"][()], f["b/1.png/keypoints"][()]
        assert f["a/0.png/image_size"][()].tolist() == [240, 200] and len(k0) == len(k1) == n == 300
        pair = m[names_to_pair("a/0.png", "b/1.png")]
        np.testing.assert_array_equal(pair["matches0"][()], np.arange(n))
        assert np.all(np.diff(pair["matching_scores0"][()].astype(np.float32)) <= 1e-3)  # most confident first
    xy = k0.astype(int)
    np.testing.assert_allclose(k1, dense.map[:, xy[:, 1], xy[:, 0]].T.numpy(), atol=1e-4)
    assert export_pair(matcher, image0, image1, "a/0.png", "b/1.png", tmp_path, max_matches=10) == 10
    with h5py.File(tmp_path / "features.h5") as f:
        assert len(f["a/0.png/keypoints"]) == 10
