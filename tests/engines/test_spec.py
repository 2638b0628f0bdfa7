"""Reading OML request bodies: parameters as a JSON string, oml_* controls, required fields, parallelism."""

from __future__ import annotations

import pytest

from engines.errors import InvalidApplyRequest
from engines.spec import parse_request


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
