"""Model scoring (issue 10): `python -m bench.scoring [--duration 3] [--rounds 2] [--profile]`.

One fitted scikit-learn model, scored side by side over HTTP, one record and a batch of 1,000, at concurrency 1 and 8:

- pyqd ONNX: converted with skl2onnx, zipped with Oracle's `metadata.json`, stored with `POST /omlmod/v1/models`
  (multipart, modelType=ONNX), deployed, scored with `POST /omlmod/v1/deployment/{uri}/score {"inputRecords"}`;
- pyqd PYTHON: the same estimator as a joblib file (modelType=PYTHON);
- the same two on a second pyqd server over the same store with `PYQD_PROCESSES=2`;
- the seed article's Flask app under gunicorn with 2 workers (`POST /predict {"input": ...}`, no auth);
- a hand-written FastAPI endpoint under uvicorn, 1 worker, PyJWT bearer check (`POST /score {"input": ...}`).

Models: the seed's regression (IRIS: SEPAL_LENGTH, SEPAL_WIDTH, PETAL_LENGTH -> PETAL_WIDTH) and a classifier
pipeline (StandardScaler + LogisticRegression, 4 features -> SPECIES; every system returns all class probabilities).
Every system's answers to the batch are checked against the estimator before anything is timed; each endpoint is
warmed up; rounds interleave the systems; a row reports the round with the most requests/s, the 1-minute load
average seen during its runs, and the CPU per request of the serving processes (server + workers, not wrk).
`--profile` then runs py-spy on pyqd's server (and its workers) during one-record ONNX scoring at c=8 and prints the
frames with the largest shares."""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import zipfile
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.server import THREADS_ENV

os.environ.update(THREADS_ENV)  # before numpy is imported

import httpx  # noqa: E402
import joblib  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from bench.apps import RunningApp, fastapi_predict, flask_predict  # noqa: E402
from bench.cpu_per_call import CpuMeter  # noqa: E402
from bench.data import PASSWORD, USER  # noqa: E402
from bench.harness import machine, markdown_table  # noqa: E402
from bench.loadgen import LoadResult, run_load  # noqa: E402
from bench.server import Server, running_server  # noqa: E402

SEED_X = ["SEPAL_LENGTH", "SEPAL_WIDTH", "PETAL_LENGTH"]
CLASS_X = [*SEED_X, "PETAL_WIDTH"]
#: Records in the batch case.
BATCH = 1_000
FLASK = "Flask + gunicorn (2)"
TITLE = "## Model scoring (issue 10)"
FASTAPI = "FastAPI + PyJWT"


@dataclass(frozen=True)
class Fitted:
    """One model, as each system receives it."""

    name: str  # "regression" | "classifier"
    estimator: Any
    columns: list[str]
    joblib_path: str
    onnx_zip: bytes


@dataclass(frozen=True)
class Endpoint:
    system: str
    model: str
    url: str
    headers: dict[str, str]
    body: Callable[[pd.DataFrame], bytes]  # the records -> this system's request body
    parse: Callable[[bytes], tuple[list[Any], np.ndarray | None]]  # answer -> (predictions, class probabilities)


@dataclass
class Row:
    system: str
    model: str
    batch: int
    concurrency: int
    runs: list[LoadResult] = field(default_factory=list)
    cpu_us: list[tuple[float, float]] = field(default_factory=list)  # CPU µs per request: (root, children)
    load: list[float] = field(default_factory=list)  # 1-minute load average before each run

    @property
    def best(self) -> int:
        return max(range(len(self.runs)), key=lambda i: self.runs[i]["rps"])


def log(line: str) -> None:
    print(line, flush=True)


# --- models and inputs ---


def iris() -> pd.DataFrame:
    from tests.data import iris_frame

    return iris_frame()


