"""Semantic-matching readers: PF-WILLOW folder and csv, PF-PASCAL csv, SPair-71k json, visloc's pair csv.

Small files are written by hand in ``tmp_path`` (values chosen so that the 1-based -> 0-based conversion
and the column layout are visible); the real PF-WILLOW folder is checked when present.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import scipy.io
from PIL import Image

from visloc.datasets.semantic import (
    PF_PASCAL_CLASSES,
    KeypointImage,
    SemanticPair,
    mirror_keypoints,
    pf_willow_pairs,
    read_image_size,
    read_pairs_csv,
    read_pf_pascal_csv,
    read_pf_willow,
    read_pf_willow_csv,
    read_spair,
    write_pairs_csv,
)
from visloc.errors import ConfigError, InputError
from visloc.settings import DATA_ENV, data_dir


def write_png(path: Path, w: int, h: int) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (w, h), (10, 20, 30)).save(path)
    return path


def pts(seed: int) -> np.ndarray:
    """2 x 10 MATLAB-style (1-based) keypoints inside a 40 x 30 image."""
    rng = np.random.default_rng(seed)
    return np.stack([rng.uniform(1, 40, 10), rng.uniform(1, 30, 10)])


@pytest.fixture
def willow(tmp_path: Path) -> Path:
    """Two classes with 3 and 2 images (40 x 30)."""
    root = tmp_path / "willow"
    for cls, names in (("car(G)", ["a", "b", "c"]), ("duck(S)", ["d", "e"])):
        for k, name in enumerate(names):
            write_png(root / cls / f"{name}.png", 40, 30)
            scipy.io.savemat(root / cls / f"{name}.mat", {"pts_coord": pts(k + 10 * len(cls))})
    return root


# --- small types ----------------------------------------------------------------------------------------
def test_keypoint_image_validates_and_freezes():
    img = KeypointImage("a.png", "cat", [[1.0, 2.0]], (30, 40))
    assert img.keypoints.shape == (1, 2) and not img.keypoints.flags.writeable
    assert (img.height, img.width) == (30, 40) and img.path == Path("a.png")
    assert KeypointImage("a.png", "cat", [], (3, 4)).keypoints.shape == (0, 2)
    with pytest.raises(ValueError, match="NaN"):
        KeypointImage("a.png", "cat", [[np.nan, 2.0]], (30, 40))
    with pytest.raises(ValueError, match="shape"):
        KeypointImage("a.png", "cat", [[1.0, 2.0, 3.0]], (30, 40))
    with pytest.raises(ValueError, match="positive"):
        KeypointImage("a.png", "cat", [], (0, 40))


def test_mirror_keypoints_maps_first_and_last_column_onto_each_other():
    kps = np.array([[0.0, 5.0], [39.0, 6.0], [10.25, 7.0]])
    m = mirror_keypoints(kps, 40)
    np.testing.assert_allclose(m, [[39.0, 5.0], [0.0, 6.0], [28.75, 7.0]])
    np.testing.assert_allclose(mirror_keypoints(m, 40), kps)


def test_pair_keypoints_are_given_in_the_frame_shown():
    src = KeypointImage("a.png", "c", [[1.0, 2.0]], (10, 20))
    tgt = KeypointImage("b.png", "c", [[3.0, 4.0]], (10, 30))
    pair = SemanticPair(src, tgt, "c", flip=True)
    np.testing.assert_allclose(pair.source_keypoints, [[1.0, 2.0]])
    np.testing.assert_allclose(pair.target_keypoints, [[26.0, 4.0]])  # 30 - 1 - 3
    both = SemanticPair(src, tgt, "c", flip=True, flip_source=True)
    np.testing.assert_allclose(both.source_keypoints, [[18.0, 2.0]])  # 20 - 1 - 1


def test_read_image_size_from_header_with_exif_rotation(tmp_path):
    assert read_image_size(write_png(tmp_path / "a.png", 40, 30)) == (30, 40)
    jpg = tmp_path / "r.jpg"
    exif = Image.Exif()
    exif[0x0112] = 6  # rotated 90 degrees: shown as 30 wide, 40 high
    Image.new("RGB", (40, 30)).save(jpg, exif=exif)
    assert read_image_size(jpg) == (40, 30)
    with pytest.raises(InputError, match="does not exist"):
        read_image_size(tmp_path / "missing.png")
    (tmp_path / "bad.png").write_bytes(b"not an image")
    with pytest.raises(InputError, match=r"bad\.png"):
        read_image_size(tmp_path / "bad.png")


def test_module_does_not_import_torch():
    code = "import sys, visloc.datasets.semantic, visloc.datasets.weak_pairs; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


# --- PF-WILLOW folder ------------------------------------------------------------------------------------
def test_read_pf_willow_converts_to_zero_based(willow):
    images = read_pf_willow(willow)
    assert [(i.category, i.path.stem) for i in images] == [
        ("car(G)", "a"), ("car(G)", "b"), ("car(G)", "c"), ("duck(S)", "d"), ("duck(S)", "e")]
    raw = scipy.io.loadmat(willow / "car(G)" / "b.mat")["pts_coord"]
    np.testing.assert_allclose(images[1].keypoints, raw.T - 1.0)
    assert images[1].keypoints.shape == (10, 2)
    assert all(i.image_size_hw == (30, 40) for i in images)


def test_pf_willow_pairs_are_all_ordered_pairs_within_a_class(willow):
    pairs = pf_willow_pairs(read_pf_willow(willow))
    assert len(pairs) == 3 * 2 + 2 * 1
    names = [(p.source.path.stem, p.target.path.stem, p.category) for p in pairs]
    assert len(set(names)) == len(names)
    assert all(p.source.category == p.target.category == p.category for p in pairs)
    assert all(p.source is not p.target and not p.flip for p in pairs)
    assert ("a", "b", "car(G)") in names and ("b", "a", "car(G)") in names


@pytest.mark.parametrize(
    ("content", "match"),
    [
        ({"other": np.zeros((2, 10))}, "no variable 'pts_coord'"),
        ({"pts_coord": np.zeros((10, 2))}, "must be 2 x 10"),
        ({"pts_coord": np.full((2, 10), np.nan)}, "NaN"),
    ],
)
def test_read_pf_willow_bad_mat_names_the_file(willow, content, match):
    bad = willow / "duck(S)" / "e.mat"
    scipy.io.savemat(bad, content)
    with pytest.raises(InputError, match=match) as e:
        read_pf_willow(willow)
    assert e.value.path == bad


def test_read_pf_willow_corrupt_or_orphan_files(willow, tmp_path):
    (willow / "duck(S)" / "e.mat").write_bytes(b"garbage, not MATLAB")
    with pytest.raises(InputError, match="cannot read MATLAB") as e:
        read_pf_willow(willow)
    assert e.value.path.name == "e.mat"
    (willow / "duck(S)" / "e.mat").unlink()
    with pytest.raises(InputError, match=r"keypoint file of e\.png does not exist") as e:
        read_pf_willow(willow)
    assert e.value.path == willow / "duck(S)" / "e.mat"
    scipy.io.savemat(willow / "duck(S)" / "e.mat", {"pts_coord": pts(0)})
    (willow / "duck(S)" / "d.png").unlink()
    with pytest.raises(InputError, match=r"d\.png is missing"):
        read_pf_willow(willow)
    with pytest.raises(InputError, match="does not exist"):
        read_pf_willow(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="no <class>"):
        read_pf_willow(tmp_path / "empty")


# --- PF-WILLOW csv (CNNGeometric test_pairs_pf.csv) -------------------------------------------------------
def test_read_pf_willow_csv_layout(tmp_path):
    root = tmp_path / "data"
    write_png(root / "PF-dataset" / "car(G)" / "a.png", 40, 30)
    write_png(root / "PF-dataset" / "car(G)" / "b.png", 50, 20)
    xa, ya = np.arange(1, 11), np.arange(11, 21)  # 1-based values
    xb, yb = np.arange(21, 31), np.arange(31, 41) / 2
    header = ["imageA", "imageB"] + [f"{c}{i}" for c in ("XA", "YA", "XB", "YB") for i in range(1, 11)]
    row = ["PF-dataset/car(G)/a.png", "PF-dataset/car(G)/b.png", *map(str, [*xa, *ya, *xb, *yb])]
    csv_path = tmp_path / "test_pairs_pf.csv"
    csv_path.write_text(",".join(header) + "\n" + ",".join(row) + "\n")
    (pair,) = read_pf_willow_csv(csv_path, root)
    assert pair.category == "car(G)" and pair.source.path == root / "PF-dataset/car(G)/a.png"
    np.testing.assert_allclose(pair.source.keypoints, np.stack([xa, ya], 1) - 1.0)
    np.testing.assert_allclose(pair.target.keypoints, np.stack([xb, yb], 1) - 1.0)
    assert pair.source.image_size_hw == (30, 40) and pair.target.image_size_hw == (20, 50)
    csv_path.write_text(",".join(header) + "\n" + ",".join(row[:-1]) + "\n")
    with pytest.raises(InputError, match="line 2: expected 42 fields"):
        read_pf_willow_csv(csv_path, root)


# --- PF-PASCAL csv ----------------------------------------------------------------------------------------
@pytest.fixture
def pascal_root(tmp_path: Path) -> Path:
    root = tmp_path / "pascal"
    write_png(root / "JPEGImages" / "s.png", 40, 30)
    write_png(root / "JPEGImages" / "t.png", 60, 20)
    return root


def test_read_pf_pascal_csv_keypoints_are_one_based_and_padding_dropped(tmp_path, pascal_root):
    csv_path = tmp_path / "test_pairs.csv"
    csv_path.write_text(
        "source_image,target_image,class,XA,YA,XB,YB\n"
        "JPEGImages/s.png,JPEGImages/t.png,14,1;10.5;-1,1;2.5;-1,5;6;-1,7;8;-1\n"
        "JPEGImages/t.png,JPEGImages/s.png,20,3,4,5,6\n"
    )
    p0, p1 = read_pf_pascal_csv(csv_path, pascal_root)
    assert p0.category == "motorbike" and p1.category == "tvmonitor" == PF_PASCAL_CLASSES[-1]
    np.testing.assert_allclose(p0.source.keypoints, [[0.0, 0.0], [9.5, 1.5]])
    np.testing.assert_allclose(p0.target.keypoints, [[4.0, 6.0], [5.0, 7.0]])
    assert p0.source.image_size_hw == (30, 40) and p0.target.image_size_hw == (20, 60)
    np.testing.assert_allclose(p1.source.keypoints, [[2.0, 3.0]])
    assert not p0.flip and not p0.flip_source


def test_read_pf_pascal_csv_weak_flip_mirrors_both(tmp_path, pascal_root):
    csv_path = tmp_path / "train_pairs.csv"
    csv_path.write_text("source_image,target_image,class,flip\n"
                        "JPEGImages/s.png,JPEGImages/t.png,1,0\nJPEGImages/s.png,JPEGImages/t.png,1,1\n")
    p0, p1 = read_pf_pascal_csv(csv_path, pascal_root)
    assert p0.category == "aeroplane" and (p0.flip, p0.flip_source) == (False, False)
    assert (p1.flip, p1.flip_source) == (True, True)
    assert p1.source.keypoints.shape == (0, 2)


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("a,b,c\n", "unknown header"),
        ("source_image,target_image,class,flip\nJPEGImages/s.png,JPEGImages/t.png,21,0\n", "line 2: class '21'"),
        ("source_image,target_image,class,flip\nJPEGImages/s.png,JPEGImages/t.png,1,2\n", "flip must be 0 or 1"),
        ("source_image,target_image,class,XA,YA,XB,YB\nJPEGImages/s.png,JPEGImages/t.png,1,1;2,1,1,1\n",
         "different lengths"),
        ("source_image,target_image,class,XA,YA,XB,YB\nJPEGImages/s.png,JPEGImages/t.png,1,x,1,1,1\n",
         "not a number"),
        ("source_image,target_image,class,flip\nJPEGImages/s.png,JPEGImages/zz.png,1,0\n", "does not exist"),
        ("", "empty"),
    ],
)
def test_read_pf_pascal_csv_errors(tmp_path, pascal_root, text, match):
    csv_path = tmp_path / "pairs.csv"
    csv_path.write_text(text)
    with pytest.raises(InputError, match=match):
        read_pf_pascal_csv(csv_path, pascal_root)


# --- SPair-71k ----------------------------------------------------------------------------------------------
def test_read_spair_json(tmp_path):
    root = tmp_path / "SPair-71k"
    write_png(root / "JPEGImages" / "cat" / "2008_000001.png", 40, 30)  # used for the size: no trg_imsize
    ann = {
        "filename": "0-2008_000002-2008_000001:cat", "src_imname": "2008_000002.png",
        "trg_imname": "2008_000001.png", "category": "cat", "src_imsize": [50, 25, 3],
        "src_bndbox": [1, 2, 30, 20], "trg_bndbox": [0, 0, 39, 29],
        "src_kps": [[3, 4], [5, 6]], "trg_kps": [[7, 8], [9, 10]], "kps_ids": ["0", "3"], "mirror": 0,
        "viewpoint_variation": 1,
    }
    folder = root / "PairAnnotation" / "trn"
    folder.mkdir(parents=True)
    (folder / "0-2008_000002-2008_000001:cat.json").write_text(json.dumps(ann))
    (pair,) = read_spair(root, "train")
    assert pair.category == "cat" and pair.source.path == root / "JPEGImages/cat/2008_000002.png"
    assert pair.source.image_size_hw == (25, 50)  # from src_imsize = [W, H, C]
    assert pair.target.image_size_hw == (30, 40)  # from the image header
    np.testing.assert_allclose(pair.source.keypoints, [[3, 4], [5, 6]])
    np.testing.assert_allclose(pair.target.keypoints, [[7, 8], [9, 10]])
    np.testing.assert_allclose(pair.source.bbox_xyxy, [1, 2, 30, 20])
    ann["trg_kps"] = [[7, 8]]
    (folder / "0-2008_000002-2008_000001:cat.json").write_text(json.dumps(ann))
    with pytest.raises(InputError, match="src_kps has 2 points, trg_kps 1"):
        read_spair(root, "trn")
    with pytest.raises(ConfigError, match="unknown SPair-71k split"):
        read_spair(root, "dev")
    with pytest.raises(InputError, match="does not exist"):
        read_spair(root, "val")


# --- visloc's pair csv --------------------------------------------------------------------------------------
def test_pairs_csv_round_trip_with_and_without_keypoints(willow, tmp_path):
    images = read_pf_willow(willow)
    pairs = [SemanticPair(images[0], images[0], "car(G)", flip=True), SemanticPair(images[1], images[2], "car(G)")]
    out = write_pairs_csv(tmp_path / "out" / "pairs.csv", pairs, willow)
    assert out.read_text().splitlines() == [
        "source_image,target_image,class,flip",
        "car(G)/a.png,car(G)/a.png,car(G),1",
        "car(G)/b.png,car(G)/c.png,car(G),0",
    ]
    assert sorted(p.name for p in out.parent.iterdir()) == ["pairs.csv"]  # no temporary file left
    back = read_pairs_csv(out, willow, images)
    assert [(p.source, p.target, p.category, p.flip) for p in back] == [
        (images[0], images[0], "car(G)", True), (images[1], images[2], "car(G)", False)]
    bare = read_pairs_csv(out, willow)
    assert bare[1].source.path == images[1].path and bare[1].source.keypoints.shape == (0, 2)
    assert bare[1].source.image_size_hw == (30, 40)
    with pytest.raises(InputError, match="not among the given keypoint images"):
        read_pairs_csv(out, willow, images[1:])


def test_pairs_csv_flip_source_column_and_errors(willow, tmp_path):
    images = read_pf_willow(willow)
    out = write_pairs_csv(tmp_path / "p.csv", [SemanticPair(images[0], images[1], "car(G)", True, True)], willow)
    assert out.read_text().splitlines()[0] == "source_image,target_image,class,flip,flip_source"
    (p,) = read_pairs_csv(out, willow, images)
    assert p.flip and p.flip_source
    with pytest.raises(ConfigError, match="not inside the image root"):
        write_pairs_csv(tmp_path / "q.csv", [SemanticPair(images[0], images[1], "car(G)")], tmp_path / "elsewhere")


# --- the real PF-WILLOW ------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def pf_willow_root() -> Path:
    path = data_dir() / "pf_willow"
    if not path.is_dir():
        pytest.skip(f"real data set 'pf_willow' not found under {data_dir()} (set {DATA_ENV})")
    return path


@pytest.mark.real_data
def test_real_pf_willow(pf_willow_root):
    images = read_pf_willow(pf_willow_root)
    assert len(images) == 100
    classes = sorted({i.category for i in images})
    assert len(classes) == 10 and "car(G)" in classes and "winebottle(woC)" in classes
    assert all(sum(i.category == c for i in images) == 10 for c in classes)
    assert len(pf_willow_pairs(images)) == 900
    for img in images:
        h, w = img.image_size_hw
        assert img.keypoints.shape == (10, 2)
        assert np.all(img.keypoints >= -0.5) and np.all(img.keypoints[:, 0] <= w - 0.5)
        assert np.all(img.keypoints[:, 1] <= h - 0.5)
        assert max(h, w) == 300
    first = next(i for i in images if i.path.name == "Cars_006a.png" and i.category == "car(G)")
    raw = scipy.io.loadmat(pf_willow_root / "car(G)" / "Cars_006a.mat")["pts_coord"]
    np.testing.assert_allclose(first.keypoints[0], raw[:, 0] - 1.0)
    assert first.image_size_hw == (200, 300)
