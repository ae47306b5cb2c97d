"""Process-wide settings read from the environment (never mutated at run time).

``VISLOC_DATA``
    Folder with the small real data sets (``7scenes_stairs_mini``, ``tum_fr2_desk`` ...) and the
    pretrained local-feature weights (``weights/``). Defaults to ``../shared/data`` next to the
    repository checkout, or relative to the working directory.
"""

from __future__ import annotations

import os
from pathlib import Path

DATA_ENV = "VISLOC_DATA"


def data_dir() -> Path:
    """Return the real-data folder (it may not exist; callers check and skip or fail clearly)."""
    env = os.environ.get(DATA_ENV)
    if env:
        return Path(env).expanduser()
    repo_root = Path(__file__).resolve().parents[2]
    for candidate in (repo_root / ".." / "shared" / "data", Path.cwd() / ".." / "shared" / "data"):
        if candidate.is_dir():
            return candidate.resolve()
    return (Path.cwd() / ".." / "shared" / "data").resolve()


def weights_dir() -> Path:
    """Folder of the pretrained local-feature weights (``$VISLOC_DATA/weights``)."""
    return data_dir() / "weights"


def shipped_model(name: str) -> Path:
    """A model file shipped inside the package (``visloc/weights/<name>``)."""
    return Path(__file__).resolve().parent / "weights" / name
