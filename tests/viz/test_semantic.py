"""The semantic-alignment figure: PNG of the expected size, correct/wrong colours, keypoint transfer, the
figures of a seeded sample of pairs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from visloc.datasets.semantic import pf_willow_pairs, read_pf_willow
from visloc.geometry.warps import Warp
from visloc.semantic.predict import predict_warps
from visloc.viz.semantic import plot_semantic_alignment, transfer_source_keypoints, write_alignment_figures

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def count_color(img: np.ndarray, hex_color: str, tol: int = 40) -> int:
    rgb = np.array([int(hex_color[k : k + 2], 16) for k in (1, 3, 5)])
    return int((np.abs(img.astype(int) - rgb).max(axis=-1) < tol).sum())


def grey_images():
    rng = np.random.default_rng(0)
    src = (rng.uniform(90, 160, (40, 60)) + 0.5).astype(np.uint8)  # greys only: no green / red pixels
    tgt = (rng.uniform(90, 160, (30, 50)) + 0.5).astype(np.uint8)
    return src, tgt


def test_transfer_inverts_the_affine_in_pixels():
    # theta maps target normalised coordinates to source ones: p_s = 0.5 p_t + (0.2, 0)
    warp = Warp(affine=torch.tensor([[0.5, 0.0, 0.2, 0.0, 0.5, 0.0]], dtype=torch.float64))
    src_px = np.array([[0.0, 0.0], [59.0, 39.0], [35.4, 19.5]])
    moved = transfer_source_keypoints(warp, src_px, (40, 60), (30, 50))
    # by hand: x_s_n = 2 x / 59 - 1 -> x_t_n = (x_s_n - 0.2) / 0.5 -> x_t = (x_t_n + 1) * 49 / 2
    xs, ys = 2 * src_px[:, 0] / 59 - 1, 2 * src_px[:, 1] / 39 - 1
    expected = np.stack([((xs - 0.2) / 0.5 + 1) * 49 / 2, (ys / 0.5 + 1) * 29 / 2], axis=1)
    np.testing.assert_allclose(moved, expected, atol=1e-9)


def test_figure_png_size_and_colours(tmp_path):
    src, tgt = grey_images()
    warp = Warp(affine=torch.tensor([[1.0, 0.0, 0.0, 0.0, 1.0, 0.0]], dtype=torch.float64))
    src_kps = np.array([[10.0, 10.0], [30.0, 20.0], [50.0, 30.0]])
    moved = transfer_source_keypoints(warp, src_kps, src.shape, tgt.shape)
    tgt_kps = moved + np.array([[0.0, 0.0], [0.5, 0.0], [20.0, 0.0]])  # two correct, one far off
    out = tmp_path / "fig" / "align.png"
    fig = plot_semantic_alignment(src, tgt, warp, src_kps, tgt_kps, alpha=0.1, out_path=out, panel_size=3.0, dpi=80)
    assert fig is not None and out.read_bytes()[:8] == PNG_MAGIC
    assert sorted(p.name for p in out.parent.iterdir()) == ["align.png"]
    with Image.open(out) as im:
        assert im.size == (3 * 3 * 80, 3 * 80)
        pixels = np.asarray(im.convert("RGB"))
    assert count_color(pixels, "#1fbf3f") > 10 and count_color(pixels, "#e0302a") > 5
    assert "2/3" in fig.axes[2].get_title()
    labels = [t.get_text() for legend in fig.legends for t in legend.get_texts()]
    assert labels == ["source keypoints", "target keypoints (truth)",
                      "source keypoint moved by the warp: within 0.1 L of its target", "farther"]


def test_figure_from_theta_tensor_and_override(tmp_path):
    src, tgt = grey_images()
    theta = torch.tensor([-1.0, -1, -1, 0, 0, 0, 1, 1, 1, -1, 0, 1, -1, 0, 1, -1, 0, 1]) * 0.9
    kps = np.array([[5.0, 5.0], [20.0, 15.0]])
    out = tmp_path / "tps.png"
    fig = plot_semantic_alignment(src, tgt, theta, kps, kps, kind="tps", correct=[False, False], out_path=out,
                                  title="pair 0", panel_size=2.0, dpi=50)
    with Image.open(out) as im:
        assert im.size == (300, 115)  # (3 * 2 * 50, (2 + 0.3) * 50)
        pixels = np.asarray(im.convert("RGB"))
    assert count_color(pixels, "#1fbf3f") == 0 and count_color(pixels, "#e0302a") > 5
    assert "0/2 correct" in fig.axes[2].get_title()
    with pytest.raises(ValueError, match="kind"):
        plot_semantic_alignment(src, tgt, theta)
    with pytest.raises(ValueError, match="pair up"):
        plot_semantic_alignment(src, tgt, theta, kps, kps[:1], kind="tps")


def test_alignment_figures_of_a_seeded_sample(tmp_path: Path, pf_willow_factory) -> None:
    root = pf_willow_factory(tmp_path / "willow", ("bird(A)", "cup(B)"))
    pairs = pf_willow_pairs(read_pf_willow(root))
    warps = predict_warps(None, pairs)
    written = write_alignment_figures(pairs, warps, tmp_path / "fig", count=3, seed=1)
    assert len(written) == 3 and sorted(tmp_path.joinpath("fig").iterdir()) == sorted(written)
    assert all(p.read_bytes().startswith(PNG_MAGIC) for p in written)
    assert write_alignment_figures(pairs, warps, tmp_path / "again", count=3, seed=1)[0].name == written[0].name
    assert len(write_alignment_figures(pairs, warps, tmp_path / "all", count=100)) == len(pairs)
