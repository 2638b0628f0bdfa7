"""The OpenAPI documents are valid 3.1 and 3.0, mark the extensions, need no token, and declare the error
answers and name patterns the server really uses."""

from __future__ import annotations

import re

from openapi_spec_validator import validate

from tests.server.support import SQLITE_ONLY


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


@SQLITE_ONLY
def test_every_operation_declares_its_errors_with_the_oml_schema(api):
    doc = api.client.get("/openapi.json").json()
    assert doc["components"]["schemas"]["OmlError"]["required"] == ["errorCode", "errorMessage"]
    assert "HTTPValidationError" not in doc["components"]["schemas"]
    for path, item in doc["paths"].items():
        for method, op in item.items():
            responses = op["responses"]
            assert "422" not in responses, (method, path)  # validation answers 400, never 422
            assert "400" in responses and "404" in responses, (method, path)
            if op["security"]:
                assert "401" in responses and "403" in responses, (method, path)
            if method in ("post", "put"):
                assert "413" in responses, (method, path)
    verb = doc["paths"]["/oml/api/py-scripts/v1/do-eval/{scriptName}"]["post"]["responses"]
    assert "Retry-After" in verb["503"]["headers"] and "429" in verb


@SQLITE_ONLY
def test_path_names_carry_the_patterns_the_server_checks(api):
    paths = api.client.get("/openapi.json").json()["paths"]

    def pattern(path: str, method: str, name: str) -> str:
        params = paths[path][method]["parameters"]
        return next(p["schema"]["pattern"] for p in params if p["name"] == name)

    table = pattern("/oml/api/pyqd/v1/tables/{name}", "get", "name")
    assert re.fullmatch(table, "IRIS") and not re.fullmatch(table, "1abc") and not re.fullmatch(table, "a b")
    assert pattern("/oml/api/pyqd/v1/datastores/{name}", "get", "name")
    assert pattern("/oml/api/py-scripts/v1/do-eval/{scriptName}/{ownerName}", "post", "ownerName")
    assert pattern("/oml/api/pyqd/v1/scripts/{name}", "get", "name")
    alice = api.user("alice")
    r = api.client.get("/oml/api/pyqd/v1/tables/1abc", headers=alice)
    assert r.status_code == 400 and r.json()["errorCode"] == 1000


@SQLITE_ONLY
def test_execution_bodies_have_real_schemas_and_their_examples_validate(api):
    import jsonschema

    from engines.spec import ADHOC_BODIES, BODIES

    doc = api.client.get("/openapi.json").json()
    schemas = doc["components"]["schemas"]
    for kind, verb in (
        ("eval", "do-eval"),
        ("table", "table-apply"),
        ("row", "row-apply"),
        ("group", "group-apply"),
        ("index", "index-apply"),
    ):
        for path, models in (
            (f"/oml/api/py-scripts/v1/{verb}/{{scriptName}}", BODIES),
            (f"/oml/api/pyqd/v1/run/{verb}", ADHOC_BODIES),
        ):
            body = doc["paths"][path]["post"]["requestBody"]["content"]["application/json"]["schema"]
            name = body["$ref"].rsplit("/", 1)[1]
            schema = schemas[name]
            assert schema["type"] == "object" and "parameters" in schema["properties"], name
            examples = schema["examples"]
            assert examples
            for example in examples:
                jsonschema.validate(example, {**schema, "components": doc["components"]})
                models[kind].model_validate(example).to_request(kind)
    row = schemas["RowApplyBody"]
    assert set(row["required"]) == {"input", "rows"}
    # `parameters` is documented as what OML sends: a string holding JSON
    assert row["properties"]["parameters"]["type"] == "string"
