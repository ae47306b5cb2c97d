"""Line-oriented text files (pose, pairs, camera and trajectory lists)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from ..errors import InputError


def data_lines(path: str | Path, what: str = "file", commas: bool = False) -> Iterator[tuple[int, list[str]]]:
    """``(line number, whitespace-split fields)`` of the non-blank lines not starting with ``#``;
    with ``commas``, commas separate fields too (CSV-style trajectory exports).

    Raises:
        InputError: the file does not exist (the message says which ``what`` it should have been).
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(path, f"{what} does not exist")
    with open(path, encoding="utf-8", errors="replace") as f:
        for lineno, line in enumerate(f, 1):
            text = line.strip()
            if text and not text.startswith("#"):
                yield lineno, (text.replace(",", " ") if commas else text).split()
