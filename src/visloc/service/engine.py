"""The engine a server answers with: the map, its index and models, loaded once and shared by all requests.

:class:`Engine` is what the routes need; :class:`MapEngine` is the real one (a
:class:`~visloc.localization.localize.Localizer` per method over one loaded
:class:`~visloc.localization.map.Map`). Tests and other engines plug in through
:func:`~visloc.service.app.create_app`'s factory.
"""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Callable, Collection
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from ..errors import VislocError
from ..geometry.camera import Camera
from ..geometry.geo import GeoReference
from ..localization.estimators import QueryEvidence
from ..localization.georef import read_map_georef
from ..localization.localize import AUTO, LocalizeConfig, Localizer, QueryResult
from ..localization.map import Map
from ..localization.prior import MapPrior, names_within_radius
from ..localization.retrieve import Retriever
from .errors import invalid


class Engine(Protocol):
    """What the routes call. The server calls it from its worker threads; an engine that is not
    thread-safe serializes its calls itself (as :class:`MapEngine` does).

    Optional, found with ``getattr`` (:class:`MapEngine` has them): ``georef`` (the map's
    :class:`~visloc.geometry.geo.GeoReference` or ``None``: ``POST /geopose`` and GPS priors need it) and
    ``within(prior) -> list[str]`` (the database images a :class:`~visloc.localization.prior.MapPrior`
    leaves); with a prior the routes call ``localize`` / ``retrieve`` with ``within=`` those names."""

    def info(self) -> dict[str, Any]:
        """What ``/v1/health`` reports: e.g. the map folder, its number of images, the methods."""
        ...

    def localize(self, image: np.ndarray, camera: Camera, name: str, method: str | None) -> QueryResult:
        """Localize one ``(H, W, 3)`` uint8 image (``method`` ``None``: the engine's default)."""
        ...

    def retrieve(self, image: np.ndarray, name: str, num: int | None) -> tuple[list[str], list[float]]:
        """The ranked database images and their scores (``num`` ``None``: the engine's default)."""
        ...


class MapEngine:
    """A map and its localizers, loaded once. Calls are serialized by a lock (a
    :class:`~visloc.localization.localize.Localizer` is not thread-safe); the localizers of the methods
    other than the default one are made on their first request and kept.

    Raises:
        InputError: the map folder is missing or incomplete.
        ConfigError: the default method cannot use the map.
    """

    def __init__(self, map_dir: str | Path, config: LocalizeConfig = LocalizeConfig()) -> None:
        self.map = Map(map_dir)
        self.config = config
        self._lock = threading.Lock()
        self._default = Localizer(self.map, config)
        self._localizers: dict[str, Localizer] = {self._default.method: self._default}
        #: The map's geo-reference (``MAP/georef.json``), or ``None``.
        self.georef: GeoReference | None = read_map_georef(self.map.root)
        self._centres = {n: self.map.poses[n].center for n in self.map.names} if self.map.has_poses else None

    def info(self) -> dict[str, Any]:
        # the folder's name, not its path: /v1/health needs no token
        return {"map": self.map.root.name, "images": len(self.map.names), "method": self._default.method,
                "has_points": bool(self.map.has_points)}

    def _localizer(self, method: str | None) -> Localizer:
        if method in (None, "", AUTO):
            return self._default
        if method not in self._localizers:
            try:
                config = dataclasses.replace(self.config, method=method, estimator=None)
                self._localizers[method] = Localizer(self.map, config)
            except VislocError as e:  # an unknown method, one the map cannot serve, its model missing
                raise invalid(f"method {method!r}: {e}") from None
        return self._localizers[method]

    def within(self, prior: MapPrior) -> list[str]:
        """The database images whose camera centres ``prior`` keeps (read-only: no lock needed).

        Raises:
            RequestError: 422 for a retrieval-only map (its images have no poses).
        """
        if self._centres is None:
            raise invalid("the map's images have no poses (a retrieval-only map): a position prior cannot be applied")
        return names_within_radius(self._centres, prior)

    def localize(self, image: np.ndarray, camera: Camera, name: str, method: str | None,
                 within: Collection[str] | None = None) -> QueryResult:
        with self._lock:
            return self._localizer(method).localize_image(image, camera, name, within=within)

    def localize_with(self, image: np.ndarray, camera: Camera, name: str, method: str | None,
                      inspect: Callable[[Map, QueryResult, QueryEvidence], Any],
                      within: Collection[str] | None = None) -> tuple[QueryResult, Any]:
        """:meth:`localize`, then ``inspect(map, result, evidence)`` under the same lock (what the web page
        shows of the matches, :func:`visloc.service.page.match_details`); the result and what it returned."""
        with self._lock:
            result, evidence = self._localizer(method).localize_with_evidence(image, camera, name, within=within)
            return result, inspect(self.map, result, evidence)

    def retrieve(self, image: np.ndarray, name: str, num: int | None,
                 within: Collection[str] | None = None) -> tuple[list[str], list[float]]:
        with self._lock:
            retriever = self._default.retriever
            if num is not None and num != retriever.config.num_retrieved:
                retriever = Retriever(self.map, dataclasses.replace(retriever.config, num_retrieved=num))
            if within is not None and not within:
                return [], []
            return retriever(retriever.describe(image), name, within)
