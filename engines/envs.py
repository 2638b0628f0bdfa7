"""Per-script environments (`envName`): named sets of extra packages, layered on the server's own.

An environment adds packages to what a worker can import; it never replaces the server's (numpy, pandas, pyqd's
`engines` and `oml` always come from the server's installation). `engines.envbuild` builds one with uv; this
module is what the server needs to find and list them. Layout, under the data directory:

    envs/
      NAME -> .builds/NAME-TOKEN     a symlink: swapped atomically when the environment is rebuilt
      .builds/NAME-TOKEN/
        env.json                     its metadata, written last (a build without it is unfinished)
        requirements.txt             the requirements as given, one per line
        site/                        the packages (`uv pip install --target`), first on the worker's sys.path
      .cache/                        uv's cache: a rebuild of the same requirements takes well under a second
      .lock                          builds and drops take it (one at a time)

A worker of an environment is confined to reading that build's directory and nothing else of the data
directory: it opens the directory before it drops its privileges and imports through the descriptor
(`engines.worker.main`), so the data directory itself stays closed to the worker's account.

EnvError
├── InvalidEnvName(name)       not a valid environment name (also a ValueError, for request validation)
├── EnvExists(name)            an environment of that name exists (create without --replace)
├── EnvMissing(name)           no environment of that name (drop)
├── BadRequirements(message)   the requirements file holds something other than package requirements
└── BuildFailed(message)       uv failed, or what it installed does not fit the server's packages
"""

from __future__ import annotations

import json
import os
import re
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

#: An environment's name: a letter or digit, then letters, digits, `_`, `-` and `.`; at most 64 characters.
#: (Never `..`, never a path: the name is one entry of the environments directory.)
NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
#: Subdirectory of the data directory that holds the environments.
ENVS_DIR = "envs"
BUILDS_DIR = ".builds"
CACHE_DIR = ".cache"
LOCK_FILE = ".lock"
META_FILE = "env.json"
SITE_DIR = "site"
#: Separates a worker key from the environment its workers run in (user names and environment names never
#: contain it): a worker of one environment is never handed to a call of another.
ENV_KEY_SEPARATOR = "\x01"


class EnvError(Exception):
    """Base of the environment errors."""


class InvalidEnvName(EnvError, ValueError):
    def __init__(self, name: object) -> None:
        self.name = name
        super().__init__(
            f"{str(name)[:80]!r} is not a valid environment name: 1 to 64 letters, digits, '_', '-' or '.', "
            "starting with a letter or digit"
        )


class EnvExists(EnvError):
    def __init__(self, name: str) -> None:
        self.name = name
        super().__init__(f"environment {name} exists (use --replace to build it again)")


class EnvMissing(EnvError):
    def __init__(self, name: str) -> None:
        self.name = name
        super().__init__(f"no environment named {name}")


class BadRequirements(EnvError):
    pass


class BuildFailed(EnvError):
    pass


def check_name(name: object) -> str:
    """The name, if it is a valid environment name; InvalidEnvName otherwise."""
    if not isinstance(name, str) or NAME_PATTERN.fullmatch(name) is None:
        raise InvalidEnvName(name)
    return name


def with_env(key: str, env: str | None) -> str:
    """A worker key narrowed to the workers of one environment (unchanged without one)."""
    return f"{key}{ENV_KEY_SEPARATOR}{env}" if env else key


def env_of(key: str) -> str | None:
    """The environment a worker key names, if any."""
    _, sep, env = key.partition(ENV_KEY_SEPARATOR)
    return env if sep else None


@dataclass(frozen=True)
class EnvInfo:
    """An environment as `env.json` records it."""

    name: str
    description: str | None
    #: The requirements as given (normalised: one requirement per entry).
    requirements: list[str]
    #: What was installed: {"name": ..., "version": ...} per distribution.
    packages: list[dict[str, str]]
    #: Bytes of its files.
    size: int
    #: When it was built, ISO-8601 UTC.
    created: str
    #: Python version it was built for ("3.11").
    python: str
    #: Seconds the build took.
    build_seconds: float = 0.0
    #: The build directory (not stored: where the metadata was read from).
    path: str = field(default="", compare=False)

    def to_json(self) -> dict[str, Any]:
        data = dict(self.__dict__)
        data.pop("path")
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any], path: str) -> EnvInfo:
        return cls(
            name=str(data["name"]),
            description=data.get("description"),
            requirements=[str(r) for r in data.get("requirements", [])],
            packages=[{"name": str(p["name"]), "version": str(p["version"])} for p in data.get("packages", [])],
            size=int(data.get("size", 0)),
            created=str(data.get("created", "")),
            python=str(data.get("python", "")),
            build_seconds=float(data.get("build_seconds", 0.0)),
            path=path,
        )

    @property
    def site(self) -> str:
        return os.path.join(self.path, SITE_DIR)


