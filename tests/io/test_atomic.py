"""Atomic writes: the target holds either the old or the complete new content, never a torn file."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from visloc.io.atomic import atomic_open, atomic_path, write_json, write_text


class Boom(Exception):
    pass


def _only(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def test_success_replaces_the_file(tmp_path: Path) -> None:
    path = tmp_path / "out.txt"
    path.write_text("old\n")
    with atomic_open(path) as f:
        f.write("new\n")
        assert path.read_text() == "old\n"  # not visible before the block ends
    assert path.read_text() == "new\n"
    assert _only(tmp_path) == ["out.txt"]


def test_writer_raising_midway_keeps_the_old_file(tmp_path: Path) -> None:
    path = tmp_path / "out.txt"
    path.write_text("old content\n")
    with pytest.raises(Boom), atomic_open(path) as f:
        f.write("half of the new content")
        f.flush()
        raise Boom
    assert path.read_text() == "old content\n"
    assert _only(tmp_path) == ["out.txt"]  # temporary file removed


def test_interrupt_keeps_the_old_file(tmp_path: Path) -> None:
    path = tmp_path / "out.bin"
    path.write_bytes(b"\x00\x01")
    with pytest.raises(KeyboardInterrupt), atomic_path(path) as tmp:
        tmp.write_bytes(b"partial")
        raise KeyboardInterrupt
    assert path.read_bytes() == b"\x00\x01"
    assert _only(tmp_path) == ["out.bin"]


def test_failure_without_old_file_creates_nothing(tmp_path: Path) -> None:
    with pytest.raises(Boom), atomic_open(tmp_path / "new.txt") as f:
        f.write("x")
        raise Boom
    assert _only(tmp_path) == []


def test_atomic_path_for_name_based_writers(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "dir" / "data.bin"  # parents are created
    with atomic_path(path) as tmp:
        assert tmp.parent == path.parent and tmp != path
        tmp.write_bytes(b"abc")
    assert path.read_bytes() == b"abc"
    with atomic_open(path, "wb") as f:
        f.write(b"\xff")
    assert path.read_bytes() == b"\xff"


def test_write_text_and_json(tmp_path: Path) -> None:
    write_text(tmp_path / "t.txt", "héllo\n")
    assert (tmp_path / "t.txt").read_text(encoding="utf-8") == "héllo\n"
    write_json(tmp_path / "c.json", {"b": [1, 2], "a": 0.5})
    text = (tmp_path / "c.json").read_text()
    assert json.loads(text) == {"b": [1, 2], "a": 0.5}
    assert text.index('"b"') < text.index('"a"')  # key order kept
    with pytest.raises(TypeError):
        write_json(tmp_path / "c.json", {"bad": object()})
    assert json.loads((tmp_path / "c.json").read_text()) == {"b": [1, 2], "a": 0.5}


def test_written_files_get_ordinary_permissions(tmp_path: Path) -> None:
    import os

    umask = os.umask(0o022)
    try:
        write_text(tmp_path / "new.txt", "x")  # not the 0600 of a temporary file
        assert (tmp_path / "new.txt").stat().st_mode & 0o777 == 0o644
        (tmp_path / "kept.txt").write_text("old")
        os.chmod(tmp_path / "kept.txt", 0o640)
        write_text(tmp_path / "kept.txt", "new")  # a replaced file keeps its mode
        assert (tmp_path / "kept.txt").stat().st_mode & 0o777 == 0o640
    finally:
        os.umask(umask)
