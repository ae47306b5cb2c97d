"""Bad user input on the command line is a one-line error naming the argument or file, exit code 2, never a
traceback (issue 10). Most cases run in process and check the exception `visloc.cli.main` turns into that
message; a few run the installed ``visloc`` to check the exit code and the absence of a traceback."""

from __future__ import annotations

import dataclasses
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from visloc.cli import app
from visloc.datasets.synthetic import WorldConfig
from visloc.errors import ConfigError, InputError, VislocError

runner = CliRunner()
VISLOC = Path(sys.executable).with_name("visloc")


def _error(args: list[str]) -> VislocError:
    """The error ``visloc ARGS`` stops with (what `visloc.cli.main` reports with exit code 2)."""
    result = runner.invoke(app, args)
    assert isinstance(result.exception, VislocError), (result.output, repr(result.exception))
    return result.exception


def _image_folder(root: Path, n: int = 3) -> Path:
    root.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(n):
        Image.fromarray(rng.integers(0, 256, (48, 64, 3), dtype=np.uint8)).save(root / f"im{i}.png")
    return root


@pytest.mark.parametrize(("camera", "problem"), [
    ("PINHOLE 64 48 50", "PINHOLE takes 4 parameters, got 1"),
    ("PINHOLE 64 48 nan 50 32 24", "must be finite"),
    ("PINHOLE 64 48 0 50 32 24", "focal length must be positive"),
    ("SIMPLE_PINHOLE 64 48 0 32 24", "focal length must be positive"),
])
def test_bad_camera_string_names_the_option(tmp_path: Path, camera: str, problem: str) -> None:
    folder = _image_folder(tmp_path / "imgs")
    err = _error(["map", "build", str(folder), "--out", str(tmp_path / "map"), "--camera", camera])
    assert isinstance(err, ConfigError)
    assert str(err).startswith(f"--camera {camera!r}: ") and problem in str(err)


def test_bad_camera_string_of_the_queries_names_the_option(tiny_world: Path, tiny_map: Path, tmp_path: Path) -> None:
    queries = _image_folder(tmp_path / "queries")
    err = _error(["localize", str(tiny_map), str(queries), "--out", str(tmp_path / "p.txt"),
                  "--camera", "PINHOLE 64 48 50"])
    assert isinstance(err, ConfigError) and str(err).startswith("--camera 'PINHOLE 64 48 50': ")
    assert not (tmp_path / "p.txt").exists()


def test_unknown_split_names_it_and_the_valid_ones(tiny_world: Path, tmp_path: Path) -> None:
    err = _error(["map", "build", str(tiny_world), "--out", str(tmp_path / "map"), "--split", "foo"])
    assert isinstance(err, ConfigError)
    assert str(err) == "split 'foo': 7-Scenes has no such split; choose one of train, test, all, even, odd"
    folder = _image_folder(tmp_path / "imgs")
    err = _error(["map", "build", str(folder), "--out", str(tmp_path / "map2"), "--split", "foo"])
    assert isinstance(err, ConfigError) and str(err).startswith("split 'foo': an image folder has no such split; "
                                                                "choose one of all, even, odd")


def test_pickled_global_state_is_refused(tiny_world: Path, tiny_map: Path, tmp_path: Path) -> None:
    the_map = tmp_path / "map"
    shutil.copytree(tiny_map, the_map)
    state = the_map / "global_state.npz"
    centroids = np.load(state)["centroids"]
    # the same numbers, stored as an object array: loading it would need pickle (which runs code)
    np.savez(state, centroids=np.array([centroids], dtype=object))
    queries = _image_folder(tmp_path / "queries", n=1)
    err = _error(["localize", str(the_map), str(queries), "--out", str(tmp_path / "p.txt")])
    assert isinstance(err, InputError) and err.path == state
    assert "cannot read the global descriptor state" in str(err) and "allow_pickle=False" in str(err)
    # a plain pickle under the name is refused the same way
    state.write_bytes(__import__("pickle").dumps({"centroids": centroids}))
    err = _error(["localize", str(the_map), str(queries), "--out", str(tmp_path / "p.txt")])
    assert isinstance(err, InputError) and err.path == state and "pickled" in str(err)


def test_zero_quaternion_in_a_training_pair_file_is_refused(tiny_world: Path, tmp_path: Path) -> None:
    pairs = tmp_path / "pairs.txt"
    pairs.write_text(
        "kitchen/seq-01/frame-000000.color.png kitchen/seq-01/frame-000001.color.png 0 0.1 0 0 1 0 0 0\n"
        "# a comment\n"
        "kitchen/seq-01/frame-000000.color.png kitchen/seq-01/frame-000002.color.png 0 0.2 0 0 0 0 0 0\n"
    )
    err = _error(["train", "relpose", "--data", str(tiny_world), "--out", str(tmp_path / "run"),
                  "--train-pairs", str(pairs), "--backbone", "tiny", "--weights", "none", "--allow-random-init",
                  "--hidden", "16", "--epochs", "1", "--num-workers", "0", "--no-progress"])
    assert isinstance(err, InputError) and err.path == pairs
    assert str(err).startswith(f"{pairs}: line 3: rotation label qw qx qy qz is zero")


def test_world_make_set_lists_the_valid_keys(tmp_path: Path) -> None:
    keys = [f.name for f in dataclasses.fields(WorldConfig) if f.name not in ("num_scenes", "seed", "preset_name")]
    err = _error(["world", "make", str(tmp_path / "w"), "--set", "foo=1"])
    assert isinstance(err, ConfigError)
    assert str(err).startswith(f"--set foo=1: unknown key 'foo'; valid keys: {', '.join(keys)}")
    # the keys that have their own options (this one ended in a TypeError)
    err = _error(["world", "make", str(tmp_path / "w"), "--set", "num_scenes=2"])
    assert isinstance(err, ConfigError) and "--scenes" in str(err)
    assert not (tmp_path / "w").exists()
    help_text = " ".join(runner.invoke(app, ["world", "make", "--help"], terminal_width=200).output.split())
    for key in keys:
        assert f" {key}," in help_text or f" {key}." in help_text, key


@pytest.mark.parametrize("case", ["camera", "split", "set"])
def test_installed_command_exits_2_without_a_traceback(tmp_path: Path, case: str) -> None:
    folder = _image_folder(tmp_path / "imgs")
    args, message = {
        "camera": (["map", "build", str(folder), "--out", str(tmp_path / "m"), "--camera", "PINHOLE 64 48 50"],
                   "--camera 'PINHOLE 64 48 50': PINHOLE takes 4 parameters, got 1"),
        "split": (["map", "build", str(folder), "--out", str(tmp_path / "m"), "--split", "foo"],
                  "split 'foo': an image folder has no such split"),
        "set": (["world", "make", str(tmp_path / "w"), "--set", "foo=1"], "--set foo=1: unknown key 'foo'"),
    }[case]
    done = subprocess.run([str(VISLOC), *args], capture_output=True, text=True, timeout=120)
    assert done.returncode == 2, done.stderr
    assert message in done.stderr
    assert "Traceback" not in done.stderr + done.stdout
