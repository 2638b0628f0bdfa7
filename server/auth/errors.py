"""Authentication and account errors.

AuthError
├── BadCredentials      wrong username/password or client id/secret
├── TokenInvalid        missing, malformed, tampered, expired or revoked token
│   └── RefreshDenied   refresh asked beyond the refresh window or for a revoked token
├── Forbidden           the caller is authenticated but is not an administrator
├── UserExists(name)    `user add` for a name that is taken
├── UserNotFound(name)  no such user
├── ClientNotFound(id)  no such API client
├── InvalidName(name)   a user name that breaks the naming rules
├── PasswordTooShort(min_length)  a new password under PYQD_PASSWORD_MIN_LENGTH characters
├── LastAdministrator(name)  removing the only administrator left
├── LoginThrottled(retry_after)  too many failed logins for this user or address: locked out for a while
└── HashingBusy         every password-hashing slot is taken and the queue is full: try again shortly
"""

from __future__ import annotations


class AuthError(Exception):
    """Base of the authentication errors."""


class BadCredentials(AuthError):
    def __init__(self, message: str = "Invalid username or password") -> None:
        super().__init__(message)


class TokenInvalid(AuthError):
    def __init__(self, message: str = "Invalid or expired access token") -> None:
        super().__init__(message)


class RefreshDenied(TokenInvalid):
    pass


class Forbidden(AuthError):
    def __init__(self, message: str = "This operation needs an administrator") -> None:
        super().__init__(message)


class UserExists(AuthError):
    def __init__(self, name: str) -> None:
        self.name = name
        super().__init__(f"User {name} already exists")


class UserNotFound(AuthError):
    def __init__(self, name: str) -> None:
        self.name = name
        super().__init__(f"User {name} does not exist")


class ClientNotFound(AuthError):
    def __init__(self, client_id: str) -> None:
        self.client_id = client_id
        super().__init__(f"API client {client_id} does not exist")


class InvalidName(AuthError):
    def __init__(self, name: str, rule: str) -> None:
        self.name = name
        super().__init__(f"Invalid user name {name!r}: {rule}")


class LastAdministrator(AuthError):
    def __init__(self, name: str) -> None:
        self.name = name
        super().__init__(f"{name} is the last administrator and cannot be removed; make another one first")


class PasswordTooShort(AuthError):
    def __init__(self, min_length: int) -> None:
        self.min_length = min_length
        super().__init__(f"The password must have at least {min_length} characters")


class LoginThrottled(AuthError):
    def __init__(self, retry_after: int) -> None:
        self.retry_after = max(1, retry_after)
        super().__init__(f"Too many failed logins; try again in {self.retry_after} s")


class HashingBusy(AuthError):
    #: Seconds a client should wait before trying again.
    retry_after = 1

    def __init__(self) -> None:
        super().__init__("Too many logins at once; try again shortly")
