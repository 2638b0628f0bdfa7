"""`pyqd model ...`: deploy a model file from the command line on the store a live app uses, then score over HTTP."""

from __future__ import annotations

import json
import pickle
import re
import shlex
from collections.abc import Iterator
from urllib.parse import urlsplit

import joblib
import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from models import service as models_service
from server import accounts
from server.cli import main
from server.services import Services, open_services
from server.settings import Settings
from tests.server.procs import run_pyqd
from tests.server.test_cli import ok, store_flags, within_cache_time

MODELS = "/omlmod/v1/models"


def fitted_regressor():  # noqa: ANN201
    from sklearn.linear_model import LinearRegression

    rng = np.random.default_rng(7)
    x = pd.DataFrame(rng.normal(size=(60, 3)), columns=["AGE", "INCOME", "TENURE"])
    return LinearRegression().fit(x, x @ [0.5, -2.0, 3.0] + 1.0), x


def curl_payload(out: str, pattern: str) -> tuple[str, dict]:
    """(URL, JSON body) of the printed curl line whose URL matches `pattern`, read as a shell would."""
    line = next(line for line in out.splitlines() if re.search(rf"curl .*{pattern}", line))
    words = shlex.split(line.strip().split("$(", 1)[-1])
    return words[words.index("POST") + 1], json.loads(words[words.index("-d") + 1])


def test_deploy_list_undeploy_delete_and_score_over_http(api, settings, tmp_path):
    flags = store_flags(settings)
    alice = api.user("alice", "alice-password-1")
    regr, x = fitted_regressor()
    joblib.dump(regr, tmp_path / "regr.joblib")

    out = ok(
        run_pyqd(
            "model", "deploy", str(tmp_path / "regr.joblib"), "--name", "regr", "--uri", "regr_ep",
            "--user", "alice", "--description", "churn", *flags,
        )
    )  # fmt: skip
    assert re.search(r"^stored PYTHON model regr 1\.0 of ALICE \(regression, 3 inputs\): [0-9a-f-]{36}$", out, re.M)
    assert "deployed at regr_ep\n" in out
    assert re.search(r"^score: +POST http://\S+/omlmod/v1/deployment/regr_ep/score$", out, re.M)
    assert re.search(r"^OpenAPI: +GET +http://\S+/omlmod/v1/deployment/regr_ep/api$", out, re.M)

    # The printed lines work as they are: the token request (with the password filled in), then the score.
    token_url, token_body = curl_payload(out, "oauth2")
    r = api.client.post(urlsplit(token_url).path, json={**token_body, "password": "alice-password-1"})
    assert r.status_code == 200, r.text
    score_url, example = curl_payload(out, "/score")
    assert list(example["inputRecords"][0]) == ["AGE", "INCOME", "TENURE"]
    bearer = {"Authorization": f"Bearer {r.json()['accessToken']}"}
    r = api.client.post(urlsplit(score_url).path, headers=bearer, json=example)
    assert r.status_code == 200, r.text
    assert r.json()["scoringResults"][0]["regression"] == pytest.approx(regr.intercept_, abs=1e-6)
    # Real rows: the model's own predictions.
    r = api.client.post(urlsplit(score_url).path, headers=alice, json={"inputRecords": x.head(5).to_dict("records")})
    assert r.status_code == 200, r.text
    got = [row["regression"] for row in r.json()["scoringResults"]]
    np.testing.assert_allclose(got, regr.predict(x.head(5)), rtol=0, atol=1e-6)

    (model,) = api.client.get(MODELS, headers=alice).json()["items"]
    assert [model[k] for k in ("modelName", "createdBy", "description", "shared")] == ["regr", "ALICE", "churn", False]
    # The other commands, in-process (click's runner) to spare a start-up each.
    runner = CliRunner()
    listing = runner.invoke(main, ["model", "list", *flags])
    assert listing.exit_code == 0, listing.output
    assert listing.output.splitlines() == [
        f"{model['modelId']}\tALICE\tregr\t1.0\t\tPYTHON\tregression\tprivate\tregr_ep"
    ]
    undeployed = runner.invoke(main, ["model", "undeploy", "regr_ep", "--user", "alice", *flags])
    assert undeployed.output == "removed endpoint regr_ep\n"
    within_cache_time(
        lambda: api.client.post(urlsplit(score_url).path, headers=alice, json=example).status_code == 404, api
    )
    deleted = runner.invoke(main, ["model", "delete", model["modelId"], "--user", "alice", *flags])
    assert deleted.output == f"deleted model {model['modelId']}\n"
    assert api.client.get(MODELS, headers=alice).json()["items"] == []


