"""A learned second-stage fusion: logistic regression on ``(|C|, |I|, S_L, G)`` (Publication IV, extension).

Instead of the hand-made ``S_F`` of :func:`~visloc.verification.scores.fused_score`, a candidate's second-stage
score is the logit of a logistic model

    ``score = b + sum_k w_k * (x_k - mean_k) / std_k``,  ``x = (log1p|C|, log1p|I|, S_L, G)``

fitted (:func:`fit`, Newton's method with an L2 penalty on ``w``) to database images labelled correct or wrong
for their query (``scripts/train_fusion.py`` on the embedded world). The logit ranks as the probability does.
The model is a small JSON file (:meth:`FusionModel.save`, :func:`load`); the one shipped with visloc is
:data:`SHIPPED_MODEL` (``visloc/weights/fusion_world.json``).
"""

from __future__ import annotations

import functools
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InputError
from ..io.atomic import write_json
from ..settings import shipped_model

#: The model's inputs, in order.
FEATURES = ("log1p_consistent", "log1p_inliers", "local_similarity", "global_distance")
#: File name of the shipped model (``visloc/weights/``).
SHIPPED_MODEL = "fusion_world.json"
FORMAT = "visloc-fusion-logistic"


def features(num_consistent: float, num_inliers: float, local_similarity: float,
             global_distance: float) -> np.ndarray:
    """The raw ``(4,)`` feature vector ``(log1p|C|, log1p|I|, S_L, G)`` of one candidate."""
    return np.array([math.log1p(num_consistent), math.log1p(num_inliers), local_similarity, global_distance],
                    np.float64)


@dataclass(frozen=True)
class FusionModel:
    """A standardised logistic model over :data:`FEATURES`.

    Attributes:
        features: feature names (:data:`FEATURES`).
        mean, std: ``(4,)`` standardisation of the raw features.
        weights: ``(4,)`` weights of the standardised features.
        bias: the intercept.
        metrics: how it was trained and how well it did (free-form, stored with the model).
    """

    features: tuple[str, ...]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    weights: tuple[float, ...]
    bias: float
    metrics: dict[str, Any] = field(default_factory=dict, compare=False)

    def __post_init__(self) -> None:
        n = len(self.features)
        if not (len(self.mean) == len(self.std) == len(self.weights) == n):
            raise ValueError(f"{n} features but {len(self.mean)} means, {len(self.std)} stds, "
                             f"{len(self.weights)} weights")
        if not all(math.isfinite(s) and s > 0 for s in self.std):
            raise ValueError(f"std must be finite and > 0, got {self.std}")

    def logits(self, x: np.ndarray) -> np.ndarray:
        """``(N, 4)`` raw features -> ``(N,)`` logits."""
        z = (np.asarray(x, np.float64) - np.asarray(self.mean)) / np.asarray(self.std)
        return z @ np.asarray(self.weights) + self.bias

    def score(self, num_consistent: float, num_inliers: float, local_similarity: float,
              global_distance: float) -> float:
        """The logit of one candidate (higher: more likely a correct database image)."""
        return float(self.logits(features(num_consistent, num_inliers, local_similarity, global_distance)[None])[0])

    def to_json(self) -> dict[str, Any]:
        return {"format": FORMAT, "features": list(self.features), "mean": list(self.mean), "std": list(self.std),
                "weights": list(self.weights), "bias": self.bias, "metrics": self.metrics}

    def save(self, path: str | Path) -> None:
        """Write the model as JSON (atomically)."""
        write_json(path, self.to_json())


def fit(x: np.ndarray, labels: np.ndarray, l2: float = 1e-2, iterations: int = 50) -> FusionModel:
    """Fit the logistic model by Newton's method (IRLS) on standardised features.

    Args:
        x: ``(N, 4)`` raw features (:func:`features` per row).
        labels: ``(N,)`` 1 for a correct database image, 0 for a wrong one.
        l2: penalty ``l2 / 2 * |w|^2 * N`` on the weights (not the bias): keeps separable data finite.
        iterations: at most this many Newton steps (stops when the step is below 1e-10).
    """
    x = np.asarray(x, np.float64)
    y = np.asarray(labels, np.float64).reshape(-1)
    if x.ndim != 2 or x.shape[1] != len(FEATURES) or len(x) != len(y):
        raise ValueError(f"need ({len(y)}, {len(FEATURES)}) features for {len(y)} labels, got {x.shape}")
    if not np.isin(y, (0.0, 1.0)).all() or len(np.unique(y)) < 2:
        raise ValueError("labels must be 0 / 1 with both present")
    mean, std = x.mean(0), x.std(0)
    std = np.where(std > 1e-12, std, 1.0)
    a = np.hstack([(x - mean) / std, np.ones((len(x), 1))])  # (N, 5), the bias last
    penalty = l2 * len(x) * np.diag([1.0] * len(FEATURES) + [0.0])
    theta = np.zeros(a.shape[1])
    for _ in range(iterations):
        p = 1.0 / (1.0 + np.exp(-(a @ theta)))
        gradient = a.T @ (p - y) + penalty @ theta
        hessian = (a * (p * (1 - p))[:, None]).T @ a + penalty + 1e-9 * np.eye(len(theta))
        step = np.linalg.solve(hessian, gradient)
        theta -= step
        if np.abs(step).max() < 1e-10:
            break
    return FusionModel(FEATURES, tuple(map(float, mean)), tuple(map(float, std)), tuple(map(float, theta[:-1])),
                       float(theta[-1]))


def _from_json(path: Path, data: Any) -> FusionModel:
    if not isinstance(data, Mapping) or data.get("format") != FORMAT:
        raise InputError(path, f"not a fusion model (need a JSON object with format {FORMAT!r})")
    try:
        model = FusionModel(tuple(str(f) for f in data["features"]), tuple(float(v) for v in data["mean"]),
                            tuple(float(v) for v in data["std"]), tuple(float(v) for v in data["weights"]),
                            float(data["bias"]), dict(data.get("metrics") or {}))
    except (KeyError, TypeError, ValueError) as e:
        raise InputError(path, f"bad fusion model: {e}") from None
    if model.features != FEATURES:
        raise InputError(path, f"fusion model features {list(model.features)}, visloc needs {list(FEATURES)}")
    if not all(math.isfinite(v) for v in (*model.mean, *model.weights, model.bias)):
        raise InputError(path, "fusion model has non-finite numbers")
    return model


def load(path: str | Path | None = None) -> FusionModel:
    """Read a model written by :meth:`FusionModel.save` (``None``: the shipped one).

    Raises:
        InputError: the file is missing, not JSON, or not a fusion model over :data:`FEATURES`.
    """
    path = Path(path) if path is not None else shipped_model(SHIPPED_MODEL)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InputError(path, "fusion model not found") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise InputError(path, f"cannot read the fusion model: {e}") from None
    return _from_json(path, data)


@functools.lru_cache(maxsize=8)
def _load_cached(path: str, mtime_ns: int) -> FusionModel:
    return load(path)


def load_cached(path: str | Path | None = None) -> FusionModel:
    """:func:`load`, read once per file version (the re-ranking calls it per query)."""
    path = Path(path) if path is not None else shipped_model(SHIPPED_MODEL)
    try:
        mtime = path.stat().st_mtime_ns
    except OSError:
        return load(path)  # raises the InputError
    return _load_cached(str(path), mtime)


__all__ = ["FEATURES", "SHIPPED_MODEL", "FusionModel", "features", "fit", "load", "load_cached"]