def fit(work: Path) -> list[Fitted]:
    """The seed's regression and a classifier pipeline, each as a joblib file and an ONNX zip."""
    from sklearn.linear_model import LinearRegression, LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    df = iris()
    regr = LinearRegression().fit(df[SEED_X], df["PETAL_WIDTH"])
    clf = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000)).fit(df[CLASS_X], df["SPECIES"])
    out = []
    for name, est, cols, function in (
        ("regression", regr, SEED_X, "regression"),
        ("classifier", clf, CLASS_X, "classification"),
    ):
        path = str(work / f"{name}.joblib")
        joblib.dump(est, path)
        out.append(Fitted(name, est, cols, path, onnx_zip(est, cols, function, name)))
    return out


def onnx_zip(est: Any, columns: list[str], function: str, name: str) -> bytes:
    """Oracle's ONNX upload: a zip of `<name>.onnx` and `metadata.json`. The graph takes one float input per
    column (shape [N, 1], named like the column: the attribute names of `inputRecords`), concatenated into the
    [N, len(columns)] matrix skl2onnx's converter reads. A classifier keeps skl2onnx's two outputs (a label
    tensor and a ZipMap sequence of probabilities), the case Oracle's spec reads without label.txt."""
    from onnx import TensorProto, helper
    from skl2onnx import convert_sklearn
    from skl2onnx.common.data_types import FloatTensorType

    model = convert_sklearn(est, initial_types=[("input", FloatTensorType([None, len(columns)]))], target_opset=17)
    g = model.graph
    del g.input[:]
    g.input.extend(helper.make_tensor_value_info(c, TensorProto.FLOAT, [None, 1]) for c in columns)
    g.node.insert(0, helper.make_node("Concat", columns, ["input"], axis=1, name="records_to_matrix"))
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr(f"{name}.onnx", model.SerializeToString())
        z.writestr("metadata.json", json.dumps({"function": function}))
    return buf.getvalue()


def records(columns: list[str], n: int, seed: int = 0) -> pd.DataFrame:
    """`n` IRIS-like rows: IRIS rows drawn at random, jittered, two decimals."""
    df = iris()[columns]
    rng = np.random.default_rng(seed)
    picked = df.iloc[rng.integers(0, len(df), n)].to_numpy()
    return pd.DataFrame(np.round(picked + rng.normal(0, 0.1, picked.shape), 2), columns=columns)


# --- the systems ---


def oml_body(frame: pd.DataFrame) -> bytes:
    return json.dumps({"inputRecords": frame.to_dict(orient="records")}).encode()


def seed_body(frame: pd.DataFrame) -> bytes:
    rows = frame.to_numpy().tolist()
    return json.dumps({"input": rows[0] if len(rows) == 1 else rows}).encode()


def parse_oml(payload: bytes) -> tuple[list[Any], np.ndarray | None]:
    results = json.loads(payload)["scoringResults"]
    if "regression" in results[0]:
        return [r["regression"] for r in results], None
    preds, probs = [], []
    for r in results:
        classes = r["classifications"]
        preds.append(max(classes, key=lambda c: c["probability"])["label"])
        probs.append({c["label"]: c["probability"] for c in classes})
    labels = sorted(probs[0])
    return preds, np.array([[p.get(label, 0.0) for label in labels] for p in probs])


def parse_seed(payload: bytes) -> tuple[list[Any], np.ndarray | None]:
    answer = json.loads(payload)
    probs = answer.get("probability")
    return answer["prediction"], None if probs is None else np.array(probs)


