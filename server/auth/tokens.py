"""Access tokens: short HS256 JWTs (under 255 characters, for old APEX) with a refresh window."""

from __future__ import annotations

import math
import secrets
import threading
import time
from dataclasses import dataclass
from typing import NamedTuple

import jwt
from cachetools import TLRUCache

from server.auth.errors import RefreshDenied, TokenInvalid

#: The only algorithm accepted when decoding; pinning it defeats `alg: none` and algorithm confusion.
ALGORITHM = "HS256"
#: Claims every token must carry. (No `iat`: `oat` and `exp` say all we need, and old APEX keeps
#: tokens in VARCHAR2(255), so every byte counts.)
REQUIRED_CLAIMS = ["sub", "sid", "exp", "oat"]
#: How many verified tokens `TokenSigner.decode` remembers (past it, the least recently used go first).
VERIFIED_CACHE_SIZE = 4096
#: `scp` claim of a script token: the narrow identity of one call's `import oml` (see `issue_script`).
SCRIPT_SCOPE = "script"
#: ... of a call of another owner's script the caller did not trust: it may only read (`server.deps`).
SCRIPT_READ_SCOPE = "script-read"


class SessionKey(NamedTuple):
    """What a session check of a token depends on (the key of `Services.auth_cache`): every token of one session,
    its refreshes and its script tokens share it, save for `is_script`."""

    sid: str
    user: str
    first_issued_ms: int
    client_id: str | None
    is_script: bool


@dataclass(frozen=True)
class TokenClaims:
    """What a verified token says."""

    user: str
    #: Session id: shared by a token and its refreshes, so revoking one revokes them all.
    sid: str
    expires_at: int
    #: When the session's first token was issued, in milliseconds since the epoch. The refresh window
    #: counts from here, and a password change refuses sessions begun before it: whole seconds would let
    #: a token issued in the same second as the change survive it.
    first_issued_ms: int
    #: Set when the token was issued to an API client (client_credentials grant).
    client_id: str | None = None
    #: SCRIPT_SCOPE for a script token (only the routes `import oml` needs accept it); None for a full token.
    scope: str | None = None
    #: The call a script token was minted for.
    call_id: str | None = None

    @property
    def is_script(self) -> bool:
        return self.scope is not None

    @property
    def read_only(self) -> bool:
        """A script token that may only read (a foreign script's call, not trusted by its caller)."""
        return self.scope == SCRIPT_READ_SCOPE

    @property
    def session_key(self) -> SessionKey:
        return SessionKey(self.sid, self.user, self.first_issued_ms, self.client_id, self.is_script)

    @property
    def first_issued_at(self) -> float:
        """The first issue in seconds since the epoch."""
        return self.first_issued_ms / 1000


@dataclass(frozen=True)
class IssuedToken:
    token: str
    expires_in: int
    claims: TokenClaims


class TokenSigner:
    """Issues, verifies and refreshes tokens with one secret key."""

    def __init__(self, key: bytes, ttl_s: int = 3600, max_age_s: int = 8 * 3600) -> None:
        self._key = key
        self.ttl_s = ttl_s
        self.max_age_s = max_age_s
        #: Tokens whose signature and claims checked out, by their exact text, until they expire. A client sends
        #: the same token on every call; verifying it again costs more than the rest of a trivial call's auth.
        #: Only expiry can change for an unchanged string, and it is checked on every hit. Revocation is not a
        #: property of the token: the caller checks the session either way, so nothing here is ever invalidated.
        self._verified: TLRUCache[str, TokenClaims] = TLRUCache(
            VERIFIED_CACHE_SIZE, ttu=lambda _token, claims, _now: claims.expires_at, timer=lambda: time.time()
        )
        self._verified_lock = threading.Lock()

    def issue(
        self, user: str, *, client_id: str | None = None, now: float | None = None, ttl_s: int | None = None
    ) -> IssuedToken:
        """A new session's first token (valid `ttl_s` seconds, default an hour)."""
        t = now if now is not None else time.time()
        iat = int(t)
        sid = secrets.token_urlsafe(12)
        exp = iat + (ttl_s if ttl_s is not None else self.ttl_s)
        return self._sign(TokenClaims(user, sid, exp, math.floor(t * 1000), client_id), iat)

    def issue_script(
        self,
        session: TokenClaims,
        call_id: str,
        *,
        expires_at: float,
        now: float | None = None,
        read_only: bool = False,
    ) -> IssuedToken:
        """A script token for one call: the caller's session (so revoking the session or changing the password
        ends it), marked as a script token (one that may only read, with `read_only`), expiring at `expires_at`
        but never after the session's last moment."""
        iat = int(now if now is not None else time.time())
        exp = min(int(expires_at), session.first_issued_ms // 1000 + self.max_age_s)
        claims = TokenClaims(
            session.user,
            session.sid,
            exp,
            session.first_issued_ms,
            session.client_id,
            SCRIPT_READ_SCOPE if read_only else SCRIPT_SCOPE,
            call_id,
        )
        return self._sign(claims, iat)

    def refresh(self, claims: TokenClaims, *, now: float | None = None) -> IssuedToken:
        """One more hour for a valid token's session, never past `max_age_s` after the first issue."""
        if claims.is_script:
            raise RefreshDenied("A script token cannot be refreshed")
        iat = int(now if now is not None else time.time())
        deadline = claims.first_issued_ms // 1000 + self.max_age_s
        if iat >= deadline:
            raise RefreshDenied("The token can no longer be refreshed; request a new one")
        exp = min(iat + self.ttl_s, deadline)
        return self._sign(TokenClaims(claims.user, claims.sid, exp, claims.first_issued_ms, claims.client_id), iat)

    def decode(self, token: str) -> TokenClaims:
        """Verify signature, algorithm and expiry; raise TokenInvalid otherwise."""
        try:
            with self._verified_lock:
                claims = self._verified[token]
        except KeyError:
            claims = self._verify(token)
            with self._verified_lock:
                self._verified[token] = claims  # (an expired one is not kept)
        if time.time() >= claims.expires_at:  # as PyJWT: expired once now reaches exp
            raise TokenInvalid("The access token has expired")
        return claims

    def _verify(self, token: str) -> TokenClaims:
        try:
            data = jwt.decode(token, self._key, algorithms=[ALGORITHM], options={"require": REQUIRED_CLAIMS})
        except jwt.ExpiredSignatureError:
            raise TokenInvalid("The access token has expired") from None
        except jwt.InvalidTokenError:
            raise TokenInvalid("Invalid access token") from None
        try:
            return TokenClaims(
                user=str(data["sub"]),
                sid=str(data["sid"]),
                expires_at=int(data["exp"]),
                first_issued_ms=int(data["oat"]),
                client_id=str(data["cid"]) if "cid" in data else None,
                scope=str(data["scp"]) if "scp" in data else None,
                call_id=str(data["cal"]) if "cal" in data else None,
            )
        except (TypeError, ValueError):
            raise TokenInvalid("Invalid access token") from None

    def _sign(self, c: TokenClaims, now: int) -> IssuedToken:
        payload: dict[str, object] = {"sub": c.user, "sid": c.sid, "exp": c.expires_at, "oat": c.first_issued_ms}
        if c.client_id:
            payload["cid"] = c.client_id
        if c.scope:
            payload["scp"], payload["cal"] = c.scope, c.call_id
        token = jwt.encode(payload, self._key, algorithm=ALGORITHM)
        return IssuedToken(token, c.expires_at - now, c)
