"""Global image descriptors and nearest-neighbour search."""

from . import cnn, relpose, vlad  # noqa: F401  (registers the plug-ins)
from .index import GlobalIndex
from .registry import global_descriptors

__all__ = ["GlobalIndex", "global_descriptors"]
