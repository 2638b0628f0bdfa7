"""The script repository from Python as Oracle's notebooks use it: `oml.script.dir(name=[...])`,
`oml.export_script`/`oml.import_script` (.json and .py files), and `oml.check_embed()`."""

from __future__ import annotations

import json

import pytest

import oml

SQLITE = pytest.mark.parametrize("settings", ["sqlite"], indirect=True)
LM = "def build_lm1(dat):\n    return len(dat)\n"
SVC = "def fit(data):\n    return 'svc'\n"


@pytest.fixture
def connected(oml_user):
    url, user, password = oml_user
    oml.connect(url=url, username=user, password=password)
    oml.script.create("MYLM", func=LM, description="a linear model")
    oml.script.create("sk_svc_fit", func=SVC)
    oml.script.create("other", func="def other():\n    return 0\n")
    return user


@SQLITE
def test_dir_export_import_and_check_embed(connected, tmp_path):
    assert oml.check_embed() is True
    listing = oml.script.dir(["MYLM", "sk_svc_fit"])  # as Oracle's notebook lists two scripts
    assert list(listing.columns) == ["name", "script", "description", "date"]
    assert sorted(listing["name"]) == ["MYLM", "sk_svc_fit"]
    assert sorted(oml.script.dir(name=["^MY", "fit$"], regex_match=True)["name"]) == ["MYLM", "sk_svc_fit"]
    assert list(oml.script.dir(name="other")["name"]) == ["other"]
    assert list(oml.script.dir(sctype="all").columns) == ["owner", "name", "script", "description", "date"]

    as_json, as_py = tmp_path / "scripts.json", tmp_path / "scripts.py"
    oml.export_script(str(as_json), name=["MYLM", "sk_svc_fit"])
    oml.export_script(str(as_py), name="MYLM")
    saved = json.loads(as_json.read_text())
    assert {s["name"]: (s["script"], s["description"]) for s in saved} == {
        "MYLM": (LM, "a linear model"),
        "sk_svc_fit": (SVC, None),
    }
    with pytest.raises(FileExistsError):
        oml.export_script(str(as_json))
    with pytest.raises(ValueError, match=".json or .py"):
        oml.export_script(str(tmp_path / "scripts.txt"))

    for name in ("MYLM", "sk_svc_fit"):
        oml.script.drop(name)
    oml.import_script(str(as_json))
    assert oml.script.load("sk_svc_fit").get_source() == SVC
    oml.script.drop("MYLM")
    oml.import_script(str(as_py))
    mylm = oml.script.dir(name="MYLM")
    assert mylm["script"].tolist() == [LM] and mylm["description"].tolist() == ["a linear model"]
    with pytest.raises(oml.InvalidRequestError):
        oml.import_script(str(as_py))  # exists: only with overwrite
    oml.import_script(str(as_py), overwrite=True)
    assert oml.do_eval("MYLM", dat=[1, 2, 3]) == 3

    plain = tmp_path / "plain.py"  # a hand-written file: each top-level function under its own name
    plain.write_text(
        "import math\n\n\ndef area(r):\n    return math.pi * r * r\n\n\ndef double(x):\n    return 2 * x\n"
    )
    oml.import_script(str(plain))
    assert oml.do_eval("double", x=4) == 8
    assert oml.do_eval("area", r=1) == pytest.approx(3.14159, abs=1e-5)  # the file's imports come along
