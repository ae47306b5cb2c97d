"""Shared fixtures. Real data sets live under ``$VISLOC_DATA`` (default ``../shared/data``); tests that
need one skip with the reason when it is absent."""

from __future__ import annotations

from pathlib import Path

import pytest

from visloc.settings import DATA_ENV, data_dir


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
