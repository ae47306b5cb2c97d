"""The Siamese relative-pose network of Publication V (Laskar et al., ICCVW 2017).

One shared encoder turns each image into a global descriptor; the concatenation
``[desc_db, desc_query]`` (database first, as the original) is regressed to the relative pose label of
:mod:`visloc.geometry.relative_pose`: translation ``t (3)`` and quaternion ``q (4)``, with no unit-norm
constraint on either output (normalise at use). Two heads:

* ``original`` (Lua code, ``model.lua``): Linear(2D -> hidden) -> BatchNorm1d -> ReLU -> Dropout(p) ->
  Linear(hidden -> 3) and Linear(hidden -> 4); dropout ``p = 0.5``.
* ``pytorch_port`` (RelPoseNet PyTorch port): Linear(2D -> hidden) -> Dropout(0.3) -> the two linear
  heads, no BatchNorm and no ReLU. The port applies the hidden layer once per head, so each head sees
  its own dropout mask in training; so does this implementation.
* ``correlation`` (visloc's extension, not in Publication V): the two images' L2-normalised feature maps
  at ``correlation_stride`` are correlated location against location (CNNGeometric's correlation, ReLU and
  L2-normalised as there), and a small CNN turns the correlation volume into a vector that joins the two
  pooled descriptors before the hidden layer (so the pooled, retrieval part is still trained by the pose
  loss, as in the original). It sees how image content moved between the views, not only what the
  scene looks like, which is what a model must learn to generalise to unseen scenes. The descriptor is then the global part (retrieval) followed
  by the flattened feature map, so a map still stores one vector per image and a query is encoded once.

The encoder's descriptor doubles as the retrieval descriptor (:meth:`RelPoseNet.retrieval_descriptor`),
as in the paper's test-time retrieval.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ConfigError
from ..geometry.relative_pose import check_frame
from .backbones import BackboneConfig, build_backbone, count_parameters
from .cnngeometric import feature_correlation, feature_l2_norm, stride_split
from .posenet import PoseNet, PoseNetConfig
from .registry import networks

#: Head variants and their default dropout.
HEAD_DROPOUT = {"original": 0.5, "pytorch_port": 0.3, "correlation": 0.3}

#: Channels of the correlation head's convolutions (the first maps the correlation volume, the next two
#: halve the grid).
CORRELATION_CHANNELS = (128, 128, 64)


@dataclass(frozen=True)
class RelPoseConfig:
    """Attributes:
    backbone: the shared encoder (the original: ``resnet34`` with ImageNet weights).
    head: ``"original"`` (Linear-BN-ReLU-Dropout, the Lua code), ``"pytorch_port"`` (Linear-Dropout) or
        ``"correlation"`` (visloc: regress from the two feature maps' correlation volume).
    hidden: width of the hidden layer (1024 in both published versions, = 2 x 512).
    dropout: dropout probability; ``None`` takes the head's published value (0.5 original, 0.3 port).
    translation_frame: frame of the translation label the network is trained on: ``"camera"``
        (scene-agnostic, visloc's default) or ``"world"`` (the original); see
        :mod:`visloc.geometry.relative_pose`. The network does not use it; it travels with the weights so that
        predictions are read in the right frame.
    pool_grid: ``(rows, cols)`` cells of the encoder's average pooling. ``(1, 1)`` is the original's
        global average pooling; a coarse grid such as ``(2, 2)`` keeps where things are in the image
        (the descriptor is the cells' pooled features concatenated, ``D = channels * rows * cols``),
        which small encoders trained from scratch need to regress relative poses.
    correlation_stride: ``correlation`` head: stride at which the encoder's feature maps are correlated.
    correlation_grid: ``correlation`` head: ``(rows, cols)`` the feature map is average-pooled to before
        the correlation (equal to the map's own size at the training input, e.g. 14x14 for 112 px at
        stride 8), which fixes the descriptor size for any input size.
    """

    backbone: BackboneConfig = BackboneConfig(name="resnet34")
    head: str = "original"
    hidden: int = 1024
    dropout: float | None = None
    translation_frame: str = "camera"
    pool_grid: tuple[int, int] = (1, 1)
    correlation_stride: int = 8
    correlation_grid: tuple[int, int] = (14, 14)

    def __post_init__(self) -> None:
        for name in ("pool_grid", "correlation_grid"):
            grid = tuple(int(v) for v in getattr(self, name))
            object.__setattr__(self, name, grid)
            if len(grid) != 2 or min(grid) < 1:
                raise ConfigError(f"relpose {name} must be two positive integers, got {grid}")
        if self.head not in HEAD_DROPOUT:
            raise ConfigError(f"unknown relpose head {self.head!r}; known: {', '.join(HEAD_DROPOUT)}")
        if self.hidden < 1:
            raise ConfigError(f"relpose hidden width must be positive, got {self.hidden}")
        if self.dropout is not None and not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"relpose dropout must be in [0, 1), got {self.dropout}")
        check_frame(self.translation_frame)

    @property
    def head_dropout(self) -> float:
        """The dropout probability used (``dropout`` or the head's published default)."""
        return HEAD_DROPOUT[self.head] if self.dropout is None else float(self.dropout)


@networks.register("relpose", RelPoseConfig)
class RelPoseNet(nn.Module):
    """Siamese relative-pose regressor.

    Args:
        config: the architecture.
        load_weights: initialise the encoder as ``config.backbone.weights`` says; ``False`` builds the
            architecture only (for loading a checkpoint).

    Example:
        >>> net = RelPoseNet(RelPoseConfig(BackboneConfig("tiny", "none", allow_random_init=True)))
        >>> t, q = net(torch.rand(2, 3, 64, 64), torch.rand(2, 3, 64, 64))
        >>> t.shape, q.shape
        (torch.Size([2, 3]), torch.Size([2, 4]))
    """

    def __init__(self, config: RelPoseConfig = RelPoseConfig(), load_weights: bool = True) -> None:
        super().__init__()
        self.config = config
        self.encoder = build_backbone(config.backbone, load_weights=load_weights)
        hidden, p = config.hidden, config.head_dropout
        self.local_channels = 0
        if config.head == "correlation":
            # plain tuple: the parts share the encoder's modules and must not be registered twice
            head_part, tail_part, self.local_channels = stride_split(self.encoder, config.correlation_stride)
            self._encoder_parts = (head_part, tail_part)
            self.correlation_net, d_corr = _correlation_net(config.correlation_grid)
            d_in = d_corr + 2 * self.global_dim
        else:
            d_in = 2 * self.descriptor_dim
        if config.head == "original":
            self.trunk: nn.Module = nn.Sequential(
                nn.Linear(d_in, hidden), nn.BatchNorm1d(hidden), nn.ReLU(inplace=True), nn.Dropout(p)
            )
            self.head_dropout: nn.Module = nn.Identity()  # already in the trunk, shared by both heads
        elif config.head == "correlation":
            self.trunk = nn.Sequential(nn.Linear(d_in, hidden), nn.ReLU(inplace=True), nn.Dropout(p))
            self.head_dropout = nn.Identity()
        else:
            self.trunk = nn.Sequential(nn.Linear(d_in, hidden))
            self.head_dropout = nn.Dropout(p)  # applied once per head: independent masks
        self.fc_t = nn.Linear(hidden, 3)
        self.fc_q = nn.Linear(hidden, 4)

    @property
    def global_dim(self) -> int:
        """Size of the pooled (retrieval) part of the descriptor."""
        return self.encoder.out_dim * self.config.pool_grid[0] * self.config.pool_grid[1]

    @property
    def descriptor_dim(self) -> int:
        """``D``, the size of one image's descriptor (pooled part, then the correlation head's map)."""
        rows, cols = self.config.correlation_grid
        return self.global_dim + self.local_channels * rows * cols

    def _pool(self, feature_map: torch.Tensor) -> torch.Tensor:
        if self.config.pool_grid == (1, 1):
            return feature_map.mean(dim=(2, 3))
        cells = F.adaptive_avg_pool2d(feature_map, self.config.pool_grid)
        return cells.permute(0, 2, 3, 1).flatten(1)

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """Shared-encoder descriptor of each image.

        Args:
            images: ``(B, 3, H, W)`` ImageNet-normalised.

        Returns:
            ``(B, D)``: average-pooled features, global (the original) or per ``pool_grid`` cell (cells in
            row-major order, each cell's channels contiguous); for the ``correlation`` head followed by
            the L2-normalised feature map at ``correlation_stride`` pooled to ``correlation_grid``,
            flattened channel-major.
        """
        if self.config.head != "correlation":
            if self.config.pool_grid == (1, 1):
                return self.encoder(images)
            return self._pool(self.encoder.feature_map(images))
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"expected images of shape (B, 3, H, W), got {tuple(images.shape)}")
        head_part, tail_part = self._encoder_parts
        local = head_part(images)
        pooled = self._pool(tail_part(local))
        local = feature_l2_norm(F.adaptive_avg_pool2d(local, self.config.correlation_grid))
        return torch.cat([pooled, local.flatten(1)], dim=1)

    def feature_maps(self, descriptors: torch.Tensor) -> torch.Tensor:
        """The correlation head's feature maps stored in descriptors.

        Args:
            descriptors: ``(B, D)`` from :meth:`encode`.

        Returns:
            ``(B, C, rows, cols)`` unit-norm features (``correlation_grid``).

        Raises:
            ConfigError: the head is not ``correlation``.
        """
        if self.config.head != "correlation":
            raise ConfigError(f"the {self.config.head!r} head stores no feature maps (only 'correlation' does)")
        rows, cols = self.config.correlation_grid
        return descriptors[:, self.global_dim :].reshape(len(descriptors), self.local_channels, rows, cols)

    def retrieval_descriptor(self, images: torch.Tensor) -> torch.Tensor:
        """The encoder descriptor, L2-normalised, for dot-product retrieval.

        Call in eval mode (and under ``torch.inference_mode()``) for reproducible descriptors.

        Args:
            images: ``(B, 3, H, W)`` ImageNet-normalised.

        Returns:
            ``(B, D)`` float32 unit vectors.
        """
        return F.normalize(self.encode(images)[:, : self.global_dim].float(), p=2.0, dim=1)

    def regress(self, desc_db: torch.Tensor, desc_query: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Relative pose from the two descriptors, database first.

        Args:
            desc_db: ``(B, D)`` descriptors of the database images (image 1).
            desc_query: ``(B, D)`` descriptors of the query images (image 2).

        Returns:
            ``t (B, 3)`` and ``q (B, 4)`` (w-first, not normalised), in the label convention of
            :mod:`visloc.geometry.relative_pose` with frame ``config.translation_frame``.
        """
        if desc_db.shape != desc_query.shape or desc_db.ndim != 2:
            raise ValueError(
                f"expected two (B, D) descriptors, got {tuple(desc_db.shape)} and {tuple(desc_query.shape)}"
            )
        if self.config.head == "correlation":
            maps = [self.feature_maps(d) for d in (desc_db, desc_query)]
            volume = feature_l2_norm(F.relu(feature_correlation(*maps)))
            pooled = [d[:, : self.global_dim] for d in (desc_db, desc_query)]
            hidden = self.trunk(torch.cat([self.correlation_net(volume).flatten(1), *pooled], dim=1))
        else:
            hidden = self.trunk(torch.cat([desc_db, desc_query], dim=1))
        return self.fc_t(self.head_dropout(hidden)), self.fc_q(self.head_dropout(hidden))

    def forward(self, img_db: torch.Tensor, img_query: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Relative pose of each (database, query) pair.

        Args:
            img_db: ``(B, 3, H, W)`` database images (image 1).
            img_query: ``(B, 3, H', W')`` query images (image 2).

        Returns:
            ``t (B, 3)`` and ``q (B, 4)``, as :meth:`regress`.
        """
        return self.regress(self.encode(img_db), self.encode(img_query))


def mutual_matches(query: torch.Tensor, db: torch.Tensor) -> torch.Tensor:
    """Number of mutual nearest neighbours between two feature maps, per pair.

    A query location and a database location match when each is the other's most similar location (by
    the dot product of the features).

    Args:
        query: ``(B, C, h, w)`` features.
        db: ``(B, C, h', w')`` features.

    Returns:
        ``(B,)`` int64 counts in ``[0, min(h * w, h' * w')]``.
    """
    sim = torch.einsum("bcq,bcd->bqd", query.flatten(2), db.flatten(2))
    best_db = sim.argmax(dim=2)  # (B, q)
    best_query = sim.argmax(dim=1)  # (B, d)
    back = best_query.gather(1, best_db)
    return (back == torch.arange(sim.shape[1], device=sim.device)[None]).sum(dim=1)


def _correlation_net(grid: tuple[int, int]) -> tuple[nn.Sequential, int]:
    """Convolutions over a ``(B, rows * cols, rows, cols)`` correlation volume and their flat output size."""
    layers: list[nn.Module] = []
    c_in, (rows, cols) = grid[0] * grid[1], grid
    for i, c_out in enumerate(CORRELATION_CHANNELS):
        stride = 1 if i == 0 else 2
        layers += [nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False), nn.BatchNorm2d(c_out),
                   nn.ReLU(inplace=True)]
        rows, cols = (rows - 1) // stride + 1, (cols - 1) // stride + 1
        c_in = c_out
    return nn.Sequential(*layers), c_in * rows * cols


def relpose_loss(
    t_pred: torch.Tensor, q_pred: torch.Tensor, t_gt: torch.Tensor, q_gt: torch.Tensor, beta: float = 1.0
) -> torch.Tensor:
    """The original's loss: ``MSE(t) + beta * MSE(q)`` (means over batch and components).

    The labels' quaternions have ``w >= 0`` (:func:`~visloc.geometry.relative_pose.relative_pose_label`, kept by
    the pair swap), so no sign alignment happens here.

    Args:
        t_pred: ``(B, 3)``.
        q_pred: ``(B, 4)``.
        t_gt: ``(B, 3)``.
        q_gt: ``(B, 4)``.
        beta: weight of the rotation term (the original's default: 1).

    Returns:
        Scalar loss.
    """
    return F.mse_loss(t_pred, t_gt) + beta * F.mse_loss(q_pred, q_gt)


def scalability(
    num_scenes: int, relpose: RelPoseConfig | None = None, posenet: PoseNetConfig | None = None
) -> dict[str, int]:
    """Parameter counts of one relative-pose model against one PoseNet per scene.

    Args:
        num_scenes: ``k``, the number of scenes PoseNet needs one model each for.
        relpose: the relative-pose architecture (default :class:`RelPoseConfig`).
        posenet: the per-scene absolute regressor (default :class:`PoseNetConfig`).

    Returns:
        ``{"relpose": n, "posenet_per_scene": m, "posenet_total": k * m}``.
    """
    relpose = relpose or RelPoseConfig()
    posenet = posenet or PoseNetConfig()
    n = count_parameters(RelPoseNet(relpose, load_weights=False))
    m = count_parameters(PoseNet(posenet, load_weights=False))
    return {"relpose": n, "posenet_per_scene": m, "posenet_total": num_scenes * m}
