"""PCA whitening of global descriptors, learned on the database (Jégou & Chum 2012; cirtorch's
``pcawhitenlearn``; Gordo et al.'s per-region PCA).

``mean, projection = fit_pca_whitening(db, dim=256)`` learns plain numpy arrays (they go as they are
into a map's ``global_state.npz``); ``apply_whitening(x, mean, projection)`` computes
``l2n((x - mean) @ projection.T)``. Rows of ``projection`` are the principal directions in decreasing
variance order, divided by ``sqrt(eigenvalue + eps)``, so the training descriptors come out with zero
mean and identity covariance (``1/N`` normalisation) on the kept dimensions. cirtorch uses the unscaled
scatter matrix (a ``sqrt(N)`` factor, which the final L2 normalisation removes).

``shrinkage`` in ``[0, 1]`` regularises the covariance towards a scaled identity,
``(1 - s) C + s (trace(C) / D) I``: small eigenvalues are no longer blown up (``s = 1`` is a pure
rotation onto the principal axes, up to one common scale).
"""

from __future__ import annotations

import numpy as np

from ..errors import ConfigError

__all__ = ["apply_whitening", "fit_pca_whitening"]


def fit_pca_whitening(
    x: np.ndarray, dim: int | None = None, eps: float = 1e-9, shrinkage: float = 0.0
) -> tuple[np.ndarray, np.ndarray]:
    """Learn PCA whitening from ``x (N, D)``; returns ``mean (D,)`` and ``projection (dim, D)``.

    ``dim``: kept dimensions (default ``D``, at most ``D``). ``eps`` is added to every eigenvalue before
    the inverse square root. Arrays come back float64 for float64 input, float32 otherwise.
    """
    x = np.asarray(x)
    if x.ndim != 2 or x.shape[0] < 2:
        raise ValueError(f"whitening needs descriptors (N >= 2, D), got shape {x.shape}")
    n, d = x.shape
    if dim is None:
        dim = d
    if not 1 <= dim <= d:
        raise ConfigError(f"whitening dim must be in 1..{d}, got {dim}")
    if not 0.0 <= shrinkage <= 1.0:
        raise ConfigError(f"shrinkage must be in [0, 1], got {shrinkage}")
    if eps < 0:
        raise ConfigError(f"eps must be >= 0, got {eps}")
    out_dtype = np.float64 if x.dtype == np.float64 else np.float32
    x64 = x.astype(np.float64)
    mean = x64.mean(axis=0)
    xc = x64 - mean
    cov = xc.T @ xc / n
    cov = (cov + cov.T) / 2
    if shrinkage > 0:
        cov = (1.0 - shrinkage) * cov + shrinkage * (np.trace(cov) / d) * np.eye(d)
    eigval, eigvec = np.linalg.eigh(cov)  # ascending
    order = np.argsort(eigval)[::-1][:dim]
    eigval = np.clip(eigval[order], 0.0, None)
    eigvec = eigvec[:, order]
    # a deterministic sign per axis: the largest-magnitude component of each direction is positive
    signs = np.sign(eigvec[np.abs(eigvec).argmax(axis=0), np.arange(dim)])
    eigvec = eigvec * np.where(signs == 0, 1.0, signs)
    projection = eigvec.T / np.sqrt(eigval + eps)[:, None]
    return mean.astype(out_dtype), projection.astype(out_dtype)


def apply_whitening(
    x: np.ndarray, mean: np.ndarray, projection: np.ndarray, normalize: bool = True
) -> np.ndarray:
    """Whiten ``x (N, D)`` (or one ``(D,)`` vector) -> ``(N, dim)``: ``(x - mean) @ projection.T``, rows
    L2-normalised when ``normalize`` (zero rows stay zero). Keeps ``x``'s float dtype."""
    x = np.asarray(x)
    mean = np.asarray(mean)
    projection = np.asarray(projection)
    if projection.ndim != 2 or mean.shape != (projection.shape[1],):
        raise ValueError(f"whitening state mismatch: mean {mean.shape}, projection {projection.shape}")
    if x.shape[-1] != projection.shape[1] or x.ndim not in (1, 2):
        raise ValueError(f"expected descriptors (N, {projection.shape[1]}), got shape {x.shape}")
    dtype = x.dtype if np.issubdtype(x.dtype, np.floating) else np.float32
    y = (x.astype(np.float64) - mean) @ projection.T.astype(np.float64)
    if normalize:
        norm = np.linalg.norm(y, axis=-1, keepdims=True)
        y = y / np.where(norm > 0, norm, 1.0)
    return y.astype(dtype)
