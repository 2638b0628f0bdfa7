"""Imported once by the worker template process, so every worker forked from it starts warm."""

from __future__ import annotations

import importlib
import os

#: Modules every worker gets pre-imported; PYQD_WORKER_PRELOAD (comma list) adds more.
BASE_MODULES = [
    "numpy",
    "pandas",
    "pyarrow",
    "cloudpickle",
    "orjson",
    "httpx",
    "oml",
    "engines.worker.runtime",
    "engines.worker.scoring",
]

os.environ.setdefault("MPLBACKEND", "Agg")
for _name in BASE_MODULES + [m for m in os.environ.get("PYQD_WORKER_PRELOAD", "").split(",") if m.strip()]:
    try:
        importlib.import_module(_name.strip())
    except Exception:  # noqa: BLE001 - a missing optional module must not stop the pool
        pass
