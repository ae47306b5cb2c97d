"""PoseNet-style absolute pose regression (Kendall et al., ICCV 2015): the one-model-per-scene baseline.

An encoder (Kendall et al. used GoogLeNet; here any :mod:`~visloc.models.backbones` entry) is followed
by Linear(D -> hidden) -> ReLU -> Dropout -> Linear(hidden -> 3) (camera centre) and
Linear(hidden -> 4) (orientation), as in the common PyTorch re-implementations (e.g. geomapnet's).

Conventions (PoseNet's own, not visloc's ``cam_from_world``):

* the position output is the camera **centre** ``C`` in the scene's world frame;
* the orientation output is the w-first quaternion of the **camera-to-world** rotation ``R^T``.

Quaternion sign: ``q`` and ``-q`` are the same rotation, but the MSE loss sees them as far apart. Labels
(:func:`posenet_label`) therefore have ``w >= 0``, and :func:`posenet_loss` flips any label with ``w < 0``
before comparing, so the network learns the ``w >= 0`` hemisphere.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ConfigError
from ..geometry.pose import Pose
from ..geometry.rotation import matrix_to_quat, quat_to_matrix
from .backbones import BackboneConfig, build_backbone
from .registry import networks


@dataclass(frozen=True)
class PoseNetConfig:
    """Attributes:
    backbone: the encoder (default ``resnet34`` with ImageNet weights, as geomapnet's PoseNet).
    hidden: width of the fully connected layer before the regressors (PoseNet: 2048; 1024 is lighter).
    dropout: dropout probability after it (PoseNet: 0.5).
    """

    backbone: BackboneConfig = BackboneConfig(name="resnet34")
    hidden: int = 2048
    dropout: float = 0.5

    def __post_init__(self) -> None:
        if self.hidden < 1:
            raise ConfigError(f"posenet hidden width must be positive, got {self.hidden}")
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"posenet dropout must be in [0, 1), got {self.dropout}")


@networks.register("posenet", PoseNetConfig)
class PoseNet(nn.Module):
    """Absolute pose regressor for one scene.

    Args:
        config: the architecture.
        load_weights: initialise the encoder as ``config.backbone.weights`` says; ``False`` builds the
            architecture only (for loading a checkpoint).
    """

    def __init__(self, config: PoseNetConfig = PoseNetConfig(), load_weights: bool = True) -> None:
        super().__init__()
        self.config = config
        self.encoder = build_backbone(config.backbone, load_weights=load_weights)
        self.trunk = nn.Sequential(
            nn.Linear(self.encoder.out_dim, config.hidden), nn.ReLU(inplace=True), nn.Dropout(config.dropout)
        )
        self.fc_xyz = nn.Linear(config.hidden, 3)
        self.fc_q = nn.Linear(config.hidden, 4)

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Camera centre and orientation of each image.

        Args:
            images: ``(B, 3, H, W)`` ImageNet-normalised.

        Returns:
            ``centre (B, 3)`` in world coordinates and ``q (B, 4)``: w-first quaternion of the
            camera-to-world rotation, not normalised.
        """
        hidden = self.trunk(self.encoder(images))
        return self.fc_xyz(hidden), self.fc_q(hidden)


def posenet_label(pose: Pose) -> tuple[np.ndarray, np.ndarray]:
    """PoseNet's regression target of an image with visloc pose ``pose`` (``cam_from_world``).

    Returns:
        ``centre (3,)`` and ``q (4,)``: unit w-first quaternion of ``pose.R.T`` with ``w >= 0``; float64.
    """
    return pose.center, matrix_to_quat(pose.R.T)


def _as_numpy(x: np.ndarray | torch.Tensor) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().double().numpy()
    return np.asarray(x, dtype=np.float64).reshape(-1)


def posenet_output_to_pose(centre: np.ndarray | torch.Tensor, q: np.ndarray | torch.Tensor) -> Pose:
    """The visloc :class:`~visloc.geometry.Pose` (``cam_from_world``) of one PoseNet output.

    Args:
        centre: ``(3,)`` predicted camera centre.
        q: ``(4,)`` predicted camera-to-world quaternion, any norm (normalised here).

    Raises:
        ValueError: ``q`` is zero or the numbers are not finite.
    """
    centre, q = _as_numpy(centre), _as_numpy(q)
    if centre.shape != (3,) or q.shape != (4,):
        raise ValueError(f"expected a (3,) centre and a (4,) quaternion, got {centre.shape} and {q.shape}")
    norm = np.linalg.norm(q)
    if not (np.isfinite(norm) and norm > 1e-12 and np.all(np.isfinite(centre))):
        raise ValueError(f"cannot make a pose of centre {centre} and quaternion {q}")
    return Pose.from_world_from_cam(quat_to_matrix(q / norm), centre)


def posenet_loss(
    c_pred: torch.Tensor, q_pred: torch.Tensor, c_gt: torch.Tensor, q_gt: torch.Tensor, beta: float
) -> torch.Tensor:
    """``MSE(centre) + beta * MSE(q)``, with the labels' quaternions moved to the ``w >= 0`` hemisphere.

    Args:
        c_pred: ``(B, 3)`` predicted centres.
        q_pred: ``(B, 4)`` predicted quaternions (not normalised; as the relative-pose loss).
        c_gt: ``(B, 3)`` true centres.
        q_gt: ``(B, 4)`` true unit quaternions; any with ``w < 0`` is negated first.
        beta: weight of the orientation term (Kendall et al.: 120-750 indoors, 250-2000 outdoors,
            with position in metres).

    Returns:
        Scalar loss.
    """
    q_gt = torch.where(q_gt[..., :1] < 0, -q_gt, q_gt)
    return F.mse_loss(c_pred, c_gt) + beta * F.mse_loss(q_pred, q_gt)
