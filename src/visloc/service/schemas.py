"""The JSON answers of the server (pydantic models: they are also its OpenAPI schema)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field

from ..geometry.camera import Camera
from ..geometry.pose import Pose
from ..localization.localize import QueryResult


class PoseAnswer(BaseModel):
    """A camera pose, world-to-camera (``x_cam = R x_world + t``), as in hloc's and COLMAP's files."""

    qvec: list[float] = Field(description="Rotation as a unit quaternion qw, qx, qy, qz (qw >= 0), world-to-camera.")
    tvec: list[float] = Field(description="Translation tx, ty, tz, world-to-camera.")
    center: list[float] = Field(description="The camera centre in world coordinates (-R^T t).")
    line: str = Field(description="'qw qx qy qz tx ty tz', a line of an hloc poses file without the name.")

    @classmethod
    def of(cls, pose: Pose) -> PoseAnswer:
        q, t = pose.qvec.tolist(), pose.t.tolist()
        return cls(qvec=q, tvec=t, center=pose.center.tolist(), line=" ".join(repr(float(v)) for v in q + t))


class CameraAnswer(BaseModel):
    model: str
    width: int
    height: int
    params: list[float]
    source: Literal["request", "exif"] = Field(
        description="'request': the intrinsics sent; 'exif': none were sent, they come from the EXIF 35 mm focal "
                    "length, with the principal point at the image centre.")

    @classmethod
    def of(cls, camera: Camera, source: str) -> CameraAnswer:
        return cls(model=camera.model, width=camera.width, height=camera.height, params=list(camera.params),
                   source=source)


class RetrievedImage(BaseModel):
    name: str = Field(description="The database image's name in the map.")
    score: float = Field(description="Retrieval score (higher is more similar).")
    matches: int | None = Field(None, description="localize: descriptor matches with the query.")
    inliers: int | None = Field(None, description="localize: geometric inliers with the query.")


class PriorAnswer(BaseModel):
    """The position prior a request's retrieval was restricted by."""

    kind: Literal["position", "gps", "geopose"] = Field(
        description="'position': prior_center/prior_radius (map coordinates, 3-D distance); 'gps': prior_lat/"
                    "prior_lon/prior_accuracy; 'geopose': a GeoPose request's priorPoses or geolocationReadings "
                    "(both: horizontal distance).")
    source: str = Field(description="The fields it came from.")
    center: list[float] = Field(description="Its position in map coordinates.")
    radius: float = Field(description="Its radius in map units.")
    candidates: int = Field(description="Database images within it: retrieval searched only these.")


class LocalizeAnswer(BaseModel):
    name: str
    localized: bool
    status: str = Field(description="'localized' or why no pose was found.")
    reason: str | None = Field(description="Why no pose was found (null when localized).")
    method: str = Field(description="The pose estimator that ran.")
    pose: PoseAnswer | None
    camera: CameraAnswer
    num_inliers: int = Field(description="Inliers of the pose, summed over the retrieved images.")
    support: list[str] = Field(description="Database images that support the pose.")
    retrieved: list[RetrievedImage]
    timings: dict[str, float] = Field(description="Seconds per stage: decode, queue, extract, retrieve, match, "
                                                  "pose, and total.")
    prior: PriorAnswer | None = Field(None, description="The position prior applied (null: none was given).")

    @classmethod
    def of(cls, result: QueryResult, camera: Camera, source: str, timings: dict[str, float]) -> LocalizeAnswer:
        n = len(result.retrieved)
        matches = result.matches if len(result.matches) == n else [None] * n
        inliers = result.inliers if len(result.inliers) == n else [None] * n
        localized = result.pose is not None
        return cls(
            name=result.name, localized=localized, status=result.status, reason=None if localized else result.status,
            method=result.method, pose=PoseAnswer.of(result.pose) if localized else None,
            camera=CameraAnswer.of(camera, source), num_inliers=int(sum(result.inliers)), support=list(result.support),
            retrieved=[RetrievedImage(name=db, score=s, matches=m, inliers=i)
                       for db, s, m, i in zip(result.retrieved, result.retrieval_scores, matches, inliers, strict=True)],
            timings=timings)


class RetrieveAnswer(BaseModel):
    name: str
    retrieved: list[RetrievedImage] = Field(description="Database images, best first.")
    timings: dict[str, float]
    prior: PriorAnswer | None = Field(None, description="The position prior applied (null: none was given).")


class HealthAnswer(BaseModel):
    status: Literal["loading", "ready", "failed"]
    detail: str | None = Field(None, description="Why loading failed.")
    engine: dict[str, Any] = Field(default_factory=dict, description="The map once loaded: folder, images, method.")


class ErrorAnswer(BaseModel):
    detail: str = Field(description="What is wrong with the request, or why it could not be served.")
