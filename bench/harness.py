"""Side-by-side measurement: variants run interleaved (the order rotates each round), several repetitions,
median and spread, ratios against baselines; machine description; markdown tables."""

from __future__ import annotations

import os
import platform
import statistics
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from importlib import metadata


@dataclass
class Timing:
    name: str
    seconds: list[float] = field(default_factory=list)

    @property
    def median(self) -> float:
        return statistics.median(self.seconds)

    @property
    def spread(self) -> str:
        """min–max of the repetitions."""
        return f"{min(self.seconds):.2f}–{max(self.seconds):.2f}"


def interleaved(
    variants: dict[str, Callable[[], object]], reps: int, warmup: int = 1, log: Callable[[str], None] = print
) -> dict[str, Timing]:
    """Run every variant `warmup` times, then `reps` rounds in which each runs once, in a rotating order (so
    no variant always runs after the same neighbour); wall-clock seconds per run."""
    names = list(variants)
    for _ in range(warmup):
        for name in names:
            variants[name]()
    timings = {name: Timing(name) for name in names}
    for r in range(reps):
        order = names[r % len(names) :] + names[: r % len(names)]
        for name in order:
            t = time.perf_counter()
            variants[name]()
            timings[name].seconds.append(time.perf_counter() - t)
        log(f"  round {r + 1}/{reps}: " + ", ".join(f"{n} {timings[n].seconds[-1]:.2f}s" for n in names))
    return timings


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def ratio(a: float, b: float) -> str:
    return f"{a / b:.2f}" if b else "–"


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def _memory_gib() -> float:
    try:
        with open("/proc/meminfo") as f:
            return int(f.readline().split()[1]) / 1024 / 1024
    except (OSError, ValueError, IndexError):
        return 0.0


def machine() -> str:
    """One paragraph about where the numbers come from."""
    versions = []
    for pkg in (
        "pyqd",
        "pandas",
        "numpy",
        "pyarrow",
        "scikit-learn",
        "fastapi",
        "uvicorn",
        "dask",
        "joblib",
        "flask",
        "gunicorn",
        "adbc-driver-sqlite",
        "adbc-driver-postgresql",
    ):
        try:
            versions.append(f"{pkg} {metadata.version(pkg)}")
        except metadata.PackageNotFoundError:
            pass
    try:
        pg = subprocess.run(["psql", "--version"], capture_output=True, text=True, timeout=5).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        pg = "psql not found"
    return (
        f"{_cpu_model()}, {os.cpu_count()} cores, {_memory_gib():.0f} GiB RAM, Linux {platform.release()}, "
        f"Python {platform.python_version()}; {pg}; " + ", ".join(versions) + ". "
        "OMP_NUM_THREADS=1 (and the other BLAS/Arrow thread counts) everywhere; clients on the same host."
    )
