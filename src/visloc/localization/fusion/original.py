"""The pose fusion of ``filter_pose.m`` (Laskar et al., ICCVW 2017, Publication V), for any N >= 1.

It takes what the MATLAB takes: database centres and camera-to-world rotations, the regressed relative
rotations and the regressed translations (see :mod:`visloc.localization.fusion` for why it is not a
preset of :func:`~visloc.localization.fusion.rays.fuse_rays`).

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

import numpy as np

from ...geometry.pose import Pose
from ...geometry.rotation_averaging import l1_rotation_average, quaternion_mean
from .common import PARALLEL_COND, FusedPose, as_rotations, hypotheses_from_relative_poses
from .consensus import vote_rotations


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
    if np.linalg.cond(A) > PARALLEL_COND:
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
    R_db = as_rotations(db_rotations, "db_rotations")

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
    agree, votes = vote_rotations(R_wc, rotation_threshold_deg)
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
