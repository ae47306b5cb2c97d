"""Camera lists in hloc's query-list format: ``name MODEL WIDTH HEIGHT params...``."""

from __future__ import annotations

from pathlib import Path

import pytest

from visloc.errors import InputError
from visloc.geometry import Camera
from visloc.io.cameras import read_cameras, write_cameras


def test_round_trip(tmp_path: Path) -> None:
    cameras = {"db/a.jpg": Camera.pinhole(500.0, 501.0, 319.5, 239.5, 640, 480),
               "q/b.png": Camera("SIMPLE_RADIAL", 320, 240, (260.0, 159.5, 119.5, -0.01))}
    write_cameras(tmp_path / "cameras.txt", cameras)
    assert read_cameras(tmp_path / "cameras.txt") == cameras


def test_malformed_line_names_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "cameras.txt"
    path.write_text("a.jpg PINHOLE 64 48 50 50 31.5 23.5\nb.jpg PINHOLE 64 48 0 50 31.5 23.5\n")
    with pytest.raises(InputError, match=r"line 2 \(b.jpg\): .*focal length must be positive") as err:
        read_cameras(path)
    assert err.value.path == path


def test_duplicate_name_is_refused_naming_both_lines(tmp_path: Path) -> None:
    # the second camera of a.jpg used to replace the first silently
    path = tmp_path / "cameras.txt"
    path.write_text("a.jpg PINHOLE 64 48 50 50 31.5 23.5\n# comment\nb.jpg PINHOLE 64 48 50 50 31.5 23.5\n"
                    "a.jpg PINHOLE 64 48 60 60 31.5 23.5\n")
    with pytest.raises(InputError) as err:
        read_cameras(path)
    assert err.value.path == path
    assert str(err.value) == f"{path}: line 4: image a.jpg is listed twice (lines 1 and 4)"
