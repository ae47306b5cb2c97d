"""The relative-pose network's encoder as a global descriptor (Publication V).

The Siamese encoder's global-pooled vector serves twice: L2-normalised it is the retrieval descriptor
(dot product through the map's FAISS index), and raw it is the input of the regression head, so a map
stores one compact vector per database image and a query is encoded once. The map keeps the raw vector
(``global_features.h5``); the index holds its normalised copy.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np

from ..errors import InputError
from ..features.base import LocalFeatures
from ..settings import shipped_model
from .registry import global_descriptors

#: The model shipped in the package, trained on the embedded world (see ``weights/README.md``).
DEFAULT_MODEL = "relpose_tiny_world.pt"


@dataclass(frozen=True)
class RelPoseDescriptorConfig:
    """Attributes:
    model: a checkpoint written by ``visloc train relpose`` (``model.pt``); ``None`` uses the model
        shipped with visloc.
    device: torch device.
    """

    model: str | None = None
    device: str = "cpu"


@global_descriptors.register("relpose", RelPoseDescriptorConfig)
class RelPoseDescriptor:
    """Encoder + regression head of a trained :class:`~visloc.models.relpose.RelPoseNet`.

    ``descriptor(image, features) -> (D,)`` raw encoder output; :meth:`regress` predicts the relative
    poses of a query with respect to database images from their raw descriptors.
    """

    needs_fit = False
    #: Whether ``descriptor(image, features)`` needs the local features (reads the image itself).
    needs_local_features = False

    def __init__(self, config: RelPoseDescriptorConfig = RelPoseDescriptorConfig()) -> None:
        self.config = config
        self.path = Path(config.model) if config.model else shipped_model(DEFAULT_MODEL)
        if not self.path.is_file():
            raise InputError(self.path, "relative-pose model not found (train one with `visloc train relpose`)")

    @cached_property
    def _loaded(self):
        from ..models.checkpoint import load_model, read_checkpoint

        model = load_model(self.path, self.config.device).eval()
        preprocess = read_checkpoint(self.path).get("metrics", {}).get("preprocess", {})
        return model, int(preprocess.get("resize", 256)), int(preprocess.get("crop", 224))

    @property
    def has_feature_maps(self) -> bool:
        """Whether the descriptors carry the correlation head's feature maps (:meth:`rerank_scores`)."""
        return self._loaded[0].config.head == "correlation"

    @property
    def translation_frame(self) -> str:
        return self._loaded[0].config.translation_frame

    def _batch(self, images: list[np.ndarray]):
        from ..models.preprocess import eval_batch

        _, resize, crop = self._loaded
        return eval_batch(images, resize, crop).to(self.config.device)

    def encode(self, images: list[np.ndarray]) -> np.ndarray:
        """Raw encoder descriptors ``(N, D)`` of ``(H, W, 3)`` uint8 images."""
        import torch

        model = self._loaded[0]
        with torch.inference_mode():
            return model.encode(self._batch(images)).float().cpu().numpy()

    def __call__(self, image: np.ndarray, features: LocalFeatures | None = None) -> np.ndarray:
        return self.encode([image])[0]

    def retrieval_part(self, vectors: np.ndarray) -> np.ndarray:
        """The pooled (retrieval) part ``(N, D')`` of raw ``(N, D)`` descriptors: all of it for the published
        heads; the correlation head appends its feature map, which is not searched."""
        return vectors[:, : self._loaded[0].global_dim]

    def rerank_scores(self, db_descriptors: np.ndarray, query_descriptor: np.ndarray) -> np.ndarray:
        """Dense agreement of a query with N database images (correlation head only).

        Args:
            db_descriptors: ``(N, D)`` raw database descriptors.
            query_descriptor: ``(D,)`` raw query descriptor.

        Returns:
            ``(N,)`` float: per image, the number of mutual nearest neighbours between the query's and the
            image's feature-map locations (by the correlation, :func:`~visloc.models.relpose.mutual_matches`).

        Raises:
            ConfigError: the model has no correlation head (its descriptor holds no feature map).
        """
        import torch

        from ..models.relpose import mutual_matches

        model = self._loaded[0]
        db = torch.from_numpy(np.ascontiguousarray(db_descriptors, dtype=np.float32))
        q = torch.from_numpy(np.ascontiguousarray(query_descriptor, dtype=np.float32))
        with torch.inference_mode():
            maps = model.feature_maps(torch.cat([q[None], db]))
            return mutual_matches(maps[:1].expand(len(db), -1, -1, -1), maps[1:]).float().numpy()

    def regress(self, db_descriptors: np.ndarray, query_descriptor: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Relative poses of one query w.r.t. N database images.

        Args:
            db_descriptors: ``(N, D)`` raw database descriptors (image 1 of each pair, as the original).
            query_descriptor: ``(D,)`` raw query descriptor.

        Returns:
            ``t (N, 3)`` in the model's translation frame and ``q (N, 4)`` w-first, unnormalised.
        """
        import torch

        model = self._loaded[0]
        db = torch.from_numpy(np.ascontiguousarray(db_descriptors, dtype=np.float32)).to(self.config.device)
        q = torch.from_numpy(np.ascontiguousarray(query_descriptor, dtype=np.float32)).to(self.config.device)
        with torch.inference_mode():
            t, quat = model.regress(db, q[None].expand(len(db), -1))
        return t.float().cpu().numpy(), quat.float().cpu().numpy()
