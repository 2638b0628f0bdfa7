"""docs/apex.md, replayed over a real socket: the HTTP requests an APEX application makes when it follows the
recipe, written out byte for byte, and the JSON paths APEX then reads from the answers.

1. The Web Credential (OAuth2 Client Credentials) gets a token: POST to the token URL, form-encoded
   `grant_type=client_credentials`, the client id and secret as HTTP Basic (reference/clients.md §1.6); APEX
   reads `access_token`, `token_type` and `expires_in`.
2. The REST Data Source operation (POST, request body template with page items substituted as JSON strings,
   a static `Content-Type: application/json` header parameter) sends `Authorization: Bearer <access_token>`;
   APEX reads rows at the row selector `scoringResults` and each column at its selector (`regression`,
   `classifications`).
The models are made here (scikit-learn, converted with skl2onnx) and stored and deployed through the REST API
first, as the model's owner; only the APEX side is written by hand."""

from __future__ import annotations

import base64
import http.client
import io
import json
import socket
import zipfile
from typing import Any

import httpx
import numpy as np
import pandas as pd
import pytest

from tests.conftest import ADMIN_PASSWORD
from tests.server.support import SQLITE_ONLY

skl2onnx = pytest.importorskip("skl2onnx")

USER, PASSWORD = "APEX_OWNER", "apex-owner-password"
#: What an APEX instance announces itself as is not documented; any User-Agent must do.
USER_AGENT = "Oracle APEX"
#: The request body template of the recipe's POST operation, as typed into APEX (quotes around the
#: substitutions: page items are strings, and older APEX releases substitute them verbatim).
BODY_TEMPLATE = '{\n  "inputRecords": [\n    {"AREA": "#AREA#", "ROOMS": "#ROOMS#"}\n  ]\n}'


def exchange(base_url: str, request: bytes) -> tuple[int, http.client.HTTPMessage, bytes]:
    """Send `request` as it is over a new connection and read one HTTP/1.1 response."""
    host, port = base_url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=30) as sock:
        sock.sendall(request)
        response = http.client.HTTPResponse(sock)
        response.begin()
        return response.status, response.headers, response.read()


def http_request(base_url: str, method: str, path: str, headers: list[tuple[str, str]], body: bytes) -> bytes:
    """An HTTP/1.1 request, header by header in the given order, with Host and Content-Length."""
    host = base_url.removeprefix("http://")
    lines = [f"{method} {path} HTTP/1.1", f"Host: {host}", *(f"{k}: {v}" for k, v in headers)]
    lines += [f"Content-Length: {len(body)}", "Connection: close"]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def token_request(
    base_url: str, client_id: str, secret: str, body: bytes, content_type: str, path: str = "/oauth/token"
) -> bytes:
    """What the OAuth2 Client Credentials Web Credential sends to its token URL."""
    basic = base64.b64encode(f"{client_id}:{secret}".encode()).decode()
    headers = [("User-Agent", USER_AGENT), ("Authorization", f"Basic {basic}"), ("Content-Type", content_type)]
    return http_request(base_url, "POST", path, headers, body)


def score_request(base_url: str, uri: str, token: str, items: dict[str, str]) -> bytes:
    """What the Invoke API process sends: the body template with the page items substituted as JSON strings."""
    body = BODY_TEMPLATE
    for name, value in items.items():
        body = body.replace(f'"#{name}#"', json.dumps(value))
    headers = [("User-Agent", USER_AGENT), ("Authorization", f"Bearer {token}"), ("Content-Type", "application/json")]
    return http_request(base_url, "POST", f"/omlmod/v1/deployment/{uri}/score", headers, body.encode())


def rows_at(document: dict[str, Any], row_selector: str) -> list[dict[str, Any]]:
    """The rows APEX's data profile finds: the array at the row selector (a dot path)."""
    node: Any = document
    for step in row_selector.split("."):
        node = node[step]
    assert isinstance(node, list)
    return node


