"""The errors a request can end with: each carries the HTTP status it is answered with."""

from __future__ import annotations

from ..errors import VislocError


class RequestError(VislocError):
    """A request the server answers with ``status`` and ``{"detail": message}`` (never a server error).

    Args:
        status: the HTTP status (400-599).
        message: what is wrong, in words a client can act on.
        headers: extra response headers (``Retry-After`` of a 429, ``WWW-Authenticate`` of a 401).
    """

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        self.status = status
        self.message = message
        self.headers = dict(headers or {})
        super().__init__(f"{status}: {message}")


def too_large(message: str) -> RequestError:
    return RequestError(413, message)


def unsupported(message: str) -> RequestError:
    return RequestError(415, message)


def invalid(message: str) -> RequestError:
    return RequestError(422, message)
