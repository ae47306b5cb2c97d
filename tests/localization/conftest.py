"""Fixtures of the localization tests: comparing two map folders bit for bit."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import h5py
import numpy as np
import pytest

#: The HDF5 files of a map, compared dataset by dataset (values, dtypes, group attributes).
MAP_H5 = ("local_features.h5", "global_features.h5", "points3D.h5")


def _h5_contents(path: Path) -> dict:
    out: dict = {}
    with h5py.File(path, "r") as f:
        out["/"] = {k: np.asarray(v).tolist() for k, v in f.attrs.items()}

        def visit(name: str, obj: object) -> None:
            if isinstance(obj, h5py.Dataset):
                out[name] = (obj.dtype.str, obj.shape, obj[()].tobytes())
            else:
                out[name] = {k: np.asarray(v).tolist() for k, v in obj.attrs.items()}

        f.visititems(visit)
    return out


def assert_same_map(a: Path, b: Path) -> None:
    """Two map folders hold the same map: every HDF5 dataset bit for bit, the descriptor state, the index
    file, the text files and the manifest (but for the library versions' order-free dict)."""
    for name in MAP_H5:
        assert (a / name).is_file() == (b / name).is_file(), name
        if (a / name).is_file():
            ca, cb = _h5_contents(a / name), _h5_contents(b / name)
            assert ca.keys() == cb.keys(), name
            diff = [k for k in ca if ca[k] != cb[k]]
            assert not diff, f"{name}: {len(diff)} entries differ, e.g. {diff[:3]}"
    state = "global_state.npz"  # absent where the descriptor fits nothing (a network without whitening)
    assert (a / state).is_file() == (b / state).is_file(), state
    if (a / state).is_file():
        with np.load(a / state) as sa, np.load(b / state) as sb:
            assert sorted(sa.files) == sorted(sb.files)
            for k in sa.files:
                assert sa[k].dtype == sb[k].dtype and np.array_equal(sa[k], sb[k]), k
    for name in ("global_index.faiss", "poses.txt", "cameras.txt"):
        assert (a / name).read_bytes() == (b / name).read_bytes(), name
    assert json.loads((a / "map.json").read_text()) == json.loads((b / "map.json").read_text())


@pytest.fixture(scope="session")
def same_map() -> Callable[[Path, Path], None]:
    """:func:`assert_same_map`."""
    return assert_same_map
