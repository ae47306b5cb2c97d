"""A small embedded world shared by the localization end-to-end tests (made once per session)."""

from __future__ import annotations

from pathlib import Path

import pytest

from visloc.datasets.synthetic import WorldConfig, make_world
from visloc.localization import MapConfig, build_map

#: Two rooms at 320x240, enough texture for SIFT, small enough for seconds of work.
TINY_WORLD = WorldConfig(
    num_scenes=2, train_traversals=2, frames_per_train_traversal=12, frames_per_test_traversal=6,
    width=320, height=240, focal=262.5, seed=3,
)
TINY_MAP = MapConfig(extractor_options={"max_keypoints": 1024})


@pytest.fixture(scope="session")
def tiny_world(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_world(tmp_path_factory.mktemp("world") / "world", TINY_WORLD, progress=False)


@pytest.fixture(scope="session")
def tiny_map(tiny_world: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("map") / "map"
    build_map(tiny_world, out, TINY_MAP, split="train")
    return out
