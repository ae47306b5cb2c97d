"""The weakly labelled training set of Publications I / II (thesis section 2.2.2), made from a small
keypoint-annotated image set.

Recipe (thesis, "Weakly Labelled Dataset"; the exact published numbers are not reproducible from the
text, see below):

1. **Flip pairs** ``D_l``: every training image paired with its own horizontal mirror image
   (``SemanticPair(img, img, category, flip=True)``: the target is the mirrored source).
2. **Category-wise random pairs** ``D_ul``: pairs of two different images of one category, drawn at random
   without replacement, at most ``max_per_category`` (100) per category so that large categories do not
   dominate. Categories are never mixed.
3. **No test leaks**: the thesis found "direct flips of 100 test image pairs" in the combined set and
   removed them. Here every pair whose two images form a test pair -- in either order and whatever the
   flip flags, so a mirrored copy of a test pair counts too -- is removed. Images are identified by their
   resolved file path.

Choices where the thesis is silent (documented, deterministic):

* Random pairs are drawn as **unordered** pairs (Pub I/II losses are evaluated in both directions, so
  ``(a, b)`` and ``(b, a)`` would be one training signal twice); each drawn pair gets a random direction.
* Leaking pairs are removed from the candidates **before** drawing, so a category still reaches its cap
  when it has enough other pairs.
* The draw of a category depends only on ``(seed, category name)`` (a ``numpy`` generator seeded with
  both), never on the other categories or the order of the input.
* The thesis' counts (700 training pairs -> 2,500 with flips, +1,800 random pairs on PF-PASCAL) refer to
  an undocumented "random flip" of the original training *pairs*; they are not reproduced.

**What a consumer may use.** Publication II learns from keypoint *locations* without correspondences:
a trainer may use the point set of each image (``pair.source_keypoints`` and ``pair.target_keypoints``,
already mirrored for flipped images) but must treat them as unordered sets -- the index order of the
annotation (semantic in PF-WILLOW / PF-PASCAL) is correspondence information that Pub II does not use.
Flip pairs are the exception that needs no labels: the mirror map ``x -> W - 1 - x`` is known exactly.
"""

from __future__ import annotations

import itertools
import zlib
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np

from ..errors import ConfigError
from .semantic import KeypointImage, SemanticPair, write_pairs_csv

#: Cap on the random pairs per category (thesis: 100).
DEFAULT_MAX_PER_CATEGORY = 100


def _key(path: Path) -> str:
    return str(Path(path).resolve())


def pair_key(pair: SemanticPair) -> frozenset[str]:
    """The unordered set of the pair's image files (flip flags ignored): the identity used for leaks."""
    return frozenset((_key(pair.source.path), _key(pair.target.path)))


def leaks(pair: SemanticPair, test_keys: set[frozenset[str]]) -> bool:
    """Whether ``pair`` shows the two images of a test pair (either order, any mirroring)."""
    return pair_key(pair) in test_keys


def _category_rng(seed: int, category: str) -> np.random.Generator:
    return np.random.default_rng([int(seed) & 0xFFFFFFFF, zlib.crc32(category.encode("utf-8"))])


def make_weak_pairs(
    images: Sequence[KeypointImage],
    test_pairs: Iterable[SemanticPair] = (),
    max_per_category: int = DEFAULT_MAX_PER_CATEGORY,
    seed: int = 0,
    include_flips: bool = True,
) -> list[SemanticPair]:
    """Make the weakly labelled training pairs (see the module docstring for the recipe).

    Args:
        images: the training images (e.g. the PF-WILLOW images of the training classes); each image file
            at most once.
        test_pairs: evaluation pairs whose images must not be paired in training (either order, any flip).
        max_per_category: cap on the random pairs of each category (0: flip pairs only).
        seed: seed of the random draw.
        include_flips: add the flip pair of every image.

    Returns:
        Categories in sorted order; within one, the flip pairs (images sorted by path), then the random
        pairs. Never a self pair except the flip pairs (``source is target``, ``flip=True``), never two
        categories in one pair.

    Raises:
        ConfigError: a negative cap or an image file given twice.
    """
    if int(max_per_category) < 0:
        raise ConfigError(f"max_per_category must be >= 0, got {max_per_category}")
    by_category: dict[str, list[KeypointImage]] = {}
    seen: set[str] = set()
    for img in images:
        key = _key(img.path)
        if key in seen:
            raise ConfigError(f"image {img.path} is given twice")
        seen.add(key)
        by_category.setdefault(img.category, []).append(img)
    test_keys = {pair_key(p) for p in test_pairs}

    out: list[SemanticPair] = []
    for category in sorted(by_category):
        members = sorted(by_category[category], key=lambda im: _key(im.path))
        if include_flips:
            flips = (SemanticPair(img, img, category, flip=True) for img in members)
            out.extend(p for p in flips if not leaks(p, test_keys))
        candidates = [
            (a, b) for a, b in itertools.combinations(members, 2)
            if frozenset((_key(a.path), _key(b.path))) not in test_keys
        ]
        k = min(int(max_per_category), len(candidates))
        if k == 0:
            continue
        rng = _category_rng(seed, category)
        chosen = np.sort(rng.choice(len(candidates), size=k, replace=False))
        swap = rng.random(k) < 0.5
        for idx, s in zip(chosen.tolist(), swap.tolist(), strict=True):
            a, b = candidates[idx]
            out.append(SemanticPair(b, a, category) if s else SemanticPair(a, b, category))
    return out


def write_weak_pairs(
    path: str | Path,
    images: Sequence[KeypointImage],
    image_root: str | Path,
    test_pairs: Iterable[SemanticPair] = (),
    max_per_category: int = DEFAULT_MAX_PER_CATEGORY,
    seed: int = 0,
    include_flips: bool = True,
) -> list[SemanticPair]:
    """Make the weak pairs (:func:`make_weak_pairs`) and write them atomically as a pair csv
    (:func:`~visloc.datasets.semantic.write_pairs_csv`, names relative to ``image_root``; read back with
    :func:`~visloc.datasets.semantic.read_pairs_csv` and the same ``images`` to get the keypoints).

    Returns:
        The pairs written.
    """
    pairs = make_weak_pairs(images, test_pairs, max_per_category, seed, include_flips)
    write_pairs_csv(path, pairs, image_root)
    return pairs


__all__ = ["DEFAULT_MAX_PER_CATEGORY", "leaks", "make_weak_pairs", "pair_key", "write_weak_pairs"]
