"""Several API servers on one PostgreSQL (issue 11, item 4), as real `pyqd serve` processes on loopback ports:
one database, one signing key, a data directory each. Any server answers any request; a job whose server is
killed is finished by another, once; a change made through one server is seen at once by the others, although
each caches lookups for five minutes."""

from __future__ import annotations

import secrets
import signal
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
from sqlalchemy import Connection, create_engine, text

from server.auth.tokens import TokenSigner
from tables.pg_store import default_role_prefix
from tests.conftest import ADMIN_PASSWORD, _admin_execute, _drop_database, _drop_roles, _pg_url, wait_for
from tests.server.procs import ServerProcess, clean_env

#: One cluster for the module (its start is most of the module's time): keep its tests on one xdist worker when
#: run with `--dist loadgroup`. The test that kills a server comes last, so that no replacement has to start.
pytestmark = pytest.mark.xdist_group("multi-server")

#: Far longer than any test: only an invalidation that crossed servers can explain a change seen at once.
LOOKUP_CACHE_S = 300
#: How long a change may take to reach another server before the test fails, and what "at once" means here.
DEADLINE_S, AT_ONCE_S = 10.0, 5.0
#: Results over this many bytes are stored in pieces in the database (a few kilobytes make several).
JOB_SPILL_BYTES = 4096
PYQD = "/oml/api/pyqd/v1"
SCRIPTS = "/oml/api/py-scripts/v1/scripts"
TOKEN = "/omlusers/api/oauth2/v1/token"

#: A job that says it runs (a RUN_ datastore per run), waits until the test saves RELEASE, then says it finished
#: (a DONE_ datastore): what the datastores say afterwards is how often it ran, and how often to its end.
HELD = """def held():
    import time, uuid, oml
    run = uuid.uuid4().hex[:12].upper()
    oml.ds.save(objs={'run': run}, name='RUN_' + run)
    deadline = time.monotonic() + 120
    while 'RELEASE' not in set(oml.ds.dir()['datastore_name']):
        if time.monotonic() > deadline:
            raise TimeoutError('the test never released the job')
        time.sleep(0.05)
    oml.ds.save(objs={'run': run}, name='DONE_' + run)
    return {'finished_by': run}
"""
BIG = "def big(n=3000):\n    return [{'i': i, 'text': 'x' * 20} for i in range(n)]\n"


@dataclass
class Cluster:
    """Three servers on one database; a test that kills one gets it replaced before the next test."""

    database_url: str
    signing_key: str
    root: Path
    servers: list[ServerProcess] = field(default_factory=list)

    def env(self, data_dir: Path) -> dict[str, str]:
        return clean_env(
            PYQD_DATABASE_URL=self.database_url,
            PYQD_DATA_DIR=str(data_dir),
            PYQD_SIGNING_KEY=self.signing_key,
            PYQD_ADMIN_PASSWORD=ADMIN_PASSWORD,
            PYQD_LOOKUP_CACHE_S=str(LOOKUP_CACHE_S),
            PYQD_WORKERS="2",
            PYQD_JOB_CONCURRENCY="1",
            PYQD_JOB_HEARTBEAT_S="0.2",
            PYQD_JOB_STALE_AFTER_S="3",
            PYQD_JOB_SPILL_BYTES=str(JOB_SPILL_BYTES),
        )

    def start(self, n: int) -> list[ServerProcess]:
        """Start `n` servers at once (each with a data directory of its own) and wait until all answer."""
        started = [
            ServerProcess(env=self.env(self.root / f"data-{uuid.uuid4().hex[:8]}"), cwd=self.root) for _ in range(n)
        ]
        for server in started:
            server.wait_healthy()
        return started

    def ensure_running(self) -> list[ServerProcess]:
        dead = [s for s in self.servers if s.proc.poll() is not None]
        for s in dead:
            s.stop()
        self.servers = [s for s in self.servers if s not in dead] + (self.start(len(dead)) if dead else [])
        return self.servers

    def server_of(self, claimed_by: str) -> ServerProcess:
        """The server whose job scheduler id is `claimed_by` ("<id>@<machine>/127.0.0.1:<port>")."""
        port = int(claimed_by.rsplit(":", 1)[1])
        (server,) = [s for s in self.servers if s.port == port]
        return server


