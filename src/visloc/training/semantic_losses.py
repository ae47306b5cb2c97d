"""Losses for semantic matching with strong, semi- and weak supervision (thesis ch. 2, Publications I and II).

Every transform argument is either a theta tensor together with its ``kind`` (``"affine"``, ``"tps"``) or a
:class:`~visloc.geometry.warps.Warp` (which also covers the two-stage affine + TPS model; ``kind`` is then
ignored). All points are normalised coordinates in ``[-1, 1]``
(:func:`~visloc.geometry.warps.pixels_to_normalized`).

Naming of a pair of predictions for images A and B (visloc's convention: theta maps target -> source):

* ``theta_ab`` is the prediction for ``(source=A, target=B)``: it maps B coordinates to A coordinates;
* ``theta_ba`` is the prediction for ``(source=B, target=A)``: it maps A coordinates to B coordinates.

(The thesis writes ``T_AB`` for the map from A to B, i.e. visloc's ``theta_ba``.)

Keypoint sets are padded to a common length; a boolean mask ``(B, N)`` marks the real points (``None``: all
real). Padded coordinates are ignored entirely (they may hold any value, NaN included). A point loss is the
mean over the real points of each pair, then the mean over the pairs that have real points (0 if none).
Distances are squared Euclidean by default (as CNNGeometric's grid loss); ``squared=False`` uses the
Euclidean distance (with a zero subgradient at distance 0).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..errors import ConfigError
from ..geometry.warps import Warp

#: Name of each weighted term of :class:`SemanticLossConfig` in the output of :func:`semantic_loss`.
TERMS = ("supervised", "cyclic", "nearest_neighbour", "chamfer")

Transform = torch.Tensor | Warp


# --- helpers -----------------------------------------------------------------------------------------


def as_warp(theta: Transform, kind: str | None = None) -> Warp:
    """A :class:`Warp` from a theta tensor and its kind, or the warp itself."""
    if isinstance(theta, Warp):
        return theta
    if kind is None:
        raise ConfigError("a theta tensor needs its kind ('affine' or 'tps'); or pass a Warp")
    return Warp.from_theta(theta, kind)


def unit_grid(
    grid_size: int = 20, device: torch.device | str | None = None, dtype: torch.dtype = torch.float32
) -> torch.Tensor:
    """``grid_size x grid_size`` regular grid on ``[-1, 1]^2`` (CNNGeometric's loss grid).

    Returns:
        ``(1, grid_size ** 2, 2)`` points ``(x, y)``.
    """
    if grid_size < 2:
        raise ConfigError(f"grid_size must be at least 2, got {grid_size}")
    axis = torch.linspace(-1.0, 1.0, grid_size, device=device, dtype=dtype)
    y, x = torch.meshgrid(axis, axis, indexing="ij")
    return torch.stack([x.reshape(-1), y.reshape(-1)], dim=-1).unsqueeze(0)


def _theta_like(warp: Warp) -> torch.Tensor:
    theta = warp.affine if warp.affine is not None else warp.tps
    assert theta is not None
    return theta


def _mask(points: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    if points.ndim != 3 or points.shape[-1] != 2:
        raise ValueError(f"points must have shape (B, N, 2), got {tuple(points.shape)}")
    if mask is None:
        return torch.ones(points.shape[:2], dtype=torch.bool, device=points.device)
    if mask.shape != points.shape[:2]:
        raise ValueError(f"mask shape {tuple(mask.shape)} does not fit points {tuple(points.shape)}")
    return mask.to(device=points.device, dtype=torch.bool)


def _clean(points: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Padded points set to 0, so that NaN / inf padding cannot reach values or gradients."""
    return torch.where(mask.unsqueeze(-1), points, torch.zeros_like(points))


def _distance(squared_distance: torch.Tensor, squared: bool) -> torch.Tensor:
    if squared:
        return squared_distance
    positive = squared_distance > 0
    safe = torch.where(positive, squared_distance, torch.ones_like(squared_distance))
    return torch.where(positive, safe.sqrt(), torch.zeros_like(squared_distance))


def _pair_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean over the real entries of each pair, then over the pairs that have any (0 if none)."""
    count = mask.sum(dim=1)
    per_pair = torch.where(mask, values, torch.zeros_like(values)).sum(dim=1) / count.clamp(min=1)
    valid = count > 0
    if not bool(valid.any()):
        return per_pair.sum() * 0.0
    return per_pair[valid].mean()


# --- supervised --------------------------------------------------------------------------------------


def grid_loss(
    theta_pred: Transform, theta_gt: Transform, kind: str | None = None, grid_size: int = 20
) -> torch.Tensor:
    r"""CNNGeometric's ``TransformedGridLoss`` (thesis eq. 2.1 on a regular grid).

    .. math:: L_s = \frac{1}{B |G|} \sum_b \sum_{g \in G} \| T_{\hat\theta_b}(g) - T_{\theta^{gt}_b}(g) \|^2

    with ``G`` the ``grid_size x grid_size`` grid on ``[-1, 1]^2`` (:func:`unit_grid`).

    Args:
        theta_pred: ``(B, 6 | 18)`` or a :class:`Warp`.
        theta_gt: ``(B, 6 | 18)`` or a :class:`Warp` (may be of another kind than the prediction).
        kind: kind of the theta tensors (both, when tensors).
        grid_size: 20 upstream.

    Returns:
        Scalar: mean squared distance. Identity against a translation ``(dx, dy)`` gives ``dx^2 + dy^2``.
    """
    pred, gt = as_warp(theta_pred, kind), as_warp(theta_gt, kind)
    theta = _theta_like(pred)
    grid = unit_grid(grid_size, theta.device, theta.dtype)
    diff = pred.target_to_source(grid) - gt.target_to_source(grid)
    return diff.pow(2).sum(-1).mean()


def keypoint_reprojection_loss(
    theta: Transform,
    kind: str | None,
    target_points: torch.Tensor,
    source_points: torch.Tensor,
    mask: torch.Tensor | None = None,
    squared: bool = True,
) -> torch.Tensor:
    r"""Supervised keypoint loss (thesis eq. 2.1 with annotated correspondences).

    theta maps target to source, so the target keypoints are moved (exactly, no inverse needed):

    .. math:: L_s = \frac{1}{M} \sum_{i=1}^{M} \| T_\theta(p^t_i) - p^s_i \|^2

    Args:
        theta: ``(B, 6 | 18)`` or a :class:`Warp`; maps target -> source.
        kind: kind of a theta tensor (``None`` for a :class:`Warp`).
        target_points: ``(B, N, 2)`` keypoints in the target image.
        source_points: ``(B, N, 2)`` the corresponding keypoints in the source image.
        mask: ``(B, N)`` real correspondences.
        squared: squared distances (default) or distances.

    Returns:
        Scalar.
    """
    mask = _mask(target_points, mask)
    if source_points.shape != target_points.shape:
        raise ValueError(
            f"corresponding point sets must have equal shapes, got {tuple(target_points.shape)} and "
            f"{tuple(source_points.shape)}"
        )
    moved = as_warp(theta, kind).target_to_source(_clean(target_points, mask))
    d2 = (moved - _clean(source_points, mask)).pow(2).sum(-1)
    return _pair_mean(_distance(d2, squared), mask)


# --- cyclic consistency ------------------------------------------------------------------------------


def cyclic_keypoint_loss(
    theta_ab: Transform,
    theta_ba: Transform,
    kind: str | None,
    points: torch.Tensor,
    mask: torch.Tensor | None = None,
    squared: bool = True,
) -> torch.Tensor:
    r"""Cyclic consistency on points of image B (Publication II applies it to keypoints).

    .. math:: L_{cyc} = \frac{1}{N} \sum_i \| T_{ba}(T_{ab}(p_i)) - p_i \|^2

    Composition order: ``theta_ab`` maps B -> A and ``theta_ba`` maps A -> B (both target -> source), so
    points of B go through ``theta_ab`` first and come back with ``theta_ba``; no inverse is needed. For
    points of A (the thesis' source keypoints ``P_A``), swap the arguments:
    ``cyclic_keypoint_loss(theta_ba, theta_ab, kind, points_a)``.

    Args:
        theta_ab: prediction for (source A, target B), ``(B, 6 | 18)`` or a :class:`Warp`.
        theta_ba: prediction for (source B, target A).
        kind: kind of the theta tensors (``None`` for Warps).
        points: ``(B, N, 2)`` points in image B.
        mask: ``(B, N)`` real points.
        squared: squared distances (default) or distances.

    Returns:
        Scalar; 0 when ``theta_ba`` is the exact inverse of ``theta_ab``.
    """
    mask = _mask(points, mask)
    points = _clean(points, mask)
    back = as_warp(theta_ba, kind).target_to_source(as_warp(theta_ab, kind).target_to_source(points))
    return _pair_mean(_distance((back - points).pow(2).sum(-1), squared), mask)


def cyclic_grid_loss(
    theta_ab: Transform, theta_ba: Transform, kind: str | None = None, grid_size: int = 20
) -> torch.Tensor:
    r"""Cyclic consistency on a regular grid (thesis eq. 2.2, Publication I's unsupervised loss).

    .. math:: L_{us} = \frac{1}{|G|} \sum_{g \in G} \| T_{ba}(T_{ab}(g)) - g \|^2

    ``G`` is the ``grid_size x grid_size`` grid on ``[-1, 1]^2`` of image B; order as
    :func:`cyclic_keypoint_loss` (``theta_ab`` first: B -> A, then ``theta_ba``: A -> B). The thesis's cycle
    with the grid in A is ``cyclic_grid_loss(theta_ba, theta_ab)``.

    Args:
        theta_ab: prediction for (source A, target B), or a :class:`Warp`.
        theta_ba: prediction for (source B, target A), or a :class:`Warp`.
        kind: kind of the theta tensors.
        grid_size: points per side.

    Returns:
        Scalar, averaged over the grid and the batch.
    """
    first = as_warp(theta_ab, kind)
    theta = _theta_like(first)
    grid = unit_grid(grid_size, theta.device, theta.dtype).expand(first.batch_size, -1, -1)
    return cyclic_keypoint_loss(first, as_warp(theta_ba, kind), None, grid)


# --- point-set losses (Publication II) ---------------------------------------------------------------


def _directed_nn(
    points: torch.Tensor, references: torch.Tensor, mask: torch.Tensor, mask_ref: torch.Tensor, squared: bool
) -> torch.Tensor:
    d2 = (points.unsqueeze(2) - references.unsqueeze(1)).pow(2).sum(-1)  # (B, N, M)
    d2 = torch.where(mask_ref.unsqueeze(1), d2, torch.full_like(d2, float("inf")))
    nearest = d2.min(dim=2).values  # (B, N); inf where a pair has no reference point
    has_ref = mask_ref.any(dim=1, keepdim=True)
    keep = mask & has_ref
    nearest = torch.where(keep, nearest, torch.zeros_like(nearest))
    return _pair_mean(_distance(nearest, squared), keep)


def nearest_neighbour_loss(
    warped_points: torch.Tensor,
    target_points: torch.Tensor,
    mask_warped: torch.Tensor | None = None,
    mask_target: torch.Tensor | None = None,
    squared: bool = True,
) -> torch.Tensor:
    r"""Nearest-neighbour point-set loss (thesis eq. 2.3): each warped point to its nearest target point.

    .. math:: L_{nn} = \frac{1}{M} \sum_{i=1}^{M} \min_{p_b \in P_B} \| \hat p_i - p_b \|^2

    The points must already be in one image (move them with :meth:`Warp.target_to_source` or
    :meth:`Warp.source_to_target`); :func:`semantic_loss` does that.

    Args:
        warped_points: ``(B, N, 2)`` moved points ``\hat p``.
        target_points: ``(B, M, 2)`` the reference set ``P_B`` (no correspondence needed, ``M != N`` allowed).
        mask_warped: ``(B, N)`` real moved points.
        mask_target: ``(B, M)`` real reference points (pairs without any are skipped).
        squared: squared distances (default) or distances.

    Returns:
        Scalar.
    """
    mask_warped = _mask(warped_points, mask_warped)
    mask_target = _mask(target_points, mask_target)
    return _directed_nn(
        _clean(warped_points, mask_warped),
        _clean(target_points, mask_target),
        mask_warped,
        mask_target,
        squared,
    )


def chamfer_loss(
    warped_points: torch.Tensor,
    target_points: torch.Tensor,
    mask_warped: torch.Tensor | None = None,
    mask_target: torch.Tensor | None = None,
    squared: bool = True,
) -> torch.Tensor:
    r"""Symmetric Chamfer distance (thesis eq. 2.4): the NN loss in both directions, summed.

    .. math:: L_{cd} = \frac{1}{M} \sum_i \min_{p_b \in P_B} \| \hat p_i - p_b \|^2
              + \frac{1}{N} \sum_j \min_{\hat p \in \hat P} \| \hat p - p_{b,j} \|^2

    Args: as :func:`nearest_neighbour_loss`.

    Returns:
        Scalar.
    """
    return nearest_neighbour_loss(warped_points, target_points, mask_warped, mask_target, squared) + (
        nearest_neighbour_loss(target_points, warped_points, mask_target, mask_warped, squared)
    )


# --- combination -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SemanticLossConfig:
    """Weights and options of :func:`semantic_loss`; a term with weight 0 is not evaluated.

    Attributes:
        supervised: weight of the supervised loss: :func:`grid_loss` against the ground-truth transform when
            one is given, else :func:`keypoint_reprojection_loss` on corresponding keypoints.
        cyclic: weight of the cyclic-consistency loss (needs both directions' predictions).
        nearest_neighbour: weight of :func:`nearest_neighbour_loss`.
        chamfer: weight of :func:`chamfer_loss`.
        cyclic_on: ``"grid"`` (Publication I, :func:`cyclic_grid_loss`) or ``"keypoints"`` (Publication II,
            :func:`cyclic_keypoint_loss` on the keypoints of each image).
        grid_size: grid of the grid losses (20 upstream).
        symmetric: evaluate every term for both directions (A <- B and B <- A) and average the two.
        warp_source_points: for the point-set terms, move the *source* keypoints into the target with the
            (numerical, for TPS) inverse, as the thesis writes eq. 2.3; ``False`` (default) moves the target
            keypoints into the source with theta itself (exact, as CNNGeometric's evaluation) and compares
            them with the source keypoints.
        squared: squared Euclidean distances (default) or distances in the point losses.
        inverse_iterations: Newton steps of the TPS inverse (``warp_source_points`` only).

    The thesis combines the terms with unit weights (``L = Ls + Lus``; ``Lnn`` or ``Lcd`` plus ``Lcyc``); the
    papers' exact weights were not available: see :data:`PUBLICATION_I`, :data:`PUBLICATION_II_NN`,
    :data:`PUBLICATION_II_CHAMFER`.
    """

    supervised: float = 1.0
    cyclic: float = 0.0
    nearest_neighbour: float = 0.0
    chamfer: float = 0.0
    cyclic_on: str = "grid"
    grid_size: int = 20
    symmetric: bool = True
    warp_source_points: bool = False
    squared: bool = True
    inverse_iterations: int = 10

    def __post_init__(self) -> None:
        weights = {t: getattr(self, t) for t in TERMS}
        if any(w < 0 for w in weights.values()) or not any(w > 0 for w in weights.values()):
            raise ConfigError(f"loss weights must be non-negative with at least one positive, got {weights}")
        if self.cyclic_on not in ("grid", "keypoints"):
            raise ConfigError(f"cyclic_on must be 'grid' or 'keypoints', got {self.cyclic_on!r}")
        if self.grid_size < 2:
            raise ConfigError(f"grid_size must be at least 2, got {self.grid_size}")
        if self.inverse_iterations < 0:
            raise ConfigError(f"inverse_iterations must be non-negative, got {self.inverse_iterations}")

    def weight(self, term: str) -> float:
        return float(getattr(self, term))


#: Publication I: supervised grid loss + cyclic consistency on a grid.
PUBLICATION_I = SemanticLossConfig(supervised=1.0, cyclic=1.0, cyclic_on="grid")
#: Publication II, nearest-neighbour variant: NN point-set loss + cyclic consistency on the keypoints.
PUBLICATION_II_NN = SemanticLossConfig(
    supervised=0.0, nearest_neighbour=1.0, cyclic=1.0, cyclic_on="keypoints"
)
#: Publication II, Chamfer variant.
PUBLICATION_II_CHAMFER = SemanticLossConfig(supervised=0.0, chamfer=1.0, cyclic=1.0, cyclic_on="keypoints")


def _need(value: object, what: str, term: str) -> None:
    if value is None:
        raise ValueError(f"loss term {term!r} needs {what}")


def semantic_loss(
    config: SemanticLossConfig,
    theta_ab: Transform,
    theta_ba: Transform | None = None,
    *,
    kind: str | None = None,
    gt_ab: Transform | None = None,
    gt_ba: Transform | None = None,
    gt_kind: str | None = None,
    points_a: torch.Tensor | None = None,
    points_b: torch.Tensor | None = None,
    mask_a: torch.Tensor | None = None,
    mask_b: torch.Tensor | None = None,
    correspondences: bool = False,
) -> dict[str, torch.Tensor]:
    """Evaluate the weighted combination of :class:`SemanticLossConfig` on one batch.

    Args:
        config: weights and options.
        theta_ab: prediction for (source A, target B) (maps B -> A): ``(B, 6 | 18)`` with ``kind``, or a Warp.
        theta_ba: prediction for (source B, target A) (maps A -> B); needed by the cyclic term and by
            ``symmetric`` terms.
        kind: kind of the theta tensors (``None`` for Warps).
        gt_ab: ground-truth transform of (A, B) for the supervised grid loss (synthetic pairs).
        gt_ba: ground truth of (B, A), for ``symmetric`` (if missing, only the A-B direction is supervised).
        gt_kind: kind of ground-truth tensors (default ``kind``).
        points_a: ``(B, N, 2)`` keypoints of A, normalised.
        points_b: ``(B, M, 2)`` keypoints of B, normalised.
        mask_a: ``(B, N)`` real keypoints of A.
        mask_b: ``(B, M)`` real keypoints of B.
        correspondences: ``points_a[:, i]`` and ``points_b[:, i]`` correspond (annotations); then the
            supervised term uses :func:`keypoint_reprojection_loss` when no ground-truth transform is given.

    Returns:
        ``{term: scalar}`` for every term with a positive weight (unweighted values, each the mean of its
        directions), plus ``"total"``: the weighted sum.
    """
    warp_ab = as_warp(theta_ab, kind)
    warp_ba = None if theta_ba is None else as_warp(theta_ba, kind)
    gt_kind = gt_kind or kind
    if points_a is not None:
        mask_a = _mask(points_a, mask_a)
    if points_b is not None:
        mask_b = _mask(points_b, mask_b)

    # each direction: (prediction, gt, "source" points + mask, "target" points + mask)
    directions = [(warp_ab, gt_ab, points_a, mask_a, points_b, mask_b)]
    if config.symmetric:
        _need(warp_ba, "theta_ba (symmetric=True)", "any")
        directions.append((warp_ba, gt_ba, points_b, mask_b, points_a, mask_a))

    terms: dict[str, torch.Tensor] = {}
    if config.supervised > 0:
        values = []
        for warp, gt, src, m_src, tgt, m_tgt in directions:
            if gt is not None:
                values.append(grid_loss(warp, as_warp(gt, gt_kind), grid_size=config.grid_size))
            elif correspondences and src is not None and tgt is not None:
                assert m_src is not None and m_tgt is not None
                values.append(keypoint_reprojection_loss(warp, None, tgt, src, m_src & m_tgt, config.squared))
        _need(
            values or None,
            "gt_ab, or corresponding points_a / points_b with correspondences=True",
            "supervised",
        )
        terms["supervised"] = torch.stack(values).mean()
    if config.cyclic > 0:
        _need(warp_ba, "theta_ba", "cyclic")
        assert warp_ba is not None
        pairs = [(warp_ab, warp_ba, points_b, mask_b), (warp_ba, warp_ab, points_a, mask_a)]
        # one direction: the thesis' cycle of A's points (grid or keypoints) A -> B -> A
        pairs = pairs if config.symmetric else pairs[1:]
        values = []
        for first, second, points, mask in pairs:
            if config.cyclic_on == "grid":
                values.append(cyclic_grid_loss(first, second, grid_size=config.grid_size))
            else:
                _need(points, "points_a and points_b (cyclic_on='keypoints')", "cyclic")
                assert points is not None
                values.append(cyclic_keypoint_loss(first, second, None, points, mask, config.squared))
        terms["cyclic"] = torch.stack(values).mean()
    for term, fn in (("nearest_neighbour", nearest_neighbour_loss), ("chamfer", chamfer_loss)):
        if config.weight(term) <= 0:
            continue
        values = []
        for warp, _, src, m_src, tgt, m_tgt in directions:
            _need(src, "points_a and points_b", term)
            _need(tgt, "points_a and points_b", term)
            assert src is not None and tgt is not None
            if config.warp_source_points:  # source keypoints into the target, compared with target keypoints
                moved = warp.source_to_target(_clean(src, m_src), config.inverse_iterations)
                values.append(fn(moved, tgt, m_src, m_tgt, config.squared))
            else:  # target keypoints into the source, compared with source keypoints
                moved = warp.target_to_source(_clean(tgt, m_tgt))
                values.append(fn(moved, src, m_tgt, m_src, config.squared))
        terms[term] = torch.stack(values).mean()
    weighted = [config.weight(t) * terms[t] for t in TERMS if t in terms]
    terms["total"] = torch.stack(weighted).sum()
    return terms
