"""Fusing per-database-image estimates into one query pose.

Two kinds of evidence come from the retrieved database images:

* **Rays** (relative poses: from the essential matrix, or regressed by a network): database image i,
  with known centre ``C_i``, says the query centre lies on the ray ``C_i + s d_i`` (``d_i`` in world
  coordinates) and that the query rotation is ``R_q^i``.
* **Absolute poses** (PnP against database 3D points): :func:`consensus_of_poses` groups hypotheses
  that agree and reports the supporting images.

Three fusions of rays
---------------------
:func:`fuse_original`
    ``filter_pose.m`` of Laskar et al. (ICCVW 2017, Publication V), step by step, for any N >= 1 (the
    MATLAB hard-wires N = 5). It takes what the MATLAB takes: database centres and camera-to-world
    rotations, the regressed relative rotations and the regressed translations.
:func:`fuse_rays`
    visloc's exhaustive pairwise consensus on world rays (the same skeleton without the quirks below,
    with a parallax limit and an optional signed test); used by ``localize --method essential``.
:func:`fuse_rays_ransac`
    The generalisation for any N: pairs of rays sampled at random, scored by inlier count with a
    truncated-residual tie-break, the centre re-estimated by least squares from all inlier rays and the
    rotation by the L1 mean of the inlier rotations; deterministic by seed. With at most
    ``exhaustive_up_to`` (default 8) usable rays it enumerates all pairs instead of sampling (at most 28
    pairs, fewer than the samples the confidence bound would ask for at high outlier ratios).

Why a separate :func:`fuse_original` and not a preset of :func:`fuse_rays`: the original's quirks
live in inputs :func:`fuse_rays` never sees. Its z = 1 normalisation happens in each *database
camera's* frame (so it needs the database rotations), its rotation hypotheses are composed from
relative rotations, a hypothesis that sits on a database centre gets a NaN residual, and "parallel" means
a singular 3x3 system. Turning these into flags of :func:`fuse_rays` would leave the flags on the
essential-matrix path that must never set them. :func:`fuse_original` shares the small helpers
(:func:`hypotheses_from_relative_poses`, the rotation vote) and returns the same :class:`FusedPose`.

``filter_pose.m`` step by step (``utils/triangmidpoints.m``, ``utils/dqq_*.m``), as implemented here
-----------------------------------------------------------------------------------------------------
1. Rotation hypotheses ``R_q^i = R_i rot(q_i / |q_i|)`` (camera-to-world; ``q_i`` = ``R_i^-1 R_q``).
2. ``d_i = t_i / |t_i|`` is the world-frame direction from ``C_i`` towards the query.
3. Every pair ``i < j`` (MATLAB order (1,2), (1,3), (2,3), (1,4), ...) is triangulated with the midpoint
   formula ``X = [(I - D_i D_i^T) + (I - D_j D_j^T)]^-1 [(I - D_i D_i^T) C_i + (I - D_j D_j^T) C_j]``.
   ``D`` is **not** ``d``: the MATLAB rotates ``d`` into database camera i's frame
   (``t = R_i^T d``), divides by its z component, and ``triangmidpoints`` rotates ``[t_x/t_z, t_y/t_z, 1]``
   back and normalises it. The result is ``sign(t_z) d``, so the hypothesis does not depend on the
   ray's sign (the midpoint formula does not anyway). The z is the component along the database
   camera's *optical axis*, not world z:

   * ``t_z == 0`` exactly (the query straight sideways of the database camera): the division gives
     inf/NaN, so every pair with that ray is NaN and the ray gives no hypothesis, although it still
     votes in step 5. Two perfectly good rays, one of them sideways, therefore give "all NaN".
   * ``t_z`` near 0 but non-zero: harmless; ``[t_x/t_z, t_y/t_z, 1]`` normalises back to ``±d`` to
     rounding. Only below about 1e-154 relative does squaring overflow (``D`` becomes 0 or NaN); that is
     reproduced by doing the same floating-point operations, and it is unreachable from real data.
   * Parallel rays: the MATLAB inverts the 3x3 matrix by cofactors and gets NaN (or inf) only when its
     determinant is *exactly* zero; rounding turns most parallel pairs into huge finite points. Here a
     pair is NaN when the condition number of the matrix exceeds 1e12 (rays within about 1e-4 degrees of
     parallel), which is what the MATLAB comment ("NaN can arise when ... the same direction") means.
4. If every hypothesis is NaN (no pairs at all when N = 1), the position is the first database centre.
   Otherwise NaN hypotheses are dropped.
5. Each hypothesis ``X_h`` is scored by the number of rays ``k`` with
   ``2 acos(|unit(X_h - C_k) . d_k|) < 20`` degrees: the ray *line* passes within 10 degrees, either
   direction (sign-agnostic; the factor 2 comes from the quaternion-angle formula). A hypothesis exactly
   on ``C_k`` gives ``0/0 = NaN`` there and ray k is not its inlier. The ``d_k`` here is the plain unit
   direction, not ``D``.
6. The best score wins; several hypotheses with the best score are averaged (arithmetic mean).
7. Each rotation hypothesis gets one vote from every *other* one within ``2 acos(|q_h . q_k|) < 20``
   degrees (the rotation angle, so 20 degrees, whatever the MATLAB comment says); the most votes win,
   several winners are L1-averaged (:func:`~visloc.geometry.rotation_averaging.l1_rotation_average`).

Where the MATLAB as written does something else (not reproduced; a per-query function cannot, or
should not):

* Step 4 tests ``numel(find(isnan(trans_tmp))) == 10``: it counts NaN *entries* of the 10x3 matrix, so
  ten NaN rows (30 entries) take the other branch, drop every row and then index the empty matrix (an
  error). Implemented: the evident intent, "all hypotheses NaN".
* Step 6 keeps ``inlier_cnt_T`` at length 10 after NaN rows are dropped; if the best score is 0, the
  zero counts of dropped rows join the tie and index past the end (an error). Implemented: the tie is
  among the valid hypotheses (with a best score of 0 every valid hypothesis is averaged, as the MATLAB
  does when nothing was dropped).
* Step 7: ``dqq_L1_mean_rotation_matrix.m`` stops after its first update and returns its initialisation
  (see :mod:`visloc.geometry.rotation_averaging`), so the MATLAB's tied rotations are really averaged by
  the sign-aligned quaternion mean; ``tie_rotation_mean="quaternion"`` gives that, the default ``"l1"``
  gives the L1 mean the code and the paper name. Also ``R_inl`` is never cleared between queries, so
  whenever fewer rotations tie than in some earlier query, stale rotations of that earlier query join
  the average. That is history-dependent and not reproduced.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ..geometry.pose import Pose
from ..geometry.rotation import matrix_to_quat, quat_angle_deg, quat_to_matrix, rotation_angle_deg
from ..geometry.rotation_averaging import l1_rotation_average, quaternion_mean

#: Condition number above which a pair of rays counts as parallel (pair angle below about 1.1e-4 deg).
_PARALLEL_COND = 1e12


@dataclass(frozen=True)
class RayFusionConfig:
    """Attributes:
    ray_angle_deg: a ray supports a centre hypothesis when the angle between the ray and the
        direction from its origin to the hypothesis is below this (the original uses
        ``2 acos(|cos|) < 20``, i.e. 10 degrees, sign-agnostic).
    rotation_angle_deg: two rotation hypotheses agree below this angle (original: 20).
    sign_agnostic: treat rays as lines (the original: a regressed direction has no reliable sign);
        geometric rays from the essential matrix have a sign, so ``False`` is stricter there.
    min_parallax_deg: ray pairs closer to parallel than this give no hypothesis.
    fallback_to_first: with no valid centre hypothesis, return the first database centre (the original
        behaviour) instead of failing.
    """

    ray_angle_deg: float = 10.0
    rotation_angle_deg: float = 20.0
    sign_agnostic: bool = True
    min_parallax_deg: float = 0.5
    fallback_to_first: bool = False


@dataclass(frozen=True)
class RansacRayFusionConfig:
    """Thresholds of :func:`fuse_rays_ransac`.

    Attributes:
        ray_angle_deg: a ray is an inlier of a centre when the angle between it and the direction from
            its origin to the centre is below this (10 = the original's ``2 acos(|cos|) < 20``).
        rotation_angle_deg: a rotation hypothesis is an inlier of another below this angle (original: 20).
        sign_agnostic: rays are lines (the original) or, when ``False``, a ray pointing away from the
            centre is an outlier (geometric rays from the essential matrix).
        max_iterations: random pair samples at most.
        confidence: stop sampling once the probability of having drawn an all-inlier pair, at the
            best inlier ratio so far, reaches this.
        seed: seed of the pair sampler (the result is a function of the inputs and the seed).
        min_support: the best centre needs at least this many inlier rays, else the fusion fails (or
            falls back, see ``fallback_to_first``).
        exhaustive_up_to: with at most this many usable rays every pair is tried (in order) instead of
            sampling; the seed then plays no part.
        min_parallax_deg: ray pairs closer to parallel than this give no hypothesis.
        residual_tie_break: among centres with the same inlier count prefer the smaller sum of angular
            residuals truncated at ``ray_angle_deg`` (MSAC); ``False``: the first one found.
        refine_iterations: least-squares re-estimations from the inlier rays, each followed by a new
            inlier test (stops when the inlier set no longer grows or changes).
        fallback_to_first: with no centre of enough support, return the first database centre instead
            of failing (the original's fallback).
    """

    ray_angle_deg: float = 10.0
    rotation_angle_deg: float = 20.0
    sign_agnostic: bool = True
    max_iterations: int = 1000
    confidence: float = 0.999
    seed: int = 0
    min_support: int = 2
    exhaustive_up_to: int = 8
    min_parallax_deg: float = 0.5
    residual_tie_break: bool = True
    refine_iterations: int = 5
    fallback_to_first: bool = False

    def __post_init__(self) -> None:
        if not (self.ray_angle_deg > 0 and self.rotation_angle_deg > 0):
            raise ValueError("angle thresholds must be positive")
        if not 0.0 < self.confidence < 1.0:
            raise ValueError(f"confidence must be in (0, 1), got {self.confidence}")
        if self.max_iterations < 1 or self.min_support < 1 or self.refine_iterations < 0:
            raise ValueError("max_iterations and min_support must be >= 1, refine_iterations >= 0")


@dataclass(frozen=True, eq=False)
class FusedPose:
    """A fused estimate.

    Attributes:
        pose: the query ``cam_from_world`` or ``None`` when it cannot be determined.
        position_support: ``(N,)`` mask of the rays / images that support the position.
        rotation_support: ``(N,)`` mask of the rotation hypotheses that support the rotation.
        hypotheses: ``(K, 3)`` centre hypotheses, one per tried pair of rays (NaN where the pair gave
            none), or ``None`` where not recorded.
        hypothesis_pairs: ``(K, 2)`` the ray indices of each hypothesis.
        hypothesis_scores: ``(K,)`` inlier counts of the hypotheses (0 for NaN ones).
        position_chosen: ``(K,)`` the hypotheses the position was made from (the averaged tie of the
            original; the best sample of RANSAC, before its least-squares re-estimation).
        rotation_votes: ``(N,)`` how many *other* rotation hypotheses agree with each one.
        rotation_chosen: ``(N,)`` the rotation hypotheses averaged (or taken) into the rotation.
        fallback: the position is the first database centre because no centre could be formed.
    """

    pose: Pose | None
    position_support: np.ndarray
    rotation_support: np.ndarray
    hypotheses: np.ndarray | None = None
    hypothesis_pairs: np.ndarray | None = None
    hypothesis_scores: np.ndarray | None = None
    position_chosen: np.ndarray | None = None
    rotation_votes: np.ndarray | None = None
    rotation_chosen: np.ndarray | None = None
    fallback: bool = False

    @property
    def num_support(self) -> int:
        return int(self.position_support.sum())


def triangulate_rays(centers: np.ndarray, directions: np.ndarray, min_parallax_deg: float = 0.0) -> np.ndarray | None:
    """Least-squares point closest to several rays (midpoint for two).

    Solves ``sum_i (I - d_i d_i^T) X = sum_i (I - d_i d_i^T) C_i`` (``triangmidpoints.m``).

    Args:
        centers: ``(N, 3)`` ray origins.
        directions: ``(N, 3)`` ray directions (any length; the sign does not matter).
        min_parallax_deg: ``None`` is returned when all rays are within this angle of parallel.

    Returns:
        ``(3,)`` point or ``None`` for (near-)parallel rays.
    """
    d = np.asarray(directions, dtype=np.float64)
    d = d / np.linalg.norm(d, axis=1, keepdims=True)
    c = np.asarray(centers, dtype=np.float64)
    cos = np.abs(d @ d.T)
    if np.degrees(np.arccos(np.clip(cos.min(), -1.0, 1.0))) <= max(min_parallax_deg, 1e-6):
        return None
    P = np.eye(3)[None] - d[:, :, None] * d[:, None, :]
    A = P.sum(axis=0)
    b = np.einsum("nij,nj->i", P, c)
    if np.linalg.cond(A) > _PARALLEL_COND:
        return None
    return np.linalg.solve(A, b)


def _ray_angles_deg(point: np.ndarray, centers: np.ndarray, directions: np.ndarray, sign_agnostic: bool) -> np.ndarray:
    u = point[None] - centers
    norms = np.linalg.norm(u, axis=1)
    u = u / np.maximum(norms, 1e-12)[:, None]
    cos = np.sum(u * directions, axis=1)
    if sign_agnostic:
        cos = np.abs(cos)
    angles = np.degrees(np.arccos(np.clip(cos, -1.0, 1.0)))
    angles[norms < 1e-12] = 0.0  # the hypothesis sits on the ray origin: consistent with that ray
    return angles


def _vote_rotations(rotations: np.ndarray, threshold_deg: float) -> tuple[np.ndarray, np.ndarray]:
    """``(N, N)`` agreement (self excluded) by the quaternion angle ``2 acos(|q_h . q_k|)``, and the votes."""
    q = matrix_to_quat(rotations)
    agree = quat_angle_deg(q[:, None], q[None]) < threshold_deg
    np.fill_diagonal(agree, False)
    return agree, agree.sum(axis=1)


def _as_rotations(x: np.ndarray, name: str) -> np.ndarray:
    """``(N, 3, 3)`` matrices, or ``(N, 4)`` w-first quaternions of any non-zero length."""
    x = np.asarray(x, dtype=np.float64)
    if not np.all(np.isfinite(x)):
        raise ValueError(f"{name} contains NaN or infinite values")
    if x.ndim == 2 and x.shape[1] == 4:
        norms = np.linalg.norm(x, axis=1)
        if np.any(norms == 0):
            raise ValueError(f"{name}: zero quaternion")
        return quat_to_matrix(x / norms[:, None])
    if x.ndim == 3 and x.shape[1:] == (3, 3):
        return x
    raise ValueError(f"{name}: expected (N, 4) quaternions or (N, 3, 3) matrices, got {x.shape}")


def hypotheses_from_relative_poses(
    db_rotations: np.ndarray, relative_rotations: np.ndarray, translations: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Per-image query hypotheses from regressed relative poses (Publication V conventions).

    Args:
        db_rotations: ``(N, 3, 3)`` camera-to-world rotations ``R_i`` of the database images, or
            ``(N, 4)`` w-first quaternions of them.
        relative_rotations: ``(N, 4)`` w-first quaternions (normalised here; the network output) or
            ``(N, 3, 3)`` matrices of ``R_i^-1 R_q`` (camera-to-world rotations).
        translations: ``(N, 3)`` world-frame vectors from each database centre towards the query
            (any length; a zero vector gives a NaN direction, which supports nothing).

    Returns:
        ``(N, 3)`` unit world directions and ``(N, 3, 3)`` camera-to-world query rotation hypotheses
        ``R_q^i = R_i rot(q_i)`` (transpose them for ``cam_from_world``).
    """
    R_db = _as_rotations(db_rotations, "db_rotations")
    R_rel = _as_rotations(relative_rotations, "relative_rotations")
    t = np.asarray(translations, dtype=np.float64)
    if t.ndim != 2 or t.shape[1] != 3 or not (len(t) == len(R_db) == len(R_rel)):
        raise ValueError(f"expected N rotations, N relative rotations and (N, 3) translations, got "
                         f"{R_db.shape}, {R_rel.shape}, {t.shape}")
    if not np.all(np.isfinite(t)):
        raise ValueError("translations contain NaN or infinite values")
    with np.errstate(divide="ignore", invalid="ignore"):
        d = t / np.linalg.norm(t, axis=1, keepdims=True)
    return d, R_db @ R_rel


def _z_normalised_directions(d: np.ndarray, R_db: np.ndarray) -> np.ndarray:
    """The ray directions ``triangmidpoints.m`` uses, by the MATLAB's own floating-point operations.

    ``t = R^T d`` (database camera frame), ``m = t / t_z``, ``X = R [m_x, m_y, 1]``, ``D = X / |X|``:
    ``±d`` for ``t_z != 0``, NaN for ``t_z == 0``.
    """
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        t = np.einsum("nji,nj->ni", R_db, d)
        m = t / t[:, 2:3]
        h = np.stack([m[:, 0], m[:, 1], np.ones(len(m))], axis=1)
        X = np.einsum("nij,nj->ni", R_db, h)
        return X / np.sqrt(np.sum(X**2, axis=1, keepdims=True))


def _midpoint_original(c1: np.ndarray, D1: np.ndarray, c2: np.ndarray, D2: np.ndarray) -> np.ndarray:
    """``triangmidpoints.m`` for one pair (``D`` used as given, not re-normalised); NaN when undefined."""
    nan = np.full(3, np.nan)
    if not (np.all(np.isfinite(D1)) and np.all(np.isfinite(D2))):
        return nan
    A = 2.0 * np.eye(3) - np.outer(D1, D1) - np.outer(D2, D2)
    b = c1 + c2 - (c1 @ D1) * D1 - (c2 @ D2) * D2
    if np.linalg.cond(A) > _PARALLEL_COND:
        return nan
    return np.linalg.solve(A, b)


def _original_inliers(point: np.ndarray, centers: np.ndarray, d: np.ndarray, threshold: float) -> np.ndarray:
    """``2 acos(|unit(X - C_k) . d_k|) < threshold`` in degrees; NaN residuals (X on C_k, NaN d_k) fail."""
    with np.errstate(divide="ignore", invalid="ignore"):
        u = point[None] - centers
        u = u / np.sqrt(np.sum(np.abs(u) ** 2, axis=1, keepdims=True))
        cos = np.abs(np.sum(u * d, axis=1))
        # MATLAB's acos of 1 + eps is complex and "<" compares its real part (0): clip like that
        residual = 2.0 * np.degrees(np.arccos(np.minimum(cos, 1.0)))
        return residual < threshold


def fuse_original(
    db_centers: np.ndarray,
    db_rotations: np.ndarray,
    relative_rotations: np.ndarray,
    translations: np.ndarray,
    *,
    ray_threshold_deg: float = 20.0,
    rotation_threshold_deg: float = 20.0,
    tie_rotation_mean: str = "l1",
) -> FusedPose:
    """The pose fusion of ``filter_pose.m`` (Laskar et al. ICCVW 2017) for one query, any N >= 1.

    See the module notes for the steps and for every place the MATLAB differs.

    Args:
        db_centers: ``(N, 3)`` centres ``C_i`` of the retrieved database images (world), in retrieval
            order (the first one is the fallback position).
        db_rotations: ``(N, 3, 3)`` camera-to-world rotations ``R_i`` (or ``(N, 4)`` w-first quaternions).
        relative_rotations: ``(N, 4)`` regressed w-first quaternions of ``R_i^-1 R_q`` (normalised here)
            or ``(N, 3, 3)`` matrices.
        translations: ``(N, 3)`` regressed world-frame vectors from ``C_i`` towards the query.
        ray_threshold_deg: compared with ``2 acos(|cos|)``; 20 means a 10-degree cone around the line.
        rotation_threshold_deg: compared with ``2 acos(|q_h . q_k|)``, the rotation angle.
        tie_rotation_mean: ``"l1"`` (Weiszfeld to convergence, the algorithm the MATLAB names) or
            ``"quaternion"`` (the sign-aligned quaternion mean the MATLAB really returns).

    Returns:
        The fused pose (never ``None``) with ``hypotheses`` / ``hypothesis_pairs`` in the MATLAB's pair
        order, ``hypothesis_scores``, ``position_chosen`` (the averaged best hypotheses),
        ``position_support`` (the union of their inlier rays; the first image alone on fallback),
        ``rotation_votes``, ``rotation_chosen`` (the averaged best rotation hypotheses) and
        ``rotation_support`` (those and every hypothesis agreeing with one of them).
    """
    if tie_rotation_mean not in ("l1", "quaternion"):
        raise ValueError(f"tie_rotation_mean must be 'l1' or 'quaternion', got {tie_rotation_mean!r}")
    C = np.asarray(db_centers, dtype=np.float64)
    d, R_wc = hypotheses_from_relative_poses(db_rotations, relative_rotations, translations)
    n = len(d)
    if C.shape != (n, 3) or n == 0 or not np.all(np.isfinite(C)):
        raise ValueError(f"expected finite (N, 3) centres for N = {n} >= 1 images, got {C.shape}")
    R_db = _as_rotations(db_rotations, "db_rotations")

    # steps 2-3: z-normalised directions, every pair in the MATLAB's order
    D = _z_normalised_directions(d, R_db)
    pairs = np.array([(i, j) for j in range(1, n) for i in range(j)], dtype=np.int64).reshape(-1, 2)
    H = np.stack([_midpoint_original(C[i], D[i], C[j], D[j]) for i, j in pairs]) if len(pairs) else np.zeros((0, 3))
    valid = np.all(np.isfinite(H), axis=1)

    # steps 4-6: fallback, consensus, average of the tied best
    scores = np.zeros(len(H), dtype=np.int64)
    chosen = np.zeros(len(H), dtype=bool)
    position_support = np.zeros(n, dtype=bool)
    if not valid.any():
        position, fallback = C[0], True
        position_support[0] = True
    else:
        fallback = False
        inliers = np.zeros((len(H), n), dtype=bool)
        for h in np.flatnonzero(valid):
            inliers[h] = _original_inliers(H[h], C, d, ray_threshold_deg)
        scores = inliers.sum(axis=1)
        chosen = valid & (scores == scores[valid].max())
        position = H[chosen].mean(axis=0) if chosen.sum() > 1 else H[chosen][0]
        position_support = inliers[chosen].any(axis=0)

    # step 7: rotation votes, average of the tied best
    agree, votes = _vote_rotations(R_wc, rotation_threshold_deg)
    tied = votes == votes.max()
    if tied.sum() > 1:
        R_q = l1_rotation_average(R_wc[tied]) if tie_rotation_mean == "l1" else quaternion_mean(R_wc[tied])
    else:
        R_q = R_wc[tied][0]
    pose = Pose.from_world_from_cam(R_q, position)
    return FusedPose(
        pose, position_support, tied | agree[tied].any(axis=0),
        hypotheses=H, hypothesis_pairs=pairs, hypothesis_scores=scores, position_chosen=chosen,
        rotation_votes=votes, rotation_chosen=tied, fallback=fallback,
    )


def fuse_rays(
    centers: np.ndarray, directions: np.ndarray, rotations: np.ndarray, config: RayFusionConfig = RayFusionConfig()
) -> FusedPose:
    """Fuse relative-pose evidence from N database images into one pose (exhaustive pairwise consensus).

    The skeleton of ``filter_pose.m`` on world rays: every pair of rays is triangulated into a centre
    hypothesis, each hypothesis is scored by the number of rays that pass within ``ray_angle_deg`` of
    it, the best (ties averaged) wins; rotations vote by mutual angle and tied winners are L1-averaged.
    Unlike :func:`fuse_original` it has no z-normalisation, drops pairs below ``min_parallax_deg``,
    counts a hypothesis on a ray's origin as consistent with that ray, can test signed rays, and by
    default fails instead of falling back to the first centre.

    Args:
        centers: ``(N, 3)`` database camera centres (world).
        directions: ``(N, 3)`` world-frame directions from each database centre towards the query.
        rotations: ``(N, 3, 3)`` query rotation hypotheses ``R_q^i`` (``cam_from_world``).
        config: thresholds.

    Returns:
        The fused pose (``None`` when no pair of rays gives a hypothesis and no fallback is allowed).
    """
    centers = np.asarray(centers, dtype=np.float64)
    d = np.asarray(directions, dtype=np.float64)
    d = d / np.linalg.norm(d, axis=1, keepdims=True)
    rotations = np.asarray(rotations, dtype=np.float64)
    n = len(centers)
    empty = np.zeros(n, dtype=bool)

    # --- position: triangulate every pair, score by ray consensus, average ties -------------------
    pairs = np.array([(i, j) for i in range(n) for j in range(i + 1, n)], dtype=np.int64).reshape(-1, 2)
    H = np.full((len(pairs), 3), np.nan)
    for k, (i, j) in enumerate(pairs):
        x = triangulate_rays(centers[[i, j]], d[[i, j]], config.min_parallax_deg)
        if x is not None:
            H[k] = x
    valid = np.all(np.isfinite(H), axis=1)
    scores = np.zeros(len(H), dtype=np.int64)
    chosen = np.zeros(len(H), dtype=bool)
    fallback = False
    if valid.any():
        support = np.zeros((len(H), n), dtype=bool)
        for k in np.flatnonzero(valid):
            support[k] = _ray_angles_deg(H[k], centers, d, config.sign_agnostic) < config.ray_angle_deg
        scores = support.sum(axis=1)
        chosen = valid & (scores == scores[valid].max())
        position = H[chosen].mean(axis=0)
        position_support = support[chosen].any(axis=0)
    elif config.fallback_to_first and n:
        position, position_support, fallback = centers[0], empty.copy(), True
        position_support[0] = True
    else:
        return FusedPose(None, empty, empty, hypotheses=H, hypothesis_pairs=pairs, hypothesis_scores=scores,
                         position_chosen=chosen)

    # --- rotation: vote by mutual angle, L1-average ties ------------------------------------------
    if n == 1:
        rotation, rotation_support = rotations[0], np.ones(1, dtype=bool)
        votes, tied = np.zeros(1, dtype=np.int64), np.ones(1, dtype=bool)
    else:
        angles = rotation_angle_deg(rotations[:, None] @ np.swapaxes(rotations[None], -1, -2))
        agree = angles < config.rotation_angle_deg
        np.fill_diagonal(agree, False)
        votes = agree.sum(axis=1)
        tied = votes == votes.max()
        rotation = l1_rotation_average(rotations[tied]) if tied.sum() > 1 else rotations[tied][0]
        rotation_support = tied | agree[tied].any(axis=0)
    pose = Pose.from_world_from_cam(rotation.T, position)
    return FusedPose(pose, position_support, rotation_support, hypotheses=H, hypothesis_pairs=pairs,
                     hypothesis_scores=scores, position_chosen=chosen, rotation_votes=votes,
                     rotation_chosen=tied, fallback=fallback)


def _ransac_iterations(inliers: int, usable: int, confidence: float) -> float:
    """Samples needed to draw an all-inlier pair with ``confidence`` at ``inliers`` of ``usable`` rays."""
    if usable < 2:
        return 0.0
    p = inliers / usable * max(inliers - 1, 0) / (usable - 1)
    if p >= 1.0:
        return 0.0
    if p <= 0.0:
        return math.inf
    return math.log(1.0 - confidence) / math.log(1.0 - p)


def fuse_rays_ransac(
    centers: np.ndarray,
    directions: np.ndarray,
    rotations: np.ndarray,
    config: RansacRayFusionConfig = RansacRayFusionConfig(),
) -> FusedPose:
    """Robust fusion of N rays and rotation hypotheses by RANSAC, then least squares over the inliers.

    Position: pairs of usable rays (finite, non-zero directions) are triangulated into centre
    hypotheses. With at most ``config.exhaustive_up_to`` usable rays every pair is tried in order;
    otherwise pairs are drawn at random (seeded) until the usual confidence bound at the best inlier
    ratio so far is met or ``max_iterations`` is reached. A hypothesis is scored by its inlier count
    (ties: the smaller truncated angular residual sum, if ``residual_tie_break``). The best one's inlier
    rays are then triangulated together by least squares (:func:`triangulate_rays`), re-tested, and
    re-triangulated while the inlier set grows or changes without shrinking (``refine_iterations``).

    Rotation: every hypothesis ``R_q^i`` is a minimal sample (one rotation), so all N are tried; its
    inliers are the hypotheses within ``rotation_angle_deg`` (itself included); the best (most inliers,
    then smaller truncated residual sum, then lower index) gives the inlier set, whose L1 mean
    (:func:`~visloc.geometry.rotation_averaging.l1_rotation_average`) is re-tested and re-averaged in
    the same way as the centre. Rotations are fused independently of the rays, as in the original.

    Args:
        centers: ``(N, 3)`` database camera centres (world).
        directions: ``(N, 3)`` world-frame directions from each database centre towards the query (any
            length; rows that are zero or not finite are never sampled and never inliers).
        rotations: ``(N, 3, 3)`` query rotation hypotheses (``cam_from_world``).
        config: thresholds, sampling and seed.

    Returns:
        The fused pose; ``position_support`` holds the rays of the final least-squares centre and
        ``rotation_support`` (= ``rotation_chosen``) the rotations of the final L1 mean.
        ``hypotheses`` / ``hypothesis_pairs`` / ``hypothesis_scores`` list the tried pairs in order and
        ``position_chosen`` marks the winning sample. With fewer than ``min_support`` inlier rays for
        the best centre (all rays parallel, N < 2, ...) ``pose`` is ``None`` and both supports are
        empty, unless ``fallback_to_first``: then the centre is the first database centre
        (``fallback`` set, support = the first image) and the rotation is fused as usual.
    """
    C = np.asarray(centers, dtype=np.float64)
    R = np.asarray(rotations, dtype=np.float64)
    raw = np.asarray(directions, dtype=np.float64)
    n = len(C)
    if C.shape != (n, 3) or raw.shape != (n, 3) or R.shape != (n, 3, 3):
        raise ValueError(f"expected (N, 3) centres and directions and (N, 3, 3) rotations, got "
                         f"{C.shape}, {raw.shape}, {R.shape}")
    with np.errstate(divide="ignore", invalid="ignore"):
        d = raw / np.linalg.norm(raw, axis=1, keepdims=True)
    usable = np.all(np.isfinite(d), axis=1) & np.all(np.isfinite(C), axis=1)
    idx = np.flatnonzero(usable)
    thr = config.ray_angle_deg

    def score(x: np.ndarray) -> tuple[np.ndarray, float]:
        angles = np.full(n, np.inf)
        angles[usable] = _ray_angles_deg(x, C[usable], d[usable], config.sign_agnostic)
        return angles < thr, float(np.minimum(angles[usable], thr).sum())

    # --- hypotheses: all pairs for small N, else seeded random pairs with adaptive stopping -----
    tried: list[tuple[int, int]] = []
    H: list[np.ndarray] = []
    scores: list[int] = []
    best: tuple[int, float] | None = None
    best_k, best_inliers, best_x = -1, np.zeros(n, dtype=bool), None

    def consider(i: int, j: int) -> None:
        nonlocal best, best_k, best_inliers, best_x
        tried.append((i, j))
        x = triangulate_rays(C[[i, j]], d[[i, j]], config.min_parallax_deg)
        if x is None:
            H.append(np.full(3, np.nan))
            scores.append(0)
            return
        inl, residual = score(x)
        H.append(x)
        scores.append(int(inl.sum()))
        key = (int(inl.sum()), -residual if config.residual_tie_break else 0.0)
        if best is None or key > best:
            best, best_k, best_inliers, best_x = key, len(tried) - 1, inl, x

    if len(idx) <= config.exhaustive_up_to:
        for a in range(len(idx)):
            for b in range(a + 1, len(idx)):
                consider(int(idx[a]), int(idx[b]))
    else:
        rng = np.random.default_rng(config.seed)
        while len(tried) < config.max_iterations:
            i, j = rng.choice(idx, size=2, replace=False)
            consider(int(i), int(j))
            if best is not None and len(tried) >= _ransac_iterations(best[0], len(idx), config.confidence):
                break

    hypotheses = np.array(H, dtype=np.float64).reshape(-1, 3)
    pairs = np.array(tried, dtype=np.int64).reshape(-1, 2)
    hypothesis_scores = np.array(scores, dtype=np.int64)
    chosen = np.zeros(len(pairs), dtype=bool)
    empty = np.zeros(n, dtype=bool)
    info = dict(hypotheses=hypotheses, hypothesis_pairs=pairs, hypothesis_scores=hypothesis_scores)

    # --- centre: least squares over the inliers of the best sample -------------------------------
    fallback = False
    if best_x is not None and best_inliers.sum() >= config.min_support:
        chosen[best_k] = True
        inliers, position = best_inliers, best_x
        x = triangulate_rays(C[inliers], d[inliers]) if inliers.sum() >= 2 else None
        if x is not None:
            position = x
            for _ in range(config.refine_iterations):
                new_inliers, _ = score(position)
                if new_inliers.sum() < inliers.sum() or np.array_equal(new_inliers, inliers):
                    break
                x = triangulate_rays(C[new_inliers], d[new_inliers])
                if x is None:
                    break
                inliers, position = new_inliers, x
        position_support = inliers
    elif config.fallback_to_first and n:
        position, position_support, fallback = C[0], empty.copy(), True
        position_support[0] = True
    else:
        return FusedPose(None, empty, empty.copy(), position_chosen=chosen, **info)

    rotation, rot_inliers, votes = _rotation_consensus(R, config.rotation_angle_deg, config.residual_tie_break,
                                                       config.refine_iterations)
    pose = Pose.from_world_from_cam(rotation.T, position)
    return FusedPose(pose, position_support, rot_inliers, position_chosen=chosen, rotation_votes=votes,
                     rotation_chosen=rot_inliers, fallback=fallback, **info)


def _rotation_consensus(
    R: np.ndarray, threshold_deg: float, residual_tie_break: bool, refine_iterations: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every rotation hypothesis a sample; the L1 mean of the best one's inliers, then re-scored.

    Args:
        R: ``(N, 3, 3)`` hypotheses (any one convention).
        threshold_deg: two hypotheses agree when their relative angle is below this.
        residual_tie_break: among equal votes prefer the smaller sum of truncated angles.
        refine_iterations: re-score against the mean and re-average while the inlier set grows.

    Returns:
        The mean ``(3, 3)``, the ``(N,)`` inlier mask and the ``(N,)`` votes (others that agree).
    """
    n = len(R)
    angles = rotation_angle_deg(R[:, None] @ np.swapaxes(R[None], -1, -2))
    agree = angles < threshold_deg
    np.fill_diagonal(agree, True)
    votes = agree.sum(axis=1) - 1
    residual = np.minimum(angles, threshold_deg).sum(axis=1)
    order = np.lexsort((np.arange(n), residual if residual_tie_break else np.zeros(n), -votes))
    inliers = agree[order[0]]
    rotation = l1_rotation_average(R[inliers])
    for _ in range(refine_iterations):
        new = rotation_angle_deg(R @ rotation.T) < threshold_deg
        if new.sum() < inliers.sum() or np.array_equal(new, inliers):
            break
        inliers, rotation = new, l1_rotation_average(R[new])
    return rotation, inliers, votes


@dataclass(frozen=True)
class MetricFusionConfig:
    """Settings of :func:`fuse_metric`.

    Attributes:
        position_threshold: two centre hypotheses agree when closer than this (map units).
        rotation_angle_deg: two rotation hypotheses agree when their relative angle is below this.
        refine_iterations: re-score against the averaged estimate while the inlier set grows.
    """

    position_threshold: float = 0.25
    rotation_angle_deg: float = 20.0
    refine_iterations: int = 2


def fuse_metric(
    centers: np.ndarray, offsets: np.ndarray, rotations: np.ndarray, config: MetricFusionConfig = MetricFusionConfig()
) -> FusedPose:
    """Fuse relative poses whose translations are trusted in scale (a generalised variant).

    The original fusion uses only the direction of each regressed translation and triangulates pairs
    of rays, which amplifies direction errors when the retrieved images are close together (a small
    baseline). A network trained on metric labels also predicts the length, so every retrieved image
    gives a full centre hypothesis ``X_i = C_i + offset_i``. The hypothesis with most others within
    ``position_threshold`` wins (ties: the smaller sum of truncated distances, then the order of
    retrieval); the position is the mean of its agreeing set, re-scored while it grows. The rotation
    is the consensus of the hypotheses with L1 averaging, as in :func:`fuse_rays_ransac`.

    Args:
        centers: ``(N, 3)`` database camera centres.
        offsets: ``(N, 3)`` world vectors from each database centre to the query centre.
        rotations: ``(N, 3, 3)`` query ``cam_from_world`` rotation hypotheses.
        config: thresholds.

    Returns:
        The fused pose (``None`` only for ``N = 0``).
    """
    C = np.asarray(centers, dtype=np.float64)
    X = C + np.asarray(offsets, dtype=np.float64)
    R = np.asarray(rotations, dtype=np.float64)
    n = len(C)
    if X.shape != (n, 3) or R.shape != (n, 3, 3):
        raise ValueError(f"expected (N, 3) centres and offsets and (N, 3, 3) rotations, got "
                         f"{C.shape}, {np.shape(offsets)}, {R.shape}")
    if not (np.all(np.isfinite(X)) and np.all(np.isfinite(R))):
        raise ValueError("centres, offsets and rotations must be finite")
    if n == 0:
        empty = np.zeros(0, dtype=bool)
        return FusedPose(None, empty, empty.copy())
    dist = np.linalg.norm(X[:, None] - X[None], axis=-1)
    agree = dist < config.position_threshold
    votes = agree.sum(axis=1)
    residual = np.minimum(dist, config.position_threshold).sum(axis=1)
    best = int(np.lexsort((np.arange(n), residual, -votes))[0])
    inliers = agree[best]
    position = X[inliers].mean(axis=0)
    for _ in range(config.refine_iterations):
        new = np.linalg.norm(X - position, axis=1) < config.position_threshold
        if new.sum() < inliers.sum() or np.array_equal(new, inliers):
            break
        inliers, position = new, X[new].mean(axis=0)
    chosen = np.zeros(n, dtype=bool)
    chosen[best] = True
    rotation, rot_inliers, rot_votes = _rotation_consensus(R, config.rotation_angle_deg, True,
                                                           config.refine_iterations)
    pose = Pose.from_world_from_cam(rotation.T, position)
    return FusedPose(pose, inliers, rot_inliers, hypotheses=X, hypothesis_scores=votes.astype(np.float64),
                     position_chosen=chosen, rotation_votes=rot_votes, rotation_chosen=rot_inliers)


@dataclass(frozen=True)
class PoseConsensusConfig:
    """Attributes:
    position_threshold: two absolute hypotheses agree when their centres are closer than this
        (in map units) ...
    rotation_threshold_deg: ... and their rotations closer than this.
    """

    position_threshold: float = 0.25
    rotation_threshold_deg: float = 5.0


def consensus_of_poses(
    poses: list[Pose], weights: np.ndarray | None = None, config: PoseConsensusConfig = PoseConsensusConfig()
) -> np.ndarray:
    """Largest group of mutually consistent absolute pose hypotheses.

    Each hypothesis is scored by the summed ``weights`` (e.g. inlier counts) of the hypotheses that
    agree with it; the mask of the best one's agreeing set is returned.

    Args:
        poses: N hypotheses of the same query's ``cam_from_world``.
        weights: ``(N,)`` non-negative weights (default 1).

    Returns:
        ``(N,)`` boolean mask of the supporting hypotheses (empty input -> empty mask).
    """
    n = len(poses)
    if n == 0:
        return np.zeros(0, dtype=bool)
    w = np.ones(n) if weights is None else np.asarray(weights, dtype=np.float64)
    C = np.stack([p.center for p in poses])
    R = np.stack([p.R for p in poses])
    dist = np.linalg.norm(C[:, None] - C[None], axis=-1)
    ang = rotation_angle_deg(R[:, None] @ np.swapaxes(R[None], -1, -2))
    agree = (dist < config.position_threshold) & (ang < config.rotation_threshold_deg)
    scores = agree.astype(np.float64) @ w
    return agree[int(np.argmax(scores))]