def store_and_deploy(server: Server, headers: dict[str, str], fitted: Fitted, model_type: str) -> str:
    """POST /omlmod/v1/models (multipart) then POST /omlmod/v1/deployment; the endpoint's uri."""
    name = f"bench_{fitted.name}_{model_type.lower()}"
    if model_type == "ONNX":
        data, filename, mime = fitted.onnx_zip, f"{name}.zip", "application/zip"
    else:
        data, filename, mime = Path(fitted.joblib_path).read_bytes(), f"{name}.joblib", "application/octet-stream"
    form = {"modelName": name, "version": "1.0", "modelType": model_type, "description": f"bench {fitted.name}"}
    r = httpx.post(
        f"{server.url}/omlmod/v1/models",
        headers=headers,
        data=form,
        files={"modelData": (filename, data, mime)},
        timeout=120,
    )
    if r.status_code != 201:
        raise RuntimeError(f"storing {name}: {r.status_code} {r.text[:500]}")
    model_id = r.json()["modelId"]
    r = httpx.post(
        f"{server.url}/omlmod/v1/deployment", headers=headers, json={"modelId": model_id, "uri": name}, timeout=120
    )
    if r.status_code != 201:
        raise RuntimeError(f"deploying {name}: {r.status_code} {r.text[:500]}")
    return name


def pyqd_endpoints(
    servers: list[tuple[str, Server]], headers: dict[str, str], fitted: Fitted, types: tuple[str, ...]
) -> list[Endpoint]:
    first = servers[0][1]
    out = []
    for model_type in types:
        uri = store_and_deploy(first, headers, fitted, model_type)
        for label, srv in servers:
            url = f"{srv.url}/omlmod/v1/deployment/{uri}/score"
            out.append(Endpoint(f"{label} {model_type}", fitted.name, url, headers, oml_body, parse_oml))
    return out


def app_endpoints(fitted: Fitted, flask: RunningApp, fastapi: RunningApp) -> list[Endpoint]:
    return [
        Endpoint(FLASK, fitted.name, f"{flask.url}/predict", flask.headers, seed_body, parse_seed),
        Endpoint(FASTAPI, fitted.name, f"{fastapi.url}/score", fastapi.headers, seed_body, parse_seed),
    ]


def check(endpoints: list[Endpoint], fitted: Fitted, frame: pd.DataFrame) -> None:
    """Every system scores the batch like the estimator itself (ONNX computes in float32)."""
    est = fitted.estimator
    want = est.predict(frame)
    want_p = est.predict_proba(frame) if hasattr(est, "predict_proba") else None
    for e in endpoints:
        r = httpx.post(e.url, content=e.body(frame), headers={"Content-Type": "application/json", **e.headers})
        if r.status_code != 200:
            raise RuntimeError(f"{e.system} / {e.model}: {r.status_code} {r.text[:500]}")
        got, probs = e.parse(r.content)
        if len(got) != len(frame):
            raise RuntimeError(f"{e.system} / {e.model}: {len(got)} predictions for {len(frame)} records")
        if want_p is None:
            err = float(np.max(np.abs(np.asarray(got, dtype=float) - want)))
            ok = err < 1e-3
            log(f"  check {e.system} / {e.model}: max |difference| {err:.2g}")
        else:
            agree = float(np.mean(np.asarray(got, dtype=object) == want))
            err = float(np.max(np.abs(probs - want_p))) if probs is not None else float("nan")
            ok = agree >= 0.99 and err < 1e-3
            log(f"  check {e.system} / {e.model}: labels agree {agree:.1%}, max |probability difference| {err:.2g}")
        if not ok:
            raise RuntimeError(f"{e.system} / {e.model} does not score like the estimator")


# --- measuring ---


