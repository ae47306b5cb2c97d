"""The registry of global image descriptors (``vlad`` ...)."""

from __future__ import annotations

from ..registry import Registry

global_descriptors: Registry = Registry("global descriptor")
