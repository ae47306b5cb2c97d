"""Configuration of the embedded synthetic world."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ...errors import ConfigError
from ...geometry import Camera

#: Bumped whenever a change of the generator changes the bytes it writes for a given config.
GENERATOR_VERSION = 1

#: Names of the first scenes (7-Scenes-like); further scenes are called ``room05``, ``room06`` ...
SCENE_NAMES = ("office", "kitchen", "meeting", "conference", "lab", "library", "lobby", "studio")


def scene_name(index: int) -> str:
    """Name of scene ``index`` (0-based)."""
    return SCENE_NAMES[index] if index < len(SCENE_NAMES) else f"room{index + 1:02d}"


@dataclass(frozen=True)
class WorldConfig:
    """Everything that determines the synthetic world and its files (same config => same bytes).

    Attributes:
        num_scenes: number of rooms, placed side by side along the world x axis.
        train_traversals: training traversals per scene (sequences ``seq-01`` ...).
        frames_per_train_traversal: frames in each training traversal.
        frames_per_test_traversal: frames in the single test traversal (the last sequence).
        width: image width in pixels.
        height: image height in pixels.
        focal: focal length in pixels (fx = fy); the principal point is ``(width / 2, height / 2)``.
        seed: master seed of every random choice (layout, textures, paths, nuisances).
        exposure: strength of the per-traversal exposure change: gain ``2**(e * U(-1, 1))`` and gamma
            ``2**(e / 2 * U(-1, 1))``; 0 disables it.
        white_balance: per-traversal per-channel gain deviation ``U(-wb, wb)``; 0 disables it.
        noise_sigma: standard deviation of the Gaussian sensor noise in grey levels; 0 disables it.
        low_texture: plain ceiling with a slight gradient and one plain wall section per scene
            (otherwise a tiled ceiling and posters everywhere).
        repeated_textures: a few identical posters hang in two different scenes (perceptual aliasing).
        texel_density: texels per metre of the wall and box textures (the floor uses 3/4 of it).

    The nuisances ``exposure``, ``white_balance`` and ``noise_sigma`` change the written colour images
    only, never depth and never :func:`~visloc.datasets.synthetic.render`.
    """

    num_scenes: int = 4
    train_traversals: int = 3
    frames_per_train_traversal: int = 30
    frames_per_test_traversal: int = 25
    width: int = 640
    height: int = 480
    focal: float = 525.0
    seed: int = 0
    exposure: float = 0.3
    white_balance: float = 0.08
    noise_sigma: float = 2.0
    low_texture: bool = True
    repeated_textures: bool = True
    texel_density: float = 400.0

    def __post_init__(self) -> None:
        positive_ints = ("num_scenes", "train_traversals", "frames_per_train_traversal",
                         "frames_per_test_traversal", "width", "height")
        for name in positive_ints:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"WorldConfig.{name} must be a positive integer, got {value!r}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise ConfigError(f"WorldConfig.seed must be a non-negative integer, got {self.seed!r}")
        for name in ("focal", "exposure", "white_balance", "noise_sigma", "texel_density"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise ConfigError(f"WorldConfig.{name} must be a number, got {value!r}")
            object.__setattr__(self, name, float(value))  # 525 and 525.0 give the same files
        for name in ("exposure", "white_balance", "noise_sigma"):
            value = getattr(self, name)
            if not 0 <= value < 10:
                raise ConfigError(f"WorldConfig.{name} must be in [0, 10), got {value!r}")
        if not self.focal > 0:
            raise ConfigError(f"WorldConfig.focal must be positive, got {self.focal!r}")
        if self.white_balance >= 1:
            raise ConfigError(f"WorldConfig.white_balance must be below 1, got {self.white_balance!r}")
        if not 50 <= self.texel_density <= 2000:
            raise ConfigError(f"WorldConfig.texel_density must be in [50, 2000], got {self.texel_density!r}")
        for name in ("low_texture", "repeated_textures"):
            if not isinstance(getattr(self, name), bool):
                raise ConfigError(f"WorldConfig.{name} must be a bool, got {getattr(self, name)!r}")

    # --- views --------------------------------------------------------------------------------
    @property
    def camera(self) -> Camera:
        """Pinhole intrinsics of every image (7-Scenes values for the default 640x480)."""
        return Camera.pinhole(self.focal, self.focal, self.width / 2, self.height / 2, self.width, self.height)

    @property
    def scene_names(self) -> list[str]:
        return [scene_name(i) for i in range(self.num_scenes)]

    @property
    def has_photometric_nuisances(self) -> bool:
        return self.exposure > 0 or self.white_balance > 0 or self.noise_sigma > 0

    def without_nuisances(self) -> WorldConfig:
        """The same world with every nuisance off (plain ceiling / repeats off, no photometric change)."""
        return dataclasses.replace(self, exposure=0.0, white_balance=0.0, noise_sigma=0.0,
                                   low_texture=False, repeated_textures=False)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> WorldConfig:
        """Build from a mapping; unknown keys are a :class:`~visloc.errors.ConfigError`."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"unknown WorldConfig option(s) {unknown}; known: {sorted(known)}")
        return cls(**dict(data))
