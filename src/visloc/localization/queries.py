"""The query images of a stage: a data set folder, a loaded frame set, or frames."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from ..datasets import load_frames
from ..datasets.base import Frame, FrameSet, Skipped
from ..errors import InputError


def query_frames(
    queries: str | Path | FrameSet | Iterable[Frame], split: str, dataset_options: Mapping[str, Any]
) -> tuple[list[Frame], list[Skipped]]:
    """The frames to process and the images already known to be unusable.

    Raises:
        InputError: there is no query image at all.
    """
    if isinstance(queries, (str, Path)):
        frameset = load_frames(queries, split=split, require_poses=False, **dataset_options)
        frames, skipped = list(frameset.frames), list(frameset.skipped)
    elif isinstance(queries, FrameSet):
        frames, skipped = list(queries.frames), list(queries.skipped)
    else:
        frames, skipped = list(queries), []
    if not frames:
        raise InputError(Path(str(queries)) if isinstance(queries, (str, Path)) else Path("<queries>"),
                         "no query images")
    return frames, skipped
