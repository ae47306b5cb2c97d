"""Where network weights come from: the ImageNet weights of the hub cache, and state-dict files.

Weights policy (DESIGN.md section 7): ImageNet weights of torchvision backbones are read **only** from the
torch hub cache, ``torch.hub.get_dir()/checkpoints/<file name of the torchvision URL>`` (``$TORCH_HOME``);
nothing is downloaded implicitly. :func:`download_weights` fills the cache for users who are online,
with torch's own hash check. Every file is read with ``torch.load(weights_only=True, map_location="cpu")``
and every error names the file (:func:`read_torch_file`).

The checkpoints of the models visloc trains are :mod:`visloc.models.checkpoint`.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import torch
from torch import nn

from ..errors import ConfigError, InputError

#: The torchvision ImageNet weights of each backbone: (weights enum, member). Pinned, so that the cache
#: file name does not change when torchvision changes its ``DEFAULT``.
IMAGENET_WEIGHTS: dict[str, tuple[str, str]] = {
    "resnet18": ("ResNet18_Weights", "IMAGENET1K_V1"),
    "resnet34": ("ResNet34_Weights", "IMAGENET1K_V1"),
    "mobilenet_v2": ("MobileNet_V2_Weights", "IMAGENET1K_V2"),
    "vgg16": ("VGG16_Weights", "IMAGENET1K_V1"),
}


# --- ImageNet weights in the torch hub cache -----------------------------------------------------


def _imagenet_entry(name: str) -> Any:
    import torchvision.models

    if name not in IMAGENET_WEIGHTS:
        known = ", ".join(sorted(IMAGENET_WEIGHTS))
        raise ConfigError(f"backbone {name!r} has no ImageNet weights (backbones with them: {known})")
    enum_name, member = IMAGENET_WEIGHTS[name]
    return getattr(torchvision.models, enum_name)[member]


def imagenet_weights_url(name: str) -> str:
    """The torchvision URL of the ImageNet weights of backbone ``name``."""
    return _imagenet_entry(name).url


def imagenet_cache_path(name: str) -> Path:
    """Where the ImageNet weights of backbone ``name`` are expected: ``<hub dir>/checkpoints/<file>``.

    The file name is the last component of the torchvision URL (it carries the sha256 prefix that
    torch's hash check uses), so files that torchvision itself downloaded are found too.
    """
    file_name = os.path.basename(urlparse(imagenet_weights_url(name)).path)
    return Path(torch.hub.get_dir()) / "checkpoints" / file_name


def download_weights(name: str, progress: bool = True) -> Path:
    """Fetch the torchvision ImageNet weights of backbone ``name`` into the torch hub cache.

    Needs a network connection; it is never called by visloc itself. A file already in the cache is
    kept as it is. The download goes through ``torch.hub.download_url_to_file``, which checks the
    sha256 prefix in the file name and writes through a temporary file.

    Args:
        name: ``resnet18``, ``resnet34``, ``mobilenet_v2`` or ``vgg16``.
        progress: show a progress bar.

    Returns:
        The cached file, :func:`imagenet_cache_path` of ``name``.
    """
    url = imagenet_weights_url(name)
    dst = imagenet_cache_path(name)
    if dst.is_file():
        return dst
    dst.parent.mkdir(parents=True, exist_ok=True)
    match = torch.hub.HASH_REGEX.search(dst.name)
    hash_prefix = match.group(1) if match else None
    torch.hub.download_url_to_file(url, str(dst), hash_prefix=hash_prefix, progress=progress)
    return dst


# --- reading state dicts -------------------------------------------------------------------------


def read_torch_file(path: Path, what: str) -> Any:
    """``torch.load(path, map_location="cpu", weights_only=True)``; errors raise :class:`InputError`.

    Args:
        path: the file.
        what: the file in words for the messages, e.g. ``"checkpoint"``.

    Raises:
        InputError: a missing file, or one that is not a torch file of plain data.
    """
    if not path.is_file():
        raise InputError(path, f"{what} not found")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # zip, pickle and torch errors all mean "not a usable file"
        raise InputError(path, f"{what} is not a readable torch file ({type(e).__name__}: {e})") from None


def load_state_dict_file(path: str | Path, submodule: str | None = None) -> dict[str, torch.Tensor]:
    """Read a state dict (a mapping of names to tensors) with ``weights_only=True`` on the CPU.

    Args:
        path: a state-dict file, or a visloc model written by :func:`~visloc.models.checkpoint.save_model`.
        submodule: with a visloc model, keep only the weights under this prefix (e.g. ``"encoder"``), with
            the prefix removed: a trained network's encoder initialises another network's backbone.
    """
    path = Path(path).expanduser()
    state = read_torch_file(path, "weights file")
    if isinstance(state, Mapping) and isinstance(state.get("state_dict"), Mapping) and "config" in state:
        state = state["state_dict"]  # a visloc model file
        if submodule is not None:
            prefix = submodule + "."
            state = {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
            if not state:
                raise InputError(path, f"visloc model has no {submodule!r} weights")
    if not isinstance(state, Mapping) or not all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items()
    ):
        raise InputError(path, "weights file is not a state dict (a mapping of names to tensors)")
    return dict(state)


def _few(keys: list[str], n: int = 4) -> str:
    shown = ", ".join(keys[:n])
    return f"{len(keys)} ({shown}{', ...' if len(keys) > n else ''})"


def load_state_into(
    module: nn.Module, state: Mapping[str, torch.Tensor], path: str | Path, what: str
) -> None:
    """Load ``state`` strictly into ``module``; a mismatch raises :class:`InputError` naming ``path``.

    Args:
        module: the receiving module.
        state: the state dict read from ``path``.
        path: the file the state came from (for the message).
        what: the architecture in words, e.g. ``"backbone 'resnet18'"``.
    """
    own = module.state_dict()
    state = dict(state)
    for key in own:  # files saved before PyTorch 0.4 (torchvision's ResNet weights) lack these counters
        if key not in state and key.endswith("num_batches_tracked"):
            state[key] = own[key]
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    wrong_shape = [k for k in own if k in state and tuple(state[k].shape) != tuple(own[k].shape)]
    if missing or unexpected or wrong_shape:
        parts = []
        if missing:
            parts.append(f"missing {_few(missing)}")
        if unexpected:
            parts.append(f"unexpected {_few(unexpected)}")
        if wrong_shape:
            parts.append(f"wrong shape {_few(wrong_shape)}")
        raise InputError(path, f"weights do not fit {what} (wrong architecture?): {'; '.join(parts)}")
    module.load_state_dict(state, strict=True)


__all__ = [
    "IMAGENET_WEIGHTS",
    "download_weights",
    "imagenet_cache_path",
    "imagenet_weights_url",
    "load_state_dict_file",
    "load_state_into",
    "read_torch_file",
]
