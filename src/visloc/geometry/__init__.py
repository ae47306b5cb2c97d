"""Geometry: the :class:`Pose` type, :class:`Camera` intrinsics, rotations and robust solvers."""

from .camera import CAMERA_MODELS, Camera, InvalidCameraError
from .pose import InvalidPoseError, Pose, pose_error

__all__ = ["CAMERA_MODELS", "Camera", "InvalidCameraError", "InvalidPoseError", "Pose", "pose_error"]
