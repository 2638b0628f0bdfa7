"""A hostile global script cannot run code in the caller's notebook: results of other owners' scripts come
back as JSON values unless the caller opts in with `oml_trust_pickle=True`."""

from __future__ import annotations

import pytest

import oml
from server import accounts
from tests.conftest import ADMIN_PASSWORD

# What its author (an administrator: only they create global scripts now) means to run in every caller's
# process: a dict (so it renders as JSON too) whose unpickling opens, and so creates, a marker file.
TROJAN = """def trojan(marker):
    class Payload(dict):
        def __reduce__(self):
            return (open, (marker, "w"))
    return Payload(innocent=42)
"""


@pytest.fixture
def hostile_global(oml_user):
    url, user, password = oml_user
    oml.connect(url=url, username="ADMIN", password=ADMIN_PASSWORD)
    oml.script.create("trojan", func=TROJAN, is_global=True, overwrite=True)
    oml.script.create("plain", func="def plain():\n    return {'v': (1, 2)}\n", is_global=True, overwrite=True)
    oml.connect(url=url, username=user, password=password)
    return url, user, password


def test_a_global_scripts_pickle_never_reaches_the_callers_process(hostile_global, tmp_path):
    marker = tmp_path / "pwned"
    value = oml.do_eval("trojan", marker=str(marker))  # by name: resolved to the global script
    assert not marker.exists()
    assert value == {"innocent": 42}
    value = oml.do_eval(oml.script.load("trojan"), marker=str(marker))  # loaded: owner PYQSYS
    assert not marker.exists() and value["innocent"] == 42
    job = oml.do_eval("trojan", func_owner="PYQSYS", marker=str(marker), oml_async_flag=True)
    value = job.wait(timeout=120, interval=0.1, progress=False)
    assert not marker.exists() and value["innocent"] == 42
    assert oml.do_eval("plain") == {"v": [1, 2]}  # JSON values: a tuple comes back as a list


def test_the_server_answers_json_to_a_pickle_request_for_another_owners_script(hostile_global, tmp_path):
    conn = oml._connection.current()
    for path in ("/oml/api/py-scripts/v2/do-eval/trojan", "/oml/api/py-scripts/v2/do-eval/trojan/PYQSYS"):
        body = {"resultFormat": "pickle", "parameters": '{"marker": "/nonexistent/x"}'}
        r = conn.request("POST", path, json=body)
        assert r.headers["content-type"].startswith("application/json"), path
        assert r.json()["result"]["innocent"] == 42


def test_granted_scripts_are_foreign_too_and_own_scripts_keep_their_pickles(hostile_global, services, tmp_path):
    url, user, password = hostile_global
    accounts.add_user(services, "AUTHOR", "author-long-password")
    oml.connect(url=url, username="AUTHOR", password="author-long-password")
    oml.script.create("shared", func=TROJAN.replace("def trojan", "def shared"))
    oml.grant("shared", typ="pyqscript", user=user)
    oml.connect(url=url, username=user, password=password)
    marker = tmp_path / "pwned"
    value = oml.do_eval("shared", func_owner="AUTHOR", marker=str(marker))
    assert not marker.exists() and value["innocent"] == 42
    oml.script.create("mine", func="def mine():\n    return (1, 2)\n", overwrite=True)
    assert oml.do_eval("mine") == (1, 2)  # the caller's own script: real Python objects


def test_the_caller_may_opt_in_to_foreign_pickles(hostile_global, tmp_path):
    marker = tmp_path / "opted-in"
    value = oml.do_eval("trojan", marker=str(marker), oml_trust_pickle=True)
    assert marker.exists()  # the caller asked for exactly this
    assert not isinstance(value, dict)  # what the pickle made: the file object open() returned
    value.close()