class EnvStore:
    """The environments of one data directory."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)

    @classmethod
    def of_data_dir(cls, data_dir: str | Path) -> EnvStore:
        return cls(Path(data_dir) / ENVS_DIR)

    @property
    def builds(self) -> Path:
        return self.root / BUILDS_DIR

    @property
    def cache(self) -> Path:
        return self.root / CACHE_DIR

    def build_dir(self, name: str) -> str | None:
        """The real directory of environment `name`'s current build, or None when there is no such (finished)
        environment. Only a build inside `.builds` counts: a link anywhere else is not an environment."""
        link = self.root / check_name(name)
        try:
            real = os.path.realpath(link, strict=True)
        except OSError:
            return None
        builds = os.path.realpath(self.builds)
        if os.path.dirname(real) != builds or not os.path.isfile(os.path.join(real, META_FILE)):
            return None
        return real

    def get(self, name: str) -> EnvInfo | None:
        """Environment `name`'s metadata (None when there is no such environment)."""
        path = self.build_dir(name)
        if path is None:
            return None
        try:
            with open(os.path.join(path, META_FILE), "rb") as f:
                return EnvInfo.from_json(json.load(f), path)
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def list(self) -> list[EnvInfo]:
        """Every finished environment, by name."""
        try:
            names = sorted(os.listdir(self.root))
        except OSError:
            return []
        found = []
        for name in names:
            if NAME_PATTERN.fullmatch(name) is None:
                continue
            info = self.get(name)
            if info is not None:
                found.append(info)
        return found


def human_size(size: int) -> str:
    """Bytes as Oracle's listing shows them: `1.7 GiB`, `169.8 MiB`."""
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024:
            return f"{value:.1f} {unit}" if unit != "B" else f"{int(value)} B"
        value /= 1024
    return f"{value:.1f} TiB"


# -- preloads (v2 `preload/conda`) ---------------------------------------------------------------------------
#: How long a preload keeps an environment's workers warm, seconds (Oracle's expire an hour after they are made).
PRELOAD_S = 3600
#: Most environments one user may have preloaded at once.
MAX_PRELOADS_PER_USER = 3


@dataclass(frozen=True)
class Preload:
    user: str
    env: str
    #: Wall-clock times, seconds since the epoch.
    created: float
    expires: float

    def listing(self, now: float | None = None) -> dict[str, str]:
        """Oracle's shape: `{"envName", "created", "expires", "duration"}` (duration: how long it has been up)."""
        now = time.time() if now is None else now
        up = int(max(0.0, min(now, self.expires) - self.created))
        return {
            "envName": self.env,
            "created": _oracle_time(self.created),
            "expires": _oracle_time(self.expires),
            "duration": f"{up // 3600} hrs, {up % 3600 // 60} mins, {up % 60} secs",
        }


def _oracle_time(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).strftime("%b %d, %Y %H:%M:%S UTC")


class Preloads:
    """Who preloaded which environment until when (in this server's memory: a restart forgets them)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._items: dict[tuple[str, str], Preload] = {}

    def _expire(self, now: float) -> None:
        for key in [k for k, p in self._items.items() if p.expires <= now]:
            del self._items[key]

    def of(self, user: str) -> list[Preload]:
        with self._lock:
            self._expire(time.time())
            return sorted((p for (u, _), p in self._items.items() if u == user), key=lambda p: p.created)

    def add(self, user: str, env: str, *, overwrite: bool, seconds: float = PRELOAD_S) -> Preload:
        """Record a preload; ValueError (with Oracle's reasons) when it exists and `overwrite` is false, or the
        user has MAX_PRELOADS_PER_USER already."""
        now = time.time()
        with self._lock:
            self._expire(now)
            if (user, env) in self._items and not overwrite:
                raise ValueError(f"Environment '{env}' is already preloaded; set overwrite to true to preload it again")
            mine = sum(1 for (u, e) in self._items if u == user and e != env)
            if mine >= MAX_PRELOADS_PER_USER:
                raise ValueError(
                    f"The preloaded environment quota of {MAX_PRELOADS_PER_USER} is reached; "
                    "delete a preloaded environment first"
                )
            item = self._items[(user, env)] = Preload(user, env, now, now + seconds)
            return item

    def remove(self, user: str, env: str) -> bool:
        with self._lock:
            return self._items.pop((user, env), None) is not None

    def until(self, env: str) -> float:
        """When the last preload of `env` (by anyone) expires, wall-clock (0 when none)."""
        with self._lock:
            self._expire(time.time())
            return max((p.expires for (_, e), p in self._items.items() if e == env), default=0.0)
