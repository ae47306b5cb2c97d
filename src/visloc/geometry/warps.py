"""2-D image transforms of CNNGeometric / WeakAlign on normalised coordinates.

Conventions (shared by the whole semantic-matching code):

* Normalised coordinates lie in ``[-1, 1]`` with the ``align_corners=True`` convention:
  ``x_n = x * 2 / (W - 1) - 1`` for 0-based pixel ``x`` (:func:`pixels_to_normalized`).
* A parameter vector ``theta`` maps **target** normalised coordinates to **source** normalised coordinates:
  it is a sampling grid, and warping the source image with it (:func:`warp_source_to_target`) gives an
  image aligned with the target. Function names say the direction: ``*_target_to_source`` evaluates
  ``theta``; ``source_to_target`` inverts it.
* ``affine`` theta ``(B, 6)``: the row-major 2x3 matrix ``[A | t]``, ``p_s = A p_t + t``; identity
  ``[1, 0, 0, 0, 1, 0]``.
* ``tps`` theta ``(B, 18)``: the 9 X then the 9 Y coordinates of the moved control points of the regular
  3x3 grid on ``[-1, 1]^2``, control point order ``(x, y) = (-1,-1), (-1,0), (-1,1), (0,-1), ...`` (x
  slowest). The thin-plate spline interpolates ``f(P_i) = Q_i`` (``P`` the regular grid, ``Q`` = theta)
  with kernel ``U(r) = r^2 log(r^2)`` centred on the regular grid ``P``, plus an optional ``reg_factor`` on
  the kernel matrix diagonal (smoothing: with ``reg_factor > 0`` the spline no longer interpolates exactly).
* Two-stage model (WeakAlign / CNNGeometric evaluation): target points are mapped by the TPS, then by the
  affine: ``T = A o TPS`` (the TPS was regressed between the target and the affinely warped source).

:class:`Warp` bundles one transform (affine, TPS or the two-stage pair) so that losses and evaluation code
do not branch on the kind.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from kornia.geometry import create_meshgrid
from kornia.geometry.conversions import denormalize_pixel_coordinates, normalize_pixel_coordinates
from kornia.geometry.linalg import transform_points
from kornia.geometry.transform import invert_affine_transform

from ..errors import ConfigError

#: Length of theta for each single-stage kind.
THETA_DIM = {"affine": 6, "tps": 18}
#: Side of the regular TPS control grid (3x3 = 9 control points, as CNNGeometric).
TPS_GRID_SIZE = 3


def _check_kind(kind: str) -> int:
    if kind not in THETA_DIM:
        raise ConfigError(f"unknown transform kind {kind!r}; known: {', '.join(THETA_DIM)}")
    return THETA_DIM[kind]


def _check_theta(theta: torch.Tensor, kind: str) -> None:
    dim = _check_kind(kind)
    if theta.ndim != 2 or theta.shape[1] != dim:
        raise ValueError(f"{kind} theta must have shape (B, {dim}), got {tuple(theta.shape)}")


def _check_points(points: torch.Tensor) -> None:
    if points.ndim != 3 or points.shape[-1] != 2:
        raise ValueError(f"points must have shape (B, N, 2), got {tuple(points.shape)}")


def _broadcast_batch(theta: torch.Tensor, points: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Expand a batch of 1 (of either) to the other's batch size."""
    b_t, b_p = theta.shape[0], points.shape[0]
    if b_t == b_p:
        return theta, points
    if b_t == 1:
        return theta.expand(b_p, -1), points
    if b_p == 1:
        return theta, points.expand(b_t, -1, -1)
    raise ValueError(f"batch sizes of theta ({b_t}) and points ({b_p}) differ")


# --- identities and control points -------------------------------------------------------------------


def tps_control_points(
    device: torch.device | str | None = None, dtype: torch.dtype = torch.float32
) -> torch.Tensor:
    """The regular 3x3 TPS control grid ``P`` on ``[-1, 1]^2``.

    Returns:
        ``(9, 2)`` points ``(x, y)`` in the order ``(-1,-1), (-1,0), (-1,1), (0,-1), ..., (1,1)``.
    """
    axis = torch.linspace(-1.0, 1.0, TPS_GRID_SIZE, device=device, dtype=dtype)
    x, y = torch.meshgrid(axis, axis, indexing="ij")  # x varies slowest
    return torch.stack([x.reshape(-1), y.reshape(-1)], dim=-1)


