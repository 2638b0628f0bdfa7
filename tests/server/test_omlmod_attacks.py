"""Attacks on OML Services (`/omlmod`) through the REST API, as hostile users would make them: other users'
private models and endpoints, hostile PYTHON models (their unpickling and `predict` run in the owner's real
sandboxed worker), hostile ONNX uploads, hostile score requests. Each answer is a clean error in OML Services'
shape (`{"code", "message"}`), nothing leaks, the server lives, and the next call (and other users' scoring)
still works."""

from __future__ import annotations

import dataclasses
import errno
import io
import json
import os
import struct
import threading
import time
import uuid
import zipfile
import zlib
from collections.abc import Iterator
from pathlib import Path

import httpx
import orjson
import pytest

from server.settings import Settings
from tests.conftest import ADMIN_PASSWORD, Api, own_pool_api
from tests.engines.test_scoring_wire import BASE_MODEL, FORGE_SCORED, hostile_pickle

MODELS = "/omlmod/v1/models"
DEPLOYMENT = "/omlmod/v1/deployment"
#: Seconds a score may run in the module's server (short, so an endless predict ends soon).
SCORE_LIMIT_S = 4.0
#: Largest result the module's server sends (small, so an oversize answer is cheap to make).
OUTPUT_MAX_BYTES = 2 * 1024 * 1024


# -- helpers -------------------------------------------------------------------------------------------------
def error(r: httpx.Response, status: int) -> str:
    """The message of an OML Services error answer, after checking its status and shape."""
    assert r.status_code == status, (r.status_code, r.text[:2000])
    assert r.headers["content-type"].startswith("application/json")
    body = r.json()
    assert set(body) == {"code", "message"} and body["code"] == str(status), body
    return body["message"]


def store(
    api: Api,
    headers: dict[str, str],
    data: bytes,
    name: str,
    model_type: str = "PYTHON",
    *,
    shared: bool = False,
    filename: str = "model.bin",
) -> httpx.Response:
    form = {"modelName": name, "version": "1.0", "modelType": model_type}
    if shared:
        form["shared"] = "true"
    return api.client.post(
        MODELS, headers=headers, data=form, files={"modelData": (filename, data, "application/octet-stream")}
    )


def stored(api: Api, headers: dict[str, str], data: bytes, name: str, model_type: str = "PYTHON", **kw) -> str:
    r = store(api, headers, data, name, model_type, **kw)
    assert r.status_code == 201, r.text
    return r.json()["modelId"]


def deploy(api: Api, headers: dict[str, str], model_id: str, uri: str) -> httpx.Response:
    return api.client.post(DEPLOYMENT, headers=headers, json={"modelId": model_id, "uri": uri})


def deployed(api: Api, headers: dict[str, str], data: bytes, name: str, model_type: str = "PYTHON", **kw) -> str:
    """Store and deploy a model at uri `name`."""
    model_id = stored(api, headers, data, name, model_type, **kw)
    r = deploy(api, headers, model_id, name)
    assert r.status_code == 201, r.text
    return model_id


def score(api: Api, headers: dict[str, str], uri: str, payload: object) -> httpx.Response:
    content = payload if isinstance(payload, bytes) else orjson.dumps(payload)
    return api.client.post(
        f"{DEPLOYMENT}/{uri}/score", headers={**headers, "Content-Type": "application/json"}, content=content
    )


def x0(value: object) -> dict[str, object]:
    return {"inputRecords": [{"x0": value}]}


def regression(r: httpx.Response) -> float:
    assert r.status_code == 200, r.text[:2000]
    (result,) = r.json()["scoringResults"]
    return result["regression"]


# -- visibility (both databases) -----------------------------------------------------------------------------
BENIGN = hostile_pickle(BASE_MODEL)  # a regression 2 * x0 (its loading runs code, but harmless code)


def test_another_users_private_model_and_endpoint_are_not_found_everywhere(api):
    alice, mallory = api.user("ALICE"), api.user("MALLORY")
    model_id = deployed(api, alice, BENIGN, "alice_private")
    assert regression(score(api, alice, "alice_private", x0(2))) == 4.0
    c = api.client
    for r in (
        c.get(f"{MODELS}/{model_id}", headers=mallory),
        c.get(f"{MODELS}/{model_id}/metadata", headers=mallory),
        c.get(f"{MODELS}/{model_id}/content", headers=mallory),
        c.post(f"{MODELS}/{model_id}", headers=mallory, json={"namespace": "stolen"}),
        c.delete(f"{MODELS}/{model_id}", headers=mallory),
        deploy(api, mallory, model_id, "mallory_copy"),
        c.get(f"{DEPLOYMENT}/alice_private", headers=mallory),
        c.get(f"{DEPLOYMENT}/alice_private/api", headers=mallory),
        c.delete(f"{DEPLOYMENT}/alice_private", headers=mallory),
        score(api, mallory, "alice_private", x0(2)),
    ):
        message = error(r, 404)
        assert "x0" not in message and "PYTHON" not in message  # nothing of the model in the answer
    assert c.post(f"{MODELS}/{model_id}", headers=alice, json={"namespace": "secret_ns"}).status_code == 204
    for path in (MODELS, DEPLOYMENT):
        for query in (
            {},
            {"modelName": "alice_private"},
            {"modelName": "alice_private", "version": "1.0"},
            {"namespace": "secret_ns"},
        ):
            r = c.get(path, headers=mallory, params=query)
            assert r.status_code == 200 and r.json()["items"] == [], (path, query, r.text)
    # nothing changed: alice still has her model, namespace and endpoint; mallory made no endpoint
    r = c.get(f"{MODELS}/{model_id}", headers=alice)
    assert r.status_code == 200 and r.json()["namespace"] == "secret_ns"
    assert [d["uri"] for d in c.get(DEPLOYMENT, headers=alice).json()["items"]] == ["alice_private"]
    assert regression(score(api, alice, "alice_private", x0(3))) == 6.0