# ------------------------------------------------------------------------------------------------ set-up
def house_price_onnx_zip() -> bytes:
    """PRICE = 2 * AREA + 3 * ROOMS + 1 as Oracle's ONNX zip: one float input per column."""
    from skl2onnx.common.data_types import FloatTensorType
    from sklearn.compose import ColumnTransformer
    from sklearn.linear_model import LinearRegression
    from sklearn.pipeline import Pipeline

    frame = pd.DataFrame([[a, r] for a in range(1, 6) for r in range(1, 4)], columns=["AREA", "ROOMS"], dtype=float)
    pipeline = Pipeline(
        [("columns", ColumnTransformer([("numbers", "passthrough", ["AREA", "ROOMS"])])), ("lr", LinearRegression())]
    )
    pipeline.fit(frame, 2 * frame["AREA"] + 3 * frame["ROOMS"] + 1)
    types = [("AREA", FloatTensorType([None, 1])), ("ROOMS", FloatTensorType([None, 1]))]
    model = skl2onnx.convert_sklearn(pipeline, initial_types=types, target_opset=17)
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as archive:
        archive.writestr("house_price.onnx", model.SerializeToString())
        archive.writestr("metadata.json", json.dumps({"function": "regression", "regressionOutput": "variable"}))
    return buf.getvalue()


def churn_onnx_zip() -> bytes:
    """A logistic regression on AGE and VISITS with labels "no"/"yes", as an ONNX zip: one float input per column,
    a label output and a probabilities output (a sequence of maps, so no label.txt is needed)."""
    from skl2onnx.common.data_types import FloatTensorType
    from sklearn.compose import ColumnTransformer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline

    frame = pd.DataFrame(
        [[age, visits] for age in range(20, 70, 5) for visits in range(10)], columns=["AGE", "VISITS"], dtype=float
    )
    labels = np.where(frame["VISITS"] < 4, "yes", "no")
    pipeline = Pipeline(
        [
            ("columns", ColumnTransformer([("numbers", "passthrough", ["AGE", "VISITS"])])),
            ("clf", LogisticRegression(max_iter=1000)),
        ]
    ).fit(frame, labels)
    types = [("AGE", FloatTensorType([None, 1])), ("VISITS", FloatTensorType([None, 1]))]
    model = skl2onnx.convert_sklearn(pipeline, initial_types=types, target_opset=17)
    label_output, prob_output = (o.name for o in model.graph.output)
    metadata = {
        "function": "classification",
        "classificationLabelOutput": label_output,
        "classificationProbOutput": prob_output,
    }
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as archive:
        archive.writestr("churn.onnx", model.SerializeToString())
        archive.writestr("metadata.json", json.dumps(metadata))
    return buf.getvalue()


def deploy(client: httpx.Client, name: str, archive: bytes, uri: str) -> None:
    """Store `archive` as an ONNX model and deploy it at `uri`, through the REST API."""
    r = client.post(
        "/omlmod/v1/models",
        files={"modelData": (f"{name}.zip", archive, "application/zip")},
        data={"modelName": name, "version": "1.0", "modelType": "ONNX", "description": "APEX recipe"},
    )
    assert r.status_code == 201, r.text
    r = client.post("/omlmod/v1/deployment", json={"modelId": r.json()["modelId"], "uri": uri})
    assert r.status_code == 201, r.text


