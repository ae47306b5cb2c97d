"""One run per output: a lock file created exclusively next to the output, holding the owner's pid.

A second run that targets the same output while the first is alive is refused with an
:class:`~visloc.errors.InputError` naming the lock; a lock left by a run that died (its pid is gone) is
taken over. The lock is removed when the run ends, however it ends.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

from ..errors import InputError


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's live process
        return True
    return True


def _owner(lock: Path) -> int | None:
    try:
        return int(lock.read_text().strip() or "0")
    except (OSError, ValueError):
        return None


@contextlib.contextmanager
def run_lock(lock: str | Path, what: str) -> Iterator[Path]:
    """Hold ``lock`` for the duration of the block.

    Args:
        lock: the lock file (e.g. ``poses.txt.lock``).
        what: the output it protects, for the message.

    Raises:
        InputError: a live process holds the lock, or the folder cannot be written.
    """
    lock = Path(lock)
    for _ in range(2):
        try:
            fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            owner = _owner(lock)
            if owner is not None and owner != os.getpid() and _alive(owner):
                raise InputError(lock, f"another visloc run (pid {owner}) is writing {what}; wait for it, or "
                                       "choose another output") from None
            lock.unlink(missing_ok=True)  # left by a run that died
            continue
        except OSError as e:
            raise InputError(lock.parent, f"cannot write here ({e.strerror})") from None
        with os.fdopen(fd, "w") as f:
            f.write(f"{os.getpid()}\n")
        break
    else:
        raise InputError(lock, f"could not take the lock for {what}")
    try:
        yield lock
    finally:
        lock.unlink(missing_ok=True)