@pytest.fixture(scope="module")
def cluster(pg_template: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    name = f"{pg_template}_multi_{secrets.token_hex(3)}"
    _admin_execute(f'CREATE DATABASE "{name}" TEMPLATE "{pg_template}"')
    c = Cluster(_pg_url(name), secrets.token_hex(32), tmp_path_factory.mktemp("multi"))
    try:
        c.servers = c.start(3)
        yield c
    finally:
        for s in c.servers:
            s.stop()
        _drop_database(name)
        _drop_roles(default_role_prefix(name))


@pytest.fixture
def servers(cluster: Cluster) -> list[ServerProcess]:
    return cluster.ensure_running()


#: The HTTP clients a test opened (closed after it).
_OPEN: list[httpx.Client] = []


@pytest.fixture(autouse=True)
def _close_clients() -> Iterator[None]:
    yield
    while _OPEN:
        _OPEN.pop().close()


class Client:
    """One user's requests to one server."""

    def __init__(self, server: ServerProcess, token: str) -> None:
        self.server, self.token = server, token
        self.http = httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {token}"}, timeout=60)
        _OPEN.append(self.http)
        self._others: dict[int, Client] = {server.port: self}

    def on(self, server: ServerProcess) -> Client:
        """The same token, sent to another server."""
        if server.port not in self._others:
            other = Client(server, self.token)
            other._others = self._others
            self._others[server.port] = other
        return self._others[server.port]

    def run(self, verb: str, script: str, body: dict | None = None) -> httpx.Response:
        return self.http.post(f"/oml/api/py-scripts/v1/{verb}/{script}", json=body or {})

    def script(self, name: str, source: str) -> None:
        r = self.http.post(f"{PYQD}/scripts", json={"name": name, "script": source, "overwrite": True})
        assert r.status_code == 201, r.text

    def save(self, name: str) -> None:
        files = {"flag": ("flag", b"\x80\x04K\x01.", "application/octet-stream")}
        r = self.http.post(f"{PYQD}/datastores/{name}", data={"meta": "{}"}, files=files)
        assert r.status_code == 201, r.text

    def datastores(self) -> set[str]:
        r = self.http.get(f"{PYQD}/datastores")
        assert r.status_code == 200, r.text
        return {d["datastore_name"] for d in r.json()["result"]}

    def submit(self, verb: str, script: str, body: dict | None = None) -> str:
        r = self.http.post(f"/oml/api/py-scripts/v1/{verb}/{script}", json={**(body or {}), "asyncFlag": True})
        assert r.status_code == 201, r.text
        return "/oml/api/" + r.headers["location"].split("/api/", 1)[1]


def login(server: ServerProcess, user: str, password: str) -> str:
    r = httpx.post(
        f"{server.url}{TOKEN}", json={"grant_type": "password", "username": user, "password": password}, timeout=60
    )
    assert r.status_code == 200, r.text
    return r.json()["accessToken"]


def new_user(server: ServerProcess, password: str = "a-long-enough-password") -> tuple[str, Client]:
    """A user of its own for the test (created through `server`), logged in there."""
    name = f"U{uuid.uuid4().hex[:10].upper()}"
    admin = Client(server, login(server, "ADMIN", ADMIN_PASSWORD))
    r = admin.http.post(f"{PYQD}/admin/users", json={"name": name, "password": password})
    assert r.status_code == 201, r.text
    return name, Client(server, login(server, name, password))


@contextmanager
def database(cluster: Cluster) -> Iterator[Connection]:
    """A connection to the cluster's database, straight, behind the servers' backs."""
    engine = create_engine(cluster.database_url)
    try:
        with engine.connect() as conn:
            yield conn
    finally:
        engine.dispose()


def seen_within(condition, deadline_s: float = DEADLINE_S) -> float:  # noqa: ANN001
    """Seconds until `condition()` held (polled; fails after `deadline_s`)."""
    started = time.monotonic()
    wait_for(condition, timeout=deadline_s, interval=0.01)
    return time.monotonic() - started


# -- any server answers any request ------------------------------------------------------------------------------


def test_any_server_answers_any_request(cluster, servers):
    a, b, c = servers
    _, alice = new_user(a)
    alice.script("big", BIG)
    sync = alice.on(b).run("do-eval", "big")  # created on A, run on B
    assert sync.status_code == 200 and len(sync.json()["result"]) == 3000
    assert len(sync.content) > 10 * JOB_SPILL_BYTES
    assert alice.on(c).http.get(f"{PYQD}/scripts/big").json()["result"]["script"] == BIG

    job = alice.submit("do-eval", "big")  # submitted on A, followed and read on every server
    wait_for(lambda: alice.on(b).http.get(job).status_code == 302, timeout=60, interval=0.05)
    for server in servers:
        r = alice.on(server).http.get(f"{job}/result")
        assert r.status_code == 200 and r.content == sync.content  # a large body: pieces in the database
    with database(cluster) as conn:
        pieces = conn.execute(
            text("SELECT count(*) FROM pyqd_job_chunks WHERE job_id = :id"), {"id": job.rsplit("/", 1)[1]}
        ).scalar_one()
    assert pieces >= 1 and not list(cluster.root.glob("data-*/jobs"))  # in the database, in no server's files
    listed = alice.on(c).http.get("/oml/api/py-scripts/v2/jobs").json()["result"]
    assert [j["job_id"] for j in listed] == [job.rsplit("/", 1)[1]]
    assert alice.on(c).http.delete(job).status_code == 200
    assert alice.http.get(f"{job}/result").status_code == 404

    alice.on(b).save("KEEP")  # datastores: saved on B, listed on C
    assert "KEEP" in alice.on(c).datastores()


# -- a change made through one server is seen at once by the others -------------------------------------------------


def test_a_revoked_token_fails_at_once_on_the_other_servers(cluster, servers):
    a, b, c = servers
    _, alice = new_user(a)
    for server in (b, c):  # the session is checked, and cached, on every server
        assert alice.on(server).http.get(SCRIPTS).status_code == 200

    # Caching is real: a revocation written straight into the database, which no server announces, goes unseen.
    _, bob = new_user(a)
    assert bob.on(b).http.get(SCRIPTS).status_code == 200
    sid = TokenSigner(cluster.signing_key.encode(), 3600, 86400).decode(bob.token).sid
    with database(cluster) as conn:
        conn.execute(
            text("INSERT INTO pyqd_revoked_sessions (sid, expires_at) VALUES (:sid, now() + interval '1 day')"),
            {"sid": sid},
        )
        conn.commit()
    assert bob.on(b).http.get(SCRIPTS).status_code == 200

    assert alice.http.post(f"{TOKEN}/revoke").status_code == 200
    for server in (b, c):
        took = seen_within(lambda s=server: alice.on(s).http.get(SCRIPTS).status_code == 401)
        assert took < AT_ONCE_S


def test_a_changed_password_fails_the_old_token_at_once_on_the_other_servers(servers):
    a, b, c = servers
    name, alice = new_user(a)
    for server in (b, c):
        assert alice.on(server).http.get(SCRIPTS).status_code == 200
    admin = Client(c, login(c, "ADMIN", ADMIN_PASSWORD))
    r = admin.http.put(f"{PYQD}/admin/users/{name}/password", json={"password": "another-long-password"})
    assert r.status_code == 200, r.text
    for server in (a, b):
        took = seen_within(lambda s=server: alice.on(s).http.get(SCRIPTS).status_code == 401)
        assert took < AT_ONCE_S
    assert Client(a, login(a, name, "another-long-password")).http.get(SCRIPTS).status_code == 200


def test_a_changed_or_dropped_script_is_seen_at_once_on_the_other_servers(servers):
    a, b, c = servers
    _, alice = new_user(a)
    alice.script("f", "def f():\n    return 'one'\n")
    for server in (b, c):  # resolved, and cached, on every server
        assert alice.on(server).run("do-eval", "f").json() == {"result": "one"}
    alice.script("f", "def f():\n    return 'two'\n")
    for server in (b, c):
        took = seen_within(lambda s=server: alice.on(s).run("do-eval", "f").json() == {"result": "two"})
        assert took < AT_ONCE_S
    assert alice.on(b).http.delete(f"{PYQD}/scripts/f").status_code == 200
    for server in (a, c):
        took = seen_within(lambda s=server: alice.on(s).run("do-eval", "f").status_code == 404)
        assert took < AT_ONCE_S


# -- a killed server's job is finished by another, once ------------------------------------------------------------


def claimed_by(cluster: Cluster, job: str) -> tuple[str, str | None]:
    with database(cluster) as conn:
        row = conn.execute(
            text("SELECT status, claimed_by FROM pyqd_jobs WHERE id = :id"), {"id": job.rsplit("/", 1)[1]}
        ).one()
        return row.status, row.claimed_by


def runs(alice: Client, prefix: str) -> set[str]:
    """The runs of HELD that started (prefix RUN_) or reached their end (DONE_)."""
    return {n[len(prefix) :] for n in alice.datastores() if n.startswith(prefix)}


@pytest.mark.timeout(240)
def test_the_job_of_a_killed_server_is_finished_by_another_exactly_once(cluster, servers):
    _, alice = new_user(servers[0])
    alice.script("held", HELD)
    job = alice.submit("do-eval", "held")
    (first_run,) = wait_for(lambda: runs(alice, "RUN_"), timeout=90, interval=0.05)
    status, first = claimed_by(cluster, job)
    assert status == "RUNNING" and first is not None
    doomed = cluster.server_of(first)
    doomed.proc.send_signal(signal.SIGKILL)
    doomed.wait_exit()
    alive = [s for s in servers if s is not doomed]
    alice = alice.on(alive[0])

    # Another server sees the heartbeat stop, takes the job (SKIP LOCKED: one of the two) and runs it again.
    wait_for(lambda: len(runs(alice, "RUN_")) == 2, timeout=90, interval=0.05)
    status, second = claimed_by(cluster, job)
    assert status == "RUNNING" and second not in (None, first)
    alice.save("RELEASE")
    wait_for(lambda: alice.on(alive[1]).http.get(job).status_code == 302, timeout=90, interval=0.05)
    finished = runs(alice, "DONE_")
    assert len(finished) == 1 and first_run not in finished  # once, by the second run
    assert runs(alice, "RUN_") == finished | {first_run}  # and no third run began
    for server in alive:
        r = alice.on(server).http.get(f"{job}/result")
        assert r.status_code == 200 and r.json() == {"result": {"finished_by": next(iter(finished))}}
    assert claimed_by(cluster, job) == ("FINISHED", second)
