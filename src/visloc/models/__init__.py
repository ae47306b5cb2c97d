"""Neural networks (``nn.Module``s and their pure helpers; training loops live in ``visloc.training``).

* :mod:`~visloc.models.backbones` -- image encoders by name (``resnet34``, ``resnet18``,
  ``mobilenet_v2``, ``tiny``) with the weights policy of :class:`BackboneConfig`.
* :mod:`~visloc.models.weights` -- ImageNet weights from the torch hub cache (never downloaded
  implicitly; :func:`download_weights` when online) and checkpoints (:func:`save_model`,
  :func:`load_model`).
* :mod:`~visloc.models.labels` -- relative-pose labels of image pairs and their inverses.
* :mod:`~visloc.models.relpose` -- the Siamese relative-pose network of Publication V.
* :mod:`~visloc.models.posenet` -- the PoseNet absolute-regression baseline.

>>> from visloc.models import BackboneConfig, RelPoseConfig, RelPoseNet
>>> net = RelPoseNet(RelPoseConfig(BackboneConfig("tiny", weights="none", allow_random_init=True)))
"""

from .backbones import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    Backbone,
    BackboneConfig,
    backbones,
    build_backbone,
    count_parameters,
    imagenet_normalize,
)
from .labels import (
    TRANSLATION_FRAMES,
    label_translation_to_world,
    query_pose_from_label,
    relative_pose_label,
    swap_label,
)
from .posenet import PoseNet, PoseNetConfig, posenet_label, posenet_loss, posenet_output_to_pose
from .relpose import RelPoseConfig, RelPoseNet, relpose_loss, scalability
from .weights import (
    download_weights,
    imagenet_cache_path,
    load_model,
    networks,
    read_checkpoint,
    save_model,
)

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "TRANSLATION_FRAMES",
    "Backbone",
    "BackboneConfig",
    "PoseNet",
    "PoseNetConfig",
    "RelPoseConfig",
    "RelPoseNet",
    "backbones",
    "build_backbone",
    "count_parameters",
    "download_weights",
    "imagenet_cache_path",
    "imagenet_normalize",
    "label_translation_to_world",
    "load_model",
    "networks",
    "posenet_label",
    "posenet_loss",
    "posenet_output_to_pose",
    "query_pose_from_label",
    "read_checkpoint",
    "relative_pose_label",
    "relpose_loss",
    "save_model",
    "scalability",
    "swap_label",
]
