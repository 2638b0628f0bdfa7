"""Building and dropping environments with uv (`pyqd env create/drop`; administrators only).

An environment is layered on the server's installation: uv installs the requirements into a directory of their
own (`uv pip install --target`) with every package of the server's environment excluded from the resolution, so
numpy, pandas, pyqd and the rest come from the server and are never installed twice. What uv installed is then
checked against the server's versions: a package that needs another numpy than the server's fails the build
with a message naming both (an environment can add packages, never replace the server's).

The requirements file holds package requirements only (`name[extras] specifier ; marker`, comments and blank
lines): no options (`--index-url`, `-e`, `-r`, ...), no URLs or paths. Where packages come from is the
administrator's choice on the command line (`IndexOptions`), never the file's. uv runs with no configuration
files, with a scrubbed environment (no `UV_*` variable of the caller's), with its cache in the environments
directory, and by default with wheels only (`--only-binary :all:`): building a source distribution runs its
build script as the server's account, so it takes `--allow-build`.
"""

from __future__ import annotations

import fcntl
import json
import os
import secrets
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path

from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name

from engines.envs import (
    LOCK_FILE,
    META_FILE,
    NAME_PATTERN,
    SITE_DIR,
    BadRequirements,
    BuildFailed,
    EnvExists,
    EnvInfo,
    EnvMissing,
    EnvStore,
    check_name,
)

#: Largest requirements file, bytes, and most requirements in it.
MAX_REQUIREMENTS_BYTES = 64 * 1024
MAX_REQUIREMENTS = 500
#: Longest a build may take, seconds.
BUILD_TIMEOUT_S = 1800
#: Longest uv error shown, characters.
MAX_ERROR_CHARS = 4000
#: Variables passed to uv from the caller's environment (network and certificates); nothing else, so no `UV_*`
#: setting of the caller's changes where packages come from.
UV_PASSTHROUGH_ENV = (
    "PATH",
    "HOME",
    "LANG",
    "LC_ALL",
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "NO_PROXY",
    "ALL_PROXY",
    "http_proxy",
    "https_proxy",
    "no_proxy",
    "all_proxy",
    "SSL_CERT_FILE",
    "SSL_CERT_DIR",
)


@dataclass(frozen=True)
class IndexOptions:
    """Where uv finds packages: the administrator's choice, given on the command line."""

    index_url: str | None = None
    extra_index_urls: tuple[str, ...] = ()
    find_links: tuple[str, ...] = ()
    no_index: bool = False
    #: Allow building source distributions (runs their build scripts).
    allow_build: bool = False

    def args(self) -> list[str]:
        out: list[str] = []
        if self.index_url:
            out += ["--index-url", self.index_url]
        for url in self.extra_index_urls:
            out += ["--extra-index-url", url]
        for link in self.find_links:
            out += ["--find-links", link]
        if self.no_index:
            out.append("--no-index")
        if not self.allow_build:
            out += ["--only-binary", ":all:"]
        return out


def parse_requirements(text: str) -> list[Requirement]:
    """The requirements of a requirements file; BadRequirements names the first line that is not one."""
    if len(text.encode()) > MAX_REQUIREMENTS_BYTES:
        raise BadRequirements(f"the requirements file is larger than {MAX_REQUIREMENTS_BYTES} bytes")
    found: list[Requirement] = []
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.split(" #", 1)[0].split("\t#", 1)[0].strip()
        if not line or line.startswith("#"):
            continue
        where = f"line {number} ({line[:60]!r})"
        if line.startswith("-"):
            raise BadRequirements(
                f"{where}: options are not allowed in an environment's requirements; give where packages come "
                "from to `pyqd env create` (--index-url, --extra-index-url, --find-links, --no-index)"
            )
        if line.endswith("\\"):
            raise BadRequirements(f"{where}: line continuations are not supported; write one requirement per line")
        try:
            req = Requirement(line)
        except InvalidRequirement as e:
            raise BadRequirements(f"{where}: not a package requirement ({e})") from None
        if req.url:
            raise BadRequirements(
                f"{where}: direct references (URLs and paths) are not allowed; put the wheel in a directory "
                "given with --find-links"
            )
        found.append(req)
        if len(found) > MAX_REQUIREMENTS:
            raise BadRequirements(f"more than {MAX_REQUIREMENTS} requirements")
    if not found:
        raise BadRequirements("the requirements name no package")
    return found


def server_packages() -> dict[str, str]:
    """The distributions of the server's own environment (what a worker imports): canonical name → version."""
    found: dict[str, str] = {}
    for dist in metadata.distributions():
        name = dist.metadata["Name"] if dist.metadata else None
        if name and canonicalize_name(name) not in found:
            found[canonicalize_name(name)] = dist.version
    return found


