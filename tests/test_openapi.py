"""The OpenAPI documents are valid 3.1 and 3.0, mark the extensions, and need no token."""

from __future__ import annotations

from openapi_spec_validator import validate


def test_openapi_31_is_valid_and_public(api):
    r = api.client.get("/openapi.json")
    assert r.status_code == 200
    doc = r.json()
    assert doc["openapi"].startswith("3.1")
    validate(doc)


def test_openapi_30_rendering_is_valid(api):
    doc = api.client.get("/openapi-3.0.json").json()
    assert doc["openapi"] == "3.0.3"
    validate(doc)
    assert '"type": "null"' not in str(doc).replace("'", '"')


def test_extensions_are_marked_and_oml_routes_are_not(api):
    paths = api.client.get("/openapi.json").json()["paths"]
    assert paths["/oml/api/pyqd/v1/scripts"]["post"]["x-pyqd-extension"] is True
    assert "x-pyqd-extension" not in paths["/oml/api/py-scripts/v1/scripts"]["get"]


def test_token_routes_need_no_token_and_the_rest_do(api):
    paths = api.client.get("/openapi.json").json()["paths"]
    assert paths["/omlusers/api/oauth2/v1/token"]["post"]["security"] == []
    assert paths["/oml/api/py-scripts/v1/scripts"]["get"]["security"] == [{"bearer": []}, {"oauth2": []}]
