"""The query images of a stage: a data set folder, a loaded frame set, or frames."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..datasets import load_frames
from ..datasets.base import Frame, FrameSet, Skipped
from ..errors import InputError

if TYPE_CHECKING:
    from .map import Map

logger = logging.getLogger(__name__)

#: The split of a data set folder read as queries when none is given (and it is not the map's own folder).
DEFAULT_QUERY_SPLIT = "test"


def _same_folder(a: str | Path, b: str | Path) -> bool:
    try:
        return Path(a).resolve() == Path(b).resolve()
    except OSError:
        return False


def query_frames(
    queries: str | Path | FrameSet | Iterable[Frame], split: str | None, dataset_options: Mapping[str, Any],
    map_: Map | None = None,
) -> tuple[list[Frame], list[Skipped]]:
    """The frames to process and the images already known to be unusable.

    Splits follow the map: with ``split=None``, a data set folder that is the one the (posed) map was built
    from gives its frames that are not in the map (a TUM map of the ``even`` frames localizes the ``odd``
    ones); any other folder gives its ``test`` split (all images for folders and TUM).

    Raises:
        InputError: there is no query image at all.
    """
    if isinstance(queries, (str, Path)):
        source = (map_.manifest.get("source") or {}).get("path") if map_ is not None and map_.has_poses else None
        if split is None and source is not None and _same_folder(queries, source):
            frameset = load_frames(queries, split="all", require_poses=False, **dataset_options)
            in_map = set(map_.names)
            frames = [f for f in frameset.frames if f.name not in in_map]
            if not frames:
                raise InputError(Path(queries), "every frame of this data set is in the map; choose the queries "
                                                "with --split")
            logger.info("%s is the map's own data set: its %d frames that are not in the map are the queries "
                        "(%d map frames left out)", queries, len(frames), len(frameset.frames) - len(frames))
        else:
            frameset = load_frames(queries, split=split or DEFAULT_QUERY_SPLIT, require_poses=False, **dataset_options)
            frames = list(frameset.frames)
        skipped = list(frameset.skipped)
    elif isinstance(queries, FrameSet):
        frames, skipped = list(queries.frames), list(queries.skipped)
    else:
        frames, skipped = list(queries), []
    if not frames:
        raise InputError(Path(str(queries)) if isinstance(queries, (str, Path)) else Path("<queries>"),
                         "no query images")
    return frames, skipped


def split_unwritable_names(frames: list[Frame]) -> tuple[list[Frame], list[Skipped]]:
    """Frames whose names the hloc text files can hold, and the others as skipped (names with whitespace)."""
    ok = [f for f in frames if not any(c.isspace() for c in f.name)]
    bad = [Skipped(f.name, f.image_path, "the name contains whitespace, which hloc pose and pairs files cannot "
                                         "hold; rename the file") for f in frames if f not in ok]
    return ok, bad