def test_a_shared_model_may_be_seen_scored_and_deployed_but_only_its_owner_changes_it(api):
    alice, mallory, eve = api.user("ALICE"), api.user("MALLORY"), api.user("EVE")
    c = api.client
    deployed_id = deployed(api, alice, BENIGN, "alice_shared", shared=True)
    free_id = stored(api, alice, hostile_pickle(BASE_MODEL + "\n# another\n"), "alice_free", shared=True)
    # others see it, its metadata and bytes, and score it
    assert c.get(f"{MODELS}/{deployed_id}", headers=mallory).json()["createdBy"] == "ALICE"
    assert c.get(f"{MODELS}/{deployed_id}/metadata", headers=mallory).json()["miningFunction"] == "REGRESSION"
    assert c.get(f"{MODELS}/{deployed_id}/content", headers=mallory).content == BENIGN
    assert c.get(f"{DEPLOYMENT}/alice_shared/api", headers=mallory).status_code == 200
    assert regression(score(api, mallory, "alice_shared", x0(5))) == 10.0
    # but may not change or delete it, nor its endpoint
    assert "creator" in error(c.post(f"{MODELS}/{deployed_id}", headers=mallory, json={"namespace": "x"}), 403)
    error(c.delete(f"{MODELS}/{deployed_id}", headers=mallory), 403)
    error(c.delete(f"{DEPLOYMENT}/alice_shared", headers=mallory), 403)
    # pyqd lets anyone deploy a shared model; a third user sees that endpoint but may not remove it
    r = deploy(api, mallory, free_id, "mallory_ep")
    assert r.status_code == 201, r.text
    assert regression(score(api, eve, "mallory_ep", x0(1))) == 2.0
    error(c.delete(f"{DEPLOYMENT}/mallory_ep", headers=eve), 403)
    error(c.post(f"{MODELS}/{free_id}", headers=eve, json={"namespace": "x"}), 403)
    # the model's creator may remove the endpoint another user made of it, and then delete the model
    error(c.delete(f"{MODELS}/{free_id}", headers=alice), 409)
    assert c.delete(f"{DEPLOYMENT}/mallory_ep", headers=alice).status_code == 204
    error(score(api, mallory, "mallory_ep", x0(1)), 404)  # at once: the endpoint cache forgot it
    assert c.delete(f"{MODELS}/{free_id}", headers=alice).status_code == 204
    # and the unchanged model still answers everyone
    r = c.get(f"{MODELS}/{deployed_id}", headers=alice)
    assert r.status_code == 200 and "namespace" not in r.json()
    assert regression(score(api, eve, "alice_shared", x0(4))) == 8.0


def test_a_datastore_object_of_another_user_cannot_be_stored_as_a_model(api):
    alice, mallory = api.user("ALICE"), api.user("MALLORY")
    save = """def save():
    import numpy as np, oml
    from sklearn.linear_model import LinearRegression
    oml.ds.save({"regr": LinearRegression().fit(np.array([[1.0], [2.0]]), np.array([2.0, 4.0]))}, "ds_alice")
    return "saved"
"""
    api.script(alice, "save", save)
    assert api.run(alice, "do-eval", "save").json() == {"result": "saved"}
    body = {"modelName": "stolen", "version": "1.0", "modelType": "PYTHON", "datastore": "ds_alice", "object": "regr"}
    error(api.client.post(MODELS, headers=mallory, json={**body, "owner": "ALICE"}), 404)
    error(api.client.post(MODELS, headers=mallory, json=body), 404)
    assert api.client.get(MODELS, headers=mallory).json()["items"] == []
    r = api.client.post(MODELS, headers=alice, json=body)  # the owner may
    assert r.status_code == 201, r.text


@pytest.mark.parametrize("settings", ["sqlite"], indirect=True)
def test_a_scripts_own_token_cannot_reach_oml_services(api):
    """A script (someone else's, run by the caller) must not store, deploy or score as its caller."""
    alice = api.user("ALICE")
    deployed(api, alice, BENIGN, "alice_ep")
    probe = """def probe():
    import oml._connection as c
    http = c.current().http
    out = {}
    for path in ("/omlmod/v1/models", "/oml/../omlmod/v1/models", "/oml/%2e%2e/omlmod/v1/deployment"):
        try:
            out[path] = http.get(path).status_code
        except Exception as e:
            out[path] = type(e).__name__
    try:
        out["score"] = http.post("/omlmod/v1/deployment/alice_ep/score", json={"inputRecords": [{"x0": 1}]}).status_code
    except Exception as e:
        out["score"] = type(e).__name__
    return out
"""
    api.script(alice, "probe", probe)
    r = api.run(alice, "do-eval", "probe")
    assert r.status_code == 200, r.text
    for what, outcome in r.json()["result"].items():
        assert outcome not in (200, 201, 204), (what, outcome)


