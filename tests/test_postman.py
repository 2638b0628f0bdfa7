"""The Postman collection (postman/) is well formed: every request checks its answer, every variable it uses is
defined, the files it uploads are there and are what postman/make_models.py makes. scripts/newman runs it for
real against a server."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
POSTMAN = ROOT / "postman"
COLLECTION = json.loads((POSTMAN / "pyqd.postman_collection.json").read_text())
ENVIRONMENT = json.loads((POSTMAN / "pyqd.postman_environment.json").read_text())
#: What a user sets: the collection runs unchanged against any server with these.
USER_VARIABLES = {"baseUrl", "username", "password", "clientId", "clientSecret"}
#: Collection variables a request's URL may start with (set by an earlier request's test script).
URL_VARIABLES = {"{{baseUrl}}", "{{jobUrl}}", "{{jobResultUrl}}"}
MAX_FILE_BYTES = 50 * 1024


def requests() -> Iterator[tuple[str, dict[str, Any]]]:
    """(folder / name, item) of every request, depth first."""

    def walk(items: list[dict[str, Any]], prefix: str) -> Iterator[tuple[str, dict[str, Any]]]:
        for item in items:
            if "item" in item:
                yield from walk(item["item"], f"{prefix}{item['name']} / ")
            else:
                yield prefix + item["name"], item

    return walk(COLLECTION["item"], "")


def scripts(item: dict[str, Any], listen: str) -> str:
    return "\n".join("\n".join(e["script"]["exec"]) for e in item.get("event", []) if e["listen"] == listen)


def test_collection_is_v2_1_with_three_folders_and_bearer_auth():
    assert COLLECTION["info"]["schema"] == "https://schema.getpostman.com/json/collection/v2.1.0/collection.json"
    assert [f["name"][0] for f in COLLECTION["item"]] == ["1", "2", "3"]
    assert COLLECTION["auth"] == {
        "type": "bearer",
        "bearer": [{"key": "token", "value": "{{accessToken}}", "type": "string"}],
    }


def test_every_request_has_its_own_checks():
    names = [name for name, _ in requests()]
    assert len(names) == len(set(names)), "request names must be unique (the job poll sends itself by name)"
    for name, item in requests():
        tests = scripts(item, "test")
        assert "pm.test(" in tests and "pm.response" in tests, f"{name}: no test script checking the response"


def test_every_url_starts_at_a_variable():
    for name, item in requests():
        raw = item["request"]["url"]["raw"]
        assert any(raw.startswith(v) for v in URL_VARIABLES), f"{name}: {raw}"


def test_every_variable_used_is_defined():
    text = json.dumps(COLLECTION)
    used = set(re.findall(r"\{\{(\w+)\}\}", text))
    collection_vars = {v["key"] for v in COLLECTION["variable"]}
    env_vars = {v["key"] for v in ENVIRONMENT["values"]}
    assert env_vars == USER_VARIABLES
    assert used - collection_vars - env_vars == set()
    assert USER_VARIABLES <= used
    # what a script sets or reads as a collection variable is declared too
    for name in re.findall(r"pm\.collectionVariables\.(?:get|set)\('(\w+)'", text):
        assert name in collection_vars, name


def test_no_credentials_are_written_in():
    for v in ENVIRONMENT["values"]:
        if v["key"] in ("password", "clientSecret"):
            assert v["value"] == "" and v["type"] == "secret"
    assert all(v["value"] == "" for v in COLLECTION["variable"])


def test_token_requests_send_what_the_token_endpoints_expect():
    items = dict(requests())
    oml = items["1 tokens / OML token (password grant, JSON)"]["request"]
    body = json.loads(oml["body"]["raw"])
    assert body == {"grant_type": "password", "username": "{{username}}", "password": "{{password}}"}
    standard = items["1 tokens / OAuth2 token (client_credentials, Basic)"]["request"]
    assert standard["body"]["mode"] == "urlencoded"
    assert standard["body"]["urlencoded"] == [{"key": "grant_type", "value": "client_credentials", "type": "text"}]
    assert {h["key"]: h["value"] for h in standard["header"]}["Content-Type"] == "application/x-www-form-urlencoded"
    assert standard["auth"]["type"] == "basic"
    assert {p["key"]: p["value"] for p in standard["auth"]["basic"]} == {
        "username": "{{clientId}}",
        "password": "{{clientSecret}}",
    }


def test_uploaded_files_are_in_the_postman_folder_and_small():
    sources = [
        field["src"]
        for _, item in requests()
        for field in item["request"].get("body", {}).get("formdata", [])
        if field.get("type") == "file"
    ]
    assert sources
    for src in sources:
        path = POSTMAN / src
        assert path.is_file(), src
        assert path.stat().st_size < MAX_FILE_BYTES, src


@pytest.mark.skipif(shutil.which("node") is None, reason="needs Node.js")
def test_scripts_are_valid_javascript(tmp_path: Path):
    items = [("collection", COLLECTION)] + list(requests())
    source = []
    for n, (name, item) in enumerate(items):
        for listen in ("prerequest", "test"):
            body = scripts(item, listen)
            if body:
                source.append(f"// {name} ({listen})\nfunction script_{n}_{listen}() {{\n{body}\n}}\n")
    path = tmp_path / "scripts.js"
    path.write_text("\n".join(source))
    r = subprocess.run(["node", "--check", str(path)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr


def test_model_files_are_the_house_price_regression():
    """The committed files score as make_models.py says (their bytes depend on the library versions that made
    them, so they are compared by what they do)."""
    rt = pytest.importorskip("onnxruntime")
    import numpy as np

    bare = (POSTMAN / "house_price.onnx").read_bytes()
    with zipfile.ZipFile(POSTMAN / "house_price.zip") as archive:
        assert sorted(archive.namelist()) == ["house_price.onnx", "metadata.json"]
        assert archive.read("house_price.onnx") == bare
        assert json.loads(archive.read("metadata.json")) == {"function": "regression", "regressionOutput": "variable"}
    session = rt.InferenceSession(bare, providers=["CPUExecutionProvider"])
    assert [(i.name, i.shape) for i in session.get_inputs()] == [("AREA", [None, 1]), ("ROOMS", [None, 1])]
    assert [o.name for o in session.get_outputs()] == ["variable"]
    feed = {"AREA": np.array([[1.0], [10.0]], np.float32), "ROOMS": np.array([[2.0], [3.0]], np.float32)}
    assert np.allclose(session.run(None, feed)[0].ravel(), [9.0, 30.0], atol=1e-4)