def measure(
    endpoints: list[Endpoint],
    frames: dict[int, pd.DataFrame],
    pids: dict[str, int],
    concurrencies: tuple[int, ...],
    duration_s: float,
    rounds: int,
) -> list[Row]:
    """Every endpoint at every batch size and concurrency, `rounds` times, the systems interleaved (the order
    rotates each round)."""
    bodies = {(e.system, n): e.body(f) for e in endpoints for n, f in frames.items()}
    for e in endpoints:  # warm-up: first calls load models, compile, fill caches
        for n in frames:
            run_load(e.url, bodies[(e.system, n)], e.headers, concurrency=1, duration_s=1.0)
    rows: dict[tuple[str, int, int], Row] = {}
    for r in range(rounds):
        order = endpoints[r % len(endpoints) :] + endpoints[: r % len(endpoints)]
        for n in frames:
            for c in concurrencies:
                for e in order:
                    row = rows.setdefault((e.system, n, c), Row(e.system, e.model, n, c))
                    row.load.append(os.getloadavg()[0])
                    with CpuMeter(pids[e.system]) as meter:
                        res = run_load(e.url, bodies[(e.system, n)], e.headers, concurrency=c, duration_s=duration_s)
                    row.runs.append(res)
                    done = max(1, res["requests"])
                    row.cpu_us.append((1e6 * meter.own / done, 1e6 * meter.kids / done))
                    log(
                        f"  round {r + 1} {e.model} batch={n} c={c} {e.system}: p50 {res['p50_ms']:.2f} ms, "
                        f"p99 {res['p99_ms']:.2f} ms, {res['rps']:.0f} req/s, errors {res['errors']}, "
                        f"CPU {sum(row.cpu_us[-1]):.0f} us/req ({row.cpu_us[-1][0]:.0f} + {row.cpu_us[-1][1]:.0f}), "
                        f"load {row.load[-1]:.1f}"
                    )
    return list(rows.values())


# --- profiling ---


@dataclass(frozen=True)
class ProfileCase:
    label: str
    endpoint: Endpoint
    frame: pd.DataFrame
    concurrency: int = 8


def profile(case: ProfileCase, pid: int, seconds: int, out_dir: Path, flamegraph: bool = False) -> str:
    """py-spy (`--gil --subprocesses`: the thread holding the GIL in the server and in each worker, so roughly
    where CPU goes in Python) while wrk runs `case`; the shares per role and per function. With `flamegraph`, a
    second run records an SVG of the server's threads (idle ones left out)."""
    pyspy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    body = case.endpoint.body(case.frame)
    slug = "".join(ch if ch.isalnum() else "-" for ch in case.label.lower())
    raw, svg = out_dir / f"{slug}.txt", out_dir / f"{slug}.svg"
    lines = []
    runs = [("raw", raw, ["--gil", "--subprocesses"])] + ([("flamegraph", svg, [])] if flamegraph else [])
    for fmt, path, extra in runs:
        results: dict[str, LoadResult] = {}

        def load(results: dict[str, LoadResult] = results) -> None:
            e = case.endpoint
            results["r"] = run_load(e.url, body, e.headers, concurrency=case.concurrency, duration_s=seconds + 3)

        t = threading.Thread(target=load)
        t.start()
        time.sleep(1.0)  # let wrk reach its steady state
        argv = [pyspy, "record", "-o", str(path), "--format", fmt, "--pid", str(pid), "-d", str(seconds)]
        subprocess.run([*argv, "--rate", "250", "--nonblocking", *extra], check=True, capture_output=True)
        t.join()
        r = results["r"]
        lines.append(f"{fmt} run: wrk c={case.concurrency} {r['rps']:.0f} req/s, p50 {r['p50_ms']:.2f} ms")
    lines += [summarize(raw.read_text()), f"collapsed stacks: {raw}" + (f"; flame graph: {svg}" if flamegraph else "")]
    return "\n".join(lines)