@pytest.mark.parametrize("settings", ["sqlite"], indirect=True)
def test_every_route_but_the_service_document_needs_a_token(api):
    alice = api.user("ALICE")
    model_id = deployed(api, alice, BENIGN, "alice_ep")
    routes = [
        ("GET", "/omlmod/"),
        ("GET", "/omlmod/v1"),
        ("GET", MODELS),
        ("POST", MODELS),
        ("GET", f"{MODELS}/{model_id}"),
        ("POST", f"{MODELS}/{model_id}"),
        ("DELETE", f"{MODELS}/{model_id}"),
        ("GET", f"{MODELS}/{model_id}/metadata"),
        ("GET", f"{MODELS}/{model_id}/content"),
        ("GET", DEPLOYMENT),
        ("POST", DEPLOYMENT),
        ("GET", f"{DEPLOYMENT}/alice_ep"),
        ("DELETE", f"{DEPLOYMENT}/alice_ep"),
        ("POST", f"{DEPLOYMENT}/alice_ep/score"),
        ("GET", f"{DEPLOYMENT}/alice_ep/api"),
    ]
    for headers in ({}, {"Authorization": "Bearer not-a-token"}, {"Authorization": "Basic QURNSU46eA=="}):
        for method, path in routes:
            r = api.client.request(method, path, headers=headers, json={"modelId": model_id, "uri": "x"})
            error(r, 401)
    r = api.client.get("/omlmod/v1/api")
    assert r.status_code == 200 and r.json()["openapi"].startswith("3.0")
    # and nothing was changed by all that
    assert regression(score(api, alice, "alice_ep", x0(1))) == 2.0


# -- a server of the module's own, with short limits -----------------------------------------------------------
@pytest.fixture(scope="module")
def hapi(tmp_path_factory) -> Iterator[Api]:
    settings = Settings(
        data_dir=tmp_path_factory.mktemp("omlmod") / "data",
        admin_password=ADMIN_PASSWORD,
        password_hash_time_cost=1,
        password_hash_memory_kib=1024,
    )
    with own_pool_api(
        settings,
        workers=4,
        warm_workers=2,
        worker_preload="sklearn.linear_model,onnxruntime",
        worker_memory_mb=2048,
        score_time_limit_s=SCORE_LIMIT_S,
        model_load_time_limit_s=60.0,
        worker_wait_s=6.0,
        output_max_bytes=OUTPUT_MAX_BYTES,
    ) as api:
        yield api


#: MALLORY's shared model of traps, chosen by x0: a segfault, an endless loop, a long sleep, megabytes of
#: output, answers over the output limit and over the channel's bound, a huge array; else 2 * x0.
TRAPS = """
import ctypes, os, sys, time
import numpy as np

class Model:
    n_features_in_ = 1

    def predict(self, X):
        X = np.asarray(X, dtype=float)
        code = X[0, 0]
        if code == 666:
            ctypes.string_at(0)
        if code == 777:
            while True:
                pass
        if code == 555:
            time.sleep(600)
        if code == 888:
            chunk = "x" * (1024 * 1024)
            for _ in range(20):
                print(chunk)
                sys.stderr.write(chunk)
                os.write(1, chunk.encode())
                os.write(2, chunk.encode())
        if code == 999:
            return np.array(["y" * (4 * OUTPUT_MAX_BYTES)] * len(X), dtype=object)
        if code == 1000:
            return np.array(["z" * (OUTPUT_MAX_BYTES + 70 * 1024 * 1024)] * len(X), dtype=object)
        if code == 1111:
            return np.zeros((len(X), 50_000_000))
        return X[:, 0] * 2.0

model = Model()
"""

#: A classifier over AGE and INCOME (given as a DataFrame), labels no/yes.
CLASSIFIER = """
import numpy as np

class Model:
    _estimator_type = "classifier"
    classes_ = np.array(["no", "yes"])
    feature_names_in_ = np.array(["AGE", "INCOME"], dtype=object)

    def predict(self, X):
        return np.where(np.asarray(X["AGE"], dtype=float) > 40, "yes", "no")

    def predict_proba(self, X):
        p = np.clip(np.nan_to_num(np.asarray(X["AGE"], dtype=float)) / 100.0, 0, 1)
        return np.column_stack([1 - p, p])

model = Model()
"""


class World:
    """The module server's users and endpoints: ALICE's private `bystander` (2 * x0), MALLORY's shared `traps`
    and `clf`; BOB and EVE only call."""

    def __init__(self, api: Api) -> None:
        self.api = api
        self.alice, self.mallory = api.user("ALICE"), api.user("MALLORY")
        self.bob, self.eve = api.user("BOB"), api.user("EVE")
        deployed(api, self.alice, BENIGN, "bystander")
        deployed(
            api, self.mallory, hostile_pickle(f"OUTPUT_MAX_BYTES = {OUTPUT_MAX_BYTES}\n" + TRAPS), "traps", shared=True
        )
        deployed(api, self.mallory, hostile_pickle(CLASSIFIER), "clf", shared=True)

    def bystander_works(self) -> None:
        """Another user's scoring is untouched by whatever the attack did."""
        assert regression(score(self.api, self.alice, "bystander", x0(21))) == 42.0