def identity_theta(
    kind: str, batch: int = 1, device: torch.device | str | None = None, dtype: torch.dtype = torch.float32
) -> torch.Tensor:
    """The identity parameters of ``kind``.

    Args:
        kind: ``"affine"`` or ``"tps"``.
        batch: ``B``.

    Returns:
        ``(B, 6)`` ``[1, 0, 0, 0, 1, 0]`` or ``(B, 18)`` (the control grid's X then Y).
    """
    _check_kind(kind)
    if kind == "affine":
        theta = torch.tensor([1.0, 0.0, 0.0, 0.0, 1.0, 0.0], device=device, dtype=dtype)
    else:
        theta = tps_control_points(device, dtype).t().reshape(-1)
    return theta.unsqueeze(0).repeat(batch, 1)


def affine_matrix(theta: torch.Tensor) -> torch.Tensor:
    """``(B, 6)`` affine theta -> ``(B, 3, 3)`` homogeneous matrix ``[[A, t], [0, 0, 1]]``."""
    _check_theta(theta, "affine")
    bottom = theta.new_tensor([0.0, 0.0, 1.0]).expand(theta.shape[0], 1, 3)
    return torch.cat([theta.reshape(-1, 2, 3), bottom], dim=1)


# --- affine ------------------------------------------------------------------------------------------


