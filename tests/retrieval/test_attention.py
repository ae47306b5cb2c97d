"""Publication III's attention pieces (`visloc.retrieval.attention`) against hand-computed values."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from visloc.models.pooling import rmac_region_vectors, rmac_regions, saliency_map, weighted_rmac
from visloc.retrieval.attention import (
    attend,
    box_to_cells,
    modulation,
    region_weights,
    saliency_boxes,
    weighted_sum,
)


def test_modulation_on_a_hand_computed_saliency() -> None:
    s = torch.tensor([[[0.0, 0.5], [1.0, 0.25]]])
    # g = 0.5 + 0.4 s^4: 0.5 + 0.4 * (0, 1/16, 1, 1/256)
    expected = torch.tensor([[[0.5, 0.525], [0.9, 0.5015625]]])
    torch.testing.assert_close(modulation(s), expected)
    torch.testing.assert_close(modulation(s, 1.0, 0.0, 4.0), torch.ones_like(s))
    torch.testing.assert_close(modulation(s, 0.2, 0.6, 1.0), 0.2 + 0.6 * s)


def test_attend_keeps_the_roi_and_modulates_the_rest_of_a_hand_made_map() -> None:
    # two channels on a 2x3 map; channel sums 1..6 with a negative entry that the ReLU removes
    c0 = [[1.0, 1.0, 1.0], [2.0, 2.0, 2.0]]
    c1 = [[0.0, 1.0, 2.0], [2.0, 3.0, 4.0]]
    f = torch.tensor([[c0, c1]])
    f_neg = f.clone()
    f_neg[0, 1, 0, 0] = -5.0  # ReLU'd to 0: the same map
    sums = np.array([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]])
    g = 0.5 + 0.4 * (sums / 6.0) ** 4
    roi = (1, 0, 3, 1)  # x in [1, 3), y in [0, 1): cells (0, 1) and (0, 2) kept
    out = attend(f_neg, roi)
    expected = f.numpy() * g[None, None]
    expected[..., 0:1, 1:3] = f.numpy()[..., 0:1, 1:3]
    np.testing.assert_allclose(out.numpy(), expected, rtol=1e-6)
    # an empty roi keeps no cell
    np.testing.assert_allclose(attend(f, (2, 1, 2, 2)).numpy(), f.numpy() * g[None, None], rtol=1e-6)
    # lambda1 = 1, lambda2 = 0: the map itself
    torch.testing.assert_close(attend(f, roi, 1.0, 0.0), f)


def test_box_to_cells_rounds_twice_like_sa_py() -> None:
    # box * 0.5 = (16.5, 7.5, 50, 35) -> numpy rounds half to even: (16, 8, 50, 35); / 16 -> (1, 0.5, 3.125,
    # 2.1875) -> (1, 0, 3, 2)
    assert box_to_cells((33, 15, 100, 70), 0.5, 16, (10, 10)) == (1, 0, 3, 2)
    # clipped to the map
    assert box_to_cells((-40, -40, 1000, 1000), 1.0, 16, (4, 5)) == (0, 0, 5, 4)
    # a small box can round to no cell (SA.py's empty slice)
    x0, y0, x1, y1 = box_to_cells((26, 26, 30, 30), 1.0, 16, (8, 8))  # 1.625, 1.875 -> 2, 2
    assert x1 <= x0 and y1 <= y0


def test_region_weights_are_the_max_saliency_of_each_rmac_region() -> None:
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(2, 5, 6, 9, generator=gen)
    w = region_weights(x, levels=2)
    sal = x.sum(1) / x.sum(1).amax(dim=(-2, -1), keepdim=True)
    boxes = rmac_regions(6, 9, 2).tolist()
    expected = torch.stack([sal[:, y0:y1, x0:x1].amax(dim=(-2, -1)) for x0, y0, x1, y1 in boxes], 1)
    torch.testing.assert_close(w, expected)
    # the weighted sum of the region MACs is the pooling module's saliency-weighted R-MAC
    torch.testing.assert_close(weighted_sum(rmac_region_vectors(x, 2), w), weighted_rmac(x, saliency_map(x), 2))


def _blob_map() -> np.ndarray:
    s = np.zeros((8, 10), np.float32)
    s[1:3, 1:4] = 0.9  # blob A (rows 1-2, cols 1-3)
    s[5:7, 6:9] = 1.0  # blob B (rows 5-6, cols 6-8)
    s[5, 1:3] = 0.75
    s[6, 1:3] = 0.75  # blob C, just above the threshold
    s[0, 8] = 0.6  # below the threshold: never a box
    return s


def test_saliency_boxes_of_hand_made_blobs() -> None:
    boxes = saliency_boxes(_blob_map(), (8, 10))
    assert sorted(boxes) == [(1, 1, 4, 3), (1, 5, 3, 7), (6, 5, 9, 7)]  # (x0, y0, x1, y1), half-open
    # threshold respected: at 0.8 blob C goes
    assert sorted(saliency_boxes(_blob_map(), (8, 10), threshold=0.8)) == [(1, 1, 4, 3), (6, 5, 9, 7)]
    # top-k respected: the 6 largest activations are blob B's
    assert saliency_boxes(_blob_map(), (8, 10), top_k=6) == [(6, 5, 9, 7)]
    # a blob one cell wide has no area: SA.py keeps contours of area > 0 only
    thin = np.zeros((8, 10), np.float32)
    thin[2, 2:6] = 1.0
    assert saliency_boxes(thin, (8, 10)) == []


def test_saliency_boxes_are_resized_bilinearly_to_the_tap_resolution() -> None:
    # a 2x upsampling (cv2.resize, bilinear): source column c is sampled by output columns whose source
    # coordinate (x + 0.5) / 2 - 0.5 lies in (c - 1, c + 1), i.e. x in [2c - 1, 2c + 2]; blob B's cols 6..8
    # become 11..18, rows 5..6 become 9..14
    s = np.zeros((8, 10), np.float32)
    s[5:7, 6:9] = 1.0
    assert saliency_boxes(s, (16, 20)) == [(11, 9, 19, 15)]
    assert saliency_boxes(torch.from_numpy(s), (16, 20)) == [(11, 9, 19, 15)]
    with pytest.raises(ValueError, match="saliency map"):
        saliency_boxes(s[None], (16, 20))
