"""Descriptor matchers, selected by name from :data:`matchers`."""

from .nearest_neighbor import Matches, NearestNeighborMatcher, NNConfig
from .registry import matchers

__all__ = ["Matches", "NNConfig", "NearestNeighborMatcher", "matchers"]
