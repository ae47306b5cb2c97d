"""Fusing per-database-image estimates into one query pose.

Two kinds of evidence come from the retrieved database images:

* **Rays** (relative poses: from the essential matrix, or regressed by a network): database image i,
  with known centre ``C_i``, says the query centre lies on the ray ``C_i + s d_i`` (``d_i`` in world
  coordinates) and that the query rotation is ``R_q^i``.
* **Absolute poses** (PnP against database 3D points): :func:`consensus_of_poses` groups hypotheses
  that agree and reports the supporting images.

Three fusions of rays
---------------------
:func:`fuse_original` (:mod:`.original`)
    ``filter_pose.m`` of Laskar et al. (ICCVW 2017, Publication V), step by step, for any N >= 1 (the
    MATLAB hard-wires N = 5). It takes what the MATLAB takes: database centres and camera-to-world
    rotations, the regressed relative rotations and the regressed translations.
:func:`fuse_rays` (:mod:`.rays`)
    visloc's exhaustive pairwise consensus on world rays (the same skeleton without the quirks listed in
    :mod:`.original`, with a parallax limit and an optional signed test); used by
    ``localize --method essential``.
:func:`fuse_rays_ransac` (:mod:`.ransac`)
    The generalisation for any N: pairs of rays sampled at random, scored by inlier count with a
    truncated-residual tie-break, the centre re-estimated by least squares from all inlier rays and the
    rotation by the L1 mean of the inlier rotations; deterministic by seed. With at most
    ``exhaustive_up_to`` (default 8) usable rays it enumerates all pairs instead of sampling (at most 28
    pairs, fewer than the samples the confidence bound would ask for at high outlier ratios).

And one fusion of metric offsets: :func:`fuse_metric` (:mod:`.metric`), for networks whose regressed
translations are trusted in scale (every image gives a full centre hypothesis, no rays).

Why a separate :func:`fuse_original` and not a preset of :func:`fuse_rays`: the original's quirks
live in inputs :func:`fuse_rays` never sees. Its z = 1 normalisation happens in each *database
camera's* frame (so it needs the database rotations), its rotation hypotheses are composed from
relative rotations, a hypothesis that sits on a database centre gets a NaN residual, and "parallel" means
a singular 3x3 system. Turning these into flags of :func:`fuse_rays` would leave the flags on the
essential-matrix path that must never set them. :func:`fuse_original` shares the small helpers
(:func:`hypotheses_from_relative_poses`, the rotation vote) and returns the same :class:`FusedPose`.

Modules: :mod:`.common` (:class:`FusedPose`, :func:`triangulate_rays`,
:func:`hypotheses_from_relative_poses`), :mod:`.consensus` (rotation votes and consensus,
:func:`consensus_of_poses`), and one module per fusion.
"""

from .common import FusedPose, hypotheses_from_relative_poses, triangulate_rays
from .consensus import PoseConsensusConfig, consensus_of_poses
from .metric import MetricFusionConfig, fuse_metric
from .original import fuse_original
from .ransac import RansacRayFusionConfig, fuse_rays_ransac
from .rays import RayFusionConfig, fuse_rays

__all__ = [
    "FusedPose",
    "MetricFusionConfig",
    "PoseConsensusConfig",
    "RansacRayFusionConfig",
    "RayFusionConfig",
    "consensus_of_poses",
    "fuse_metric",
    "fuse_original",
    "fuse_rays",
    "fuse_rays_ransac",
    "hypotheses_from_relative_poses",
    "triangulate_rays",
]
