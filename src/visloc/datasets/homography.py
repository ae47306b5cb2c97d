"""Image pairs related by a ground-truth homography: HPatches sequences and EVD (Extreme View Dataset).

Every pair is a :class:`HomographyPair`: a **source** and a **target** image and ``H`` (``(3, 3)``,
``h33 = 1``) that maps source pixels to target pixels, ``x_t ~ H x_s``, in visloc's (OpenCV's) pixel
convention (the centre of the top-left pixel is ``(0, 0)``). The dense ground truth of a pair is
:func:`visloc.evaluation.matching.homography_correspondence` (``H^-1`` applied to the target lattice).

Layouts:

* **HPatches** (:func:`read_hpatches_sequence`): a sequence folder with ``1.ppm`` .. ``6.ppm`` and the
  text files ``H_1_2`` .. ``H_1_6`` (3 whitespace-separated rows), ``H_1_k`` mapping image 1 to image k.
  Pairs ``1 -> k`` (source 1, target k), as DGC-Net evaluates them (``hpatches_1_k.csv``, viewpoint IDs
  1..5 for k = 2..6). The matrices are used as stored: HPatches' own benchmark code and the DGC-Net /
  SuperPoint / LoFTR evaluations apply them to 0-based pixel coordinates, i.e. OpenCV's convention.
* **EVD** as stored in ``evd_homography`` (:func:`read_evd`): ``1/<name>.png`` (source), ``2/<name>.png``
  (target) and ``h/<name>.txt`` mapping image 1 to image 2 (MANIFEST section 4). The files are **not
  normalised** (``adam`` has ``h33 = -2.97``); the reader divides by ``h33``. The matrices are used as
  stored, no pixel-convention change. Warping image 1 onto image 2 with ``H`` read with pixel centres
  at ``c`` px (``T(-c) H T(c)``), the normalised cross-correlation peaks at ``c = 0`` (OpenCV) on the
  sharpest pairs (graf, there, face, girl, mag, fox, shop), not at the +0.5 / +1 px of the corner or
  MATLAB conventions; adam, index and vin peak at +0.5..+1.5 and cafe / grand are flat (measured when
  this reader was written; the graf and there cases are tests).

Bad or missing files raise :class:`~visloc.errors.InputError` naming the file.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import InputError
from ..geometry.pose import frozen_array
from ..io.images import IMAGE_SUFFIXES
from ._common import image_size

#: HPatches: image 1 is the reference, pairs 1 -> k for these k.
HPATCHES_TARGETS = (2, 3, 4, 5, 6)
#: Folders of the EVD layout: source images, target images, homographies.
EVD_SOURCE_DIR, EVD_TARGET_DIR, EVD_HOMOGRAPHY_DIR = "1", "2", "h"
#: Largest condition number accepted for a homography (a larger one is numerically singular).
MAX_CONDITION = 1e12


@dataclass(frozen=True, eq=False)
class HomographyPair:
    """Two images related by a homography.

    Attributes:
        name: the pair's name (``<sequence>/1_<k>`` for HPatches, the file stem for EVD).
        source_path: the source image (HPatches ``1.ppm``, EVD ``1/<name>.png``).
        target_path: the target image.
        H: ``(3, 3)`` read-only float64 homography with ``H[2, 2] = 1``, mapping source pixels to target
            pixels (``x_t ~ H [x_s, y_s, 1]^T``), OpenCV pixel convention.
        source_size: ``(width, height)`` of the source image as stored.
        target_size: ``(width, height)`` of the target image (it can differ from the source's).
    """

    name: str
    source_path: Path
    target_path: Path
    H: np.ndarray
    source_size: tuple[int, int]
    target_size: tuple[int, int]

    @property
    def source_shape(self) -> tuple[int, int]:
        """``(height, width)`` of the source image (the order of array shapes)."""
        return self.source_size[1], self.source_size[0]

    @property
    def target_shape(self) -> tuple[int, int]:
        """``(height, width)`` of the target image."""
        return self.target_size[1], self.target_size[0]


def read_homography_file(path: str | Path) -> np.ndarray:
    """Read a text homography: 9 whitespace-separated numbers (3 rows of 3).

    Args:
        path: the file (HPatches ``H_1_k``, EVD ``h/<name>.txt``).

    Returns:
        ``(3, 3)`` float64, divided by its ``h33`` so that ``H[2, 2] = 1`` (the same homography).

    Raises:
        InputError: the file is missing or unreadable, does not hold exactly 9 finite numbers, has
            ``h33 = 0`` (the source pixel ``(0, 0)`` would map to infinity) or is singular.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(path, "homography file does not exist")
    try:
        fields = path.read_text(encoding="utf-8", errors="replace").split()
    except OSError as e:
        raise InputError(path, f"cannot read homography file ({e})") from None
    if len(fields) != 9:
        raise InputError(path, f"expected a 3x3 homography (9 numbers), got {len(fields)} fields")
    try:
        H = np.array([float(f) for f in fields], dtype=np.float64).reshape(3, 3)
    except ValueError as e:
        raise InputError(path, f"homography holds a non-number ({e})") from None
    if not np.all(np.isfinite(H)):
        raise InputError(path, "homography holds NaN or infinite values")
    if abs(H[2, 2]) <= 1e-12 * np.abs(H).max():
        raise InputError(path, "homography has h33 = 0 (it maps the pixel (0, 0) to infinity)")
    H = H / H[2, 2]
    if not np.linalg.cond(H) < MAX_CONDITION:
        raise InputError(path, "homography is singular")
    return H


def _pair(name: str, source: Path, target: Path, h_file: Path) -> HomographyPair:
    H = read_homography_file(h_file)
    return HomographyPair(name, source, target, frozen_array(H), image_size(source), image_size(target))


def read_hpatches_sequence(sequence_dir: str | Path) -> list[HomographyPair]:
    """The five pairs ``1 -> k`` (k = 2..6) of an HPatches sequence folder.

    Args:
        sequence_dir: e.g. ``hpatches-sequences-release/v_graffiti``.

    Returns:
        Pairs in the order k = 2..6, named ``<folder name>/1_<k>``; source = ``1.ppm``, target =
        ``<k>.ppm``, ``H`` from ``H_1_<k>``.

    Raises:
        InputError: the folder is missing, or one of the images / homography files is missing or bad.
    """
    sequence_dir = Path(sequence_dir)
    if not sequence_dir.is_dir():
        raise InputError(sequence_dir, "HPatches sequence folder does not exist" if not sequence_dir.exists()
                         else "expected an HPatches sequence folder, got a file")
    source = sequence_dir / "1.ppm"
    return [
        _pair(f"{sequence_dir.name}/1_{k}", source, sequence_dir / f"{k}.ppm", sequence_dir / f"H_1_{k}")
        for k in HPATCHES_TARGETS
    ]


def _evd_image(folder: Path, stem: str) -> Path:
    """The one image called ``<stem>.<image suffix>`` in ``folder`` (``.png`` in the shared copy)."""
    found = sorted(p for p in folder.glob(f"{stem}.*") if p.suffix.lower() in IMAGE_SUFFIXES)
    if not found:
        raise InputError(folder / f"{stem}.png", "image file does not exist")
    if len(found) > 1:
        raise InputError(folder, f"several images named {stem!r}: {', '.join(p.name for p in found)}")
    return found[0]


def read_evd(root: str | Path) -> list[HomographyPair]:
    """All pairs of an EVD folder (``1/``, ``2/``, ``h/``), sorted by name.

    Args:
        root: the folder (``$VISLOC_DATA/evd_homography``).

    Returns:
        One pair per ``h/<name>.txt``: source ``1/<name>.png``, target ``2/<name>.png``, ``H`` divided
        by its ``h33``.

    Raises:
        InputError: the folder or its ``h/`` folder is missing, ``h/`` holds no ``.txt`` file, or an
            image / homography of a pair is missing or bad.
    """
    root = Path(root)
    if not root.is_dir():
        raise InputError(root, "EVD folder does not exist" if not root.exists() else "expected a folder, got a file")
    h_dir = root / EVD_HOMOGRAPHY_DIR
    if not h_dir.is_dir():
        raise InputError(h_dir, "EVD homography folder does not exist (expected 1/, 2/ and h/)")
    h_files = sorted(h_dir.glob("*.txt"))
    if not h_files:
        raise InputError(h_dir, "no homography (.txt) file")
    return [
        _pair(f.stem, _evd_image(root / EVD_SOURCE_DIR, f.stem), _evd_image(root / EVD_TARGET_DIR, f.stem), f)
        for f in h_files
    ]