def summarize(collapsed: str, top: int = 18) -> str:
    """Shares of the samples: server vs worker processes, then per role the functions by self time and including
    callees (a function counted once per stack)."""
    own: dict[str, Counter[str]] = {"server": Counter(), "worker": Counter()}
    incl: dict[str, Counter[str]] = {"server": Counter(), "worker": Counter()}
    roles: Counter[str] = Counter()
    total = 0
    for line in collapsed.splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        total += n
        procs = PROCESS.findall(stack)  # a command line may hold ";"
        role = "worker" if procs and "engines.worker" in procs[-1] else "server"
        roles[role] += n
        frames = [f for f in PROCESS.sub("", stack).split(";") if f]
        names = [_frame(f) for f in frames if not f.startswith("thread ")]
        if names:
            own[role][names[-1]] += n
        for name in set(names):
            incl[role][name] += n
    if not total:
        return "no samples"

    def pct(n: int) -> str:
        return f"{100 * n / total:5.1f}%"

    lines = [f"{total} samples (GIL holders): " + ", ".join(f"{r} {pct(n).strip()}" for r, n in roles.most_common())]
    for role in ("server", "worker"):
        if not roles[role]:
            continue
        lines += [f"{role}, self time:"] + [f"  {pct(n)} {f}" for f, n in own[role].most_common(top)]
        common = [(f, n) for f, n in incl[role].most_common() if not f.endswith(ENTRY_POINTS)][:top]
        lines += [f"{role}, including callees:"] + [f"  {pct(n)} {f}" for f, n in common]
    return "\n".join(lines)


PROCESS = re.compile(r'process \d+:"[^"]*"')
#: Files of the frames every stack starts with (process start, CLI, event loop, thread start): left out of the
#: "including callees" lists.
ENTRY_POINTS = tuple(
    f"({name})"
    for name in (
        "click/core.py",
        "server/cli.py",
        "uvicorn/main.py",
        "uvicorn/_compat.py",
        "uvicorn/server.py",
        "asyncio/runners.py",
        "asyncio/base_events.py",
        "asyncio/events.py",
        "<string>",
        "<frozen runpy>",
        "worker/template.py",
        "python3.11/threading.py",
        "threading.py",
    )
)


def _frame(f: str) -> str:
    """`func (path/to/file.py:123)` -> `func (to/file.py)`, folding line numbers so one function is one entry."""
    name, _, where = f.partition(" (")
    where = where.rstrip(")").rsplit(":", 1)[0]
    parts = where.split("/")
    for anchor in ("site-packages", "python3.11"):
        if anchor in parts:
            parts = parts[len(parts) - parts[::-1].index(anchor) :]
            break
    return f"{name} ({'/'.join(parts[-3:])})"


# --- report ---


def render(rows: list[Row], meta: dict[str, Any]) -> str:
    """The markdown section: one table per model and batch size, ratios against Flask, and the targets."""
    out = [
        TITLE,
        "",
        f"`{meta['command']}`, {meta['date']}: {machine()}",
        "",
        f"Load average before / after the run: {meta['load_before']} / {meta['load_after']} (2 cores). "
        f"wrk, {meta['duration']:.0f} s per run, best of {meta['rounds']} interleaved rounds by req/s; "
        "CPU is the serving processes' (server + workers, not wrk) per request.",
        "",
    ]
    by = {(r.system, r.model, r.batch, r.concurrency): r for r in rows}
    header = ["system", "c", "p50 ms", "p99 ms", "req/s", "req/s ÷ Flask", "p50 − Flask ms"]
    header += ["CPU µs/req (server + workers)", "load"]
    for model in dict.fromkeys(r.model for r in rows):
        for batch in dict.fromkeys(r.batch for r in rows):
            table = []
            for c in dict.fromkeys(r.concurrency for r in rows):
                flask = by.get((FLASK, model, batch, c))
                fl = flask.runs[flask.best] if flask else None
                for r in rows:
                    if (r.model, r.batch, r.concurrency) != (model, batch, c):
                        continue
                    b = r.runs[r.best]
                    table.append(
                        [
                            r.system,
                            c,
                            f"{b['p50_ms']:.2f}",
                            f"{b['p99_ms']:.2f}",
                            f"{b['rps']:.0f}",
                            f"{b['rps'] / fl['rps']:.2f}" if fl else "–",
                            f"{b['p50_ms'] - fl['p50_ms']:+.2f}" if fl else "–",
                            _cpu(r.cpu_us[r.best], r.system),
                            f"{max(r.load):.1f}",
                        ]
                        + ([] if not b["errors"] else [f"errors {b['errors']}"])
                    )
            what = "one record" if batch == 1 else f"{batch:,} records"
            out += [f"### {model}, {what} per request", "", markdown_table(header, table), ""]
    out += ["### Targets", "", targets(by), ""]
    return "\n".join(out)


