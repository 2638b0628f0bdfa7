"""The benchmark suite: `python -m bench.run` (see bench/README.md). Writes docs/performance.md.

Every comparison runs side by side in one run, interleaved, with several repetitions; tables report the
median, the spread (min–max) and the ratio pyqd / baseline. `--only model-scoring` (OML Services scoring against
Flask and FastAPI, bench.scoring) rewrites only the section "## Model scoring (issue 10)"; `--only scale-out` (the
Dask engine against the local one and hand-written dask.dataframe, bench.scaleout, ~30 min at 1M rows) only
"## Scale-out (issue 11)"; `--only transparency` (the oml proxy's describe/crosstab against pull() + pandas,
read_sql and DuckDB, bench.transparency) only "## Transparency layer (issue 12)". A full run keeps the file's
scale-out and transparency sections unless they are asked for."""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import os
import secrets
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from bench.server import THREADS_ENV

os.environ.update(THREADS_ENV)  # before numpy is imported anywhere

from bench import baselines as bl  # noqa: E402
from bench import data, report, resources, scaleout, scoring, small, transparency, workloads  # noqa: E402
from bench.server import pg_database, running_server  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent


def log(line: str) -> None:
    print(line, flush=True)


@contextlib.contextmanager
def store_for(backend: str) -> Iterator[data.Store]:
    """An empty pyqd store with the BENCH user, on SQLite (temporary directory) or a fresh PostgreSQL database."""
    with tempfile.TemporaryDirectory(prefix="pyqd-bench-") as d, contextlib.ExitStack() as stack:
        url = stack.enter_context(pg_database()) if backend == "postgresql" else None
        store = data.Store(d, url)
        os.environ["PYQD_ADMIN_PASSWORD"] = "bench-admin-" + secrets.token_hex(4)
        import subprocess
        import sys

        env = {**os.environ, "PYQD_DATA_DIR": d, **({"PYQD_DATABASE_URL": url} if url else {})}
        subprocess.run(
            [sys.executable, "-c", "from server.cli import main; main()", "user", "add", data.USER, "--password-stdin"],
            input=data.PASSWORD + "\n",
            text=True,
            env=env,
            check=True,
            stdout=subprocess.DEVNULL,
        )
        yield store


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--backends", default="sqlite,postgresql")
    parser.add_argument(
        "--only",
        default="scoring,groups,small,memory,cold,model-scoring",
        help="also: scale-out (bench.scaleout), transparency (bench.transparency)",
    )
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per load-generator run")
    parser.add_argument("--out", default=str(ROOT / "docs" / "performance.md"))
    args = parser.parse_args()
    only = set(args.only.split(","))
    out = Path(args.out)
    if only <= {"model-scoring", "scale-out", "transparency"}:  # sections of their own, spliced into the file
        if "model-scoring" in only:
            out.write_text(splice_section(out.read_text() if out.exists() else "", _model_scoring(args)))
        if "scale-out" in only:
            out.write_text(scaleout.splice(out.read_text() if out.exists() else "", _scale_out(args)))
        if "transparency" in only:
            out.write_text(transparency.splice(out.read_text() if out.exists() else "", _transparency(args)))
        log(f"wrote {args.out}")
        return
    previous = out.read_text() if out.exists() else ""
    started = time.perf_counter()
    sections: dict[str, object] = {"rows": args.rows, "reps": args.reps}
    work = Path(tempfile.mkdtemp(prefix="pyqd-bench-models-"))
    base = data.frame(args.rows)
    model_path = str(work / "model.pkl")
    data.fit_model(base, model_path)
    iris_model = str(work / "iris.pkl")
    _fit_iris(iris_model)

    with contextlib.ExitStack() as stack:
        client = stack.enter_context(bl.dask_cluster()) if only & {"scoring", "groups"} else None
        bl.joblib_warmup()
        for backend in args.backends.split(","):
            log(f"== {backend}")
            store = stack.enter_context(store_for(backend))
            t = time.perf_counter()
            store.load("BIG", base)
            if "groups" in only:
                store.load("BIGZ", data.frame(args.rows, skewed=True, seed=1))
            log(f"  loaded {args.rows:,} rows ({time.perf_counter() - t:.1f} s)")
            with (
                running_server(store.database_url, data_dir=store.data_dir) as srv,
                workloads.Pyqd.open(srv, model_path) as pyqd,
            ):
                if "scoring" in only:
                    log("-- row-apply scoring")
                    sections[f"scoring/{backend}"] = workloads.scoring(
                        pyqd, store, "BIG", args.rows, model_path, client, args.reps, log
                    )
                if "groups" in only:
                    for table, label in (("BIG", "uniform"), ("BIGZ", "Zipf")):
                        log(f"-- group-apply, {label}")
                        sections[f"groups/{backend}/{label}"] = workloads.groups(
                            pyqd, store, table, args.rows, client, args.reps, log
                        )
                if "small" in only and backend == "sqlite":
                    log("-- small calls")
                    endpoints = small.pyqd_endpoints(pyqd, srv, iris_model)
                    source = store.source("IRIS", 150)
                    with (
                        small.fastapi_predict.start(model_path, seed_url=source.url, seed_model_path=iris_model) as fa,
                        small.flask_predict.start(model_path) as fl,
                        running_server(store.database_url, data_dir=store.data_dir, PYQD_PROCESSES="2") as srv2,
                    ):
                        endpoints += small.moved(endpoints, srv.url, srv2.url, "pyqd (2 processes)")
                        endpoints += small.app_endpoints(fa, fl)
                        sections["small"] = small.measure(endpoints, (1, 8), args.duration, 2, log)
            if backend == "sqlite" and "memory" in only:
                log("-- memory")
                store.load("BIG5X", data.frame(5 * args.rows, seed=2))
                sections["memory"] = resources.peak_rss(
                    store, model_path, [("BIG", args.rows), ("BIG5X", 5 * args.rows)], 100_000, log
                )
            if backend == "sqlite" and "cold" in only:
                log("-- cold start")
                sections["cold"] = resources.cold_start(store, 5, log)
    sections["seconds"] = time.perf_counter() - started
    sections["date"] = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    text = report.render(sections)
    if "model-scoring" in only:
        log("-- model scoring (OML Services)")
        text = splice_section(text, _model_scoring(args))
    if "scale-out" in only:
        log("-- scale-out (Dask engine)")
        text = scaleout.splice(text, _scale_out(args))
    elif (kept := scaleout.section_of(previous)) is not None:
        text = scaleout.splice(text, kept)
    if "transparency" in only:
        log("-- transparency layer (describe/crosstab)")
        text = transparency.splice(text, _transparency(args))
    elif (kept := transparency.section_of(previous)) is not None:
        text = transparency.splice(text, kept)
    out.write_text(text)
    log(f"wrote {args.out} ({sections['seconds']:.0f} s)")