def check_against_server(requirements: list[Requirement], server: dict[str, str]) -> list[str]:
    """Requirements that name one of the server's packages in a version the server does not have."""
    problems = []
    for req in requirements:
        if req.marker is not None and not req.marker.evaluate():
            continue  # not for this interpreter or platform
        version = server.get(canonicalize_name(req.name))
        if version is not None and not req.specifier.contains(version, prereleases=True):
            problems.append(
                f"{req.name}{req.specifier} is one of the server's packages ({req.name} {version} is installed); "
                "an environment can add packages, not replace the server's"
            )
    return problems


def check_installed(site: str, requirements: list[Requirement], server: dict[str, str]) -> list[str]:
    """What uv installed that does not fit: a package of the server's installed again, or a dependency on a
    server package in a version the server does not have."""
    extras = {canonicalize_name(r.name): set(r.extras) for r in requirements}
    problems = []
    for dist in metadata.distributions(path=[site]):
        name = canonicalize_name(dist.metadata["Name"])
        if name in server:
            problems.append(f"{dist.metadata['Name']} was installed again, though the server has it")
            continue
        for line in dist.requires or []:
            dep = Requirement(line)
            have = server.get(canonicalize_name(dep.name))
            if have is None:
                continue
            wanted_extras = {"", *extras.get(name, ())}
            if dep.marker is not None and not any(dep.marker.evaluate({"extra": e}) for e in wanted_extras):
                continue
            if not dep.specifier.contains(have, prereleases=True):
                problems.append(
                    f"{dist.metadata['Name']} {dist.version} needs {dep.name}{dep.specifier}, but the server has "
                    f"{dep.name} {have}; require a version of {dist.metadata['Name']} that works with it"
                )
    return problems


def uv_binary() -> str:
    from uv import find_uv_bin

    return find_uv_bin()


def _uv_environment() -> dict[str, str]:
    return {k: os.environ[k] for k in UV_PASSTHROUGH_ENV if k in os.environ}


