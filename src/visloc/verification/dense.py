"""Verification of one (query, database) pair from dense maps (Publication IV).

The dense matcher maps every query pixel into the database image (forward) and every database pixel into
the query (backward). The query is sampled on a regular lattice of the matching resolution (``grid`` cells
along its longer side, the network's input size by default); each lattice point whose match lands inside the
database image is a match, cyclically consistent when the backward map brings it back within
``cyclic_tolerance_px`` (query pixels). ``beta`` of ``S`` is the number of lattice points, the pixel count of
the matching resolution (the thesis's 240 x 240 = 57,600 for its 240 x 240 maps).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import ConfigError
from ..geometry.flow import in_bounds, pixel_to_normalized
from .scores import PairVerification, VerificationConfig, verify_matches


@dataclass(frozen=True)
class DenseVerificationConfig:
    """Attributes:
    grid: lattice points along the query's longer side (the matching resolution).
    cyclic_tolerance_px: round-trip tolerance in query pixels.
    verification: RANSAC model and options (its ``beta`` is replaced by the lattice size).
    """

    grid: int = 160
    cyclic_tolerance_px: float = 2.0
    verification: VerificationConfig = VerificationConfig()

    def __post_init__(self) -> None:
        if self.grid < 2:
            raise ConfigError(f"grid must be >= 2, got {self.grid}")
        if not self.cyclic_tolerance_px > 0:
            raise ConfigError(f"cyclic_tolerance_px must be > 0, got {self.cyclic_tolerance_px}")


def query_lattice(hw: tuple[int, int], grid: int) -> np.ndarray:
    """``(N, 2)`` pixel centres ``(x, y)`` of a lattice with ``grid`` cells along the longer side of an
    ``(H, W)`` image (cells of equal size, ``align_corners=False`` centres)."""
    h, w = hw
    step = max(h, w) / grid
    nx, ny = max(1, round(w / step)), max(1, round(h / step))
    xs = (np.arange(nx) + 0.5) * w / nx - 0.5
    ys = (np.arange(ny) + 0.5) * h / ny - 0.5
    return np.stack(np.meshgrid(xs, ys), -1).reshape(-1, 2).astype(np.float32)


def _sample_map(corr: torch.Tensor, points: np.ndarray, target_hw: tuple[int, int] | None = None) -> torch.Tensor:
    """``corr (2, h, w)`` read bilinearly at ``points (N, 2)`` -> ``(N, 2)``; ``points`` are pixels of a
    ``target_hw`` image the map covers (default: the map's own size)."""
    hw = target_hw or tuple(corr.shape[-2:])
    grid = pixel_to_normalized(torch.from_numpy(points).T.reshape(1, 2, 1, -1), hw).permute(0, 2, 3, 1)
    return F.grid_sample(corr[None].float(), grid, mode="bilinear", padding_mode="border",
                         align_corners=False)[0, :, 0].T


PairMatches = tuple[np.ndarray, np.ndarray, np.ndarray, int]


def _lattice_matches(forward: Any, backward: Any, lattice: np.ndarray, query_hw: tuple[int, int],
                     database_hw: tuple[int, int], tolerance_px: float) -> PairMatches:
    db_xy = _sample_map(forward.map, lattice, query_hw)
    inside = in_bounds(db_xy.T.reshape(1, 2, 1, -1), database_hw)[0, 0, 0]
    back = _sample_map(backward.map, db_xy.numpy(), database_hw)
    error = np.hypot(*(back.numpy() - lattice).T)
    keep = inside.numpy()
    return (lattice[keep], db_xy.numpy()[keep].astype(np.float32), (error <= tolerance_px)[keep],
            len(lattice))


def dense_pair_matches(
    matcher: Any, query: np.ndarray, database: np.ndarray, grid: int, tolerance_px: float
) -> PairMatches:
    """Lattice matches of a pair and their cyclic consistency.

    Args:
        matcher: ``matcher(source, target) -> DenseCorrespondence`` on ``(H, W, 3)`` uint8 images.
        query, database: the images.
        grid, tolerance_px: as :class:`DenseVerificationConfig`.

    Returns:
        ``query_xy (M, 2)``, ``database_xy (M, 2)`` float32 (lattice points whose match is inside the
        database image), ``consistent (M,)`` bool and the lattice size ``N`` (``beta``).
    """
    return dense_matches_many(matcher, query, [database], grid, tolerance_px)[0]


def dense_matches_many(
    matcher: Any, query: np.ndarray, databases: list[Any], grid: int, tolerance_px: float
) -> list[PairMatches]:
    """:func:`dense_pair_matches` of one query against several database images; a matcher with
    ``match_many(pairs, full_size=False)`` (:class:`~visloc.matching.dense.DenseNetworkMatcher`) runs all
    forward and backward passes as batches and its maps are read at the network's resolution."""
    lattice = query_lattice(tuple(query.shape[:2]), grid)
    if hasattr(matcher, "prepare"):  # once, not once per pass
        query = matcher.prepare(query)
    pairs = [(db, query) for db in databases] + [(query, db) for db in databases]  # forward, then backward
    maps = (matcher.match_many(pairs, full_size=False) if hasattr(matcher, "match_many")
            else [matcher(s, t) for s, t in pairs])
    n = len(databases)
    return [_lattice_matches(maps[i], maps[n + i], lattice, tuple(query.shape[:2]), tuple(db.shape[:2]), tolerance_px)
            for i, db in enumerate(databases)]


def verify_dense_pair(
    matcher: Any, query: np.ndarray, database: np.ndarray, config: DenseVerificationConfig = DenseVerificationConfig()
) -> PairVerification:
    """``I``, ``C`` and ``S`` of a pair from its dense maps (``beta`` = the lattice size)."""
    q, d, consistent, beta = dense_pair_matches(matcher, query, database, config.grid, config.cyclic_tolerance_px)
    return verify_matches(q, d, consistent, replace(config.verification, beta=float(beta)))


__all__ = [
    "DenseVerificationConfig", "PairMatches", "dense_matches_many", "dense_pair_matches", "query_lattice",
    "verify_dense_pair",
]
