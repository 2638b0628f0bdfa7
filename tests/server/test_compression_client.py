"""The `oml` client's side: it asks for gzip (httpx does by default) and reads compressed answers transparently;
and `oml.connect(dsn=...)` with an Oracle connect string says to use `url=` instead of failing obscurely."""

from __future__ import annotations

import io

import httpx
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import oml
from oml._connection import Connection, current
from tests.server.support import SQLITE_ONLY


@pytest.mark.parametrize(
    "dsn",
    [
        "myadw_medium",
        "dbhost.example.com:1521/orclpdb1",
        "(DESCRIPTION=(ADDRESS=(PROTOCOL=TCP)(HOST=dbhost)(PORT=1521))(CONNECT_DATA=(SERVICE_NAME=orcl)))",
        "tcps://adb.eu-frankfurt-1.oraclecloud.com:1522/abc_myadw_high.adb.oraclecloud.com",
    ],
)
def test_an_oracle_dsn_is_a_clear_error_naming_url(dsn):
    with pytest.raises(ValueError, match=r"url=") as raised:
        oml.connect(user="OML_USER", password="pw", dsn=dsn, automl=True)
    assert "Oracle database" in str(raised.value) and dsn in str(raised.value)
    assert not oml.isconnected()


def test_a_url_that_is_not_http_is_a_clear_error():
    with pytest.raises(ValueError, match="http"):
        oml.connect(url="127.0.0.1:8000", username="OML_USER", password="pw")
    with pytest.raises(ValueError, match="http"):
        Connection("ftp://host/", "OML_USER", "pw")
    with pytest.raises(ValueError, match="url is required"):
        oml.connect(username="OML_USER", password="pw")


@SQLITE_ONLY
def test_the_client_asks_for_gzip_and_reads_it(oml_user):
    url, name, password = oml_user
    oml.connect(user=name, password=password, dsn=url)  # an http(s) dsn is the server's URL
    conn = current()
    assert "gzip" in conn.http.headers["accept-encoding"]
    table = pa.table({"K": list(range(50_000)), "S": ["text that compresses well"] * 50_000})
    buf = io.BytesIO()
    pq.write_table(table, buf)
    conn.request("POST", "/oml/api/pyqd/v1/tables/BIG", params={"format": "parquet"}, content=buf.getvalue())
    r = conn.request("POST", "/oml/api/pyqd/v1/query", json={"query": "select * from BIG"})
    assert r.headers["content-encoding"] == "gzip"
    assert pa.ipc.open_stream(r.content).read_all().equals(table)
    # what went over the wire was far smaller than the Arrow stream
    with (
        httpx.Client(base_url=url) as raw,
        raw.stream(
            "POST",
            "/oml/api/pyqd/v1/query",
            headers={"Authorization": f"Bearer {conn.token()}", "Accept-Encoding": "gzip"},
            json={"query": "select * from BIG"},
        ) as streamed,
    ):
        wire = sum(len(chunk) for chunk in streamed.iter_raw())
    assert wire < len(r.content) / 3
