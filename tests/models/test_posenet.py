"""PoseNet baseline: outputs, PoseNet's label convention against visloc poses, the sign-aware loss."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.spatial.transform import Rotation
from torch import nn

from visloc.errors import ConfigError
from visloc.geometry import Pose
from visloc.models import (
    BackboneConfig,
    PoseNet,
    PoseNetConfig,
    networks,
    posenet_label,
    posenet_loss,
    posenet_output_to_pose,
)

TINY = BackboneConfig("tiny", weights="none", allow_random_init=True)
# camera at world (1, 2, 3) looking along world +x: columns are the camera axes in world coordinates
R_WC = np.array([[0.0, 0.0, 1.0], [-1.0, 0.0, 0.0], [0.0, -1.0, 0.0]])


def test_outputs_and_head() -> None:
    torch.manual_seed(0)
    net = PoseNet(PoseNetConfig(backbone=TINY, hidden=64)).eval()
    with torch.inference_mode():
        centre, q = net(torch.randn(2, 3, 97, 131))
    assert centre.shape == (2, 3) and q.shape == (2, 4)
    assert [type(m) for m in net.trunk] == [nn.Linear, nn.ReLU, nn.Dropout]
    assert net.trunk[0].in_features == 256 and net.trunk[0].out_features == 64 and net.trunk[2].p == 0.5
    default = PoseNetConfig()
    assert default.hidden == 2048 and default.dropout == 0.5 and default.backbone.name == "resnet34"
    assert networks.create("posenet", backbone=TINY, hidden=1024).fc_xyz.in_features == 1024


def test_label_by_hand() -> None:
    pose = Pose.from_world_from_cam(R_WC, np.array([1.0, 2.0, 3.0]))
    centre, q = posenet_label(pose)
    np.testing.assert_allclose(centre, [1.0, 2.0, 3.0], atol=1e-12)
    # R_WC fixes (-1, 1, -1) and cycles the other axes: 120 degrees about (-1, 1, -1)/sqrt(3), so
    # q = (cos 60, sin 60 * axis) = (1/2, -1/2, 1/2, -1/2)
    np.testing.assert_allclose(R_WC @ [-1.0, 1.0, -1.0], [-1.0, 1.0, -1.0])
    np.testing.assert_allclose(q, [0.5, -0.5, 0.5, -0.5], atol=1e-12)
    # it is the camera-to-world rotation, not visloc's cam_from_world (whose quaternion is conjugate)
    np.testing.assert_allclose(pose.qvec, [0.5, 0.5, -0.5, 0.5], atol=1e-12)


def test_output_to_pose_round_trip() -> None:
    rng = np.random.default_rng(0)
    for _ in range(20):
        pose = Pose(Rotation.random(random_state=rng.integers(1 << 31)).as_matrix(), rng.normal(size=3))
        centre, q = posenet_label(pose)
        assert q[0] >= 0
        for scale in (1.0, 3.0, -0.2):  # any norm and either sign is the same rotation
            back = posenet_output_to_pose(
                torch.from_numpy(centre).float(), torch.from_numpy(scale * q).float()
            )
            np.testing.assert_allclose(back.R, pose.R, atol=1e-6)
            np.testing.assert_allclose(back.center, pose.center, atol=1e-6)
    with pytest.raises(ValueError, match="cannot make a pose"):
        posenet_output_to_pose(np.zeros(3), np.zeros(4))
    with pytest.raises(ValueError, match=r"\(3,\) centre"):
        posenet_output_to_pose(np.zeros(4), np.ones(4))


def test_loss_by_hand_with_sign_alignment() -> None:
    c_pred, c_gt = torch.tensor([[0.0, 0.0, 2.0]]), torch.zeros(1, 3)
    q_pred = torch.tensor([[1.0, 0.0, 0.0, 0.0]])
    # MSE(c) = 4 / 3; the label -q_pred is the same rotation: after sign alignment MSE(q) = 0
    assert posenet_loss(c_pred, q_pred, c_gt, -q_pred, beta=100.0).item() == pytest.approx(4.0 / 3.0)
    q_gt = torch.tensor([[0.0, 1.0, 0.0, 0.0]])  # w = 0 is kept as is: MSE(q) = 2 / 4
    assert posenet_loss(c_pred, q_pred, c_gt, q_gt, beta=100.0).item() == pytest.approx(4.0 / 3.0 + 50.0)
    q_gt = torch.tensor([[-0.6, 0.0, 0.8, 0.0]])  # flipped to (0.6, 0, -0.8, 0): MSE(q) = (0.16 + 0.64) / 4
    assert posenet_loss(c_gt, q_pred, c_gt, q_gt, beta=2.0).item() == pytest.approx(2.0 * 0.2)


def test_config_validation() -> None:
    with pytest.raises(ConfigError, match="dropout"):
        PoseNetConfig(dropout=-0.1)
    with pytest.raises(ConfigError, match="hidden"):
        networks.create("posenet", backbone=TINY, hidden=0)
