"""The command line starts light: help and argument parsing import no heavy library (torch, OpenCV,
FAISS, h5py); ``visloc train`` is imported when it is used."""

from __future__ import annotations

import subprocess
import sys

from typer.testing import CliRunner

from visloc.cli import app

HEAVY = ("torch", "cv2", "faiss", "h5py", "kornia", "matplotlib")


def _modules_after(args: list[list[str]]) -> set[str]:
    """Heavy modules imported by a fresh interpreter that runs ``visloc ARGS`` for each of ``args``."""
    code = (
        "import sys\n"
        "from typer.testing import CliRunner\n"
        "from visloc.cli import app\n"
        f"for args in {args!r}:\n"
        "    result = CliRunner().invoke(app, args)\n"
        "    assert result.exit_code == 0, result.output\n"
        f"print(' '.join(m for m in {HEAVY!r} if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return set(out.stdout.split())


def test_help_of_every_command_imports_no_heavy_library() -> None:
    commands = [["--help"], ["localize", "--help"], ["retrieve", "--help"], ["match", "--help"],
                ["map", "build", "--help"], ["demo", "--help"], ["evaluate", "localization", "--help"]]
    assert _modules_after(commands) == set()


def test_train_is_listed_without_importing_it_and_loads_when_used() -> None:
    runner = CliRunner()
    top = runner.invoke(app, ["--help"])
    assert top.exit_code == 0 and "train" in top.output and "Train the pose regression" in top.output
    sub = runner.invoke(app, ["train", "--help"])
    assert sub.exit_code == 0
    for command in ("relpose", "posenet", "semantic"):
        assert command in sub.output
    assert "torch" in _modules_after([["train", "relpose", "--help"]])
