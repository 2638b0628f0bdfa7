"""Reading OML request bodies: parameters as a JSON string, oml_* controls, required fields, parallelism."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from engines.errors import InvalidApplyRequest
from engines.spec import ADHOC_BODIES, parse_request
from engines.worker.arguments import FUNC_VALUE, PICKLED_FUNC, PICKLED_KWARGS


def test_seed_row_apply_body():
    req = parse_request(
        "row",
        {
            "input": "select * from IRIS",
            "rows": 5,
            "parallelFlag": True,
            "service": "MEDIUM",
            "parameters": '{"oml_input_type":"pandas.DataFrame"}',
        },
    )
    assert (req.input_type, req.rows, req.service, req.kwargs) == ("pandas.DataFrame", 5, "MEDIUM", {})
    assert req.degree_of_parallelism(pool_size=16) == 4
    assert req.degree_of_parallelism(pool_size=3) == 3


def test_controls_and_kwargs_are_split():
    req = parse_request("eval", {"parameters": '{"num":10,"scale":100,"oml_na_omit":true}'})
    assert req.kwargs == {"num": 10, "scale": 100} and req.na_omit


def test_parameter_spelling_and_object_form_are_accepted():
    assert parse_request("eval", {"parameter": '{"a":1}'}).kwargs == {"a": 1}
    assert parse_request("eval", {"parameters": {"a": 1}}).kwargs == {"a": 1}


@pytest.mark.parametrize(
    ("parallel", "flag", "service", "dop"),
    [
        (None, False, "LOW", 1),
        (None, True, "LOW", 2),
        (None, True, "HIGH", 8),
        (6, True, "MEDIUM", 4),
        (3, False, "HIGH", 3),
        (True, None, "MEDIUM", 4),
    ],
)
def test_degree_of_parallelism_is_capped_by_service(parallel, flag, service, dop):
    body = {"times": 4, "service": service, "parallelFlag": flag, "parallel": parallel}
    assert parse_request("index", body).degree_of_parallelism(pool_size=16) == dop


@pytest.mark.parametrize(
    ("kind", "body"),
    [
        ("row", {"input": "select 1 from dual"}),
        ("row", {"input": "select 1 from dual", "rows": 0}),
        ("row", {"input": "select 1 from dual", "rows": "five"}),
        ("row", {"rows": 5}),
        ("group", {"input": "select 1 from dual"}),
        ("group", {"input": "select 1 from dual", "groupBy": ", ,"}),
        ("index", {}),
        ("index", {"times": -1}),
        ("table", {"input": 42}),
        ("eval", {"parameters": "{not json"}),
        ("eval", {"parameters": "[1, 2]"}),
        ("eval", {"parameters": '{"oml_input_type": "polars"}'}),
        ("eval", {"service": "ULTRA"}),
        ("eval", {"graphicsFlag": "maybe"}),
        ("eval", {"envName": "../seaborn"}),
        ("eval", {"timeout": 0}),
    ],
)
def test_bad_bodies_say_what_is_wrong(kind, body):
    with pytest.raises(InvalidApplyRequest):
        parse_request(kind, body)


def test_pickled_fields_reach_the_worker_under_reserved_keys():
    body = {"parameters": '{"k": 1, "oml_pickled_kwargs": "AAAA", "oml_func_value": [["X", "text"]]}'}
    req = parse_request("eval", {**body, "pickledKwargs": "gARLAS4="})
    # controls in `parameters` never become the reserved keys: only the body fields set them
    assert req.kwargs == {"k": 1, PICKLED_KWARGS: "gARLAS4="}
    assert parse_request("eval", body).kwargs == {"k": 1}
    adhoc = ADHOC_BODIES["index"].model_validate({"times": 2, "pickledFunc": "gARLAS4=", "name": "f"})
    assert adhoc.to_request("index").kwargs == {PICKLED_FUNC: "gARLAS4="}
    assert adhoc.pickled_bytes() == 6


@pytest.mark.parametrize(
    "body",
    [
        {"times": 1},  # neither source nor pickle
        {"times": 1, "script": "def f(i):\n    return i\n", "pickledFunc": "gARLAS4="},  # both
        {"times": 1, "pickledFunc": "not base64"},
        {"times": 1, "script": "def f(i):\n    return i\n", "pickledKwargs": "gARLAS4"},  # bad padding
    ],
)
def test_bad_pickled_fields_are_refused(body):
    with pytest.raises(ValidationError):
        ADHOC_BODIES["index"].model_validate(body)


def test_func_value_reads_pyqd_and_oracle_types():
    req = parse_request(
        "row",
        {
            "input": "select * from IRIS",
            "rows": 10,
            "graphicsFlag": True,
            "resultFormat": "pickle",
            "funcValue": {"columns": {"ID": "NUMBER(10)", "VAL": "number", "NAME": "varchar2(7)", "T": "timestamp(6)"}},
        },
    )
    assert req.kwargs[FUNC_VALUE] == [["ID", "integer"], ["VAL", "float"], ["NAME", "text"], ["T", "timestamp"]]
    assert (req.graphics, req.result_format) == (False, "json")  # rows of a table: no images, JSON values
    assert req.func_value is not None and req.func_value.table is None


@pytest.mark.parametrize(
    "func_value",
    [
        {"columns": {}},
        {"columns": {"X": "blob"}},
        {"columns": {"X": "text", "x": "text"}},  # names differ only in case
        {"columns": {'A"B': "text"}},
        {"columns": {"X": "text"}, "table": "pyqd_users"},
        {"columns": {"X": "text"}, "table": "OTHER.T"},
        {"columns": {"X": "text"}, "extra": 1},
    ],
)
def test_bad_func_values_say_what_is_wrong(func_value):
    with pytest.raises(InvalidApplyRequest, match="funcValue"):
        parse_request("eval", {"funcValue": func_value})


def test_func_value_is_synchronous_only():
    with pytest.raises(InvalidApplyRequest, match="synchronous"):
        parse_request("eval", {"asyncFlag": True, "funcValue": {"columns": {"X": "text"}}})
