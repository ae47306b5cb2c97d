"""Photometric nuisances and the query degradation of the relocalization benchmark."""

from __future__ import annotations

import numpy as np

from visloc.datasets.synthetic import QueryDegradation


def test_degradation_of_a_flat_image_is_the_gain_plus_noise():
    flat = np.full((64, 80, 3), 200, np.uint8)
    out = QueryDegradation(blur_sigma=2.0, gain=0.5, noise_sigma=6.0).apply(flat, np.random.default_rng(0))
    assert out.shape == flat.shape and out.dtype == np.uint8
    # blur leaves a constant image unchanged; the gain maps 200 -> 100; the noise is zero-mean, sigma 6
    assert abs(out.mean() - 100.0) < 0.2
    assert abs(out.astype(np.float64).std() - 6.0) < 0.2


def test_degradation_blurs_an_edge_by_sigma():
    img = np.zeros((40, 101, 3), np.uint8)
    img[:, 50:] = 255
    out = QueryDegradation(blur_sigma=3.0, gain=1.0, noise_sigma=0.0).apply(img, np.random.default_rng(0))
    row = out[20, :, 0].astype(np.float64) / 255.0
    # a blurred step is the Gaussian CDF: 16 % / 84 % one sigma either side of the edge at x = 49.5
    assert abs(row[49] - 0.5) < 0.1 and abs(row[52] - 0.80) < 0.06 and abs(row[46] - 0.13) < 0.06
    assert row[:40].max() == 0.0 and row[60:].min() == 1.0


def test_degradation_is_reproducible_by_seed():
    img = np.random.default_rng(1).integers(0, 256, (30, 30, 3), dtype=np.uint8)
    a = QueryDegradation().apply(img, np.random.default_rng(5))
    b = QueryDegradation().apply(img, np.random.default_rng(5))
    c = QueryDegradation().apply(img, np.random.default_rng(6))
    assert np.array_equal(a, b) and not np.array_equal(a, c)
