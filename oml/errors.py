"""Errors raised by the `oml` client; each carries the server's message and errorCode.

OMLError
├── NotConnectedError     no `oml.connect(...)` yet
└── ServerError(status, code, message)   the server refused a request
    ├── AuthenticationError   401: bad credentials, expired or revoked token
    ├── NotFoundError         404: no such object, or not visible to you (also a ValueError, as in OML)
    ├── InvalidRequestError   400/413: bad arguments, script errors (also a ValueError, as in OML)
    ├── ExecutionError        500: the server or a worker failed
    └── ServerBusyError       503: over capacity; retry later
"""

from __future__ import annotations


class OMLError(Exception):
    """Base of the client's errors."""


class NotConnectedError(OMLError):
    def __init__(self) -> None:
        super().__init__("Not connected: call oml.connect(url=..., username=..., password=...) first")


class ServerError(OMLError):
    def __init__(self, status: int, code: int | None, message: str) -> None:
        self.status, self.code, self.message = status, code, message
        super().__init__(message)


class AuthenticationError(ServerError, PermissionError):
    pass


class NotFoundError(ServerError, ValueError):
    pass


class InvalidRequestError(ServerError, ValueError):
    pass


class ExecutionError(ServerError):
    pass


class ServerBusyError(ServerError):
    pass


def error_for(status: int, code: int | None, message: str) -> ServerError:
    """The exception class for an HTTP status."""
    if status == 401:
        return AuthenticationError(status, code, message)
    if status == 404:
        return NotFoundError(status, code, message)
    if status in (400, 403, 409, 413, 422):
        return InvalidRequestError(status, code, message)
    if status in (429, 503):
        return ServerBusyError(status, code, message)
    return ExecutionError(status, code, message)
