"""Camera intrinsics with COLMAP model names.

A :class:`Camera` is a frozen value: model name, image size and the model's parameters in COLMAP order
(``PINHOLE fx fy cx cy``, ``OPENCV fx fy cx cy k1 k2 p1 p2`` ...). Distortion is handled by the solver
back-ends (:mod:`visloc.geometry.backends`), which know every model listed in :data:`CAMERA_MODELS`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

#: COLMAP camera models visloc reads and writes, with their parameter names in order.
CAMERA_MODELS: dict[str, tuple[str, ...]] = {
    "SIMPLE_PINHOLE": ("f", "cx", "cy"),
    "PINHOLE": ("fx", "fy", "cx", "cy"),
    "SIMPLE_RADIAL": ("f", "cx", "cy", "k"),
    "RADIAL": ("f", "cx", "cy", "k1", "k2"),
    "OPENCV": ("fx", "fy", "cx", "cy", "k1", "k2", "p1", "p2"),
    "FULL_OPENCV": ("fx", "fy", "cx", "cy", "k1", "k2", "p1", "p2", "k3", "k4", "k5", "k6"),
    "OPENCV_FISHEYE": ("fx", "fy", "cx", "cy", "k1", "k2", "k3", "k4"),
}


class InvalidCameraError(ValueError):
    """Unknown model, wrong number of parameters, or non-positive size / focal length."""


@dataclass(frozen=True)
class Camera:
    """Intrinsics of one camera.

    Attributes:
        model: COLMAP model name, one of :data:`CAMERA_MODELS`.
        width: image width in pixels.
        height: image height in pixels.
        params: parameters in COLMAP order. Pixel coordinates everywhere in visloc follow OpenCV:
            the centre of the top-left pixel is ``(0, 0)`` (COLMAP puts it at ``(0.5, 0.5)``; the
            COLMAP exporters add the half pixel). Keypoints and principal points share this convention.
    """

    model: str
    width: int
    height: int
    params: tuple[float, ...]

    def __post_init__(self) -> None:
        if self.model not in CAMERA_MODELS:
            raise InvalidCameraError(f"unknown camera model {self.model!r}; known: {sorted(CAMERA_MODELS)}")
        params = tuple(float(p) for p in self.params)
        expected = len(CAMERA_MODELS[self.model])
        if len(params) != expected:
            raise InvalidCameraError(f"{self.model} takes {expected} parameters, got {len(params)}")
        if not all(np.isfinite(params)):
            raise InvalidCameraError(f"camera parameters must be finite, got {params}")
        if int(self.width) <= 0 or int(self.height) <= 0:
            raise InvalidCameraError(f"image size must be positive, got {self.width}x{self.height}")
        object.__setattr__(self, "params", params)
        object.__setattr__(self, "width", int(self.width))
        object.__setattr__(self, "height", int(self.height))
        if min(self.focal) <= 0:
            raise InvalidCameraError(f"focal length must be positive, got {self.focal}")

    # --- constructors -------------------------------------------------------------------------
    @classmethod
    def pinhole(cls, fx: float, fy: float, cx: float, cy: float, width: int, height: int) -> Camera:
        return cls("PINHOLE", width, height, (fx, fy, cx, cy))

    @classmethod
    def from_colmap_string(cls, text: str) -> Camera:
        """Parse ``MODEL WIDTH HEIGHT p1 p2 ...`` (hloc's query-list format without the name)."""
        parts = text.split()
        if len(parts) < 4:
            raise InvalidCameraError(f"expected 'MODEL WIDTH HEIGHT PARAMS...', got {text!r}")
        try:
            width, height, params = int(parts[1]), int(parts[2]), tuple(float(p) for p in parts[3:])
        except ValueError as e:
            raise InvalidCameraError(f"cannot parse camera {text!r}: {e}") from None
        return cls(parts[0], width, height, params)

    def to_colmap_string(self) -> str:
        return " ".join([self.model, str(self.width), str(self.height), *(f"{p:.10g}" for p in self.params)])

    # --- views --------------------------------------------------------------------------------
    @property
    def focal(self) -> tuple[float, float]:
        if self.model in ("SIMPLE_PINHOLE", "SIMPLE_RADIAL", "RADIAL"):
            return (self.params[0], self.params[0])
        return (self.params[0], self.params[1])

    @property
    def principal_point(self) -> tuple[float, float]:
        i = 1 if self.model in ("SIMPLE_PINHOLE", "SIMPLE_RADIAL", "RADIAL") else 2
        return (self.params[i], self.params[i + 1])

    @property
    def K(self) -> np.ndarray:
        """``(3, 3)`` calibration matrix (distortion ignored)."""
        (fx, fy), (cx, cy) = self.focal, self.principal_point
        return np.array([[fx, 0.0, cx], [0.0, fy, cy], [0.0, 0.0, 1.0]])

    @property
    def is_distorted(self) -> bool:
        """Whether pixels differ from the pinhole projection (a fisheye model never is pinhole)."""
        if self.model == "OPENCV_FISHEYE":
            return True
        n = 3 if self.model in ("SIMPLE_PINHOLE", "SIMPLE_RADIAL", "RADIAL") else 4
        return any(p != 0.0 for p in self.params[n:])

    def pinhole_part(self) -> Camera:
        """The same camera without its distortion terms."""
        (fx, fy), (cx, cy) = self.focal, self.principal_point
        return Camera.pinhole(fx, fy, cx, cy, self.width, self.height)

    def scaled(self, sx: float, sy: float | None = None) -> Camera:
        """Intrinsics of the image resized by ``(sx, sy)`` (pixel-centre aware, as COLMAP's ``rescale``)."""
        sy = sx if sy is None else sy
        p = list(self.params)
        (cx, cy) = self.principal_point
        ci = 1 if self.model in ("SIMPLE_PINHOLE", "SIMPLE_RADIAL", "RADIAL") else 2
        if ci == 1:
            p[0] *= (sx + sy) / 2
        else:
            p[0] *= sx
            p[1] *= sy
        p[ci] = (cx + 0.5) * sx - 0.5
        p[ci + 1] = (cy + 0.5) * sy - 0.5
        return Camera(self.model, round(self.width * sx), round(self.height * sy), tuple(p))

    def project_pinhole(self, points_cam: np.ndarray) -> np.ndarray:
        """Project camera-frame points ``(N, 3)`` with the pinhole part only -> pixels ``(N, 2)``."""
        points_cam = np.asarray(points_cam, dtype=np.float64)
        uvw = points_cam @ self.K.T
        return uvw[:, :2] / uvw[:, 2:3]
