"""ALIKED (Zhao et al. 2023) through ``kornia.feature.ALIKED``, with weights from a local file.

torch and kornia are imported when the extractor is created, not with the package. The BSD-3
weights are read from ``$VISLOC_DATA/weights/aliked/<model>.pth`` (or ``weights_path``);
nothing is downloaded.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import InputError
from ..settings import weights_dir
from .base import LocalFeatures, rescale_keypoints, resize_for_extraction
from .registry import extractors


@dataclass(frozen=True)
class ALIKEDConfig:
    """Attributes:
    model_name: ``aliked-t16`` or ``aliked-n16`` (the weights shipped in the data folder).
    max_keypoints: top-k keypoints.
    detection_threshold: score threshold of the detector.
    weights_path: explicit checkpoint; default ``$VISLOC_DATA/weights/aliked/<model_name>.pth``.
    resize_max: downscale the longer image side to this before extraction.
    device: torch device string.
    """

    model_name: str = "aliked-n16"
    max_keypoints: int = 2048
    detection_threshold: float = 0.2
    weights_path: str | None = None
    resize_max: int | None = 1024
    device: str = "cpu"


def _load(config: ALIKEDConfig):
    """The kornia model with the local weights (torch and kornia are imported only here)."""
    import torch
    from kornia.feature import ALIKED as KorniaALIKED

    path = Path(config.weights_path) if config.weights_path else weights_dir() / "aliked" / f"{config.model_name}.pth"
    if not path.is_file():
        raise InputError(path, "ALIKED weights not found (set VISLOC_DATA or weights_path)")
    model = KorniaALIKED(
        model_name=config.model_name,
        max_num_keypoints=config.max_keypoints,
        detection_threshold=config.detection_threshold,
    )
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # pickle, zip and torch errors all mean "not a usable checkpoint"
        raise InputError(path, f"not a readable torch checkpoint ({type(e).__name__}: {e})") from None
    try:
        result = model.load_state_dict(state, strict=False)
    except (RuntimeError, TypeError, AttributeError) as e:
        raise InputError(path, f"checkpoint does not fit {config.model_name} ({e})") from None
    unexpected_missing = [k for k in result.missing_keys if not k.endswith("hw_grid")]
    if unexpected_missing or result.unexpected_keys:
        raise InputError(path, f"checkpoint does not fit {config.model_name}: missing {unexpected_missing}, "
                         f"unexpected {result.unexpected_keys}")
    return model.eval().to(config.device)


@extractors.register("aliked", ALIKEDConfig)
class ALIKED:
    descriptor_kind = "aliked"

    def __init__(self, config: ALIKEDConfig = ALIKEDConfig()) -> None:
        self.config = config
        self.model = _load(config)

    def __call__(self, image: np.ndarray) -> LocalFeatures:
        import torch

        if image.ndim == 2:
            image = np.repeat(image[..., None], 3, axis=2)
        small, factor = resize_for_extraction(image, self.config.resize_max)
        x = torch.from_numpy(small).permute(2, 0, 1)[None].float().div(255.0).to(self.config.device)
        with torch.inference_mode():
            out = self.model(x)[0]
        h, w = image.shape[:2]
        return LocalFeatures(
            keypoints=rescale_keypoints(out.keypoints.cpu().numpy(), factor).astype(np.float32),
            descriptors=out.descriptors.cpu().numpy().astype(np.float32),
            scores=out.keypoint_scores.cpu().numpy().astype(np.float32),
            image_size=(w, h),
        )
