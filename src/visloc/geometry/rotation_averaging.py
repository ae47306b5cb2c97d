"""Robust single-rotation averaging.

:func:`l1_rotation_average` is the Weiszfeld algorithm on SO(3) of Hartley, Aftab & Trumpf,
"L1 rotation averaging using the Weiszfeld algorithm" (CVPR 2011): it minimises the sum of geodesic
distances, so a minority of outlier rotations barely moves the result (unlike the chordal mean).

Compared with ``dqq_L1_mean_rotation_matrix.m`` (the copy used by ``filter_pose.m`` of Laskar et al.,
ICCVW 2017), read line by line:

* **Initialisation: the same.** ``dqq_rotation_quaternion_initialization.m`` flips every quaternion
  whose distance to the first one's negative is smaller (``q_i . q_1 < 0``), averages and normalises;
  :func:`quaternion_mean` does exactly that (the MATLAB goes through ``dcm2quat``/``quat2dcm``, i.e.
  the transposed rotations, and the transposes cancel).
* **Update: the same.** ``v_j = log(R_j S^-1)`` (the spectral norm MATLAB's ``norm`` takes of a
  skew matrix is the rotation angle), ``delta = sum(v_j / |v_j|) / sum(1 / |v_j|)``,
  ``S <- exp(delta) S``.
* **Stopping rule: different, on purpose.** The MATLAB loop stops when ``|1 - det(S S^T)| < 1e-10``
  or when the iterate turns complex, and returns ``S(:,:,iter-1)``. ``det(S S^T)`` is 1 to rounding
  for *every* rotation, so that test passes right after the first update and the function returns
  ``S(:,:,1)``, the quaternion-mean initialisation: as written, the MATLAB "L1 mean" is the
  sign-aligned quaternion mean. Here the iteration runs until the update is shorter than ``tol``
  radians (or ``max_iterations``), i.e. to the actual L1 minimiser.
* **A residual of zero** (the iterate sits on an input rotation) divides by zero in the MATLAB (the
  iterate becomes NaN). Here the step follows Vardi & Zhang's modified Weiszfeld (PNAS 2000): the
  coinciding rotations are left out of the average, the iterate stops if the others pull with less
  than their weight (it is then the minimiser), and the step is shortened accordingly otherwise.
"""

from __future__ import annotations

import numpy as np
from scipy.spatial.transform import Rotation

from .rotation import matrix_to_quat, quat_to_matrix

#: Residual angle (radians) below which the iterate counts as sitting on an input rotation.
_COINCIDENT = 1e-12


def quaternion_mean(rotations: np.ndarray) -> np.ndarray:
    """Sign-aligned normalised mean of the quaternions of ``(N, 3, 3)`` rotations -> ``(3, 3)``.

    Every quaternion is flipped to the hemisphere of the first one (``q_i . q_1 >= 0``), the
    quaternions are averaged and the mean is normalised (``dqq_rotation_quaternion_initialization.m``).
    """
    q = matrix_to_quat(rotations)
    q = np.where((q @ q[0])[:, None] < 0, -q, q)
    return quat_to_matrix(q.mean(axis=0))


def l1_rotation_average(rotations: np.ndarray, max_iterations: int = 100, tol: float = 1e-10) -> np.ndarray:
    """Geodesic L1 mean (median) of rotations by Weiszfeld iterations in the Lie algebra.

    Initialised by :func:`quaternion_mean`; see the module notes for the differences from the MATLAB
    original (stopping rule, zero residuals).

    Args:
        rotations: ``(N, 3, 3)`` rotation matrices.
        max_iterations: Weiszfeld iterations at most.
        tol: stop when the update angle (radians) falls below this.

    Returns:
        ``(3, 3)`` rotation ``S`` minimising ``sum_i angle(R_i S^T)`` (one of the minimisers when
        they are not unique, e.g. any rotation on the geodesic between two inputs).
    """
    rotations = np.asarray(rotations, dtype=np.float64)
    if rotations.ndim != 3 or rotations.shape[1:] != (3, 3) or len(rotations) == 0:
        raise ValueError(f"expected (N, 3, 3) rotations, got {rotations.shape}")
    S = quaternion_mean(rotations)
    for _ in range(max_iterations):
        v = Rotation.from_matrix(rotations @ S.T).as_rotvec()  # (N, 3) residuals in the tangent space at S
        norms = np.linalg.norm(v, axis=1)
        on = norms < _COINCIDENT
        if on.all():
            break
        weights = 1.0 / norms[~on]
        pull = (v[~on] * weights[:, None]).sum(axis=0)  # sum of unit residuals of the other rotations
        delta = pull / weights.sum()
        coincident = int(on.sum())
        if coincident:
            strength = np.linalg.norm(pull)
            if strength <= coincident:  # zero is in the subgradient: S is a minimiser
                break
            delta *= 1.0 - coincident / strength
        S = Rotation.from_rotvec(delta).as_matrix() @ S
        if np.linalg.norm(delta) < tol:
            break
    return S
