"""Hand-made JWTs for the token tests: any header, any payload, any (or no) signature."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from typing import Any

from server.auth.keys import load_signing_key
from server.services import Services

HS256_HEADER = {"alg": "HS256", "typ": "JWT"}


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def unb64url(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def encode_part(obj: dict[str, Any]) -> str:
    return b64url(json.dumps(obj, separators=(",", ":")).encode())


def craft(header: dict[str, Any], payload: dict[str, Any], key: bytes | None, digest: str = "sha256") -> str:
    """A JWT whose header says whatever `header` says, HMAC-signed with `digest` (no signature if key is None)."""
    signing_input = f"{encode_part(header)}.{encode_part(payload)}"
    if key is None:
        return signing_input + "."
    mac = hmac.new(key, signing_input.encode(), getattr(hashlib, digest)).digest()
    return f"{signing_input}.{b64url(mac)}"


def header_of(token: str) -> dict[str, Any]:
    return json.loads(unb64url(token.split(".")[0]))


def payload_of(token: str) -> dict[str, Any]:
    """The claims of a token, without checking anything."""
    return json.loads(unb64url(token.split(".")[1]))


def with_payload(token: str, payload: dict[str, Any]) -> str:
    """The same header and signature around another payload (a tampered token)."""
    header, _, signature = token.split(".")
    return f"{header}.{encode_part(payload)}.{signature}"


def app_key(services: Services) -> bytes:
    """The server's own signing key (read the way the server reads it)."""
    return load_signing_key(services.settings)


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}
