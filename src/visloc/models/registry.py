"""The trainable networks by name: what :func:`~visloc.models.checkpoint.load_model` can rebuild.

Network modules register their factory with their config class::

    @networks.register("relpose", RelPoseConfig)
    class RelPoseNet(nn.Module): ...

Factories are called as ``factory(config, load_weights=True)``; ``load_weights=False`` builds the
architecture only (a checkpoint's state dict then replaces the random weights).
"""

from __future__ import annotations

from torch import nn

from ..registry import Registry

#: Trainable networks that :func:`~visloc.models.checkpoint.load_model` can rebuild from a checkpoint.
networks: Registry[nn.Module] = Registry("network")

__all__ = ["networks"]