@pytest.fixture
def apex(live_server: str) -> tuple[str, str, str]:
    """A user who owns a deployed house-price model at `house_price`, and an API client acting as that user
    (what `pyqd client add apex --user APEX_OWNER` makes): (url, client_id, client_secret)."""
    with httpx.Client(base_url=live_server, timeout=60) as client:
        admin_token = client.post(
            "/omlusers/api/oauth2/v1/token",
            json={"grant_type": "password", "username": "ADMIN", "password": ADMIN_PASSWORD},
        ).json()["accessToken"]
        admin = {"Authorization": f"Bearer {admin_token}"}
        r = client.post("/oml/api/pyqd/v1/admin/users", headers=admin, json={"name": USER, "password": PASSWORD})
        assert r.status_code == 201, r.text
        r = client.post("/oml/api/pyqd/v1/admin/clients", headers=admin, json={"name": "apex", "user": USER})
        assert r.status_code == 201, r.text
        created = r.json()["result"]
        token = client.post(
            "/omlusers/api/oauth2/v1/token", json={"grant_type": "password", "username": USER, "password": PASSWORD}
        ).json()["accessToken"]
        client.headers["Authorization"] = f"Bearer {token}"
        deploy(client, "house_price", house_price_onnx_zip(), "house_price")
    return live_server, created["client_id"], created["client_secret"]


def get_token(url: str, client_id: str, secret: str, body: bytes = b"grant_type=client_credentials") -> str:
    """Step 1 of the recipe, checked as APEX reads it; the access token."""
    status, headers, raw = exchange(
        url, token_request(url, client_id, secret, body, "application/x-www-form-urlencoded")
    )
    assert status == 200, raw
    assert headers["Content-Type"].split(";")[0] == "application/json"
    answer = json.loads(raw)
    assert isinstance(answer["access_token"], str) and 0 < len(answer["access_token"]) <= 255
    assert answer["token_type"].lower() == "bearer"
    assert isinstance(answer["expires_in"], int) and answer["expires_in"] > 0
    return answer["access_token"]


# ------------------------------------------------------------------------------------------------ tests
@SQLITE_ONLY
@pytest.mark.parametrize(
    "body",
    [b"grant_type=client_credentials", b"grant_type=client_credentials&scope=pyqd"],
    ids=["plain", "with a scope"],
)
def test_the_web_credential_gets_a_token(apex, body):
    url, client_id, secret = apex
    get_token(url, client_id, secret, body)


@SQLITE_ONLY
def test_the_oml_token_url_answers_the_web_credential_in_the_standard_form(apex):
    url, client_id, secret = apex
    request = token_request(
        url,
        client_id,
        secret,
        b"grant_type=client_credentials",
        "application/x-www-form-urlencoded",
        path="/omlusers/api/oauth2/v1/token",
    )
    status, _, raw = exchange(url, request)
    assert status == 200, raw
    answer = json.loads(raw)
    assert answer["token_type"].lower() == "bearer" and isinstance(answer["expires_in"], int)
    scoring = score_request(url, "house_price", answer["access_token"], {"AREA": "1", "ROOMS": "2"})
    status, _, raw = exchange(url, scoring)
    assert status == 200, raw


@SQLITE_ONLY
def test_the_web_credential_with_a_charset_in_the_content_type(apex):
    url, client_id, secret = apex
    content_type = "application/x-www-form-urlencoded; charset=UTF-8"
    request = token_request(url, client_id, secret, b"grant_type=client_credentials", content_type)
    status, _, raw = exchange(url, request)
    assert status == 200, raw
    assert "access_token" in json.loads(raw)


@SQLITE_ONLY
def test_a_wrong_secret_in_the_web_credential_is_401_invalid_client(apex):
    url, client_id, _ = apex
    body = b"grant_type=client_credentials"
    status, headers, raw = exchange(
        url, token_request(url, client_id, "wrong", body, "application/x-www-form-urlencoded")
    )
    assert status == 401
    assert json.loads(raw)["error"] == "invalid_client"
    assert headers["WWW-Authenticate"].startswith("Basic")


@SQLITE_ONLY
def test_the_invoke_api_process_scores_page_items(apex):
    url, client_id, secret = apex
    token = get_token(url, client_id, secret)
    status, headers, raw = exchange(url, score_request(url, "house_price", token, {"AREA": "10", "ROOMS": "3"}))
    assert status == 200, raw
    assert headers["Content-Type"].split(";")[0] == "application/json"
    rows = rows_at(json.loads(raw), "scoringResults")
    assert len(rows) == 1
    # data profile column REGRESSION, selector `regression`, type NUMBER
    assert rows[0]["regression"] == pytest.approx(30, abs=1e-3)


