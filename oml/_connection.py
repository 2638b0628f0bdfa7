"""The connection: base URL, token (fetched, refreshed, re-fetched), and one httpx client."""

from __future__ import annotations

import threading
import time
from typing import Any

import httpx

from oml.errors import NotConnectedError, ServerError, error_for

#: Refresh the token when it has less than this many seconds left.
REFRESH_MARGIN_S = 60
#: Seconds to wait for a connection; responses may take long (synchronous apply calls).
CONNECT_TIMEOUT_S = 10.0
READ_TIMEOUT_S = 3600.0
TOKEN_PATH = "/omlusers/api/oauth2/v1/token"
PYQD = "/oml/api/pyqd/v1"
PY_SCRIPTS = "/oml/api/py-scripts"


def server_url(url: str | None, dsn: str | None = None, host: str | None = None, port: int | None = None) -> str:
    """The pyqd server's base URL from `oml.connect`'s arguments: `url`, a `dsn` that is an http(s) URL, or
    `host` and `port`. Oracle's own `dsn` (a TNS alias, `host:port/service`, an Easy Connect or descriptor string)
    names a database that pyqd does not speak to: ValueError saying to pass `url=`."""
    if url:
        return url
    if dsn:
        if not _is_http(dsn):
            raise ValueError(
                f"oml.connect(dsn={dsn!r}) names an Oracle database (a TNS alias or connect string); pyqd is a "
                "REST server: connect with oml.connect(url='http://host:8000', username=..., password=...)"
            )
        return dsn
    if host:
        return f"http://{host}:{port or 8000}"
    raise ValueError("url is required, e.g. oml.connect(url='http://127.0.0.1:8000', ...)")


def _is_http(url: str) -> bool:
    return url.strip().lower().startswith(("http://", "https://"))


class Connection:
    """One server and one identity. Thread-safe: the token is refreshed under a lock."""

    def __init__(
        self,
        url: str,
        username: str | None = None,
        password: str | None = None,
        token: str | None = None,
        *,
        verify: bool | str = True,
        transport: httpx.BaseTransport | None = None,
        cache_metadata: bool = False,
    ) -> None:
        if not url:
            raise ValueError("url is required, e.g. oml.connect(url='http://127.0.0.1:8000', ...)")
        if not _is_http(url):
            raise ValueError(f"url must be the pyqd server's http(s):// address (http://127.0.0.1:8000); got {url!r}")
        if token is None and (not username or password is None):
            raise ValueError("give username and password (or an access token)")
        self.url = url.rstrip("/")
        self.username = username.upper() if username else None
        self._password = password
        self._token = token
        self._expires_at = float("inf") if token else 0.0
        self._lock = threading.Lock()
        #: Datastore descriptions by (name, owner), kept for the connection's life when `cache_metadata` is set:
        #: a worker gets a new connection per call, so one call loads a datastore's metadata once.
        self.metadata_cache: dict[tuple[str, str | None], object] | None = {} if cache_metadata else None
        self.http = httpx.Client(
            base_url=self.url,
            verify=verify,
            transport=transport,
            timeout=httpx.Timeout(READ_TIMEOUT_S, connect=CONNECT_TIMEOUT_S),
        )
        if token is None:
            try:
                self._fetch({"grant_type": "password", "username": username, "password": password})
            except BaseException:
                self.http.close()  # a refused login must not leak the client's sockets
                raise

    def close(self) -> None:
        self.http.close()

    def use_token(self, token: str, keep_metadata: bool = False) -> None:
        """Act with another access token from now on (forgetting cached metadata unless told it still holds)."""
        with self._lock:
            self._token, self._expires_at, self._password = token, float("inf"), None
            if self.metadata_cache is not None and not keep_metadata:
                self.metadata_cache.clear()

    def _fetch(self, body: dict[str, Any]) -> None:
        r = self.http.post(TOKEN_PATH, json=body)
        if r.status_code != 200:
            raise _error(r)
        data = r.json()
        self._token = data["accessToken"]
        self._expires_at = time.time() + int(data["expiresIn"])

    def token(self) -> str:
        """A valid access token: refreshed near expiry, fetched anew once the refresh window is over."""
        with self._lock:
            if self._token is None:
                raise NotConnectedError()
            if time.time() > self._expires_at - REFRESH_MARGIN_S and self._password is not None:
                try:
                    self._fetch({"grant_type": "refresh_token", "refresh_token": self._token})
                except ServerError:
                    self._fetch({"grant_type": "password", "username": self.username, "password": self._password})
            return self._token

    def request(self, method: str, path: str, *, ok: tuple[int, ...] = (200, 201), **kwargs: Any) -> httpx.Response:
        """Send an authenticated request; a non-`ok` status raises the matching ServerError."""
        headers = {"Authorization": f"Bearer {self.token()}", **kwargs.pop("headers", {})}
        r = self.http.request(method, path, headers=headers, **kwargs)
        if r.status_code not in ok:
            raise _error(r)
        return r

    def json(self, method: str, path: str, **kwargs: Any) -> Any:
        """The `result` of a JSON answer."""
        return self.request(method, path, **kwargs).json()["result"]


def _error(r: httpx.Response) -> ServerError:
    try:
        body = r.json()
    except ValueError:
        body = {}
    if isinstance(body, dict):
        # OML4Py's errorMessage, RFC 6749's error_description/error, OML Services' message
        message = body.get("errorMessage") or body.get("error_description") or body.get("error") or body.get("message")
        code = body.get("errorCode")
    else:
        message, code = None, None
    return error_for(
        r.status_code,
        code if isinstance(code, int) else None,
        str(message or f"HTTP {r.status_code} from {r.request.method} {r.request.url.path}"),
    )


_current: Connection | None = None


def current() -> Connection:
    if _current is None:
        raise NotConnectedError()
    return _current


def current_or_none() -> Connection | None:
    return _current


def set_current(conn: Connection | None) -> None:
    global _current
    if _current is not None and _current is not conn:
        _current.close()
    _current = conn