@pytest.fixture(scope="module")
def world(hapi: Api) -> World:
    return World(hapi)


# -- hostile PYTHON models -----------------------------------------------------------------------------------
#: Runs at unpickling and again in predict; predict answers what it found, as a label.
PROBE = """
import json, os, socket, subprocess, sys
import numpy as np

def _try(f):
    try:
        return f()
    except OSError as e:
        return e.errno
    except Exception as e:
        return type(e).__name__

def probe():
    out = {name: _try(lambda p=p: open(p, "rb").read(4096).decode("latin-1")) for name, p in PATHS.items()}
    out["listdir"] = _try(lambda: os.listdir(DATA_DIR))
    out["env"] = sorted(os.environ)
    out["tcp"] = _try(lambda: socket.create_connection(("127.0.0.1", 5432), timeout=2) and "connected")
    pg = "/var/run/postgresql/.s.PGSQL.5432"
    out["unix"] = _try(lambda: socket.socket(socket.AF_UNIX).connect(pg) or "connected")
    out["udp"] = _try(lambda: socket.socket(socket.AF_INET, socket.SOCK_DGRAM).sendto(b"x", ("127.0.0.1", 53)))
    child = "import socket; socket.socket(); print('opened')"
    out["child"] = _try(lambda: subprocess.run([sys.executable, "-c", child], capture_output=True).returncode)
    return out

AT_LOAD = probe()

class Model:
    n_features_in_ = 1

    def predict(self, X):
        return np.array([json.dumps({"load": AT_LOAD, "predict": probe()})] * len(X), dtype=object)

model = Model()
"""


def test_a_model_reaches_no_secret_no_server_file_and_no_network(hapi, world):
    data_dir = hapi.services.settings.data_dir.resolve()
    paths = {
        "key": str(data_dir / "signing.key"),
        "database": str(data_dir / "pyqd.db"),
        "server_environ": f"/proc/{os.getpid()}/environ",
        "server_memory_map": f"/proc/{os.getpid()}/maps",
        "shadow": "/etc/shadow",
    }
    source = f"PATHS = {paths!r}\nDATA_DIR = {str(data_dir)!r}\n" + PROBE
    deployed(hapi, world.mallory, hostile_pickle(source), "probe", shared=True)
    r = score(hapi, world.bob, "probe", x0(1))  # run for another user, in MALLORY's worker
    assert r.status_code == 200, r.text
    key = (data_dir / "signing.key").read_text().strip()
    assert key not in r.text
    (result,) = r.json()["scoringResults"]
    report = json.loads(result["classifications"][0]["label"])
    for when in ("load", "predict"):
        found = report[when]
        for name in (*paths, "listdir"):
            assert isinstance(found[name], int), (when, name, str(found[name])[:200])  # an errno: refused
        assert not [k for k in found["env"] if k.startswith("PYQD") or "KEY" in k or "PASSWORD" in k], found["env"]
        for kind in ("tcp", "unix", "udp"):
            assert found[kind] == errno.EPERM, (when, kind, found[kind])
        assert found["child"] != 0  # the filter holds in children too
    world.bystander_works()


def test_a_segfault_in_predict_fails_that_request_and_the_next_one_works(world):
    api = world.api
    message = error(score(api, world.bob, "traps", x0(666)), 500)
    assert "stopped while scoring" in message and "SIGSEGV" in message, message
    assert regression(score(api, world.bob, "traps", x0(1))) == 2.0
    world.bystander_works()


def test_an_endless_predict_meets_the_time_limit_and_the_next_one_works(world):
    api = world.api
    started = time.monotonic()
    message = error(score(api, world.bob, "traps", x0(777)), 400)
    assert "time limit" in message.lower() or f"{SCORE_LIMIT_S:g}" in message, message
    assert time.monotonic() - started < SCORE_LIMIT_S + 30
    assert regression(score(api, world.bob, "traps", x0(2))) == 4.0
    world.bystander_works()


def test_megabytes_of_printing_go_nowhere_and_do_not_stall_the_worker(world):
    api = world.api
    r = score(api, world.bob, "traps", x0(888))
    assert regression(r) == 1776.0 and len(r.content) < 1000
    world.bystander_works()


def test_a_huge_array_from_predict_is_a_clean_error(world):
    api = world.api
    message = error(score(api, world.bob, "traps", x0(1111)), 400)
    assert "one value per row" in message, message
    assert regression(score(api, world.bob, "traps", x0(3))) == 6.0


def test_an_answer_over_the_channels_bound_kills_the_worker_and_the_next_one_works(world):
    api = world.api
    r = score(api, world.bob, "traps", x0(1000))
    if r.status_code == 400:  # the worker refused its own answer as over the output limit
        assert "Output exceeds maximum size" in error(r, 400)
    else:  # or it was sent anyway, past the channel's bound: the worker is killed
        assert "malformed message" in error(r, 500)
    assert regression(score(api, world.bob, "traps", x0(4))) == 8.0
    world.bystander_works()


