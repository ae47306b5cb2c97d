"""A map built in shards (``map build --shard i/n`` + ``map merge``) is the one-machine map, bit for bit."""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import pytest

from visloc.errors import ConfigError, InputError
from visloc.localization.shards import (
    SHARD_MANIFEST,
    ShardSpec,
    build_shard,
    merge_shards,
    read_shard_manifest,
    shard_slice,
)


def test_shard_slices_are_deterministic_and_cover_every_name_once() -> None:
    names = [f"scene/frame-{i:03d}.png" for i in range(23)]
    shuffled = names[::-1]
    for n in (1, 2, 3, 7, 23, 30):
        slices = [shard_slice(shuffled, ShardSpec(i, n)) for i in range(n)]
        assert slices == [shard_slice(names, ShardSpec(i, n)) for i in range(n)]  # input order is irrelevant
        assert [x for s in slices for x in s] == sorted(names)  # contiguous, in order, no overlap
        assert max(map(len, slices)) - min(map(len, slices)) <= 1


def test_shard_spec_parsing() -> None:
    assert ShardSpec.parse("2/5") == ShardSpec(2, 5)
    for bad in ("5/5", "-1/3", "1", "a/b", "0/0"):
        with pytest.raises(ConfigError, match="shard"):
            ShardSpec.parse(bad)


@pytest.fixture(scope="module")
def shards(tiny_world: Path, tiny_map_config, tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    root = tmp_path_factory.mktemp("shards")
    out = []
    for i in range(3):
        summary = build_shard(tiny_world, root / f"shard{i}", ShardSpec(i, 3), tiny_map_config, split="train")
        assert summary.num_images == 16
        out.append(summary.root)
    return out


def test_merged_shards_equal_the_plain_map_and_merge_is_idempotent(shards: list[Path], tiny_map: Path,
                                                                    tmp_path: Path, same_map) -> None:
    out = tmp_path / "map"
    summary = merge_shards(shards[::-1], out)  # any order: merged in the canonical one
    assert summary.num_images == 48
    same_map(out, tiny_map)
    before = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}
    again = merge_shards(shards, out)  # the same inputs: nothing to do
    assert again.num_images == 48
    assert {p.name: p.stat().st_mtime_ns for p in out.iterdir()} == before
    same_map(out, tiny_map)


def test_merge_refuses_incomplete_overlapping_missing_and_mismatched_shards(
        shards: list[Path], tiny_world: Path, tiny_map_config, tmp_path: Path) -> None:
    with pytest.raises(InputError, match="missing"):
        merge_shards(shards[:2], tmp_path / "a")
    with pytest.raises(InputError, match="overlaps"):
        merge_shards([*shards, shards[1]], tmp_path / "b")
    other = build_shard(tiny_world, tmp_path / "other", ShardSpec(0, 2), tiny_map_config, split="train").root
    with pytest.raises(InputError, match="overlaps"):
        merge_shards([*shards, other], tmp_path / "c")
    changed = dataclasses.replace(tiny_map_config, extractor_options={"max_keypoints": 512})
    odd = build_shard(tiny_world, tmp_path / "odd", ShardSpec(2, 3), changed, split="train").root
    with pytest.raises(ConfigError, match=r"other settings.*config\.extractor_options\.max_keypoints"):
        merge_shards([shards[0], shards[1], odd], tmp_path / "d")
    incomplete = tmp_path / "incomplete"
    shutil.copytree(shards[2], incomplete)
    (incomplete / SHARD_MANIFEST).unlink()
    with pytest.raises(InputError, match="incomplete shard"):
        merge_shards([shards[0], shards[1], incomplete], tmp_path / "e")
    assert not (tmp_path / "e" / "map.json").exists()


def test_interrupted_shard_is_rebuilt(shards: list[Path], tiny_world: Path, tiny_map_config, tmp_path: Path,
                                      tiny_map: Path, same_map) -> None:
    broken = tmp_path / "shard2"
    shutil.copytree(shards[2], broken)
    (broken / SHARD_MANIFEST).unlink()  # killed before its manifest
    (broken / ".local_features.h5.x.tmp").write_bytes(b"half")  # and in the middle of a file
    (broken / "local_features.h5").unlink()
    summary = build_shard(tiny_world, broken, ShardSpec(2, 3), tiny_map_config, split="train")
    assert summary.num_images == 16 and not list(broken.glob(".*.tmp"))
    manifest = read_shard_manifest(broken)
    assert manifest is not None and manifest["assigned"] == json.loads((shards[2] / SHARD_MANIFEST).read_text())[
        "assigned"]
    merge_shards([shards[0], shards[1], broken], tmp_path / "map")
    same_map(tmp_path / "map", tiny_map)


def test_cli_shards_and_merge(tiny_world: Path, tiny_map: Path, tmp_path: Path, same_map) -> None:
    from typer.testing import CliRunner

    from visloc.cli import app

    runner = CliRunner()
    shard_dirs = []
    for i in range(2):
        shard_dirs.append(str(tmp_path / f"s{i}"))
        result = runner.invoke(app, ["map", "build", str(tiny_world), "--split", "train", "--extractor-set",
                                     "max_keypoints=1024", "--out", shard_dirs[-1], "--shard", f"{i}/2"])
        assert result.exit_code == 0, result.output
        assert f"shard {i}/2: 24 images" in result.output
    result = runner.invoke(app, ["map", "merge", *shard_dirs, "--out", str(tmp_path / "map")])
    assert result.exit_code == 0, result.output
    same_map(tmp_path / "map", tiny_map)
    # errors that `visloc.cli.main` reports in one line with exit code 2
    missing = runner.invoke(app, ["map", "merge", shard_dirs[0], "--out", str(tmp_path / "map2")])
    assert isinstance(missing.exception, InputError) and "missing" in str(missing.exception)
    bad = runner.invoke(app, ["map", "build", str(tiny_world), "--out", str(tmp_path / "x"), "--shard", "2/2"])
    assert isinstance(bad.exception, ConfigError) and not (tmp_path / "x").exists()