@contextmanager
def _locked(store: EnvStore) -> Iterator[None]:
    """Hold the environments' lock (one build or drop at a time, across processes)."""
    store.root.mkdir(parents=True, exist_ok=True)
    with open(store.root / LOCK_FILE, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def create(
    store: EnvStore,
    name: str,
    requirements_text: str,
    *,
    description: str | None = None,
    replace: bool = False,
    index: IndexOptions | None = None,
    timeout_s: float = BUILD_TIMEOUT_S,
) -> EnvInfo:
    """Build environment `name` from a requirements file's text (replacing the current build with `replace`, whose
    description it keeps unless given another)."""
    check_name(name)
    requirements = parse_requirements(requirements_text)
    server = server_packages()
    problems = check_against_server(requirements, server)
    if problems:
        raise BuildFailed("; ".join(problems))
    started = time.monotonic()
    with _locked(store):
        current = store.get(name)
        if current is not None and not replace:
            raise EnvExists(name)
        if current is not None and description is None:
            description = current.description  # a rebuild keeps what the environment is for
        _remove_unfinished(store)
        store.builds.mkdir(parents=True, exist_ok=True)
        build = store.builds / f"{name}-{secrets.token_hex(6)}"
        build.mkdir()
        try:
            info = _build(store, build, name, requirements, server, description, index or IndexOptions(), timeout_s)
            _compile(build / SITE_DIR, current.site if current is not None else None, timeout_s)
            info = EnvInfo(**{**info.__dict__, "build_seconds": round(time.monotonic() - started, 3)})
            (build / META_FILE).write_text(json.dumps(info.to_json(), indent=1) + "\n")
            _make_readable(build)
            old = store.build_dir(name)
            link = store.root / f".{name}-{secrets.token_hex(6)}.link"
            os.symlink(os.path.join(store.builds.name, build.name), link)
            os.replace(link, store.root / name)  # atomic: a worker starting now sees the old build or the new
        except BaseException:
            shutil.rmtree(build, ignore_errors=True)
            raise
        if old is not None and old != os.path.realpath(build):
            shutil.rmtree(old, ignore_errors=True)
    return EnvInfo(**{**info.__dict__, "path": os.path.realpath(build)})


def _build(
    store: EnvStore,
    build: Path,
    name: str,
    requirements: list[Requirement],
    server: dict[str, str],
    description: str | None,
    index: IndexOptions,
    timeout_s: float,
) -> EnvInfo:
    (build / "requirements.txt").write_text("".join(f"{r}\n" for r in requirements))
    (build / "excludes.txt").write_text("".join(f"{n}\n" for n in sorted(server)))
    site = build / SITE_DIR
    command = [
        uv_binary(),
        "pip",
        "install",
        "--no-config",
        "--quiet",
        "--python",
        sys.executable,
        "--target",
        str(site),
        "--cache-dir",
        str(store.cache),
        "--requirements",
        str(build / "requirements.txt"),
        "--excludes",
        str(build / "excludes.txt"),
        *index.args(),
    ]
    try:
        done = subprocess.run(
            command,
            cwd=build,
            env=_uv_environment(),
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout_s,
        )
    except subprocess.TimeoutExpired:
        raise BuildFailed(f"uv did not finish within {timeout_s:g} s") from None
    if done.returncode != 0:
        raise BuildFailed(f"uv could not install the requirements:\n{done.stderr.strip()[-MAX_ERROR_CHARS:]}")
    site.mkdir(exist_ok=True)
    (build / "excludes.txt").unlink()
    (site / ".lock").unlink(missing_ok=True)  # uv's, while it installed
    problems = check_installed(str(site), requirements, server)
    if problems:
        raise BuildFailed("; ".join(problems))
    packages = sorted(
        ({"name": d.metadata["Name"], "version": d.version} for d in metadata.distributions(path=[str(site)])),
        key=lambda p: canonicalize_name(p["name"]),
    )
    return EnvInfo(
        name=name,
        description=description,
        requirements=[str(r) for r in requirements],
        packages=packages,
        size=_size(build),
        created=datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z",
        python=f"{sys.version_info.major}.{sys.version_info.minor}",
    )


def _compile(site: Path, previous: str | None, timeout_s: float) -> None:
    """Compile the packages' bytecode: workers cannot write it (the packages are read-only to them), and without
    it each new worker would compile every module it imports again (seconds for a package like statsmodels).
    The previous build's bytecode is taken over first: uv links the same files from its cache, so it is still
    valid for every package that did not change, and compileall only compiles what is missing or stale."""
    if previous is not None:
        for root, dirs, _files in os.walk(previous):
            if "__pycache__" not in dirs:
                continue
            target = site / os.path.relpath(root, previous)
            if target.is_dir():
                _link_tree(Path(root) / "__pycache__", target / "__pycache__")
    # Its exit status is not checked: a file that does not compile (a package's Python 2 example) fails only
    # if a script imports it, as it would anywhere.
    try:
        subprocess.run(
            [sys.executable, "-m", "compileall", "-q", "-q", "-j", "0", str(site)],
            env=_uv_environment(),
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=timeout_s,
        )
    except subprocess.TimeoutExpired:
        raise BuildFailed(f"compiling the packages did not finish within {timeout_s:g} s") from None


def _link_tree(source: Path, target: Path) -> None:
    target.mkdir(exist_ok=True)
    for entry in os.scandir(source):
        if entry.is_file(follow_symlinks=False) and not (target / entry.name).exists():
            try:
                os.link(entry.path, target / entry.name)
            except OSError:
                shutil.copy2(entry.path, target / entry.name)


def drop(store: EnvStore, name: str) -> None:
    """Remove environment `name` (EnvMissing when there is none). Workers of it still running keep their imports;
    no new call gets it."""
    check_name(name)
    with _locked(store):
        build = store.build_dir(name)
        if build is None:
            raise EnvMissing(name)
        os.unlink(store.root / name)
        shutil.rmtree(build, ignore_errors=True)


def _remove_unfinished(store: EnvStore) -> None:
    """Under the lock: builds no environment links to (an interrupted build), and stray temporary links."""
    current = {store.build_dir(n) for n in os.listdir(store.root) if NAME_PATTERN.fullmatch(n)}
    for entry in os.listdir(store.root):
        if entry.startswith(".") and entry.endswith(".link"):
            os.unlink(store.root / entry)
    if store.builds.is_dir():
        for entry in os.listdir(store.builds):
            path = os.path.realpath(store.builds / entry)
            if path not in current:
                shutil.rmtree(path, ignore_errors=True)


def _make_readable(build: Path) -> None:
    """Everything in the build readable (and directories searchable) by any account: workers may run as their own
    account. Nothing in it is secret: it is the administrator's choice of public packages."""
    for root, dirs, files in os.walk(build):
        for d in dirs:
            path = os.path.join(root, d)
            os.chmod(path, os.stat(path).st_mode | 0o555)
        for f in files:
            path = os.path.join(root, f)
            if not os.path.islink(path):
                os.chmod(path, os.stat(path).st_mode | 0o444)
    os.chmod(build, os.stat(build).st_mode | 0o555)


def _size(build: Path) -> int:
    """Bytes of the build's files (a file linked twice counts once)."""
    seen: set[tuple[int, int]] = set()
    total = 0
    for root, _dirs, files in os.walk(build):
        for f in files:
            try:
                st = os.lstat(os.path.join(root, f))
            except OSError:
                continue
            if (st.st_dev, st.st_ino) not in seen:
                seen.add((st.st_dev, st.st_ino))
                total += st.st_size
    return total
