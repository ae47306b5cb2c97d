"""Shared fixtures. Real data sets live under ``$VISLOC_DATA`` (default ``../shared/data``); tests that
need one skip with the reason when it is absent."""

from __future__ import annotations

from pathlib import Path

import pytest

from visloc.datasets.synthetic import WorldConfig, make_world
from visloc.localization import MapConfig, build_map
from visloc.settings import DATA_ENV, data_dir

#: Two rooms at 320x240: enough texture for SIFT, small enough for seconds of work.
TINY_WORLD = WorldConfig(
    num_scenes=2, train_traversals=2, frames_per_train_traversal=12, frames_per_test_traversal=6,
    width=320, height=240, focal=262.5, seed=3,
)
TINY_MAP = MapConfig(extractor_options={"max_keypoints": 1024})


def _require(sub: str) -> Path:
    path = data_dir() / sub
    if not path.exists():
        pytest.skip(f"real data set {sub!r} not found under {data_dir()} (set {DATA_ENV})")
    return path


@pytest.fixture(scope="session")
def real_data() -> Path:
    return _require("")


@pytest.fixture(scope="session")
def stairs_root() -> Path:
    return _require("7scenes_stairs_mini")


@pytest.fixture(scope="session")
def tum_root() -> Path:
    return _require("tum_fr2_desk")


@pytest.fixture(scope="session")
def scannet_root() -> Path:
    return _require("scannet_pairs")


@pytest.fixture(scope="session")
def weights_root() -> Path:
    return _require("weights")


@pytest.fixture(scope="session")
def tiny_world_config() -> WorldConfig:
    return TINY_WORLD


@pytest.fixture(scope="session")
def tiny_map_config() -> MapConfig:
    return TINY_MAP


@pytest.fixture(scope="session")
def tiny_world(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small embedded world (7-Scenes layout), made once per session."""
    return make_world(tmp_path_factory.mktemp("world") / "world", TINY_WORLD, progress=False)


@pytest.fixture(scope="session")
def tiny_map(tiny_world: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The map of the tiny world's training traversals."""
    out = tmp_path_factory.mktemp("map") / "map"
    build_map(tiny_world, out, TINY_MAP, split="train")
    return out
