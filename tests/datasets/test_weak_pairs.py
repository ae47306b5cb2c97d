"""The Publication II weakly labelled pair generator: counts, cap, seeding, no self pairs, no test leaks."""

from __future__ import annotations

from math import comb
from pathlib import Path

import numpy as np
import pytest

from visloc.datasets.semantic import KeypointImage, SemanticPair, read_pairs_csv
from visloc.datasets.weak_pairs import make_weak_pairs, pair_key, write_weak_pairs
from visloc.errors import ConfigError

SIZES = {"bike": 6, "car": 4, "duck": 1}


def make_images(root: Path = Path("/data")) -> list[KeypointImage]:
    rng = np.random.default_rng(0)
    return [
        KeypointImage(root / cat / f"{cat}{k}.png", cat, rng.uniform(0, 30, (5, 2)), (30, 40))
        for cat, n in SIZES.items()
        for k in range(n)
    ]


def names(pairs):
    return [(p.source.path.name, p.target.path.name, p.flip) for p in pairs]


def test_counts_without_cap_and_flip_pairs():
    images = make_images()
    pairs = make_weak_pairs(images, max_per_category=1000)
    flips = [p for p in pairs if p.flip]
    assert len(flips) == len(images)
    assert all(p.source is p.target and not p.flip_source for p in flips)
    randoms = [p for p in pairs if not p.flip]
    for cat, n in SIZES.items():  # every unordered pair of distinct images exactly once
        got = {frozenset((p.source.path, p.target.path)) for p in randoms if p.category == cat}
        assert len(got) == comb(n, 2) == sum(p.category == cat for p in randoms)
    assert len(pairs) == len(images) + sum(comb(n, 2) for n in SIZES.values())


def test_cap_per_category_and_no_flips():
    pairs = make_weak_pairs(make_images(), max_per_category=3, include_flips=False)
    counts = {cat: sum(p.category == cat for p in pairs) for cat in SIZES}
    assert counts == {"bike": 3, "car": 3, "duck": 0}
    assert not any(p.flip for p in pairs)
    assert make_weak_pairs(make_images(), max_per_category=0, include_flips=False) == []
    with pytest.raises(ConfigError, match=">= 0"):
        make_weak_pairs(make_images(), max_per_category=-1)


def test_no_self_pairs_and_categories_never_mixed():
    for p in make_weak_pairs(make_images(), max_per_category=4, seed=3):
        assert p.source.category == p.target.category == p.category
        if not p.flip:
            assert p.source.path != p.target.path


def test_deterministic_by_seed_and_independent_of_input_order():
    images = make_images()
    a = make_weak_pairs(images, max_per_category=5, seed=7)
    b = make_weak_pairs(list(reversed(images)), max_per_category=5, seed=7)
    assert names(a) == names(b)
    seeds = {tuple(names(make_weak_pairs(images, max_per_category=5, seed=s))) for s in range(6)}
    assert len(seeds) > 1
    # a category's draw does not depend on the others
    only_bikes = [im for im in images if im.category == "bike"]
    alone = make_weak_pairs(only_bikes, max_per_category=5, seed=7)
    assert names([p for p in a if p.category == "bike"]) == names(alone)


def test_random_pairs_get_both_directions():
    pairs = make_weak_pairs(make_images(), max_per_category=1000, include_flips=False, seed=1)
    index = {p.path: i for i, p in enumerate(make_images())}
    forward = [index[p.source.path] < index[p.target.path] for p in pairs]
    assert any(forward) and not all(forward)


def test_test_pairs_never_leak_in_either_order_or_mirrored():
    images = make_images()
    bikes = [im for im in images if im.category == "bike"]
    tests = [SemanticPair(bikes[0], bikes[1], "bike"), SemanticPair(bikes[3], bikes[2], "bike", flip=True)]
    # the test pair objects are other instances of the same files
    tests = [SemanticPair(KeypointImage(t.source.path, "bike", [], (30, 40)), t.target, "bike") for t in tests]
    leaked = {pair_key(t) for t in tests}
    pairs = make_weak_pairs(images, tests, max_per_category=1000)
    assert not any(pair_key(p) in leaked for p in pairs)
    randoms = [p for p in pairs if p.category == "bike" and not p.flip]
    assert len(randoms) == comb(6, 2) - 2
    # the cap is still reached from the remaining candidates
    assert sum(p.category == "bike" for p in make_weak_pairs(images, tests, 13, include_flips=False)) == 13
    # flipped copies of a test pair are removed too
    flipped = SemanticPair(bikes[1], bikes[0], "bike", flip=True, flip_source=True)
    assert pair_key(flipped) in leaked


def test_duplicate_images_are_refused():
    images = make_images()
    with pytest.raises(ConfigError, match="given twice"):
        make_weak_pairs([*images, images[0]])


def test_write_weak_pairs_csv_round_trip(tmp_path):
    images = make_images(tmp_path)
    out = tmp_path / "weak.csv"
    pairs = write_weak_pairs(out, images, tmp_path, max_per_category=2, seed=4)
    lines = out.read_text().splitlines()
    assert lines[0] == "source_image,target_image,class,flip" and len(lines) == 1 + len(pairs)
    assert lines[1] == "bike/bike0.png,bike/bike0.png,bike,1"
    back = read_pairs_csv(out, tmp_path, images)
    assert [(p.source, p.target, p.category, p.flip) for p in back] == [
        (p.source, p.target, p.category, p.flip) for p in pairs]
    np.testing.assert_allclose(back[0].target_keypoints[:, 0], 39 - images[0].keypoints[:, 0])
