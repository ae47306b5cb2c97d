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
        preset_name: the preset (:data:`WORLD_PRESETS`) the config was made from; a label recorded in
            ``dataset.json``, it changes nothing else.
        repeated_posters: poster designs hung in *every* room (on top of ``repeated_textures``).
        test_ambient: the test traversal's ambient light, a factor on every surface's colour (1: unchanged;
            below 1: dimmed, night-like).
        test_lamp_power: strength of one point lamp per room lighting the test traversal (0: no lamp): a
            surface gets ``power * colour * cos(incidence) / (1 + (d / LAMP_FALLOFF)^2)`` more light at
            distance ``d``.
        test_lamp_colour: the lamp's RGB colour (a warm light by default).
        test_shadows: boxes and occluders cast the lamp's shadows (exact, one shadow ray per pixel).
        test_night_gain: night-like exposure of the test traversal: the lit image is exposed at its low
            level (quantised to 8 bits, with sensor noise of ``noise_sigma``), then amplified by this gain, so
            dark surfaces come out grainy and posterised and bright ones clip (1: off).
        test_moved_boxes: boxes per room standing elsewhere in the test traversal.
        test_removed_boxes: boxes per room missing from the test traversal.
        test_moved_posters: posters per room hanging elsewhere in the test traversal.
        test_removed_posters: posters per room missing from the test traversal.
        test_occluders: share of the test frames with an occluder (a textured or plain board a few
            decimetres in front of the camera, covering a side or the bottom of the image).
        test_occluder_size: the largest share of the image width (height for a bottom one) an occluder covers.

    The nuisances ``exposure``, ``white_balance`` and ``noise_sigma`` change the written colour images
    only, never depth and never :func:`~visloc.datasets.synthetic.render`. The ``test_*`` options change
    the test traversal only: its lighting changes colour only; its moved / removed objects and occluders
    are geometry, rendered with exact depth. Every option after ``texel_density`` is off by default and
    left out of :meth:`to_dict` while off, so the default world's files do not change.
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
    # --- the "hard" options (off by default; see WORLD_PRESETS) ---------------------------------------
    preset_name: str = "default"
    repeated_posters: int = 0
    test_ambient: float = 1.0
    test_lamp_power: float = 0.0
    test_lamp_colour: tuple[float, float, float] = (1.0, 0.78, 0.5)
    test_shadows: bool = False
    test_night_gain: float = 1.0
    test_moved_boxes: int = 0
    test_removed_boxes: int = 0
    test_moved_posters: int = 0
    test_removed_posters: int = 0
    test_occluders: float = 0.0
    test_occluder_size: float = 0.35

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
        for name in ("low_texture", "repeated_textures", "test_shadows"):
            if not isinstance(getattr(self, name), bool):
                raise ConfigError(f"WorldConfig.{name} must be a bool, got {getattr(self, name)!r}")
        self._check_hard_options()

    def _check_hard_options(self) -> None:
        if self.preset_name not in WORLD_PRESETS:
            raise ConfigError(f"WorldConfig.preset_name must be one of {sorted(WORLD_PRESETS)}, "
                              f"got {self.preset_name!r}")
        counts = ("repeated_posters", "test_moved_boxes", "test_removed_boxes", "test_moved_posters",
                  "test_removed_posters")
        for name in counts:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 8:
                raise ConfigError(f"WorldConfig.{name} must be an integer in [0, 8], got {value!r}")
        ranges = {"test_ambient": (0.05, 4.0), "test_lamp_power": (0.0, 50.0), "test_night_gain": (1.0, 10.0),
                  "test_occluders": (0.0, 1.0),
                  "test_occluder_size": (0.05, 0.8)}
        for name, (lo, hi) in ranges.items():
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not lo <= value <= hi:
                raise ConfigError(f"WorldConfig.{name} must be a number in [{lo}, {hi}], got {value!r}")
            object.__setattr__(self, name, float(value))
        colour = self.test_lamp_colour
        if isinstance(colour, str):  # "1,0.8,0.5" from the command line
            colour = tuple(colour.replace(",", " ").split())
        try:
            values = tuple(float(c) for c in colour)  # type: ignore[union-attr]
        except (TypeError, ValueError):
            values = ()
        if len(values) != 3 or not all(0.0 <= c <= 4.0 for c in values):
            raise ConfigError(f"WorldConfig.test_lamp_colour must be three numbers in [0, 4], got {colour!r}")
        object.__setattr__(self, "test_lamp_colour", values)

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

    @property
    def has_test_lighting(self) -> bool:
        """The test traversal is lit differently (dimmed ambient and / or a lamp)."""
        return self.test_ambient != 1.0 or self.test_lamp_power > 0 or self.test_night_gain != 1.0

    @property
    def has_scene_changes(self) -> bool:
        """Objects are moved or removed in the test traversal."""
        return (self.test_moved_boxes + self.test_removed_boxes + self.test_moved_posters
                + self.test_removed_posters) > 0

    @property
    def has_hard_options(self) -> bool:
        """Any option after ``texel_density`` differs from its default (the preset label included)."""
        return bool(self._hard_options())

    def _hard_options(self) -> dict[str, Any]:
        """The hard options that differ from their defaults, JSON-ready."""
        out = {}
        for f in dataclasses.fields(self):
            if f.name in HARD_OPTIONS and getattr(self, f.name) != f.default:
                value = getattr(self, f.name)
                out[f.name] = list(value) if isinstance(value, tuple) else value
        return out

    def without_nuisances(self) -> WorldConfig:
        """The same world with every nuisance off (plain ceiling / repeats off, no photometric change, none
        of the test traversal's changes); the database keeps its size."""
        hard = {f.name: f.default for f in dataclasses.fields(self) if f.name in HARD_OPTIONS}
        return dataclasses.replace(self, **{**hard, "exposure": 0.0, "white_balance": 0.0, "noise_sigma": 0.0,
                                            "low_texture": False, "repeated_textures": False})

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready fields; the hard options only where they differ from their defaults (so the default
        world's ``dataset.json`` stays what it was before they existed)."""
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name not in HARD_OPTIONS}
        out.update(self._hard_options())
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> WorldConfig:
        """Build from a mapping; unknown keys are a :class:`~visloc.errors.ConfigError`."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"unknown WorldConfig option(s) {unknown}; known: {sorted(known)}")
        return cls(**dict(data))

    @classmethod
    def preset(cls, name: str = "default", **overrides: Any) -> WorldConfig:
        """The config of preset ``name`` (:data:`WORLD_PRESETS`) with ``overrides`` on top.

        Raises:
            ConfigError: unknown preset or option.
        """
        if name not in WORLD_PRESETS:
            raise ConfigError(f"unknown world preset {name!r}; presets: {', '.join(WORLD_PRESETS)}")
        return cls.from_dict({**WORLD_PRESETS[name], **overrides, "preset_name": name})


#: Options that change only the harder world (all off by default).
HARD_OPTIONS = frozenset({
    "preset_name", "repeated_posters", "test_ambient", "test_lamp_power", "test_lamp_colour", "test_shadows",
    "test_night_gain", "test_moved_boxes", "test_removed_boxes", "test_moved_posters", "test_removed_posters",
    "test_occluders", "test_occluder_size",
})

#: Named configs: ``WorldConfig.preset(name, **overrides)``, ``visloc world make OUT --preset NAME``.
#: ``hard``: a sparser database (2 traversals of 8 frames per room instead of 3 of 30), six poster designs
#: hung in every room, and a night-like test traversal (ambient light 0.15, a warm lamp with shadows, exposed
#: with a gain of 5: grainy and posterised), with two boxes and three posters moved, a box and two posters
#: removed, and an occluder covering up to half the image in 80 % of its frames. Tuned with
#: ``benchmarks/hard_world.py`` so that RootSIFT-VLAD's Recall@1 on the test traversals is at most 85 %
#: while VLAD + PnP still localizes 96 % or more of every room's test frames within (5 cm, 5 deg).
WORLD_PRESETS: dict[str, dict[str, Any]] = {
    "default": {},
    "hard": {
        "train_traversals": 2,
        "frames_per_train_traversal": 8,
        "repeated_posters": 6,
        "test_ambient": 0.15,
        "test_lamp_power": 1.6,
        "test_lamp_colour": (1.0, 0.78, 0.5),
        "test_shadows": True,
        "test_night_gain": 5.0,
        "test_moved_boxes": 2,
        "test_removed_boxes": 1,
        "test_moved_posters": 3,
        "test_removed_posters": 2,
        "test_occluders": 0.8,
        "test_occluder_size": 0.5,
    },
}


def world_config(preset: str = "default", **overrides: Any) -> WorldConfig:
    """``WorldConfig.preset(preset, **overrides)``."""
    return WorldConfig.preset(preset, **overrides)
