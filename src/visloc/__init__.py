"""visloc: find where a photo was taken and what it matches.

The package is organised by pipeline stage (see ``DESIGN.md``):

* :mod:`visloc.geometry` -- :class:`~visloc.geometry.Pose` (world-to-camera), :class:`~visloc.geometry.Camera`,
  robust solvers, pose fusion.
* :mod:`visloc.io` -- hloc-compatible pose / pairs / HDF5 files, image loading, atomic writes.
* :mod:`visloc.datasets` -- one reader per format plus the embedded synthetic world.
* :mod:`visloc.features`, :mod:`visloc.matching`, :mod:`visloc.retrieval` -- local features, matching,
  global descriptors and search.
* :mod:`visloc.localization` -- map building and query localization.
* :mod:`visloc.models` -- the neural networks; :mod:`visloc.semantic` -- semantic matching (matchers, data,
  predictions); :mod:`visloc.training` -- their training.
* :mod:`visloc.evaluation`, :mod:`visloc.viz` -- metrics and reports.
"""

__version__ = "0.1.0"
