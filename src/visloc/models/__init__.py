"""Neural networks (``nn.Module``s and their pure helpers; training loops live in ``visloc.training``).

* :mod:`~visloc.models.backbones` -- image encoders by name (``resnet34``, ``resnet18``,
  ``mobilenet_v2``, ``tiny``) with the weights policy of :class:`BackboneConfig`.
* :mod:`~visloc.models.weights` -- ImageNet weights from the torch hub cache (never downloaded
  implicitly; :func:`download_weights` when online) and state-dict files.
* :mod:`~visloc.models.registry` -- the trainable networks by name (:data:`networks`).
* :mod:`~visloc.models.checkpoint` -- checkpoints of trained networks (:func:`save_model`,
  :func:`load_model`).
* :mod:`~visloc.models.preprocess` -- the inference preprocessing of the pose networks (:func:`eval_batch`).
* :mod:`~visloc.models.relpose` -- the Siamese relative-pose network of Publication V.
* :mod:`~visloc.models.posenet` -- the PoseNet absolute-regression baseline.

The relative-pose labels the networks regress are :mod:`visloc.geometry.relative_pose`.

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
from .checkpoint import load_model, read_checkpoint, save_model
from .posenet import PoseNet, PoseNetConfig, posenet_label, posenet_loss, posenet_output_to_pose
from .registry import networks
from .relpose import RelPoseConfig, RelPoseNet, relpose_loss, scalability
from .weights import download_weights, imagenet_cache_path

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
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
    "load_model",
    "networks",
    "posenet_label",
    "posenet_loss",
    "posenet_output_to_pose",
    "read_checkpoint",
    "relpose_loss",
    "save_model",
    "scalability",
]