def _model_scoring(args: argparse.Namespace) -> str:
    """bench.scoring with this run's --duration and --reps (rounds), the PYQD_PROCESSES=2 server, and the profiles."""
    ns = argparse.Namespace(
        duration=args.duration,
        rounds=args.reps,
        models="regression,classifier",
        conc="1,8",
        no_processes2=False,
        profile=True,
        profile_seconds=10,
        out=None,
    )
    command = f"python -m bench.run --only model-scoring --duration {args.duration:g} --reps {args.reps}"
    return scoring.run(ns, command=command)


def _scale_out(args: argparse.Namespace) -> str:
    """bench.scaleout with this run's --rows (and 5 × that) and --reps, with the py-spy profile."""
    ns = argparse.Namespace(
        rows=args.rows, scale=5, chunk=0, reps=args.reps, profile=True, keep=False, source=None, out=None
    )
    return scaleout.run(ns, command=f"python -m bench.run --only scale-out --rows {args.rows} --reps {args.reps}")


def _transparency(args: argparse.Namespace) -> str:
    """bench.transparency with this run's --rows, --reps and --backends, with the profile."""
    ns = argparse.Namespace(
        rows=args.rows, reps=args.reps, backends=args.backends, profile=True, keep=False, source=None, out=None
    )
    command = f"python -m bench.run --only transparency --rows {args.rows} --reps {args.reps}"
    if args.backends != "sqlite,postgresql":
        command += f" --backends {args.backends}"
    return transparency.run(ns, command=command)


def splice_section(doc: str, section: str, title: str = scoring.TITLE) -> str:
    """`doc` with its section `title` (up to the next `## ` heading) replaced by `section`, or appended."""
    return scaleout.splice(doc, section, title)


def _fit_iris(path: str) -> None:
    import pickle

    from sklearn.linear_model import LinearRegression

    from tests.data import iris_frame

    iris = iris_frame()
    model = LinearRegression().fit(iris[["SEPAL_LENGTH", "SEPAL_WIDTH", "PETAL_LENGTH"]], iris["PETAL_WIDTH"])
    with open(path, "wb") as f:
        pickle.dump(model, f)


if __name__ == "__main__":
    main()
