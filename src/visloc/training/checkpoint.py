"""Training checkpoints: everything needed to resume exactly, as plain data.

A checkpoint (``last.pt`` every epoch, ``best.pt`` at the best validation loss) is a dict of tensors,
numbers, strings, lists and dicts only, so it loads with ``torch.load(..., weights_only=True)``::

    {"format": "visloc-training-checkpoint", "format_version": 1,
     "epoch": epochs completed, "model": state dict, "optimizer": ..., "scheduler": ...,
     "scaler": GradScaler state, "rng": {"python", "numpy", "torch", "cuda"}, "history": [per-epoch dicts],
     "best": {"epoch", "loss"}, "config": the full training config (dict), "versions": package versions}

Files are written atomically (temporary file + rename), so an interrupted run leaves the previous
checkpoint intact.
"""

from __future__ import annotations

import platform
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import InputError
from ..io.atomic import atomic_path

CHECKPOINT_FORMAT = "visloc-training-checkpoint"
CHECKPOINT_FORMAT_VERSION = 1
LAST = "last.pt"
BEST = "best.pt"


def package_versions() -> dict[str, str]:
    """Versions of Python and the packages that determine the numbers of a training run."""
    import torchvision

    from .. import __version__

    return {
        "visloc": str(__version__),
        "python": platform.python_version(),
        "torch": str(torch.__version__),
        "torchvision": str(torchvision.__version__),
        "numpy": str(np.__version__),
    }


def rng_state() -> dict[str, Any]:
    """The python, numpy, torch (and CUDA) RNG states as ``weights_only``-loadable data."""
    np_state = np.random.get_state(legacy=False)  # noqa: NPY002 (the global RNG is what we save)
    state: dict[str, Any] = {
        "python": _to_lists(random.getstate()),
        "numpy": {
            "bit_generator": str(np_state["bit_generator"]),
            "key": torch.from_numpy(np.asarray(np_state["state"]["key"], dtype=np.int64)),
            "pos": int(np_state["state"]["pos"]),
            "has_gauss": int(np_state["has_gauss"]),
            "gauss": float(np_state["gauss"]),
        },
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what :func:`rng_state` returned."""
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    n = state["numpy"]
    np.random.set_state(  # noqa: NPY002
        {
            "bit_generator": n["bit_generator"],
            "state": {"key": n["key"].numpy().astype(np.uint32), "pos": n["pos"]},
            "has_gauss": n["has_gauss"],
            "gauss": n["gauss"],
        }
    )
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(state["cuda"])


def _to_lists(x: Any) -> Any:
    return [_to_lists(v) for v in x] if isinstance(x, (tuple, list)) else x


def save_checkpoint(path: str | Path, state: dict[str, Any]) -> Path:
    """Write ``state`` atomically with the format tag added."""
    path = Path(path)
    payload = {"format": CHECKPOINT_FORMAT, "format_version": CHECKPOINT_FORMAT_VERSION, **state}
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)
    return path


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Read a training checkpoint with ``weights_only=True`` onto the CPU.

    Raises:
        InputError: missing, unreadable, or not a visloc training checkpoint.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(path, "training checkpoint not found")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # zip / pickle / torch errors all mean "not a usable checkpoint"
        raise InputError(path, f"not a readable checkpoint ({type(e).__name__}: {e})") from None
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        raise InputError(path, f"not a visloc training checkpoint (expected format {CHECKPOINT_FORMAT!r})")
    if state.get("format_version") != CHECKPOINT_FORMAT_VERSION:
        raise InputError(path, f"checkpoint format version {state.get('format_version')} is not supported")
    return state
