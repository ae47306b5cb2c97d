"""Local feature extractors, selected by name from :data:`extractors`.

>>> from visloc.features import extractors
>>> sift = extractors.create("sift", max_keypoints=2048)
"""

from . import aliked, sift  # noqa: F401  (registers the plug-ins)
from .base import LocalFeatureExtractor, LocalFeatures
from .registry import extractors

__all__ = ["LocalFeatureExtractor", "LocalFeatures", "extractors"]
