"""The token signing key: given by the environment, or generated once and kept in the data directory."""

from __future__ import annotations

import os
import secrets
from pathlib import Path

from server.settings import MIN_SIGNING_KEY_BYTES, Settings

#: File name of the generated key inside the data directory.
KEY_FILE = "signing.key"


class WeakSigningKey(RuntimeError):
    """The configured key is too short or unreadable; the server refuses to start."""


def load_signing_key(settings: Settings) -> bytes:
    """Return the signing key, creating it on first start; refuse a weak one outside dev mode."""
    if settings.signing_key is not None:
        key = settings.signing_key.get_secret_value().encode()
        source = "PYQD_SIGNING_KEY"
    else:
        path = settings.data_dir / KEY_FILE
        if not path.exists():
            _write_new_key(path)
        key = path.read_text().strip().encode()
        source = str(path)
    if len(key) < MIN_SIGNING_KEY_BYTES and not settings.dev:
        raise WeakSigningKey(
            f"The signing key from {source} is shorter than {MIN_SIGNING_KEY_BYTES} bytes; "
            "set a longer PYQD_SIGNING_KEY (e.g. `openssl rand -hex 32`) or run with --dev"
        )
    return key


def _write_new_key(path: Path) -> None:
    """Write a new key whole, then link it into place: of several processes starting at once, one key wins
    and nobody ever reads a half-written file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_hex(32) + "\n")
        try:
            os.link(tmp, path)
        except FileExistsError:
            pass  # another process made it first; use theirs
    finally:
        tmp.unlink(missing_ok=True)
