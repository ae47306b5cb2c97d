"""Exceptions raised for bad user input.

Every error about a file names the file first, then the problem, so that a user who runs a batch job
over thousands of images can find the culprit without a traceback.
"""

from __future__ import annotations

from pathlib import Path


class VislocError(Exception):
    """Base class of all errors visloc raises on purpose."""


class InputError(VislocError):
    """A file or folder given by the user cannot be used.

    Args:
        path: the offending file or folder.
        problem: what is wrong with it, in a few words.
    """

    def __init__(self, path: str | Path, problem: str) -> None:
        self.path = Path(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}")


class ConfigError(VislocError):
    """A configuration is invalid (unknown key, unknown component name, bad value)."""
