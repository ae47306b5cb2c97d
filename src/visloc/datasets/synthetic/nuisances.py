"""Photometric nuisances of the written colour images: per-traversal exposure / white balance and
per-frame sensor noise. Depth and :func:`~visloc.datasets.synthetic.render` never see them."""

from __future__ import annotations

import functools
from dataclasses import dataclass

import cv2
import numpy as np
from scipy.special import ndtri

from .config import WorldConfig


@functools.lru_cache(maxsize=8)
def _noise_table(sigma: float) -> np.ndarray:
    """Inverse CDF of the rounded Gaussian: ``table[i] = round(sigma * Phi^-1((i + 0.5) / 65536))``, int16."""
    p = (np.arange(65536, dtype=np.float64) + 0.5) / 65536.0
    return np.rint(sigma * ndtri(p)).astype(np.int16)


@dataclass(frozen=True)
class Photometric:
    """Camera response of one traversal: ``out = round(255 * gain * g_c * (in / 255) ** gamma) + noise``.

    The noise is zero-mean Gaussian with standard deviation ``noise_sigma`` grey levels, rounded to
    integers (drawn by inverse-CDF lookup of 16-bit uniform numbers, which is exact to 1 / 65536 in
    probability and several times faster than drawing floats); the result is clipped to ``[0, 255]``.

    Attributes:
        gain: global exposure gain.
        gamma: tone-curve exponent.
        channel_gains: white-balance gains ``(g_r, g_g, g_b)``.
        noise_sigma: standard deviation of the additive Gaussian noise, grey levels.
    """

    gain: float = 1.0
    gamma: float = 1.0
    channel_gains: tuple[float, float, float] = (1.0, 1.0, 1.0)
    noise_sigma: float = 0.0

    @property
    def is_identity(self) -> bool:
        return (self.gain == 1.0 and self.gamma == 1.0 and self.channel_gains == (1.0, 1.0, 1.0)
                and self.noise_sigma == 0.0)

    def apply(self, rgb: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Apply the response and noise.

        Args:
            rgb: ``(H, W, 3)`` ``uint8`` rendered image.
            rng: generator for the noise (consumed only when ``noise_sigma > 0``).

        Returns:
            ``(H, W, 3)`` ``uint8``.
        """
        out = np.ascontiguousarray(rgb, dtype=np.uint8)
        if not (self.gain == 1.0 and self.gamma == 1.0 and self.channel_gains == (1.0, 1.0, 1.0)):
            levels = np.arange(256, dtype=np.float64) / 255.0
            curve = 255.0 * self.gain * levels**self.gamma
            lut = np.stack([curve * g for g in self.channel_gains], axis=-1)
            lut = np.clip(np.rint(lut), 0, 255).astype(np.uint8).reshape(1, 256, 3)
            out = cv2.LUT(out, lut)
        else:
            out = out.copy()
        if self.noise_sigma > 0:
            noise = _noise_table(float(self.noise_sigma))[rng.integers(0, 65536, size=out.shape, dtype=np.uint16)]
            noisy = out.astype(np.int16)
            noisy += noise
            np.clip(noisy, 0, 255, out=noisy)
            out = noisy.astype(np.uint8)
        return out


def draw_photometric(rng: np.random.Generator, config: WorldConfig) -> Photometric:
    """Random response of one traversal with the strengths of ``config`` (always consumes 5 draws)."""
    u = rng.uniform(-1.0, 1.0, size=5)
    gain = float(2.0 ** (config.exposure * u[0]))
    gamma = float(2.0 ** (0.5 * config.exposure * u[1]))
    wb = 1.0 + config.white_balance * u[2:5]
    wb = wb / np.exp(np.mean(np.log(wb)))  # white balance keeps the overall brightness
    gains = (float(wb[0]), float(wb[1]), float(wb[2])) if config.white_balance > 0 else (1.0, 1.0, 1.0)
    return Photometric(gain=gain, gamma=gamma, channel_gains=gains, noise_sigma=float(config.noise_sigma))


@dataclass(frozen=True)
class QueryDegradation:
    """A harder capture condition for query images: low light and camera shake.

    ``out = noise(gain * blur(in))``: a Gaussian blur of ``blur_sigma`` pixels (a stand-in for motion
    blur), the exposure ``gain``, then rounded Gaussian sensor noise of ``noise_sigma`` grey levels
    (:class:`Photometric`). Used by the relocalization benchmark to compare estimators where local
    features get scarce; the world's own files never have it.

    Attributes:
        blur_sigma: standard deviation of the blur, pixels; 0 disables it.
        gain: exposure gain (below 1: darker).
        noise_sigma: standard deviation of the additive noise, grey levels; 0 disables it.
    """

    blur_sigma: float = 3.0
    gain: float = 0.6
    noise_sigma: float = 8.0

    def apply(self, rgb: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Degrade one ``(H, W, 3)`` ``uint8`` image (the noise is drawn from ``rng``)."""
        out = np.ascontiguousarray(rgb, dtype=np.uint8)
        if self.blur_sigma > 0:
            out = cv2.GaussianBlur(out, (0, 0), float(self.blur_sigma))
        return Photometric(gain=float(self.gain), noise_sigma=float(self.noise_sigma)).apply(out, rng)