def test_an_answer_over_the_output_limit_is_refused(world):
    r = score(world.api, world.bob, "traps", x0(999))
    assert len(r.content) <= OUTPUT_MAX_BYTES
    error(r, 400)


#: Loaded, it makes the worker's scoring answer HTML for any request that mentions 666.
GARBLE = (
    """
import engines.worker.scoring as _scoring

_score = _scoring.score

def _garbled(kind, digest, body, images=None):
    out = _score(kind, digest, body, images)
    return b"<html><script>alert(document.cookie)</script>" if b"666" in body else out

_scoring.score = _garbled
"""
    + BASE_MODEL
)


def test_a_model_that_rewrites_its_workers_answers_cannot_send_the_caller_garbage(world):
    api = world.api
    deployed(api, world.mallory, hostile_pickle(GARBLE), "garble", shared=True)
    assert regression(score(api, world.bob, "garble", x0(1))) == 2.0
    r = score(api, world.bob, "garble", x0(666))
    try:  # the answer is checked against OML Services' shapes: the model failed (as one that raises does)
        assert "the model's answer is not" in error(r, 400)
        assert b"<script>" not in r.content
    finally:
        assert regression(score(api, world.bob, "garble", x0(2))) == 4.0


def test_a_forged_frame_from_a_model_is_a_500_and_the_next_score_works(world):
    api = world.api
    spec = {1: ("msg", {"t": "scored", "ok": True, "failure": "input", "error": None}, [b""])}
    deployed(api, world.mallory, hostile_pickle(f"FORGED = {spec!r}\n" + FORGE_SCORED), "forger", shared=True)
    assert "malformed message" in error(score(api, world.bob, "forger", x0(-1)), 500)
    assert regression(score(api, world.bob, "forger", x0(3))) == 6.0
    world.bystander_works()


def test_a_model_whose_unpickling_fails_exits_or_hangs_is_refused(world):
    api = world.api
    for data in (
        hostile_pickle("raise SystemExit(3)"),
        hostile_pickle("import os\nos._exit(9)"),
        hostile_pickle("import ctypes\nctypes.string_at(0)"),
        hostile_pickle("model = object()"),
        hostile_pickle("class M:\n    predict = 1\nmodel = M()"),
        hostile_pickle("class M:\n    predict = print\nmodel = M()"),  # no inputs to be read
        b"\x80\x05not really a pickle",
        os.urandom(2048),
    ):
        assert error(store(api, world.mallory, data, f"bad_{uuid.uuid4().hex[:8]}"), 400)
    scorer = api.services.scorer
    assert scorer is not None
    limits = scorer.limits
    scorer.limits = dataclasses.replace(limits, load_time_limit_s=3.0)  # the server's own is 60 s here
    try:
        started = time.monotonic()
        message = error(store(api, world.mallory, hostile_pickle("while True:\n    pass"), "endless_load"), 400)
        assert "longer than 3 s" in message and time.monotonic() - started < 30
    finally:
        scorer.limits = limits
    world.bystander_works()


def test_hostile_store_requests_are_400s(world):
    api = world.api
    c = api.client
    ok = {"modelName": "m", "version": "1.0", "modelType": "PYTHON"}
    model = {"modelData": ("m.pkl", BENIGN, "application/octet-stream")}
    for data, files in (
        ({**ok, "modelType": "OML"}, model),
        ({**ok, "modelType": "EXE"}, model),
        ({**ok, "modelName": "../../etc/passwd"}, model),
        ({**ok, "modelName": "x" * 51}, model),
        ({**ok, "version": "1.0.0"}, model),
        ({**ok, "namespace": "n" * 51}, model),
        ({**ok, "description": "d" * 4001}, model),
        ({**ok, "owner": "ALICE"}, model),
        (ok, None),
        (ok, [("modelData", ("a", BENIGN, "x/y")), ("modelData", ("b", BENIGN, "x/y"))]),
        ({**ok, **{f"f{i}": "x" for i in range(100)}}, model),
        ({"version": "1.0", "modelType": "PYTHON"}, model),
    ):
        error(c.post(MODELS, headers=world.mallory, data=data, files=files), 400)
    for ctype, content in (
        ("text/plain", b"modelName=m"),
        ("application/json", b"[]"),
        ("application/json", b"{"),
        ("application/json", orjson.dumps({**ok, "datastore": "d", "object": "o", "evil": 1})),
        ("application/json", orjson.dumps({**ok, "modelType": "OML", "datastore": "d", "object": "o"})),
        ("multipart/form-data", b"no boundary"),
    ):
        error(c.post(MODELS, headers={**world.mallory, "Content-Type": ctype}, content=content), 400)
    assert [m["modelName"] for m in c.get(MODELS, headers=world.mallory).json()["items"] if m["modelName"] == "m"] == []


# -- ONNX ----------------------------------------------------------------------------------------------------
def _onnx(nodes: list, inputs: list, outputs: list) -> bytes:
    from onnx import helper

    graph = helper.make_graph(nodes, "g", inputs, outputs)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model.SerializeToString()