@pytest.fixture
def store(tmp_path) -> Iterator[tuple[list[str], Services]]:
    """A fresh SQLite store holding user ALICE: (CLI flags for it, the services the test checks it with)."""
    settings = Settings(
        data_dir=tmp_path / "data", database_url=None, password_hash_time_cost=1, password_hash_memory_kib=1024
    )
    services = open_services(settings)
    accounts.add_user(services, "alice", "pw-long-password")
    yield ["--data-dir", str(settings.data_dir)], services
    services.close()


def test_deploy_errors(store, tmp_path):
    """In-process (click's runner) on SQLite: each refusal is one `error: ...` line and exit 1, storing nothing."""
    flags, services = store
    regr, _ = fitted_regressor()
    joblib.dump(regr, tmp_path / "regr.pkl")
    (tmp_path / "notamodel.pkl").write_bytes(pickle.dumps({"not": "a model"}))
    runner = CliRunner()

    def run(*args: str):  # noqa: ANN202
        return runner.invoke(main, ["model", *args, *flags])

    def deploy(file: str, *args: str, user: str = "alice"):  # noqa: ANN202
        return run("deploy", str(tmp_path / file), "--user", user, *args)

    def refused(result, message: str) -> None:  # noqa: ANN001
        assert result.exit_code == 1, result.output
        assert result.exception is None or isinstance(result.exception, SystemExit)
        assert re.search(rf"^error: .*{message}", result.stderr, re.M), result.stderr
        assert "Traceback" not in result.output

    def stored() -> list[str]:
        with services.sessions() as session:
            return [m.name for m in models_service.list_models(session, "ALICE")]

    first = deploy("regr.pkl", "--name", "regr", "--uri", "ep", "--shared")
    assert first.exit_code == 0, first.output
    refused(deploy("regr.pkl", "--name", "regr", "--uri", "ep2"), "Model regr version 1.0 already exists")
    refused(deploy("regr.pkl", "--name", "regr", "--version", "2.0", "--uri", "ep"), "The uri ep is in use")
    refused(deploy("notamodel.pkl", "--name", "bad", "--uri", "bad"), "needs a predict method; dict has none")
    refused(deploy("regr.pkl", "--name", "bad-name", "--uri", "x"), "modelName 'bad-name' is invalid")
    refused(deploy("regr.pkl", "--name", "x", "--uri", "bad uri"), "uri 'bad uri' is invalid")
    refused(deploy("regr.pkl", "--name", "x", "--uri", "x", user="nobody"), "NOBODY does not exist")
    refused(run("undeploy", "nope", "--user", "alice"), "Endpoint nope does not exist")
    with services.sessions() as session:
        (model,) = models_service.list_models(session, "ALICE")
    refused(run("delete", model.id, "--user", "alice"), "deployed at ep")
    # Shared: another user sees it in their listing, but may not remove it.
    accounts.add_user(services, "bob", "pw-long-password")
    listing = run("list", "--user", "bob")
    assert listing.exit_code == 0 and listing.output.split("\t")[:3] == [model.id, "ALICE", "regr"], listing.output
    refused(run("undeploy", "ep", "--user", "bob"), "Only the creator")
    refused(run("delete", model.id, "--user", "bob"), "Only the creator")
    assert stored() == ["regr"]
