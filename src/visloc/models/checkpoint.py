"""Checkpoints of the models visloc trains: :func:`save_model`, :func:`read_checkpoint`, :func:`load_model`.

A checkpoint holds plain data only::

    {"state_dict": {...}, "config": {"model": "relpose", **dataclasses.asdict(config)},
     "versions": {"visloc": ..., "torch": ..., "torchvision": ...}, "metrics": {...}}

so it loads with ``weights_only=True``; the model is rebuilt from ``config`` through the
:data:`~visloc.models.registry.networks` registry, without reading any pretrained weights (the state dict
replaces them).
"""

from __future__ import annotations

import dataclasses
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..errors import ConfigError, InputError
from ..io.atomic import atomic_path
from ..registry import config_to_dict
from . import backbones, cnngeometric, dense, posenet, relpose, retrieval_net  # noqa: F401  (register the networks)
from .registry import networks
from .weights import load_state_into, read_torch_file

#: Checkpoint keys written by :func:`save_model`.
CHECKPOINT_KEYS = ("state_dict", "config", "versions", "metrics")


def _network_name(config: Any) -> str:
    for name in networks.names():
        if type(config) is networks.entry(name).config_cls:
            return name
    raise ConfigError(
        f"{type(config).__name__} is not the config of a registered network ({networks.names()})"
    )


def config_from_dict(config_cls: type, values: Mapping[str, Any]) -> Any:
    """Rebuild a (possibly nested) config dataclass from :func:`~visloc.registry.config_to_dict` output.

    Unknown keys raise :class:`ConfigError`; missing keys take the field defaults.
    """
    fields = {f.name: f for f in dataclasses.fields(config_cls)}
    unknown = sorted(set(values) - set(fields))
    if unknown:
        raise ConfigError(f"unknown option(s) {unknown} for {config_cls.__name__}; known: {sorted(fields)}")
    hints = typing.get_type_hints(config_cls)
    kwargs = {}
    for key, value in values.items():
        hint = hints.get(key)
        if isinstance(hint, type) and dataclasses.is_dataclass(hint) and isinstance(value, Mapping):
            value = config_from_dict(hint, value)
        elif isinstance(value, list) and typing.get_origin(hint) is tuple:
            value = tuple(value)
        kwargs[key] = value
    return config_cls(**kwargs)


def _versions() -> dict[str, str]:
    import torchvision

    from .. import __version__

    return {
        "visloc": str(__version__),
        "torch": str(torch.__version__),
        "torchvision": str(torchvision.__version__),
    }


def save_model(
    path: str | Path, model: nn.Module, config: Any, metrics: Mapping[str, Any] | None = None
) -> Path:
    """Write a checkpoint that :func:`load_model` rebuilds without the code that trained it.

    Args:
        path: output file (``.pt``); written atomically.
        model: the network, any device (tensors are saved on the CPU).
        config: its config dataclass (a registered :data:`~visloc.models.registry.networks` config, e.g. ``RelPoseConfig``).
        metrics: plain numbers / strings to keep with the weights (validation errors, epochs ...).

    Returns:
        ``path``.
    """
    path = Path(path)
    checkpoint = {
        "state_dict": {k: v.detach().cpu().clone() for k, v in model.state_dict().items()},
        "config": {"model": _network_name(config), **config_to_dict(config)},
        "versions": _versions(),
        "metrics": dict(metrics or {}),
    }
    with atomic_path(path) as tmp:
        torch.save(checkpoint, tmp)
    return path


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """The raw checkpoint written by :func:`save_model` (read with ``weights_only=True``)."""
    path = Path(path).expanduser()
    checkpoint = read_torch_file(path, "checkpoint")
    if (
        not isinstance(checkpoint, dict)
        or not isinstance(checkpoint.get("state_dict"), Mapping)
        or "config" not in checkpoint
    ):
        raise InputError(path, "not a visloc model checkpoint (expected keys 'state_dict' and 'config')")
    config = checkpoint["config"]
    if not isinstance(config, dict) or "model" not in config:
        raise InputError(path, "checkpoint config does not name its model ('model' key)")
    return checkpoint


def load_model(path: str | Path, device: str | torch.device = "cpu") -> nn.Module:
    """Rebuild a network saved by :func:`save_model` and load its weights.

    The architecture comes from the embedded config through :data:`~visloc.models.registry.networks`; no pretrained weights are
    read (a config that says ``weights="imagenet"`` does not need the hub cache here).

    Args:
        path: the checkpoint.
        device: where to put the model.

    Returns:
        The model in eval mode; its config is ``model.config``.
    """
    path = Path(path).expanduser()
    return model_from_checkpoint(read_checkpoint(path), path, device)


def model_from_checkpoint(checkpoint: Mapping[str, Any], path: str | Path,
                          device: str | torch.device = "cpu") -> nn.Module:
    """:func:`load_model` of a checkpoint already read with :func:`read_checkpoint` (``path`` names it in
    errors), for callers that also need its ``metrics``."""
    path = Path(path)
    options = dict(checkpoint["config"])
    name = options.pop("model")
    try:
        entry = networks.entry(name)
        config = config_from_dict(entry.config_cls, options)
        model = entry.factory(config, load_weights=False)
    except ConfigError as e:
        raise InputError(path, f"checkpoint config cannot be used: {e}") from None
    load_state_into(model, checkpoint["state_dict"], path, f"network {name!r}")
    return model.to(device).eval()


__all__ = [
    "CHECKPOINT_KEYS",
    "config_from_dict",
    "load_model",
    "model_from_checkpoint",
    "read_checkpoint",
    "save_model",
]