@SQLITE_ONLY
@pytest.mark.parametrize(
    ("items", "expected"),
    [({"AREA": "4.5", "ROOMS": "1"}, 13.0), ({"AREA": " 2 ", "ROOMS": "2"}, 11.0), ({"AREA": "1e1", "ROOMS": "3"}, 30)],
    ids=["decimal", "padded", "exponent"],
)
def test_page_items_are_read_as_numbers(apex, items, expected):
    url, client_id, secret = apex
    token = get_token(url, client_id, secret)
    status, _, raw = exchange(url, score_request(url, "house_price", token, items))
    assert status == 200, raw
    assert rows_at(json.loads(raw), "scoringResults")[0]["regression"] == pytest.approx(expected, abs=1e-3)


@SQLITE_ONLY
def test_an_empty_page_item_is_a_missing_value(apex):
    """APEX sends an empty item as "": a missing number (NaN), so this linear model's prediction is JSON null,
    which APEX stores as an empty item."""
    url, client_id, secret = apex
    token = get_token(url, client_id, secret)
    status, _, raw = exchange(url, score_request(url, "house_price", token, {"AREA": "", "ROOMS": "3"}))
    assert status == 200, raw
    assert rows_at(json.loads(raw), "scoringResults") == [{"regression": None}]


@SQLITE_ONLY
@pytest.mark.parametrize(
    "items", [{"AREA": "ten", "ROOMS": "3"}, {"AREA": "1,000", "ROOMS": "3"}], ids=["word", "group separator"]
)
def test_a_page_item_that_is_no_number_is_400_with_a_message(apex, items):
    url, client_id, secret = apex
    token = get_token(url, client_id, secret)
    status, _, raw = exchange(url, score_request(url, "house_price", token, items))
    assert status == 400, raw
    error = json.loads(raw)
    assert isinstance(error["code"], str) and "AREA" in error["message"]


@SQLITE_ONLY
def test_an_unknown_endpoint_answers_what_apex_shows_as_the_error(apex):
    url, client_id, secret = apex
    token = get_token(url, client_id, secret)
    status, _, raw = exchange(url, score_request(url, "no_such_uri", token, {"AREA": "1", "ROOMS": "2"}))
    assert status == 404
    error = json.loads(raw)
    assert isinstance(error["code"], str) and isinstance(error["message"], str)


@SQLITE_ONLY
def test_a_classification_endpoint_gives_rows_of_labels_and_probabilities(apex):
    """The recipe's classification profile: row selector `scoringResults`, an ARRAY column `classifications`
    whose rows have `label` and `probability`, the most probable first."""
    url, client_id, secret = apex
    with httpx.Client(base_url=url, timeout=60) as client:
        token = client.post(
            "/omlusers/api/oauth2/v1/token", json={"grant_type": "password", "username": USER, "password": PASSWORD}
        ).json()["accessToken"]
        client.headers["Authorization"] = f"Bearer {token}"
        deploy(client, "churn", churn_onnx_zip(), "churn")
    token = get_token(url, client_id, secret)
    body = b'{"inputRecords":[{"AGE":"30","VISITS":"1"}],"topN":2}'
    headers = [("User-Agent", USER_AGENT), ("Authorization", f"Bearer {token}"), ("Content-Type", "application/json")]
    request = http_request(url, "POST", "/omlmod/v1/deployment/churn/score", headers, body)
    status, _, raw = exchange(url, request)
    assert status == 200, raw
    result = json.loads(raw)
    classes = result["scoringResults"][0]["classifications"]
    assert [c["label"] for c in classes] == ["yes", "no"]
    assert all(isinstance(c["probability"], float) for c in classes)
    assert classes[0]["probability"] > 0.5
