"""Semantic-matching data: images with keypoints, image pairs, and the readers of the published layouts.

Conventions (the whole semantic-matching code uses them):

* Keypoints are ``(N, 2)`` float64 ``(x, y)`` **0-based pixel** coordinates (x right, y down; the centre of
  the top-left pixel is ``(0, 0)``). MATLAB-made annotations (PF-WILLOW ``.mat`` files and the
  CNNGeometric / WeakAlign csv files derived from them) are 1-based and are converted here, at the
  readers, and nowhere else.
* Image sizes are ``image_size_hw = (height, width)`` of the image as :func:`visloc.io.images.read_image`
  returns it (EXIF orientation applied), read cheaply from the file header.
* Within a pair, keypoint ``i`` of the source corresponds to keypoint ``i`` of the target whenever the data
  set has correspondences (PF-WILLOW: the 10 points of a class share one semantic order; PF-PASCAL /
  SPair-71k: the pair's rows). Weakly labelled pairs carry point *sets* only (see
  :mod:`visloc.datasets.weak_pairs`).
* Mirroring: a horizontally flipped image of width ``W`` has its keypoints at ``x' = W - 1 - x``
  (:func:`mirror_keypoints`). :class:`SemanticPair` says which of its images are shown mirrored, and
  :attr:`SemanticPair.source_keypoints` / :attr:`SemanticPair.target_keypoints` give the keypoints in the
  frame of the image as presented.

Readers:

* :func:`read_pf_willow` -- the PF-WILLOW folder (``<class>/<image>.png`` + ``.mat``); :func:`pf_willow_pairs`
  -- its standard 900 ordered pairs.
* :func:`read_pf_willow_csv` -- CNNGeometric's ``test_pairs_pf.csv``.
* :func:`read_pf_pascal_csv` -- the PF-PASCAL pair lists of CNNGeometric / WeakAlign / NC-Net (keypoint and
  weak ``flip`` variants).
* :func:`read_spair` -- SPair-71k pair annotations.
* :func:`write_pairs_csv` / :func:`read_pairs_csv` -- visloc's own pair list.

The module needs numpy and Pillow only (scipy is imported when a ``.mat`` file is read), so importing it is
cheap and never loads torch.
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import ConfigError, InputError
from ..io.atomic import atomic_open
from ._common import image_size

#: PF-PASCAL classes in the order of the csv ``class`` column (1-based there): the PASCAL VOC order.
PF_PASCAL_CLASSES = (
    "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
    "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train", "tvmonitor",
)
#: Keypoints per PF-WILLOW image (``pts_coord`` is 2 x 10).
PF_WILLOW_NUM_KEYPOINTS = 10
#: SPair-71k split folder names under ``PairAnnotation/`` (``train`` is accepted for ``trn``).
SPAIR_SPLITS = ("trn", "val", "test")

_PASCAL_KEYPOINT_COLUMNS = ("source_image", "target_image", "class", "XA", "YA", "XB", "YB")
_PASCAL_WEAK_COLUMNS = ("source_image", "target_image", "class", "flip")
_PAIRS_COLUMNS = ("source_image", "target_image", "class", "flip")
_PAIRS_FLIP_SOURCE = "flip_source"


def _frozen(a: np.ndarray) -> np.ndarray:
    a = np.array(a, dtype=np.float64)
    a.setflags(write=False)
    return a


def mirror_keypoints(keypoints: np.ndarray, width: int) -> np.ndarray:
    """Keypoints of the horizontally mirrored image: ``x' = W - 1 - x``, ``y' = y``.

    Args:
        keypoints: ``(N, 2)`` 0-based pixel ``(x, y)``.
        width: image width ``W`` in pixels.

    Returns:
        ``(N, 2)`` new array (mirroring twice gives the input back).
    """
    out = np.array(keypoints, dtype=np.float64).reshape(-1, 2)
    out[:, 0] = (width - 1) - out[:, 0]
    return out


@dataclass(frozen=True, eq=False)
class KeypointImage:
    """An image with (possibly zero) annotated keypoints.

    Attributes:
        path: the image file.
        category: object class (PF-WILLOW folder name, PF-PASCAL / SPair class name).
        keypoints: ``(N, 2)`` float64 0-based pixel ``(x, y)``, finite, read-only; ``(0, 2)`` when the
            image carries no keypoints (weak pairs read from a csv without them).
        image_size_hw: ``(height, width)`` in pixels, EXIF orientation applied.
        bbox_xyxy: optional ``(4,)`` object box ``(x0, y0, x1, y1)`` in 0-based pixels (SPair-71k's
            ``*_bndbox``, taken as stored), read-only; ``None`` when the data set has none.

    Raises:
        ValueError: keypoints not ``(N, 2)`` or not finite, or a non-positive image size.
    """

    path: Path
    category: str
    keypoints: np.ndarray
    image_size_hw: tuple[int, int]
    bbox_xyxy: np.ndarray | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "path", Path(self.path))
        kps = np.asarray(self.keypoints, dtype=np.float64)
        if kps.size == 0:
            kps = kps.reshape(0, 2)
        if kps.ndim != 2 or kps.shape[1] != 2:
            raise ValueError(f"keypoints must have shape (N, 2), got {kps.shape}")
        if not np.all(np.isfinite(kps)):
            raise ValueError("keypoints contain NaN or infinite values")
        object.__setattr__(self, "keypoints", _frozen(kps))
        h, w = (int(v) for v in self.image_size_hw)
        if h <= 0 or w <= 0:
            raise ValueError(f"image size must be positive, got (H, W) = {(h, w)}")
        object.__setattr__(self, "image_size_hw", (h, w))
        if self.bbox_xyxy is not None:
            box = np.asarray(self.bbox_xyxy, dtype=np.float64).reshape(-1)
            if box.shape != (4,) or not np.all(np.isfinite(box)):
                raise ValueError(f"bbox_xyxy must be 4 finite numbers, got {box}")
            object.__setattr__(self, "bbox_xyxy", _frozen(box))

    @property
    def height(self) -> int:
        return self.image_size_hw[0]

    @property
    def width(self) -> int:
        return self.image_size_hw[1]

    @property
    def num_keypoints(self) -> int:
        return len(self.keypoints)

    def keypoints_in_frame(self, mirrored: bool) -> np.ndarray:
        """The keypoints in the frame of the image as shown: mirrored (:func:`mirror_keypoints`) or not."""
        return mirror_keypoints(self.keypoints, self.width) if mirrored else np.array(self.keypoints)

    def bbox_in_frame(self, mirrored: bool) -> np.ndarray | None:
        """The object box in the frame of the image as shown (``x0 <= x1`` kept when mirrored)."""
        if self.bbox_xyxy is None:
            return None
        if not mirrored:
            return np.array(self.bbox_xyxy)
        x0, y0, x1, y1 = self.bbox_xyxy
        return np.array([self.width - 1 - x1, y0, self.width - 1 - x0, y1])


@dataclass(frozen=True, eq=False)
class SemanticPair:
    """Two images of one category.

    The flags say how the images are *shown* to a model; the files are never changed.

    Attributes:
        source: the source image (A).
        target: the target image (B).
        category: the pair's class.
        flip: the target is shown mirrored horizontally. The weak flip pairs of Publication II are
            ``SemanticPair(img, img, category, flip=True)``: the target is the mirrored source.
        flip_source: the source is shown mirrored horizontally. WeakAlign's PF-PASCAL training csv
            (``flip = 1``) mirrors **both** images; :func:`read_pf_pascal_csv` sets both flags then.
    """

    source: KeypointImage
    target: KeypointImage
    category: str
    flip: bool = False
    flip_source: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "flip", bool(self.flip))
        object.__setattr__(self, "flip_source", bool(self.flip_source))

    @property
    def source_keypoints(self) -> np.ndarray:
        """``(N, 2)`` source keypoints in the frame of the source as shown (mirrored if ``flip_source``)."""
        return self.source.keypoints_in_frame(self.flip_source)

    @property
    def target_keypoints(self) -> np.ndarray:
        """``(M, 2)`` target keypoints in the frame of the target as shown (mirrored if ``flip``)."""
        return self.target.keypoints_in_frame(self.flip)

    def __repr__(self) -> str:
        flags = "".join([", flip=True" if self.flip else "", ", flip_source=True" if self.flip_source else ""])
        return f"SemanticPair({self.source.path.name!r} -> {self.target.path.name!r}, {self.category!r}{flags})"


# --- small helpers ------------------------------------------------------------------------------------


def read_image_size(path: str | Path) -> tuple[int, int]:
    """``(height, width)`` of an image from its header (no pixel decoding), EXIF orientation applied.

    Raises:
        InputError: the file is missing or not a readable image.
    """
    width, height = image_size(Path(path))
    return height, width


class _SizeCache:
    """Image sizes read once per file (pair lists name the same image many times)."""

    def __init__(self) -> None:
        self._sizes: dict[Path, tuple[int, int]] = {}

    def __call__(self, path: Path) -> tuple[int, int]:
        if path not in self._sizes:
            self._sizes[path] = read_image_size(path)
        return self._sizes[path]


def _image(path: Path, category: str, kps: np.ndarray, sizes: _SizeCache, where: Path, line: int) -> KeypointImage:
    try:
        return KeypointImage(path, category, kps, sizes(path))
    except ValueError as e:
        raise InputError(where, f"line {line}: {e}") from None


def _read_csv_rows(path: Path) -> tuple[list[str], list[tuple[int, list[str]]]]:
    """Header and ``(line number, fields)`` of the non-empty rows of a csv file."""
    if not path.is_file():
        raise InputError(path, "csv file does not exist")
    try:
        with open(path, newline="", encoding="utf-8") as f:
            rows = [(i + 1, [c.strip() for c in row]) for i, row in enumerate(csv.reader(f))]
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise InputError(path, f"cannot read csv ({e})") from None
    rows = [(n, r) for n, r in rows if any(r)]
    if not rows:
        raise InputError(path, "csv file is empty")
    return rows[0][1], rows[1:]


def _float(text: str, path: Path, line: int, what: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise InputError(path, f"line {line}: {what} {text!r} is not a number") from None
    if not math.isfinite(value):
        raise InputError(path, f"line {line}: {what} is {text!r}")
    return value


def _flag(text: str, path: Path, line: int, what: str) -> bool:
    if text not in ("0", "1"):
        raise InputError(path, f"line {line}: {what} must be 0 or 1, got {text!r}")
    return text == "1"


# --- PF-WILLOW ----------------------------------------------------------------------------------------


def _read_pts_coord(mat_path: Path) -> np.ndarray:
    """PF-WILLOW ``pts_coord`` (2 x 10, 1-based) -> ``(10, 2)`` 0-based pixels."""
    import scipy.io

    if not mat_path.is_file():
        raise InputError(mat_path, "keypoint file does not exist")
    try:
        data = scipy.io.loadmat(mat_path)
    except Exception as e:  # scipy raises ValueError, TypeError, MatReadError, OSError... on corrupt files
        raise InputError(mat_path, f"cannot read MATLAB file ({type(e).__name__}: {e})") from None
    if "pts_coord" not in data:
        found = sorted(k for k in data if not k.startswith("__"))
        raise InputError(mat_path, f"no variable 'pts_coord' (found: {', '.join(found) or 'none'})")
    try:
        pts = np.asarray(data["pts_coord"], dtype=np.float64)
    except (TypeError, ValueError):
        raise InputError(mat_path, "'pts_coord' is not a numeric array") from None
    if pts.shape != (2, PF_WILLOW_NUM_KEYPOINTS):
        raise InputError(mat_path, f"'pts_coord' must be 2 x {PF_WILLOW_NUM_KEYPOINTS}, got {pts.shape}")
    if not np.all(np.isfinite(pts)):
        raise InputError(mat_path, "'pts_coord' contains NaN or infinite values")
    return pts.T - 1.0


def read_pf_willow(root: str | Path) -> list[KeypointImage]:
    """Read the PF-WILLOW folder: every ``<class>/<image>.mat`` with its ``<image>.png``.

    The ``.mat`` file holds ``pts_coord``, a 2 x 10 double array (row 0 = x, row 1 = y) in MATLAB's
    1-based pixel convention; the keypoints returned are 0-based (``pts_coord - 1``, transposed). The 10
    points share one semantic order within a class.

    Args:
        root: the PF-WILLOW folder (its sub-folders are the classes, e.g. ``car(G)``).

    Returns:
        The images sorted by class, then file name; ``category`` is the class folder name.

    Raises:
        InputError: the folder is missing or holds no ``.mat`` file; an image has no ``.mat`` file; a
            ``.mat`` file is unreadable, lacks ``pts_coord``, has a shape other than 2 x 10 or holds NaN;
            an image is missing or unreadable.
    """
    root = Path(root)
    if not root.is_dir():
        raise InputError(root, "PF-WILLOW folder does not exist")
    mats = sorted(root.glob("*/*.mat"), key=lambda p: (p.parent.name, p.name))
    if not mats:
        raise InputError(root, "no <class>/<image>.mat keypoint files (is this the PF-WILLOW folder?)")
    for png in sorted(root.glob("*/*.png")):
        if not png.with_suffix(".mat").is_file():
            raise InputError(png.with_suffix(".mat"), f"keypoint file of {png.name} does not exist")
    images = []
    for mat in mats:
        png = mat.with_suffix(".png")
        if not png.is_file():
            raise InputError(mat, f"its image {png.name} is missing")
        images.append(KeypointImage(png, mat.parent.name, _read_pts_coord(mat), read_image_size(png)))
    return images


def pf_willow_pairs(images: Sequence[KeypointImage]) -> list[SemanticPair]:
    """The standard PF-WILLOW evaluation pairs: every ordered pair of distinct images within a class.

    With 10 images in each of the 10 classes this gives 10 x 10 x 9 = 900 pairs (the size of
    CNNGeometric's ``test_pairs_pf.csv``).

    Args:
        images: from :func:`read_pf_willow`.

    Returns:
        Pairs grouped by class (in first-appearance order), then source, then target (input order).
    """
    by_class: dict[str, list[KeypointImage]] = {}
    for img in images:
        by_class.setdefault(img.category, []).append(img)
    return [
        SemanticPair(a, b, category)
        for category, members in by_class.items()
        for a in members
        for b in members
        if a is not b
    ]


def read_pf_willow_csv(csv_path: str | Path, image_root: str | Path) -> list[SemanticPair]:
    """Read CNNGeometric's PF-WILLOW pair list (``test_pairs_pf.csv``).

    Layout (CNNGeometric ``data/pf_dataset.py``, ``PFDataset``): a header row, then per pair
    ``imageA, imageB`` (paths relative to ``image_root``) followed by 40 numbers: the 10 x of A, the 10 y
    of A, the 10 x of B, the 10 y of B. Image A is the source. The coordinates are the ``.mat`` values,
    i.e. **1-based** (CNNGeometric's ``PointsToUnitCoords`` maps x = 1 to -1 and x = W to +1); they are
    converted to 0-based here. The category is the name of the folder that holds image A.

    Args:
        csv_path: the csv file.
        image_root: the folder the image names are relative to.

    Raises:
        InputError: missing/empty file, a row without 42 fields, a non-numeric coordinate, images of two
            different class folders in one row, or a missing / unreadable image.
    """
    csv_path, image_root = Path(csv_path), Path(image_root)
    header, rows = _read_csv_rows(csv_path)
    if len(header) >= 3 and _is_number(header[2]):  # no header row: the first row is a pair
        rows = [(1, header), *rows]
    n = PF_WILLOW_NUM_KEYPOINTS
    sizes = _SizeCache()
    pairs = []
    for line, row in rows:
        if len(row) != 2 + 4 * n:
            raise InputError(csv_path, f"line {line}: expected {2 + 4 * n} fields (A, B, 10 XA, 10 YA, 10 XB, "
                                       f"10 YB), got {len(row)}")
        values = np.array([_float(v, csv_path, line, "coordinate") for v in row[2:]]).reshape(4, n)
        kps_a = np.stack([values[0], values[1]], axis=1) - 1.0
        kps_b = np.stack([values[2], values[3]], axis=1) - 1.0
        path_a, path_b = image_root / row[0], image_root / row[1]
        category = Path(row[0]).parent.name
        if Path(row[1]).parent.name != category:
            raise InputError(csv_path, f"line {line}: images of different classes ({row[0]}, {row[1]})")
        pairs.append(SemanticPair(_image(path_a, category, kps_a, sizes, csv_path, line),
                                  _image(path_b, category, kps_b, sizes, csv_path, line), category))
    return pairs


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


# --- PF-PASCAL ----------------------------------------------------------------------------------------


def _pascal_points(text: str, csv_path: Path, line: int, what: str) -> np.ndarray:
    parts = [p for p in text.split(";") if p.strip()]
    return np.array([_float(p, csv_path, line, what) for p in parts], dtype=np.float64)


def read_pf_pascal_csv(csv_path: str | Path, image_root: str | Path) -> list[SemanticPair]:
    """Read a PF-PASCAL pair list of CNNGeometric / WeakAlign / NC-Net.

    Two layouts, told apart by the header:

    * keypoints (``test_pairs.csv`` / ``val_pairs.csv``): ``source_image,target_image,class,XA,YA,XB,YB``
      where XA, YA, XB, YB are ``;``-separated floats, one per corresponding point (up to 20; the loaders
      pad them to 20 with -1 after reading). Any point where one of the four values is -1 is padding and
      dropped. The values are the PF-PASCAL MATLAB annotations, **1-based** (CNNGeometric's
      ``PointsToUnitCoords`` maps x = 1 to -1): converted to 0-based here.
    * weak (``train_pairs.csv`` of WeakAlign): ``source_image,target_image,class,flip``; no keypoints.
      ``flip = 1`` mirrors **both** images in WeakAlign's ``ImagePairDataset``, so it gives
      ``flip=True, flip_source=True``.

    ``class`` is 1..20 in :data:`PF_PASCAL_CLASSES` order (aeroplane ... tvmonitor); the pair's category
    is the class name. Image names are relative to ``image_root``.

    Raises:
        InputError: missing/empty file, an unknown header, a class outside 1..20, XA/YA/XB/YB of different
            lengths, a non-numeric value, a bad flip value, or a missing / unreadable image.
    """
    csv_path, image_root = Path(csv_path), Path(image_root)
    header, rows = _read_csv_rows(csv_path)
    if tuple(header) == _PASCAL_KEYPOINT_COLUMNS:
        with_points = True
    elif tuple(header) == _PASCAL_WEAK_COLUMNS:
        with_points = False
    else:
        raise InputError(csv_path, f"unknown header {','.join(header)!r}; expected "
                                   f"{','.join(_PASCAL_KEYPOINT_COLUMNS)!r} or {','.join(_PASCAL_WEAK_COLUMNS)!r}")
    sizes = _SizeCache()
    pairs = []
    for line, row in rows:
        if len(row) != len(header):
            raise InputError(csv_path, f"line {line}: expected {len(header)} fields, got {len(row)}")
        try:
            cls = int(row[2])
        except ValueError:
            cls = 0
        if not 1 <= cls <= len(PF_PASCAL_CLASSES):
            raise InputError(csv_path, f"line {line}: class {row[2]!r} is not in 1..{len(PF_PASCAL_CLASSES)}")
        category = PF_PASCAL_CLASSES[cls - 1]
        flip = False
        if with_points:
            xa, ya, xb, yb = (_pascal_points(row[3 + k], csv_path, line, name)
                              for k, name in enumerate(("XA", "YA", "XB", "YB")))
            if not len(xa) == len(ya) == len(xb) == len(yb):
                raise InputError(csv_path, f"line {line}: XA, YA, XB, YB have different lengths "
                                           f"({len(xa)}, {len(ya)}, {len(xb)}, {len(yb)})")
            keep = (xa != -1) & (ya != -1) & (xb != -1) & (yb != -1)
            kps_a = np.stack([xa[keep], ya[keep]], axis=1) - 1.0
            kps_b = np.stack([xb[keep], yb[keep]], axis=1) - 1.0
        else:
            flip = _flag(row[3], csv_path, line, "flip")
            kps_a = kps_b = np.zeros((0, 2))
        src = _image(image_root / row[0], category, kps_a, sizes, csv_path, line)
        tgt = _image(image_root / row[1], category, kps_b, sizes, csv_path, line)
        pairs.append(SemanticPair(src, tgt, category, flip=flip, flip_source=flip))
    return pairs


# --- SPair-71k ----------------------------------------------------------------------------------------


def _spair_size(value: object, path: Path, what: str) -> tuple[int, int] | None:
    """SPair stores ``*_imsize`` as ``[width, height, channels]``; returns ``(height, width)``."""
    if value is None:
        return None
    try:
        w, h = int(value[0]), int(value[1])  # type: ignore[index]
    except (TypeError, ValueError, IndexError):
        raise InputError(path, f"{what} must be [width, height, channels], got {value!r}") from None
    return h, w


def read_spair(root: str | Path, split: str) -> list[SemanticPair]:
    """Read the SPair-71k pair annotations of one split.

    Layout: ``<root>/PairAnnotation/<split>/*.json`` (split ``trn``, ``val`` or ``test``; ``train`` is
    accepted for ``trn``), images at ``<root>/JPEGImages/<category>/<imname>``. Fields used (as the
    public SPair loaders read them): ``src_imname``, ``trg_imname``, ``category``, ``src_kps`` /
    ``trg_kps`` (lists of ``[x, y]``, corresponding row by row), and when present ``src_imsize`` /
    ``trg_imsize`` (``[width, height, channels]``; otherwise the size is read from the image header) and
    ``src_bndbox`` / ``trg_bndbox`` (``[x0, y0, x1, y1]``, kept as :attr:`KeypointImage.bbox_xyxy`).
    Other fields (viewpoint / scale / truncation / occlusion difficulty, ``kps_ids``, ``mirror``) are
    ignored.

    SPair coordinates are taken as stored, as 0-based pixels: the public loaders (HPF, CHM, DIFT) use them
    unchanged, and no 1-based convention is documented for this Python-made data set.

    Args:
        root: the SPair-71k folder.
        split: ``trn`` / ``train``, ``val`` or ``test``.

    Returns:
        Pairs in file-name order.

    Raises:
        ConfigError: unknown split.
        InputError: missing folder, a file that is not JSON or lacks a field, keypoint lists of different
            lengths or shapes, a missing image when no size is stored.
    """
    root = Path(root)
    split = "trn" if split == "train" else split
    if split not in SPAIR_SPLITS:
        raise ConfigError(f"unknown SPair-71k split {split!r}; known: {', '.join(SPAIR_SPLITS)} (or train)")
    folder = root / "PairAnnotation" / split
    if not folder.is_dir():
        raise InputError(folder, "SPair-71k pair annotation folder does not exist")
    files = sorted(folder.glob("*.json"))
    if not files:
        raise InputError(folder, "no pair annotation (.json) files")
    sizes = _SizeCache()
    pairs = []
    for path in files:
        try:
            ann = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
            raise InputError(path, f"cannot read JSON ({e})") from None
        if not isinstance(ann, dict):
            raise InputError(path, "expected a JSON object")
        missing = [k for k in ("src_imname", "trg_imname", "category", "src_kps", "trg_kps") if k not in ann]
        if missing:
            raise InputError(path, f"missing field(s) {', '.join(missing)}")
        category = str(ann["category"])
        try:
            src_kps = np.asarray(ann["src_kps"], dtype=np.float64).reshape(-1, 2)
            trg_kps = np.asarray(ann["trg_kps"], dtype=np.float64).reshape(-1, 2)
        except (TypeError, ValueError):
            raise InputError(path, "src_kps / trg_kps must be lists of [x, y]") from None
        if len(src_kps) != len(trg_kps):
            raise InputError(path, f"src_kps has {len(src_kps)} points, trg_kps {len(trg_kps)}")
        images = []
        for side, kps in (("src", src_kps), ("trg", trg_kps)):
            img_path = root / "JPEGImages" / category / str(ann[f"{side}_imname"])
            size = _spair_size(ann.get(f"{side}_imsize"), path, f"{side}_imsize") or sizes(img_path)
            try:
                images.append(KeypointImage(img_path, category, kps, size, ann.get(f"{side}_bndbox")))
            except ValueError as e:
                raise InputError(path, f"{side}: {e}") from None
        pairs.append(SemanticPair(images[0], images[1], category))
    return pairs


# --- visloc's own pair list ---------------------------------------------------------------------------


def _relative(path: Path, image_root: Path) -> str:
    try:
        return path.resolve().relative_to(image_root.resolve()).as_posix()
    except ValueError:
        raise ConfigError(f"image {path} is not inside the image root {image_root}") from None


def write_pairs_csv(path: str | Path, pairs: Iterable[SemanticPair], image_root: str | Path) -> Path:
    """Write a pair list atomically: ``source_image,target_image,class,flip`` (a header, then one row per
    pair; image paths relative to ``image_root``, POSIX separators; ``class`` the category name; ``flip``
    0/1 = the target is shown mirrored).

    A fifth column ``flip_source`` is added only when some pair mirrors its source (WeakAlign-style pairs);
    :func:`read_pairs_csv` reads both forms. Keypoints are not stored: they live in the data set.

    Raises:
        ConfigError: an image is not inside ``image_root``.
    """
    pairs = list(pairs)
    image_root = Path(image_root)
    with_source_flag = any(p.flip_source for p in pairs)
    header = [*_PAIRS_COLUMNS, _PAIRS_FLIP_SOURCE] if with_source_flag else list(_PAIRS_COLUMNS)
    rows = []
    for p in pairs:
        row = [_relative(p.source.path, image_root), _relative(p.target.path, image_root), p.category, int(p.flip)]
        rows.append([*row, int(p.flip_source)] if with_source_flag else row)
    with atomic_open(path, "w") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(header)
        writer.writerows(rows)
    return Path(path)


def read_pairs_csv(
    path: str | Path, image_root: str | Path, keypoint_images: Iterable[KeypointImage] | None = None
) -> list[SemanticPair]:
    """Read a pair list written by :func:`write_pairs_csv`.

    Args:
        path: the csv file.
        image_root: the folder the image names are relative to.
        keypoint_images: the data set's images (e.g. :func:`read_pf_willow`); each named image is taken
            from them, keypoints included (matched by resolved path). ``None``: images get no keypoints
            and their size is read from the file header.

    Raises:
        InputError: missing/empty file, wrong header or field count, a bad flag, a missing image, or an
            image absent from ``keypoint_images``.
    """
    path, image_root = Path(path), Path(image_root)
    header, rows = _read_csv_rows(path)
    if tuple(header) not in (_PAIRS_COLUMNS, (*_PAIRS_COLUMNS, _PAIRS_FLIP_SOURCE)):
        raise InputError(path, f"unknown header {','.join(header)!r}; expected {','.join(_PAIRS_COLUMNS)!r} "
                               f"[,{_PAIRS_FLIP_SOURCE}]")
    known = None if keypoint_images is None else {img.path.resolve(): img for img in keypoint_images}
    sizes = _SizeCache()
    pairs = []
    for line, row in rows:
        if len(row) != len(header):
            raise InputError(path, f"line {line}: expected {len(header)} fields, got {len(row)}")
        category = row[2]
        images = []
        for name in row[:2]:
            img_path = image_root / name
            if known is None:
                images.append(_image(img_path, category, np.zeros((0, 2)), sizes, path, line))
            elif img_path.resolve() in known:
                images.append(known[img_path.resolve()])
            else:
                raise InputError(path, f"line {line}: image {name} is not among the given keypoint images")
        flip = _flag(row[3], path, line, "flip")
        flip_source = _flag(row[4], path, line, "flip_source") if len(row) > 4 else False
        pairs.append(SemanticPair(images[0], images[1], category, flip=flip, flip_source=flip_source))
    return pairs


__all__ = [
    "PF_PASCAL_CLASSES",
    "PF_WILLOW_NUM_KEYPOINTS",
    "SPAIR_SPLITS",
    "KeypointImage",
    "SemanticPair",
    "mirror_keypoints",
    "pf_willow_pairs",
    "read_image_size",
    "read_pairs_csv",
    "read_pf_pascal_csv",
    "read_pf_willow",
    "read_pf_willow_csv",
    "read_spair",
    "write_pairs_csv",
]