def _cpu(cpu: tuple[float, float], system: str) -> str:
    """pyqd: total (server + workers); the apps: total (their workers; gunicorn's master is idle)."""
    own, kids = cpu
    return f"{own + kids:.0f} ({own:.0f} + {kids:.0f})" if system.startswith("pyqd") else f"{own + kids:.0f}"


def targets(by: dict[tuple[str, str, int, int], Row]) -> str:
    """Issue 10: ONNX req/s ≥ Flask's at c=8; PYTHON ≥ half of Flask's at c=8; p50 at c=1 within 1 ms of Flask's."""
    rows = []
    keys = sorted({(m, n) for (_, m, n, _) in by}, key=lambda k: (k[0] != "regression", k[1]))
    for model, batch in keys:

        def best(system: str, c: int, model: str = model, batch: int = batch) -> LoadResult | None:
            row = by.get((system, model, batch, c))
            return row.runs[row.best] if row else None

        fl8, fl1 = best(FLASK, 8), best(FLASK, 1)
        if not fl8 or not fl1:
            continue
        for system in dict.fromkeys(s for (s, m, n, _) in by if (m, n) == (model, batch) and s.startswith("pyqd")):
            kind = system.rsplit(" ", 1)[1]
            goal = 1.0 if kind == "ONNX" else 0.5
            r8, r1 = best(system, 8), best(system, 1)
            if not r8 or not r1:
                continue
            met8 = r8["rps"] >= goal * fl8["rps"]
            met1 = r1["p50_ms"] <= fl1["p50_ms"] + 1.0
            rows.append(
                [
                    model,
                    "1" if batch == 1 else f"{batch:,}",
                    system,
                    f"{r8['rps']:.0f} vs {goal * fl8['rps']:.0f}: {'met' if met8 else 'missed'}",
                    f"{r1['p50_ms']:.2f} vs {fl1['p50_ms'] + 1:.2f}: {'met' if met1 else 'missed'}",
                ]
            )
    header = [
        "model",
        "records",
        "system",
        "req/s at c=8 vs goal (ONNX ≥ Flask, PYTHON ≥ ½ Flask)",
        "p50 c=1 vs ≤ Flask + 1 ms",
    ]
    return markdown_table(header, rows)


# --- the run ---


@contextlib.contextmanager
def systems(
    work: Path, models: list[Fitted], processes2: bool, source: str | None = None
) -> Iterator[tuple[list[Endpoint], dict[str, int]]]:
    """Every system up, every model stored and deployed; the endpoints and each system's root pid. `source`: run
    pyqd from another checkout."""
    with contextlib.ExitStack() as stack:
        srv = stack.enter_context(running_server(source=source))
        servers = [("pyqd", srv)]
        if processes2:
            srv2 = stack.enter_context(running_server(data_dir=srv.data_dir, source=source, PYQD_PROCESSES="2"))
            servers.append(("pyqd (2 processes)", srv2))
        headers = srv.add_user(USER, PASSWORD)
        endpoints: list[Endpoint] = []
        pids = {f"{label} {t}": s.proc.pid for label, s in servers for t in ("ONNX", "PYTHON")}
        for fitted in models:
            endpoints += pyqd_endpoints(servers, headers, fitted, ("ONNX", "PYTHON"))
            fl = stack.enter_context(flask_predict.start(fitted.joblib_path))
            fa = stack.enter_context(fastapi_predict.start(fitted.joblib_path))
            endpoints += app_endpoints(fitted, fl, fa)
            pids.setdefault(f"{FLASK}/{fitted.name}", fl.proc.pid)
            pids.setdefault(f"{FASTAPI}/{fitted.name}", fa.proc.pid)
        yield endpoints, pids