def affine_target_to_source(theta: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
    """Apply an affine theta: ``p_s = A p_t + t``.

    Args:
        theta: ``(B, 6)`` row-major ``[A | t]``.
        points: ``(B, N, 2)`` target normalised coordinates (a batch of 1 broadcasts).

    Returns:
        ``(B, N, 2)`` source normalised coordinates.
    """
    _check_theta(theta, "affine")
    _check_points(points)
    theta, points = _broadcast_batch(theta, points)
    return transform_points(affine_matrix(theta), points)


def invert_affine(theta: torch.Tensor) -> torch.Tensor:
    """The inverse affine theta: ``[A^-1 | -A^-1 t]``.

    Args:
        theta: ``(B, 6)``.

    Returns:
        ``(B, 6)``; maps source coordinates back to target coordinates.
    """
    _check_theta(theta, "affine")
    return invert_affine_transform(theta.reshape(-1, 2, 3)).reshape(-1, 6)


# --- thin-plate spline -------------------------------------------------------------------------------


def _tps_kernel(squared_distance: torch.Tensor) -> torch.Tensor:
    """``U = d2 * log(d2)`` (``r^2 log r^2``, CNNGeometric's kernel), 0 at ``d2 = 0``; safe gradients."""
    positive = squared_distance > 0
    safe = torch.where(positive, squared_distance, torch.ones_like(squared_distance))
    return torch.where(positive, safe * safe.log(), torch.zeros_like(squared_distance))


def _tps_kernel_derivative(squared_distance: torch.Tensor) -> torch.Tensor:
    """``dU / d(d2) = log(d2) + 1``, replaced by 0 at ``d2 = 0`` (where ``dU/dx -> 0``)."""
    positive = squared_distance > 0
    safe = torch.where(positive, squared_distance, torch.ones_like(squared_distance))
    return torch.where(positive, safe.log() + 1.0, torch.zeros_like(squared_distance))


def _pairwise_squared_distance(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``(..., N, 2)``, ``(M, 2)`` -> ``(..., N, M)`` by explicit differences (exact 0 for equal points)."""
    diff = a.unsqueeze(-2) - b
    return (diff * diff).sum(-1)


def tps_coefficients(theta: torch.Tensor, reg_factor: float = 0.0) -> tuple[torch.Tensor, torch.Tensor]:
    """Solve for the TPS weights that take the control grid ``P`` to ``Q`` = theta.

    The system is ``[[K + reg I, P1], [P1^T, 0]] [W; A] = [Q; 0]`` with ``K_ij = U(|P_i - P_j|^2)``,
    ``U(d2) = d2 log d2`` and ``P1 = [1, x, y]``. ``f(p) = A^T [1, x, y] + sum_i W_i U(|p - P_i|^2)``.

    kornia's ``get_tps_transform`` is not used: it centres the kernels on its *second* point set (here the
    moved points ``Q``, which change with theta), uses ``0.5 r^2 log r^2`` and has no diagonal
    regulariser, so it cannot express CNNGeometric's spline (kernels on the fixed regular grid, optional
    ``reg_factor`` on ``K``'s diagonal, whose effect depends on the kernel's scale). The 12x12 system here
    depends only on ``reg_factor``; the result is linear in theta.

    Args:
        theta: ``(B, 18)``.
        reg_factor: added to the diagonal of ``K`` (0: exact interpolation).

    Returns:
        Kernel weights ``W (B, 9, 2)`` and affine weights ``A (B, 3, 2)`` (rows: constant, x, y; columns:
        x- and y-outputs).
    """
    _check_theta(theta, "tps")
    n = TPS_GRID_SIZE * TPS_GRID_SIZE
    # solve in float64 at least: the matrix is tiny, and this keeps float32 results at float32 round-off
    work = torch.float64 if theta.dtype in (torch.float16, torch.bfloat16, torch.float32) else theta.dtype
    ctrl = tps_control_points(theta.device, work)
    k = _tps_kernel(_pairwise_squared_distance(ctrl, ctrl)) + reg_factor * torch.eye(
        n, device=theta.device, dtype=work
    )
    p1 = torch.cat([torch.ones(n, 1, device=theta.device, dtype=work), ctrl], dim=1)
    top = torch.cat([k, p1], dim=1)
    bottom = torch.cat([p1.t(), torch.zeros(3, 3, device=theta.device, dtype=work)], dim=1)
    l_inv = torch.linalg.inv(torch.cat([top, bottom], dim=0))[:, :n].to(theta.dtype)  # (12, 9): rhs is [Q; 0]
    q = theta.reshape(-1, 2, n).transpose(1, 2)  # (B, 9, 2)
    weights = l_inv @ q  # (B, 12, 2)
    return weights[:, :n], weights[:, n:]


def _tps_apply(kernel_w: torch.Tensor, affine_w: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
    ctrl = tps_control_points(points.device, points.dtype)
    u = _tps_kernel(_pairwise_squared_distance(points, ctrl))  # (B, N, 9)
    ones = torch.ones_like(points[..., :1])
    return torch.cat([ones, points], dim=-1) @ affine_w.to(points.dtype) + u @ kernel_w.to(points.dtype)


def tps_target_to_source(theta: torch.Tensor, points: torch.Tensor, reg_factor: float = 0.0) -> torch.Tensor:
    """Apply a TPS theta (CNNGeometric's ``TpsGridGen``).

    Args:
        theta: ``(B, 18)`` moved control points, X then Y.
        points: ``(B, N, 2)`` target normalised coordinates (a batch of 1 broadcasts).
        reg_factor: TPS kernel diagonal regulariser (0: the spline interpolates the control points).

    Returns:
        ``(B, N, 2)`` source normalised coordinates.
    """
    _check_theta(theta, "tps")
    _check_points(points)
    theta, points = _broadcast_batch(theta, points)
    kernel_w, affine_w = tps_coefficients(theta, reg_factor)
    return _tps_apply(kernel_w, affine_w, points)


def _tps_jacobian(kernel_w: torch.Tensor, affine_w: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
    """``(B, N, 2, 2)`` Jacobian ``d f_i / d p_j`` of the spline at ``points``."""
    ctrl = tps_control_points(points.device, points.dtype)
    diff = points.unsqueeze(-2) - ctrl  # (B, N, 9, 2)
    du = _tps_kernel_derivative((diff * diff).sum(-1))  # (B, N, 9)
    grad_u = 2.0 * du.unsqueeze(-1) * diff  # (B, N, 9, 2): dU_k / dp_j
    jac = torch.einsum("bnkj,bki->bnij", grad_u, kernel_w.to(points.dtype))
    return jac + affine_w[:, 1:].to(points.dtype).transpose(1, 2).unsqueeze(1)


def _solve_2x2(jac: torch.Tensor, rhs: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    """``jac^-1 rhs`` for ``(..., 2, 2)`` and ``(..., 2)`` by the closed form (determinant kept off 0)."""
    a, b, c, d = jac[..., 0, 0], jac[..., 0, 1], jac[..., 1, 0], jac[..., 1, 1]
    det = a * d - b * c
    det = torch.where(det.abs() < eps, torch.full_like(det, eps) * torch.where(det < 0, -1.0, 1.0), det)
    x = (d * rhs[..., 0] - b * rhs[..., 1]) / det
    y = (a * rhs[..., 1] - c * rhs[..., 0]) / det
    return torch.stack([x, y], dim=-1)


def tps_source_to_target(
    theta: torch.Tensor, points: torch.Tensor, reg_factor: float = 0.0, iterations: int = 10
) -> torch.Tensor:
    """Invert a TPS numerically: find ``p_t`` with ``f(p_t) = p_s``.

    Start from the inverse of the spline's affine part, then take Newton steps with the analytic 2x2
    Jacobian. The iterations run without autograd; one final Newton step from the (detached) solution is
    differentiable, which gives the implicit-function gradient ``d p_t = J^-1 (d p_s - d f/d theta)``
    exactly at convergence (cheap and no unrolled graph).

    Accuracy: Newton converges quadratically where the spline is locally invertible (``det J > 0`` along
    the way). For CNNGeometric-sized deformations (control points moved by up to ~0.4, i.e. its
    synthetic training range) and points inside ``[-1, 1]^2``, 10 iterations reach float32 round-off
    (about 1e-6, tested). Where the spline folds (``det J <= 0``) there is no unique inverse and the result
    is only a point whose image is near ``p_s``; check with :func:`tps_target_to_source` if that matters.

    Args:
        theta: ``(B, 18)``.
        points: ``(B, N, 2)`` source normalised coordinates (a batch of 1 broadcasts).
        reg_factor: as in :func:`tps_target_to_source`.
        iterations: Newton steps before the final differentiable one.

    Returns:
        ``(B, N, 2)`` target normalised coordinates.
    """
    _check_theta(theta, "tps")
    _check_points(points)
    theta, points = _broadcast_batch(theta, points)
    kernel_w, affine_w = tps_coefficients(theta, reg_factor)
    with torch.no_grad():
        kw, aw, ps = kernel_w.detach(), affine_w.detach(), points.detach()
        lin = aw[:, 1:].transpose(1, 2)  # (B, 2, 2): f ~ lin @ p + aw[:, 0]
        x = _solve_2x2(lin.unsqueeze(1), ps - aw[:, :1])
        for _ in range(iterations):
            x = x - _solve_2x2(_tps_jacobian(kw, aw, x), _tps_apply(kw, aw, x) - ps)
    residual = _tps_apply(kernel_w, affine_w, x) - points
    return x - _solve_2x2(_tps_jacobian(kernel_w.detach(), affine_w.detach(), x), residual)


# --- dispatch ----------------------------------------------------------------------------------------


def target_to_source(
    theta: torch.Tensor, kind: str, points: torch.Tensor, reg_factor: float = 0.0
) -> torch.Tensor:
    """Apply theta of ``kind`` (``"affine"`` or ``"tps"``) to target points.

    Args:
        theta: ``(B, 6)`` or ``(B, 18)``.
        kind: ``"affine"`` or ``"tps"``; anything else raises :class:`ConfigError`.
        points: ``(B, N, 2)`` target normalised coordinates.
        reg_factor: TPS only.

    Returns:
        ``(B, N, 2)`` source normalised coordinates.
    """
    _check_kind(kind)
    if kind == "affine":
        return affine_target_to_source(theta, points)
    return tps_target_to_source(theta, points, reg_factor)


def source_to_target(
    theta: torch.Tensor, kind: str, points: torch.Tensor, reg_factor: float = 0.0, iterations: int = 10
) -> torch.Tensor:
    """Move SOURCE points into the target: the inverse of :func:`target_to_source`.

    Exact for ``affine`` (:func:`invert_affine`); numerical for ``tps`` (:func:`tps_source_to_target`,
    accuracy documented there).

    Args:
        theta: ``(B, 6)`` or ``(B, 18)``.
        kind: ``"affine"`` or ``"tps"``.
        points: ``(B, N, 2)`` source normalised coordinates.
        reg_factor: TPS only.
        iterations: TPS Newton steps.

    Returns:
        ``(B, N, 2)`` target normalised coordinates.
    """
    _check_kind(kind)
    if kind == "affine":
        return affine_target_to_source(invert_affine(theta), points)
    return tps_source_to_target(theta, points, reg_factor, iterations)


def two_stage_target_to_source(
    theta_affine: torch.Tensor, theta_tps: torch.Tensor, points: torch.Tensor, reg_factor: float = 0.0
) -> torch.Tensor:
    """The two-stage transform ``A o TPS``: target points mapped by the TPS, then by the affine.

    Args:
        theta_affine: ``(B, 6)``.
        theta_tps: ``(B, 18)`` (regressed on the target and the affinely warped source).
        points: ``(B, N, 2)`` target normalised coordinates.
        reg_factor: TPS only.

    Returns:
        ``(B, N, 2)`` source normalised coordinates.
    """
    return affine_target_to_source(theta_affine, tps_target_to_source(theta_tps, points, reg_factor))


def two_stage_source_to_target(
    theta_affine: torch.Tensor,
    theta_tps: torch.Tensor,
    points: torch.Tensor,
    reg_factor: float = 0.0,
    iterations: int = 10,
) -> torch.Tensor:
    """Inverse of :func:`two_stage_target_to_source`: ``TPS^-1 o A^-1`` (TPS inverse numerical)."""
    return tps_source_to_target(
        theta_tps, source_to_target(theta_affine, "affine", points), reg_factor, iterations
    )


# --- dense grids and image warping -------------------------------------------------------------------


def target_grid(
    size: tuple[int, int], device: torch.device | str | None = None, dtype: torch.dtype = torch.float32
) -> torch.Tensor:
    """Normalised coordinates of every pixel of an ``(H, W)`` image.

    Returns:
        ``(1, H, W, 2)`` ``(x, y)`` in ``[-1, 1]`` (``align_corners=True``).
    """
    h, w = size
    return create_meshgrid(h, w, normalized_coordinates=True, device=device, dtype=dtype)


def sampling_grid(
    theta: torch.Tensor, kind: str, size: tuple[int, int], reg_factor: float = 0.0
) -> torch.Tensor:
    """The source coordinates of every target pixel, for ``grid_sample(..., align_corners=True)``.

    Args:
        theta: ``(B, 6)`` or ``(B, 18)``.
        kind: ``"affine"`` or ``"tps"``.
        size: target ``(H, W)``.
        reg_factor: TPS only.

    Returns:
        ``(B, H, W, 2)`` normalised source coordinates.
    """
    return Warp.from_theta(theta, kind, reg_factor).sampling_grid(size)


def _grid_sample(source: torch.Tensor, grid: torch.Tensor) -> torch.Tensor:
    if source.ndim != 4:
        raise ValueError(f"source images must have shape (B, C, H, W), got {tuple(source.shape)}")
    return F.grid_sample(
        source, grid.to(source.dtype), mode="bilinear", padding_mode="zeros", align_corners=True
    )


def warp_source_to_target(
    source: torch.Tensor,
    theta: torch.Tensor,
    kind: str,
    size: tuple[int, int] | None = None,
    reg_factor: float = 0.0,
) -> torch.Tensor:
    """Resample the source image on the target lattice (bilinear, zero padding, ``align_corners=True``).

    Args:
        source: ``(B, C, Hs, Ws)``.
        theta: ``(B, 6)`` or ``(B, 18)``.
        kind: ``"affine"`` or ``"tps"``.
        size: target ``(H, W)``; default the source size.
        reg_factor: TPS only.

    Returns:
        ``(B, C, H, W)`` the source warped into alignment with the target.
    """
    return Warp.from_theta(theta, kind, reg_factor).warp_source_to_target(source, size)


# --- pixels <-> normalised ---------------------------------------------------------------------------


def pixels_to_normalized(points: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """0-based pixel ``(x, y)`` -> normalised: ``x_n = x * 2 / (W - 1) - 1`` (same for y with ``H``).

    Args:
        points: ``(..., 2)`` pixel coordinates.
        size: image ``(H, W)``.

    Returns:
        ``(..., 2)`` normalised coordinates.
    """
    h, w = size
    return normalize_pixel_coordinates(points, h, w)


def normalized_to_pixels(points: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Normalised -> 0-based pixel ``(x, y)``: ``x = (x_n + 1) * (W - 1) / 2``; inverse of
    :func:`pixels_to_normalized`.

    Args:
        points: ``(..., 2)`` normalised coordinates.
        size: image ``(H, W)``.

    Returns:
        ``(..., 2)`` pixel coordinates.
    """
    h, w = size
    return denormalize_pixel_coordinates(points, h, w)


# --- one type for all transforms ---------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class Warp:
    """A target -> source transform: affine, TPS, or the two-stage ``A o TPS`` pair.

    Build with ``Warp(affine=theta)``, ``Warp(tps=theta)``, ``Warp(affine=a, tps=t)`` (two-stage) or
    :meth:`from_theta`. Tensors keep their autograd history.

    Attributes:
        affine: ``(B, 6)`` or ``None``.
        tps: ``(B, 18)`` or ``None``.
        reg_factor: TPS kernel diagonal regulariser.
    """

    affine: torch.Tensor | None = None
    tps: torch.Tensor | None = None
    reg_factor: float = 0.0

    def __post_init__(self) -> None:
        if self.affine is None and self.tps is None:
            raise ConfigError("a Warp needs an affine theta, a TPS theta or both")
        if self.affine is not None:
            _check_theta(self.affine, "affine")
        if self.tps is not None:
            _check_theta(self.tps, "tps")
        if self.affine is not None and self.tps is not None and self.affine.shape[0] != self.tps.shape[0]:
            raise ValueError(
                f"batch sizes of the affine ({self.affine.shape[0]}) and TPS ({self.tps.shape[0]}) differ"
            )

    @classmethod
    def from_theta(cls, theta: torch.Tensor, kind: str, reg_factor: float = 0.0) -> Warp:
        """A single-stage warp: ``kind`` ``"affine"`` or ``"tps"``."""
        _check_kind(kind)
        return (
            cls(affine=theta, reg_factor=reg_factor)
            if kind == "affine"
            else cls(tps=theta, reg_factor=reg_factor)
        )

    @property
    def kind(self) -> str:
        """``"affine"``, ``"tps"`` or ``"two_stage"``."""
        if self.affine is not None and self.tps is not None:
            return "two_stage"
        return "affine" if self.affine is not None else "tps"

    @property
    def batch_size(self) -> int:
        theta = self.affine if self.affine is not None else self.tps
        assert theta is not None
        return theta.shape[0]

    def target_to_source(self, points: torch.Tensor) -> torch.Tensor:
        """``(B, N, 2)`` target normalised points -> ``(B, N, 2)`` source normalised points."""
        if self.tps is not None:
            points = tps_target_to_source(self.tps, points, self.reg_factor)
        if self.affine is not None:
            points = affine_target_to_source(self.affine, points)
        return points

    def source_to_target(self, points: torch.Tensor, iterations: int = 10) -> torch.Tensor:
        """``(B, N, 2)`` source normalised points -> target (exact affine, numerical TPS inverse)."""
        if self.affine is not None:
            points = source_to_target(self.affine, "affine", points)
        if self.tps is not None:
            points = tps_source_to_target(self.tps, points, self.reg_factor, iterations)
        return points

    def sampling_grid(self, size: tuple[int, int]) -> torch.Tensor:
        """``(B, H, W, 2)`` source coordinates of every pixel of an ``(H, W)`` target."""
        h, w = size
        theta = self.affine if self.affine is not None else self.tps
        assert theta is not None
        grid = target_grid(size, theta.device, theta.dtype).reshape(1, h * w, 2)
        return self.target_to_source(grid).reshape(-1, h, w, 2)

    def warp_source_to_target(
        self, source: torch.Tensor, size: tuple[int, int] | None = None
    ) -> torch.Tensor:
        """``(B, C, Hs, Ws)`` source -> ``(B, C, H, W)`` aligned with the target (see
        :func:`warp_source_to_target`)."""
        size = tuple(source.shape[-2:]) if size is None else size
        return _grid_sample(source, self.sampling_grid(size))
