"""The settings of one localization server: limits, queue, workers, timeout and the optional token."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from ..errors import ConfigError


@dataclass(frozen=True)
class ServiceConfig:
    """Attributes:
    max_body_bytes: largest request body accepted (the whole multipart upload); larger is 413.
    max_pixels: largest image accepted, in pixels as its header declares them (checked before decoding);
        more is 413. Pillow's own decompression-bomb limit applies on top of it.
    workers: threads that run the localizer. The map's localizer is not thread-safe, so calls into it are
        serialized by a lock; more workers only help an engine that says it is thread-safe.
    queue_size: requests admitted beyond the ``workers`` running ones (decoding or waiting for a worker);
        one more is answered 429 with ``Retry-After``.
    timeout_s: seconds from the start of a request to its answer; later is 504 (the work itself is not
        interrupted: it finishes in its worker and holds its place in the queue until then).
    retry_after_s: the ``Retry-After`` of a 429, in seconds.
    body_timeout_s: seconds a request has to send its whole body once the server starts reading it; later
        is 408 and the connection is closed (a body trickled in slowly, slow loris, holds a place in the
        queue at most this long).
    max_retrieve: the largest ``num`` a ``/v1/retrieve`` request may ask for.
    token: the bearer token every ``/v1/localize`` and ``/v1/retrieve`` request must carry (``None``: no
        authentication). It is compared in constant time and never logged.
    """

    max_body_bytes: int = 20 * 1024 * 1024
    max_pixels: int = 40_000_000
    workers: int = 1
    queue_size: int = 1
    timeout_s: float = 30.0
    retry_after_s: int = 1
    max_retrieve: int = 100
    body_timeout_s: float = 30.0
    token: str | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        for name in ("max_body_bytes", "max_pixels", "workers", "retry_after_s", "max_retrieve"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"ServiceConfig.{name} must be a positive integer, got {value!r}")
        if isinstance(self.queue_size, bool) or not isinstance(self.queue_size, int) or self.queue_size < 0:
            raise ConfigError(f"ServiceConfig.queue_size must be an integer >= 0, got {self.queue_size!r}")
        if not (math.isfinite(self.timeout_s) and self.timeout_s > 0):
            raise ConfigError(f"ServiceConfig.timeout_s must be a positive number of seconds, got {self.timeout_s!r}")
        if not (math.isfinite(self.body_timeout_s) and self.body_timeout_s > 0):
            raise ConfigError("ServiceConfig.body_timeout_s must be a positive number of seconds, "
                              f"got {self.body_timeout_s!r}")
        if self.token is not None and (not self.token or self.token != self.token.strip()):
            raise ConfigError("ServiceConfig.token must be a non-empty string without surrounding whitespace")

    @property
    def capacity(self) -> int:
        """Requests admitted at once: the running ones plus the queue."""
        return self.workers + self.queue_size