def profile_cases(endpoints: list[Endpoint], models: list[Fitted]) -> list[ProfileCase]:
    """The issue's case (ONNX, one record, c=8) first; then PYTHON the same way, and the 1,000-record
    classifier in ONNX (where pyqd is furthest behind) when those were measured."""
    found = {(e.system, e.model): e for e in endpoints}
    cases = []
    for system, model, rows, label in (
        ("pyqd ONNX", models[0].name, 1, f"pyqd ONNX, {models[0].name}, one record, c=8"),
        ("pyqd PYTHON", models[0].name, 1, f"pyqd PYTHON, {models[0].name}, one record, c=8"),
        ("pyqd ONNX", "classifier", BATCH, f"pyqd ONNX, classifier, {BATCH:,} records, c=8"),
    ):
        fitted = next((m for m in models if m.name == model), None)
        if fitted is not None and (system, model) in found:
            cases.append(ProfileCase(label, found[(system, model)], records(fitted.columns, rows, seed=1 + rows)))
    return cases


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=float, default=3.0, help="seconds per load-generator run")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--models", default="regression,classifier")
    parser.add_argument("--conc", default="1,8")
    parser.add_argument("--no-processes2", action="store_true", help="skip the PYQD_PROCESSES=2 server")
    parser.add_argument("--profile", action="store_true", help="py-spy pyqd's server during 1-record ONNX at c=8")
    parser.add_argument("--profile-seconds", type=int, default=10)
    parser.add_argument("--out", help="also write the markdown section to this file")
    parser.add_argument("--source", help="run pyqd from another checkout (e.g. a worktree with a change to try)")
    args = parser.parse_args()
    print(run(args), flush=True)


def run(args: argparse.Namespace, command: str | None = None) -> str:
    import datetime as dt

    started = time.perf_counter()
    work = Path(tempfile.mkdtemp(prefix="pyqd-bench-scoring-"))
    meta: dict[str, Any] = {
        "command": command or "python -m bench.scoring " + " ".join(sys.argv[1:]),
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "load_before": " ".join(f"{x:.1f}" for x in os.getloadavg()),
        "duration": args.duration,
        "rounds": args.rounds,
    }
    wanted = args.models.split(",")
    models = [m for m in fit(work) if m.name in wanted]
    concurrencies = tuple(int(c) for c in args.conc.split(","))
    rows: list[Row] = []
    profile_text = ""
    try:
        with systems(work, models, not args.no_processes2, getattr(args, "source", None)) as (endpoints, pids):
            for fitted in models:
                mine = [e for e in endpoints if e.model == fitted.name]
                frames = {1: records(fitted.columns, 1, seed=1), BATCH: records(fitted.columns, BATCH, seed=2)}
                log(f"-- {fitted.name}")
                check(mine, fitted, frames[BATCH])
                own = {e.system: pids.get(e.system) or pids[f"{e.system}/{fitted.name}"] for e in mine}
                rows += measure(mine, frames, own, concurrencies, args.duration, args.rounds)
            if args.profile:
                log("-- profile")
                profile_text = "\n".join(
                    f"#### {case.label}\n\n```\n"
                    + profile(case, pids[case.endpoint.system], args.profile_seconds, work, flamegraph=i == 0)
                    + "\n```\n"
                    for i, case in enumerate(profile_cases(endpoints, models))
                )
    finally:
        meta["load_after"] = " ".join(f"{x:.1f}" for x in os.getloadavg())
    text = render(rows, meta)
    if profile_text:
        text += f"\n### Profiles (py-spy --gil, server and workers)\n\n{profile_text}"
    text += f"\n({time.perf_counter() - started:.0f} s)\n"
    if args.out:
        Path(args.out).write_text(text)
    return text


if __name__ == "__main__":
    main()
