"""Errors of the node-to-node API.

Server side, an `ApiError` is an answer: its `status` and `code` become the HTTP status and
the JSON body ``{"error": code, "message": message}``. Handlers raise the public ones
(`NotFound`, `Conflict`, `BadRequest`, `Forbidden`, `Unavailable`).

Client side, a `PeerError` is what a peer answered (or failed to): `PeerRefused` (401/403),
`PeerNotFound` (404), `PeerRejected` (other 4xx), `PeerUnavailable` (unreachable, timed out,
or 429/502/503/504 once retries are spent), `PeerFailed` (500 or a broken answer).
"""

from compute.errors import DatumError

__all__ = [
    "ApiError",
    "AuthorizerUnavailable",
    "BadRequest",
    "Conflict",
    "Forbidden",
    "NotFound",
    "P2PError",
    "PayloadTooLarge",
    "PeerError",
    "PeerFailed",
    "PeerNotFound",
    "PeerRefused",
    "PeerRejected",
    "PeerUnavailable",
    "TooManyRequests",
    "Unauthorized",
    "Unavailable",
    "UnsupportedMediaType",
]


class P2PError(DatumError):
    """Anything that went wrong between nodes."""


class AuthorizerUnavailable(P2PError):
    """The chain could not be read to decide who a sender is (transient)."""


# -- server side: answers ----------------------------------------------------------------------


class ApiError(P2PError):
    """An error answer: HTTP `status`, machine-readable `code`, human `message`."""

    status = 500
    default_code = "internal_error"

    def __init__(self, message: str, *, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.code = code or self.default_code

    def to_json(self) -> dict[str, str]:
        """The response body."""
        return {"error": self.code, "message": self.message}


class BadRequest(ApiError):
    """The request is malformed (path parameter, JSON body, body hash)."""

    status = 400
    default_code = "bad_request"


class Unauthorized(ApiError):
    """Authentication failed: missing or bad signature, stale or replayed request."""

    status = 401
    default_code = "unauthorized"


class Forbidden(ApiError):
    """The sender is authenticated but may not call this route."""

    status = 403
    default_code = "forbidden"


class NotFound(ApiError):
    """No such route, task, spec, blob or result."""

    status = 404
    default_code = "not_found"


class Conflict(ApiError):
    """The request contradicts what the node already holds (e.g. a blob's other content)."""

    status = 409
    default_code = "conflict"


class PayloadTooLarge(ApiError):
    """The request body is over the route's limit."""

    status = 413
    default_code = "body_too_large"


class UnsupportedMediaType(ApiError):
    """The request's content type is not one the route takes."""

    status = 415
    default_code = "unsupported_media_type"


class TooManyRequests(ApiError):
    """The sender is over its share (transient)."""

    status = 429
    default_code = "too_many_requests"


class Unavailable(ApiError):
    """The node cannot serve the request right now (transient)."""

    status = 503
    default_code = "unavailable"


# -- client side: what a peer answered ---------------------------------------------------------


class PeerError(P2PError):
    """A request to a peer failed; `status` and `code` are the peer's when it answered."""

    def __init__(self, message: str, *, url: str, status: int | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.url = url
        self.status = status
        self.code = code


class PeerRefused(PeerError):
    """The peer refused the sender (401 authentication, 403 authorization)."""


class PeerNotFound(PeerError):
    """The peer has no such route, task or object (404)."""


class PeerRejected(PeerError):
    """The peer rejected the request as malformed, too large or conflicting (other 4xx)."""


class PeerUnavailable(PeerError, ConnectionError):
    """The peer could not be reached or stayed busy (429/502/503/504) through every retry."""


class PeerFailed(PeerError):
    """The peer failed internally (500) or answered outside the protocol."""
