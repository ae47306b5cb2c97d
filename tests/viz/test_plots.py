"""Figures are written as valid PNGs, atomically, and show what they claim."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from visloc.geometry import Pose
from visloc.viz import plot_matches, plot_retrieval, plot_trajectories_topview, topview_axes

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def load_png(path) -> np.ndarray:
    assert path.is_file() and path.stat().st_size > 0
    assert path.read_bytes()[:8] == PNG_MAGIC
    with Image.open(path) as im:
        assert im.format == "PNG"
        assert im.width > 100 and im.height > 100
        return np.asarray(im.convert("RGB"))


def only_file(folder) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def count_color(img: np.ndarray, hex_color: str, tol: int = 40) -> int:
    rgb = np.array([int(hex_color[k : k + 2], 16) for k in (1, 3, 5)])
    return int((np.abs(img.astype(int) - rgb).max(axis=-1) < tol).sum())


def poses_on_circle(n: int, plane: str, seed: int = 0) -> dict[str, Pose]:
    """Cameras on a 2 m circle in the given plane ('xy' or 'xz'), small jitter off it."""
    rng = np.random.default_rng(seed)
    poses = {}
    for k in range(n):
        a = 2 * np.pi * k / n
        c = np.zeros(3)
        i, j = ("xyz".index(plane[0]), "xyz".index(plane[1]))
        c[i], c[j] = 2 * np.cos(a), 2 * np.sin(a)
        c[3 - i - j] = rng.normal(scale=0.05)
        poses[f"scene/seq-01/frame-{k:03d}.png"] = Pose.from_world_from_cam(np.eye(3), c)
    return poses


# --- top view ------------------------------------------------------------------------------------------
@pytest.mark.parametrize(("plane", "expected"), [("xy", (0, 1)), ("xz", (0, 2)), ("yz", (1, 2))])
def test_topview_axes_auto_picks_plane_of_largest_spread(plane, expected):
    centers = np.array([p.center for p in poses_on_circle(30, plane).values()])
    assert topview_axes(centers, "auto") == expected


def test_topview_axes_explicit():
    centers = np.zeros((4, 3))
    assert topview_axes(centers, "x") == (1, 2)
    assert topview_axes(centers, "y") == (0, 2)
    assert topview_axes(centers, "z") == (0, 1)
    with pytest.raises(ValueError, match="up_axis"):
        topview_axes(centers, "up")


def test_topview_plot(tmp_path):
    truth = poses_on_circle(40, "xz")
    names = sorted(truth)
    estimates = {
        n: Pose.from_world_from_cam(np.eye(3), truth[n].center + np.array([0.1, 0.0, -0.05]))
        for n in names[:30]
    }
    estimates["not/in/truth.png"] = Pose.identity()
    database = {
        f"db/{k}": Pose.from_world_from_cam(np.eye(3), [np.cos(k), 0.0, np.sin(k)]) for k in range(20)
    }
    out = plot_trajectories_topview(truth, estimates, database, tmp_path / "top.png", "test scene")
    assert out == tmp_path / "top.png"
    load_png(out)
    assert only_file(tmp_path) == ["top.png"]


def test_topview_auto_draws_the_same_plane_as_explicit_up_axis(tmp_path):
    truth = poses_on_circle(25, "xz", seed=3)
    est = {n: Pose.from_world_from_cam(np.eye(3), p.center + 0.05) for n, p in list(truth.items())[:20]}
    auto = load_png(plot_trajectories_topview(truth, est, None, tmp_path / "auto.png", "t"))
    drop_y = load_png(plot_trajectories_topview(truth, est, None, tmp_path / "y.png", "t", up_axis="y"))
    drop_z = load_png(plot_trajectories_topview(truth, est, None, tmp_path / "z.png", "t", up_axis="z"))
    assert np.array_equal(auto, drop_y)
    assert not np.array_equal(auto, drop_z)


def test_topview_without_estimates_or_database(tmp_path):
    load_png(plot_trajectories_topview(poses_on_circle(5, "xy"), {}, None, tmp_path / "t.png", "none found"))


# --- matches -------------------------------------------------------------------------------------------
def grey(h: int, w: int) -> np.ndarray:
    return np.full((h, w), 128, dtype=np.uint8)


def random_matches(n: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    return rng.uniform([0, 0], [200, 150], (n, 2)), rng.uniform([0, 0], [160, 120], (n, 2))


def test_plot_matches_colours_inliers_and_outliers(tmp_path):
    k0, k1 = random_matches(50)
    all_in = load_png(
        plot_matches(grey(150, 200), grey(120, 160), k0, k1, np.ones(50, bool), tmp_path / "a.png", "in")
    )
    all_out = load_png(
        plot_matches(grey(150, 200), grey(120, 160), k0, k1, np.zeros(50, bool), tmp_path / "b.png", "out")
    )
    assert count_color(all_in, "#1fbf3f") > 500 and count_color(all_in, "#e0302a") == 0
    assert count_color(all_out, "#e0302a") > 500 and count_color(all_out, "#1fbf3f") == 0
    unverified = load_png(
        plot_matches(grey(150, 200), grey(120, 160), k0, k1, None, tmp_path / "c.png", "raw")
    )
    assert count_color(unverified, "#f2c200") > 500
    assert only_file(tmp_path) == ["a.png", "b.png", "c.png"]


def test_plot_matches_many_rgb_and_empty(tmp_path):
    rng = np.random.default_rng(1)
    img0 = rng.integers(0, 255, (300, 400, 3), dtype=np.uint8)
    img1 = rng.random((240, 320))  # float image in [0, 1]
    k0, k1 = random_matches(5000)
    load_png(plot_matches(img0, img1, k0, k1, rng.random(5000) < 0.3, tmp_path / "many.png", "many"))
    load_png(
        plot_matches(img0, img1, np.zeros((0, 2)), np.zeros((0, 2)), None, tmp_path / "empty.png", "none")
    )


def test_plot_matches_from_paths(tmp_path):
    Image.fromarray(grey(150, 200)).save(tmp_path / "i0.png")
    Image.fromarray(grey(120, 160)).save(tmp_path / "i1.jpg")
    k0, k1 = random_matches(10)
    load_png(
        plot_matches(tmp_path / "i0.png", str(tmp_path / "i1.jpg"), k0, k1, None, tmp_path / "m.png", "p")
    )


def test_plot_matches_rejects_mismatched_inputs(tmp_path):
    k0, k1 = random_matches(10)
    with pytest.raises(ValueError, match="pair up"):
        plot_matches(grey(10, 10), grey(10, 10), k0, k1[:5], None, tmp_path / "x.png", "bad")
    with pytest.raises(ValueError, match="inliers"):
        plot_matches(grey(10, 10), grey(10, 10), k0, k1, np.ones(3, bool), tmp_path / "x.png", "bad")
    assert not (tmp_path / "x.png").exists()


# --- retrieval -----------------------------------------------------------------------------------------
def test_plot_retrieval(tmp_path):
    rng = np.random.default_rng(0)
    q = rng.integers(0, 255, (120, 160, 3), dtype=np.uint8)
    dbs = [rng.integers(0, 255, (90 + 10 * k, 120, 3), dtype=np.uint8) for k in range(4)]
    out = plot_retrieval(q, dbs, [f"db{k} 0.{9 - k}" for k in range(4)], tmp_path / "r.png", "retrieval")
    img = load_png(out)
    assert img.shape[1] > 2 * img.shape[0]  # one row
    marked = plot_retrieval(q, dbs, list("abcd"), tmp_path / "c.png", "r", correct=[True, False, True, False])
    assert count_color(load_png(marked), "#e0302a") > 100
    with pytest.raises(ValueError, match="titles"):
        plot_retrieval(q, dbs, ["only one"], tmp_path / "bad.png", "r")


def test_plotting_does_not_touch_pyplot(tmp_path):
    """Figures use Agg canvases directly: no pyplot import, so no global backend switch or window."""
    code = (
        "import sys, numpy as np; from visloc.viz import plot_matches; "
        f"plot_matches(np.zeros((20, 20)), np.zeros((20, 20)), [[1, 1]], [[2, 2]], None, {str(tmp_path / 'p.png')!r}, 't'); "
        "print('pyplot' if 'matplotlib.pyplot' in sys.modules else 'clean')"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "clean"
    assert (tmp_path / "p.png").is_file()


def test_view_arrows_follow_the_optical_axis_in_the_top_view() -> None:
    from visloc.viz.plots import view_arrows

    # a camera at (1, 2, 3) looking along world +x: its +z axis is R[2] = (1, 0, 0)
    R_wc = np.array([[0.0, 0.0, 1.0], [-1.0, 0.0, 0.0], [0.0, -1.0, 0.0]])  # columns: camera x, y, z in world
    pose = Pose.from_world_from_cam(R_wc, np.array([1.0, 2.0, 3.0]))
    xy, uv = view_arrows([pose], 0, 1, 0.5)
    np.testing.assert_allclose(xy, [[1.0, 2.0]])
    np.testing.assert_allclose(uv, [[0.5, 0.0]], atol=1e-12)
    # seen on the (x, z) plane the same camera looks along the first axis too; on (y, z) it is a point
    np.testing.assert_allclose(view_arrows([pose], 1, 2, 0.5)[1], [[0.0, 0.0]], atol=1e-12)
