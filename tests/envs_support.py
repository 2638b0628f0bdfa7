"""Helpers of the per-script environment tests: tiny pure-Python wheels made on the spot (no network, no build
backend), and environments built from them with the real uv, offline (`--no-index --find-links`)."""

from __future__ import annotations

import base64
import hashlib
import zipfile
from pathlib import Path

from engines import envbuild
from engines.envs import EnvInfo, EnvStore

#: The test package: only in the environment, never in the server's installation.
PACKAGE = "pyqd_envtest_pkg"
#: The WHEEL file of a pure-Python wheel.
WHEEL = "Wheel-Version: 1.0\nGenerator: pyqd-tests\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
#: A script that imports it (and says where it came from).
USES_PACKAGE = f"""def uses_package():
    import {PACKAGE}
    return {{"value": {PACKAGE}.VALUE, "numpy_from_server": "/proc/self/fd/" not in __import__("numpy").__file__}}
"""


def make_wheel(directory: Path, name: str, version: str, files: dict[str, str], requires: tuple[str, ...] = ()) -> Path:
    """A pure-Python wheel holding `files` (path in the wheel → text), depending on `requires`."""
    directory.mkdir(parents=True, exist_ok=True)
    dist = f"{name}-{version}"
    meta = f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n" + "".join(
        f"Requires-Dist: {r}\n" for r in requires
    )
    entries = {
        **files,
        f"{dist}.dist-info/METADATA": meta,
        f"{dist}.dist-info/WHEEL": WHEEL,
    }
    path = directory / f"{dist}-py3-none-any.whl"
    record = []
    with zipfile.ZipFile(path, "w") as z:
        for entry, text in entries.items():
            data = text.encode()
            z.writestr(entry, data)
            digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
            record.append(f"{entry},sha256={digest},{len(data)}")
        record.append(f"{dist}.dist-info/RECORD,,")
        z.writestr(f"{dist}.dist-info/RECORD", "\n".join(record) + "\n")
    return path


def make_wheels(directory: Path) -> Path:
    """The wheels the tests install: the test package (it needs numpy, which only the server has: the build must
    layer on the server's numpy, not fetch one), a second environment's package, and one that needs a numpy no
    server has."""
    make_wheel(directory, PACKAGE, "1.0", {f"{PACKAGE}/__init__.py": "VALUE = 42\n"}, ("numpy>=1.0",))
    make_wheel(directory, "pyqd_envtest_other", "2.0", {"pyqd_envtest_other/__init__.py": "VALUE = 7\n"})
    make_wheel(directory, "pyqd_envtest_greedy", "1.0", {"pyqd_envtest_greedy/__init__.py": ""}, ("numpy>=99",))
    return directory


def offline(wheels: Path) -> envbuild.IndexOptions:
    return envbuild.IndexOptions(find_links=(str(wheels),), no_index=True)


def build(store: EnvStore, name: str, requirements: str, wheels: Path, **kwargs: object) -> EnvInfo:
    """Build an environment with the real uv from the local wheels only."""
    return envbuild.create(store, name, requirements, index=offline(wheels), **kwargs)  # type: ignore[arg-type]
