"""Hand-held-like camera paths inside a room.

Every traversal of a scene follows the scene's *nominal loop*: an ellipse around the room centre at
about 1.5 m height, with the camera looking across the room (towards the far walls and the boxes in
front of them) and smooth yaw / pitch variation shared by all traversals. Each traversal adds its own
small smooth perturbation (radius, height, yaw, pitch, roll), its own phase along the loop, and the
test traversal runs the loop in the opposite direction. The training traversals are phase-interleaved,
so every test view has training views within a few centimetres / degrees of the perturbation range.

World frame: z up, metres (see :mod:`visloc.datasets.synthetic.scene`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ...geometry import Pose
from .nuisances import Photometric

#: Relative radial perturbation of a traversal around the nominal loop.
RADIAL_AMPLITUDE = 0.06
#: Nominal camera height, its variation along the loop, and a traversal's extra offset / wobble (m).
HEIGHT, HEIGHT_AMPLITUDE, HEIGHT_OFFSET, HEIGHT_WOBBLE = 1.5, 0.12, 0.08, 0.04


@dataclass(frozen=True)
class LoopSpec:
    """The nominal loop of a scene (angles in degrees).

    The camera centre at loop parameter ``theta`` is ``centre + (rx cos theta, ry sin theta)`` at height
    ``height + height_amp sin(2 theta + height_phase)``; it looks towards heading
    ``theta + 180 + yaw_amp sin(2 theta + yaw_phase)`` with pitch ``pitch + pitch_amp sin(3 theta + pitch_phase)``.
    """

    centre: tuple[float, float]
    rx: float
    ry: float
    height: float = HEIGHT
    height_amp: float = HEIGHT_AMPLITUDE
    height_phase: float = 0.0
    yaw_amp: float = 20.0
    yaw_phase: float = 0.0
    pitch: float = -10.0
    pitch_amp: float = 5.0
    pitch_phase: float = 0.0

    def points(self, n: int = 720, radial_scales: tuple[float, ...] = (1.0,)) -> np.ndarray:
        """Horizontal positions ``(n * len(radial_scales), 2)`` along the loop at the given radius scales."""
        theta = np.linspace(0.0, 2 * np.pi, n, endpoint=False)
        out = [np.stack([self.centre[0] + s * self.rx * np.cos(theta),
                         self.centre[1] + s * self.ry * np.sin(theta)], axis=1) for s in radial_scales]
        return np.concatenate(out, axis=0)

    def band(self, n: int = 720) -> np.ndarray:
        """Points ``(M, 2)`` covering every horizontal position a traversal can take."""
        scales = tuple(np.linspace(1 - RADIAL_AMPLITUDE, 1 + RADIAL_AMPLITUDE, 5))
        return self.points(n, scales)


def make_loop(rng: np.random.Generator, centre: tuple[float, float], rx: float, ry: float) -> LoopSpec:
    """A nominal loop with random phases (consumes 3 draws)."""
    phases = rng.uniform(0.0, 360.0, size=3)
    return LoopSpec(centre=(float(centre[0]), float(centre[1])), rx=float(rx), ry=float(ry),
                    height_phase=float(phases[0]), yaw_phase=float(phases[1]), pitch_phase=float(phases[2]))


@dataclass(frozen=True)
class PathNoise:
    """Smooth per-traversal deviation from the nominal loop (amplitudes in m or degrees, phases in degrees)."""

    radial_amp: float = 0.0
    radial_phase: float = 0.0
    height_offset: float = 0.0
    height_amp: float = 0.0
    height_phase: float = 0.0
    yaw_amp: float = 0.0
    yaw_phase: float = 0.0
    pitch_amp: float = 0.0
    pitch_phase: float = 0.0
    roll_amp: tuple[float, float] = (0.0, 0.0)
    roll_phase: tuple[float, float] = (0.0, 0.0)


def draw_path_noise(rng: np.random.Generator) -> PathNoise:
    """Random :class:`PathNoise` (always consumes 12 draws)."""
    a = rng.uniform(-1.0, 1.0, size=6)
    p = rng.uniform(0.0, 360.0, size=6)
    return PathNoise(radial_amp=RADIAL_AMPLITUDE * a[0], radial_phase=p[0],
                     height_offset=HEIGHT_OFFSET * a[1], height_amp=HEIGHT_WOBBLE * a[2], height_phase=p[1],
                     yaw_amp=6.0 * a[3], yaw_phase=p[2], pitch_amp=4.0 * a[4], pitch_phase=p[3],
                     roll_amp=(3.0 * a[5], 1.5), roll_phase=(p[4], p[5]))


def look_rotation(yaw_deg: float, pitch_deg: float, roll_deg: float) -> np.ndarray:
    """``world_from_cam`` rotation ``(3, 3)`` of a camera (x right, y down, z forward) in a z-up world.

    Args:
        yaw_deg: heading of the optical axis, counter-clockwise from world +x.
        pitch_deg: elevation of the optical axis (positive looks up).
        roll_deg: rotation about the optical axis (positive tilts the camera x axis towards its y axis).

    Returns:
        ``(3, 3)`` matrix whose columns are the camera's x, y, z axes in world coordinates.
    """
    y, p, r = np.radians([yaw_deg, pitch_deg, roll_deg])
    forward = np.array([np.cos(p) * np.cos(y), np.cos(p) * np.sin(y), np.sin(p)])
    right = np.cross(forward, [0.0, 0.0, 1.0])
    right /= np.linalg.norm(right)
    down = np.cross(forward, right)
    right_r = np.cos(r) * right + np.sin(r) * down
    down_r = np.cross(forward, right_r)
    return np.stack([right_r, down_r, forward], axis=1)


def loop_pose(loop: LoopSpec, noise: PathNoise, theta: float) -> Pose:
    """Camera pose (``cam_from_world``) at loop parameter ``theta`` (radians)."""
    d = np.degrees(theta)
    s = 1.0 + noise.radial_amp * np.sin(np.radians(d + noise.radial_phase))
    cx = loop.centre[0] + s * loop.rx * np.cos(theta)
    cy = loop.centre[1] + s * loop.ry * np.sin(theta)
    z = (loop.height + loop.height_amp * np.sin(np.radians(2 * d + loop.height_phase))
         + noise.height_offset + noise.height_amp * np.sin(np.radians(d + noise.height_phase)))
    yaw = (d + 180.0 + loop.yaw_amp * np.sin(np.radians(2 * d + loop.yaw_phase))
           + noise.yaw_amp * np.sin(np.radians(3 * d + noise.yaw_phase)))
    pitch = (loop.pitch + loop.pitch_amp * np.sin(np.radians(3 * d + loop.pitch_phase))
             + noise.pitch_amp * np.sin(np.radians(2 * d + noise.pitch_phase)))
    roll = (noise.roll_amp[0] * np.sin(np.radians(d + noise.roll_phase[0]))
            + noise.roll_amp[1] * np.sin(np.radians(4 * d + noise.roll_phase[1])))
    return Pose.from_world_from_cam(look_rotation(yaw, pitch, roll), np.array([cx, cy, z]))


@dataclass(frozen=True, eq=False)
class Traversal:
    """One sequence of a scene.

    Attributes:
        scene: scene name.
        sequence: 1-based sequence number (``seq-01`` ...); training sequences come first.
        split: ``"train"`` or ``"test"``.
        poses: ``cam_from_world`` pose of every frame.
        photometric: camera response applied to the written colour images of this traversal.
        noise: the path perturbation that made the poses.
        phase: start offset along the loop, in frame steps.
        reverse: the loop is run clockwise.
    """

    scene: str
    sequence: int
    split: str
    poses: tuple[Pose, ...]
    photometric: Photometric = field(default_factory=Photometric)
    noise: PathNoise = field(default_factory=PathNoise)
    phase: float = 0.0
    reverse: bool = False

    @property
    def name(self) -> str:
        """Folder name, ``seq-XX``."""
        return f"seq-{self.sequence:02d}"

    def __len__(self) -> int:
        return len(self.poses)


def loop_traversal_poses(loop: LoopSpec, noise: PathNoise, n_frames: int, phase: float,
                         reverse: bool = False) -> tuple[Pose, ...]:
    """``n_frames`` poses evenly spaced once around the loop, starting ``phase`` frame steps in."""
    step = 2 * np.pi / n_frames
    sign = -1.0 if reverse else 1.0
    return tuple(loop_pose(loop, noise, sign * (i + phase) * step) for i in range(n_frames))


def make_traversals(rng: np.random.Generator, scene: str, loop: LoopSpec, n_train: int, train_frames: int,
                    test_frames: int, photometrics: list[Photometric]) -> list[Traversal]:
    """The training traversals (phase-interleaved) and the reversed test traversal of one scene.

    Args:
        rng: random generator (consumed).
        scene: scene name.
        loop: the scene's nominal loop.
        n_train: number of training traversals.
        train_frames: frames per training traversal.
        test_frames: frames of the test traversal.
        photometrics: ``n_train + 1`` camera responses, training ones first.

    Returns:
        ``n_train + 1`` traversals; sequence numbers ``1 .. n_train + 1``, the test one last.
    """
    out = []
    for k in range(n_train + 1):
        noise = draw_path_noise(rng)
        is_test = k == n_train
        if is_test:
            phase, frames = float(rng.uniform(0.0, 1.0)), test_frames
        else:
            phase, frames = (k + float(rng.uniform(-0.15, 0.15))) / n_train, train_frames
        poses = loop_traversal_poses(loop, noise, frames, phase, reverse=is_test)
        out.append(Traversal(scene=scene, sequence=k + 1, split="test" if is_test else "train", poses=poses,
                             photometric=photometrics[k], noise=noise, phase=phase, reverse=is_test))
    return out