def onnx_double() -> bytes:
    """y = 2 * x, x FLOAT [N, 1]."""
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("Mul", ["x", "two"], ["y"])],
        "double",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 1])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, 1])],
        initializer=[helper.make_tensor("two", TensorProto.FLOAT, [1], [2.0])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model.SerializeToString()


def onnx_allocator() -> bytes:
    """The sum of ConstantOfShape(n) ones: the caller chooses how much memory inference takes."""
    from onnx import TensorProto, helper

    ones = helper.make_tensor("one", TensorProto.FLOAT, [1], [1.0])
    return _onnx(
        [
            helper.make_node("ConstantOfShape", ["n"], ["big"], value=ones),
            helper.make_node("ReduceSum", ["big"], ["total"], keepdims=1),
        ],
        [helper.make_tensor_value_info("n", TensorProto.INT64, [1])],
        [helper.make_tensor_value_info("total", TensorProto.FLOAT, [1])],
    )


def onnx_image() -> bytes:
    """The mean pixel of a 3 × 4 × 4 image."""
    from onnx import TensorProto, helper

    return _onnx(
        [helper.make_node("ReduceMean", ["img"], ["mean"], axes=[1, 2, 3], keepdims=1)],
        [helper.make_tensor_value_info("img", TensorProto.FLOAT, [None, 3, 4, 4])],
        [helper.make_tensor_value_info("mean", TensorProto.FLOAT, [None, 1, 1, 1])],
    )


def a_zip(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        for name, data in members.items():
            z.writestr(name, data)
    return buf.getvalue()


def deflated_zeros(mib: int, byte: bytes = b"\0") -> bytes:
    """A raw deflate stream of `mib` MiB of one byte, made in a moment: one flushed MiB, repeated."""
    c = zlib.compressobj(9, zlib.DEFLATED, -15)
    block = c.compress(byte * (1 << 20)) + c.flush(zlib.Z_FULL_FLUSH)
    return block * mib + zlib.compressobj(9, zlib.DEFLATED, -15).flush()


def crafted_zip(members: list[tuple[str, bytes, int, int, int, int]]) -> bytes:
    """A zip written by hand, saying what the attacker wants: (name, stream, size, crc, method, flags)."""
    out, central = b"", b""
    for name, stream, size, crc, method, flags in members:
        raw = name.encode()
        fields = (20, flags, method, 0, 0, crc, len(stream), size, len(raw))
        central += struct.pack("<IHHHHHHIIIHHHHHII", 0x02014B50, 20, *fields, 0, 0, 0, 0, 0, len(out)) + raw
        out += struct.pack("<IHHHHHIIIHH", 0x04034B50, *fields, 0) + raw + stream
    end = struct.pack("<IHHHHIIH", 0x06054B50, 0, 0, len(members), len(members), len(central), len(out), 0)
    return out + central + end


def stored_member(name: str, data: bytes) -> tuple[str, bytes, int, int, int, int]:
    return (name, data, len(data), zlib.crc32(data), 0, 0)


def zeros_member(
    name: str, mib: int, byte: bytes = b"\0", declared: int | None = None, method: int = 8, flags: int = 0
) -> tuple[str, bytes, int, int, int, int]:
    crc = 0
    chunk = byte * (1 << 20)
    for _ in range(mib):
        crc = zlib.crc32(chunk, crc)
    return (name, deflated_zeros(mib, byte), mib << 20 if declared is None else declared, crc, method, flags)


BAD_ONNX = {
    "random-bytes": lambda: os.urandom(4096),
    "random-bytes-in-a-zip": lambda: a_zip({"m.onnx": os.urandom(4096)}),
    "two-onnx-files": lambda: a_zip({"a.onnx": onnx_double(), "b.onnx": onnx_double()}),
    "no-onnx-file": lambda: a_zip({"metadata.json": b"{}"}),
    "metadata-not-json": lambda: a_zip({"m.onnx": onnx_double(), "metadata.json": b"{"}),
    "metadata-not-an-object": lambda: a_zip({"m.onnx": onnx_double(), "metadata.json": b"[1]"}),
    "metadata-bad-function": lambda: a_zip({"m.onnx": onnx_double(), "metadata.json": b'{"function": "<b>"}'}),
    "metadata-names-no-output": lambda: a_zip(
        {"m.onnx": onnx_double(), "metadata.json": b'{"function": "regression", "regressionOutput": "nope"}'}
    ),
    "metadata-bomb": lambda: crafted_zip(
        [stored_member("m.onnx", onnx_double()), zeros_member("metadata.json", 64, b" ")]
    ),
    "metadata-lying-about-its-size": lambda: crafted_zip(
        [stored_member("m.onnx", onnx_double()), zeros_member("metadata.json", 64, b" ", declared=100)]
    ),
    "unknown-compression": lambda: crafted_zip([zeros_member("m.onnx", 1, method=99)]),
    "encrypted": lambda: crafted_zip([zeros_member("m.onnx", 1, flags=1)]),
    "truncated-zip": lambda: a_zip({"m.onnx": onnx_double()})[:-30],
}


@pytest.mark.parametrize("upload", list(BAD_ONNX))
def test_a_bad_onnx_upload_is_a_400_and_the_server_lives(world, upload):
    api = world.api
    message = error(store(api, world.mallory, BAD_ONNX[upload](), f"bad_{upload.replace('-', '_')}", "ONNX"), 400)
    assert message
    if upload == "metadata-bomb":
        assert "larger than" in message
    assert api.client.get("/health").status_code == 200


def test_an_onnx_zip_bomb_is_refused_and_others_keep_scoring(world):
    api = world.api
    bomb = crafted_zip([zeros_member("bomb.onnx", 512)])  # 512 MiB of zeros in half a MiB
    assert len(bomb) < 1024 * 1024
    error(store(api, world.mallory, bomb, "bomb", "ONNX"), 400)
    world.bystander_works()


def test_path_traversal_member_names_write_nothing(world, tmp_path):
    api = world.api
    target = Path("/tmp") / f"pyqd-traversal-{uuid.uuid4().hex}"
    names = [f"../../../../../../..{target}/model.onnx", f"{target}/metadata.json"]
    upload = crafted_zip(
        [stored_member(names[0], onnx_double()), stored_member(names[1], b'{"function": "regression"}')]
    )
    r = store(api, world.mallory, upload, "traversal", "ONNX")
    assert r.status_code in (201, 400), r.text
    assert not target.exists()
    if r.status_code == 201:
        assert deploy(api, world.mallory, r.json()["modelId"], "traversal").status_code == 201
        r = score(api, world.mallory, "traversal", {"inputRecords": [{"x": 1.5}]})
        assert regression(r) == 3.0
    assert not target.exists()


def test_an_onnx_model_that_allocates_without_bound_fails_that_request_only(world):
    api = world.api
    deployed(api, world.mallory, onnx_allocator(), "allocator", "ONNX", shared=True)
    assert regression(score(api, world.bob, "allocator", {"inputRecords": [{"n": 3}]})) == 3.0
    for n in (10**12, 2**62):
        r = score(api, world.bob, "allocator", {"inputRecords": [{"n": n}]})
        assert r.status_code in (400, 500) and error(r, r.status_code)
    assert regression(score(api, world.bob, "allocator", {"inputRecords": [{"n": 5}]})) == 5.0
    world.bystander_works()


def _png() -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (4, 4), (30, 60, 90)).save(buf, format="PNG")
    return buf.getvalue()


def test_the_same_bytes_stored_as_two_model_types_are_each_scored_as_their_own_type(world):
    api = world.api
    upload = a_zip({"m.onnx": onnx_image(), "metadata.json": b'{"function": "regression", "height": 4, "width": 4}'})
    deployed(api, world.alice, upload, "as_image", "ONNX_IMG")
    stored(api, world.alice, upload, "as_tensor", "ONNX")  # loads the same bytes, as ONNX, in the same worker
    files = {"imageData": ("a.png", _png(), "image/png")}
    r = api.client.post(f"{DEPLOYMENT}/as_image/score", headers=world.alice, files=files)
    assert r.status_code == 200, r.text
    assert abs(regression(r) - 60.0) < 1e-3


# -- hostile score requests ----------------------------------------------------------------------------------
def _deep(depth: int) -> bytes:
    return b'{"inputRecords": [{"AGE": ' + b"[" * depth + b"1" + b"]" * depth + b"}]}"


BAD_REQUESTS: dict[str, object] = {
    "empty-body": b"",
    "not-json": b"{",
    "a-json-array": b"[]",
    "no-records": {},
    "records-not-a-list": {"inputRecords": "AGE=1"},
    "no-record": {"inputRecords": []},
    "a-number-record": {"inputRecords": [1]},
    "a-text-record": {"inputRecords": ["AGE"]},
    "a-null-record": {"inputRecords": [None]},
    "a-list-record": {"inputRecords": [[35, 1000]]},
    "nested-body-100000-deep": _deep(100_000),
    "nested-value-200-deep": _deep(200),
    "nested-object-value": {"inputRecords": [{"AGE": {"a": {"b": {"c": [1]}}}}]},
    "10000-columns": {"inputRecords": [{f"C{i}": i for i in range(10_000)}]},
    "10000-columns-and-the-right-ones": {
        "inputRecords": [{"AGE": 1, "INCOME": 2, **{f"C{i}": i for i in range(10_000)}}]
    },
    "text-for-a-number": {"inputRecords": [{"AGE": "old"}]},
    "rows-that-disagree": {"inputRecords": [{"AGE": [1, 2], "INCOME": [1, 2, 3]}]},
    "no-rows": {"inputRecords": [{"AGE": []}]},
    "topN-negative": {"inputRecords": [{"AGE": 1}], "topN": -1},
    "topN-text": {"inputRecords": [{"AGE": 1}], "topN": "two"},
    "topN-fraction": {"inputRecords": [{"AGE": 1}], "topN": 2.5},
    "topN-bool": {"inputRecords": [{"AGE": 1}], "topN": True},
    "topN-list": {"inputRecords": [{"AGE": 1}], "topN": [1]},
    "topN-object": {"inputRecords": [{"AGE": 1}], "topN": {"n": 1}},
    "topNdetails": {"inputRecords": [{"AGE": 1}], "topNdetails": 3},
    "a-million-and-one-records": {"inputRecords": [{}] * 1_000_001},
    "a-million-and-one-rows-in-one-record": {"inputRecords": [{"AGE": [1] * 1_000_001}]},
}


@pytest.mark.parametrize(
    "request_name",
    [
        *BAD_REQUESTS,
        "nested-value-300-deep",
    ],
)
def test_a_hostile_score_request_is_a_400(world, request_name):
    api = world.api
    started = time.monotonic()
    payload = _deep(300) if request_name == "nested-value-300-deep" else BAD_REQUESTS[request_name]
    message = error(score(api, world.bob, "clf", payload), 400)
    assert time.monotonic() - started < 60
    assert "model failed" not in message, message  # the caller's mistake is not blamed on the model


def test_a_huge_topn_is_capped_at_the_labels(world):
    for top in (b"1000000000000000000", b'"99999999999999999999"', b"1e30", b"100000000000000000000000000000"):
        r = score(world.api, world.bob, "clf", b'{"inputRecords": [{"AGE": 70}], "topN": ' + top + b"}")
        if r.status_code != 200:
            error(r, 400)
            continue
        (result,) = r.json()["scoringResults"]
        assert [c["label"] for c in result["classifications"]] == ["yes", "no"]


@pytest.fixture(scope="module")
def bystander_shared(world: World) -> None:
    deployed(world.api, world.alice, hostile_pickle(BASE_MODEL + "\n# shared\n"), "bystander_shared", shared=True)


@pytest.mark.usefixtures("bystander_shared")
def test_hostile_multipart_score_requests_are_400s(world):
    api = world.api
    c = api.client
    png = ("a.png", _png(), "image/png")
    many = [("imageData", (f"{i}.png", b"x", "image/png")) for i in range(1000)]
    for uri, files, data in (
        ("clf", {"imageData": png}, None),  # an image for a model of two columns
        ("bystander_shared", {"imageData": png}, None),  # an image for a model of one number
        ("clf", many, None),  # a thousand parts
        ("clf", None, {"imageData": "not a file"}),
        ("clf", {"other": png}, None),
    ):
        r = c.post(f"{DEPLOYMENT}/{uri}/score", headers=world.bob, files=files, data=data)
        error(r, 400)
    for ctype, content in (
        ("multipart/form-data", b"--x\r\n"),  # no boundary
        ("multipart/form-data; boundary=x", b"garbage"),
        ("multipart/form-data; boundary=x", b"--x--\r\n"),  # no part
    ):
        r = c.post(f"{DEPLOYMENT}/clf/score", headers={**world.bob, "Content-Type": ctype}, content=content)
        error(r, 400)
    world.bystander_works()


def test_odd_uris_are_404s_or_400s(world):
    api = world.api
    for uri in ("nope", "x" * 10_000, "..%2F..%2Fmodels", "%00", "clf%20", "CLF"):
        r = api.client.post(f"{DEPLOYMENT}/{uri}/score", headers=world.bob, json=x0(1))
        assert r.status_code in (400, 404) and error(r, r.status_code)


# -- fairness ------------------------------------------------------------------------------------------------
def _settle(condition, within: float) -> None:  # noqa: ANN001
    """Wait until `condition` holds or `within` seconds pass (both are fine: what follows is checked)."""
    deadline = time.monotonic() + within
    while not condition() and time.monotonic() < deadline:
        time.sleep(0.02)


def test_one_users_flood_of_score_requests_does_not_hold_up_other_users(world):
    api = world.api
    pool = api.services.pool
    held = pool.acquire("MALLORY", 2, 30)  # all of MALLORY's share: her score requests wait for a worker
    assert len(held) == 2
    outcomes: list[int] = []
    answered, in_time = threading.Event(), False

    def flood_one() -> None:
        outcomes.append(score(api, world.mallory, "traps", x0(1)).status_code)

    def bob() -> None:
        if api.client.get(MODELS, headers=world.bob).status_code == 200:
            answered.set()

    flood = [threading.Thread(target=flood_one) for _ in range(40)]  # anyio's threadpool has 40 threads
    try:
        for t in flood:
            t.start()
        # all of them wait for a worker (holding threads), or the server turned the extra ones away (429)
        _settle(lambda: pool.waiting() >= 38 or 429 in outcomes, within=15)
        other = threading.Thread(target=bob)
        other.start()
        in_time = answered.wait(timeout=3)  # a GET of the model list takes milliseconds
    finally:
        for w in held:
            pool.release(w, healthy=False)
        for t in flood:
            t.join(timeout=120)
    other.join(timeout=120)
    assert in_time, "another user's request waited for one user's score requests"


def test_a_caller_scoring_shared_models_holds_no_more_than_its_share(world):
    from engines.errors import PoolBusy

    api = world.api
    pool = api.services.pool
    deployed(
        api,
        world.alice,
        hostile_pickle("import time\n" + BASE_MODEL.replace("X = np", "time.sleep(600)\n        X = np")),
        "slow_alice",
        shared=True,
    )
    calls = [
        threading.Thread(target=score, args=(api, world.bob, uri, x0(555)))
        for uri in ("traps", "traps", "slow_alice", "slow_alice")
    ]
    for t in calls:
        t.start()
    try:
        _settle(lambda: pool.stats()["busy"] >= pool.size, within=10)
        try:
            (worker,) = pool.acquire("EVE", 1, 1.0)  # what EVE's next call does first
        except PoolBusy:
            pytest.fail("BOB's scoring holds every worker of the pool")
        pool.release(worker)
    finally:
        for t in calls:
            t.join(timeout=120)
