"""The registry of local-feature extractors (``sift``, ``aliked`` ...)."""

from __future__ import annotations

from ..registry import Registry
from .base import LocalFeatureExtractor

extractors: Registry[LocalFeatureExtractor] = Registry("local feature extractor")
