"""Settings: one class, read from `PYQD_*` environment variables and CLI flags."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

#: Shortest signing key accepted outside development, in bytes (HS256 wants at least 256 bits).
MIN_SIGNING_KEY_BYTES = 32


class Settings(BaseSettings):
    """Everything the server can be told; defaults run on a laptop."""

    model_config = SettingsConfigDict(env_prefix="PYQD_", extra="ignore")

    data_dir: Path = Path("pyqd-data")
    #: SQLAlchemy URL of the metadata store; None means SQLite inside `data_dir`.
    database_url: str | None = None
    host: str = "127.0.0.1"
    port: int = 8000
    #: Addresses of reverse proxies whose X-Forwarded-For/-Proto headers are believed (comma list, "*" for any);
    #: empty: none (the TCP peer is the client, as login throttling counts it).
    forwarded_allow_ips: str = ""
    #: Public base URL used in `Location` headers and links; None means derive it from the request.
    public_url: str | None = None
    #: Names of the `{tenant}` and `{database}` path segments this server answers to.
    tenant: str = "PYQD"
    database: str = "PYQD"
    #: Answer the tenant form of the URLs (`/oml/tenants/{tenant}/databases/{database}/api/...`) whatever tenant and
    #: database it names: Oracle's carry the tenancy OCID and the database's name, which copied scripts hard-code.
    #: Off: only `tenant`/`database` (any case) are answered, others are 404. URLs the server makes use `tenant`.
    any_tenant: bool = False
    #: Development mode: allows a weak signing key and prints more.
    dev: bool = False
    signing_key: SecretStr | None = None
    admin_password: SecretStr | None = None

    #: Access-token lifetime, seconds (OML: 3600).
    token_ttl_s: int = 3600
    #: A token can be refreshed until this many seconds after the first issue (OML: 8 h).
    token_max_age_s: int = 8 * 3600

    #: argon2id cost of password and client-secret hashes (OWASP's first recommendation is t=3, 64 MiB;
    #: lower it only for tests).
    password_hash_time_cost: int = 3
    password_hash_memory_kib: int = 65536

    #: Seconds a checked token session or looked-up script is trusted without asking the database again.
    #: Changes through this server take effect at once; with several servers, within this time.
    lookup_cache_s: float = 2.0

    #: Largest request body accepted for uploads (tables, datastore objects), bytes.
    max_upload_bytes: int = 512 * 1024 * 1024
    #: Largest datastore (sum of its pickled objects), bytes.
    datastore_max_bytes: int = 1024 * 1024 * 1024
    #: Largest page of table rows served by the rows endpoint.
    max_page_rows: int = 10_000

    #: Create PostgreSQL roles per user so the database itself enforces table grants.
    pg_roles: bool = True
    #: Prefix for those roles; roles are cluster-wide, so it defaults to one per database.
    pg_role_prefix: str | None = None

    #: Server processes answering HTTP (each with its own worker pool of `workers`); they share the stores.
    processes: int = 1
    #: Worker processes running user code (at most, per server process), and how many fresh ones are kept ready.
    workers: int = Field(default_factory=lambda: max(4, 2 * (os.cpu_count() or 2)))
    warm_workers: int = 2
    #: Address-space limit of each worker, MiB.
    worker_memory_mb: int = 4096
    #: CPU-seconds a worker process may use in its life (RLIMIT_CPU); the pool retires workers that have used
    #: three quarters of it, so a healthy call never meets the limit.
    worker_cpu_seconds: int = 3600
    #: OS account for workers when the server runs as root: "auto" picks `nobody` when it can read the
    #: Python installation (else workers stay uid 0 with every capability dropped); "" keeps the server's.
    worker_user: str = "auto"
    #: Confine workers: Landlock for files (when the kernel has it) and a seccomp filter that forbids sockets.
    worker_sandbox: bool = True
    #: Most workers one user holds at once; None: half of `workers` (at least one), so others always get some.
    workers_per_user: int | None = None
    #: Largest scratch space (the worker's own directory) a worker may fill, MiB; it is killed past that.
    worker_scratch_mb: int = 1024
    #: Most processes the worker account may run at once (RLIMIT_NPROC; applies when workers get their own uid).
    worker_max_processes: int = 512
    #: Extra modules imported once into the worker template (comma list), e.g. "sklearn.linear_model".
    worker_preload: str = "sklearn.linear_model,matplotlib.pyplot,onnxruntime,joblib"
    #: Time limit of a synchronous call, seconds (Oracle's gateway cuts at about 120 s).
    sync_time_limit_s: float = 120.0
    #: Seconds a call waits for a free worker before the server answers 503.
    worker_wait_s: float = 30.0
    #: Where the OML4Py verbs run user code: "local" (this server's worker pool) or "dask" (pyqd's sandboxed pools
    #: hosted on the workers of a Dask distributed cluster; docs/scaling.md). Model scoring stays local.
    engine: Literal["local", "dask"] = "local"
    #: The Dask scheduler (PYQD_ENGINE=dask): `tcp://host:8786`, or the path of a scheduler file.
    dask_scheduler: str | None = None
    #: With the Dask engine on PostgreSQL, a row-apply input of at least this many rows is read by the Dask workers
    #: themselves, in partitions, each with the call's own short-lived read-only database role.
    partition_min_rows: int = 200_000
    #: Host, port and database the Dask workers read partitions from (its user and password are ignored); None:
    #: the metadata database's.
    read_database_url: str | None = None
    #: The URL Dask workers reach the API servers at (a script's `import oml` is relayed there); None: the
    #: public URL, else http://host:port of this server.
    api_url: str | None = None
    #: Longest result (rows of a DataFrame, items of a list) a call may return; Oracle's is 5000.
    output_limit: int = 10_000_000
    #: Largest result a call may return, bytes (counted whole, however nested; beyond Oracle, which counts rows).
    output_max_bytes: int = 256 * 1024 * 1024
    #: Results larger than this are assembled in a temporary file in the data directory, not in memory.
    result_spill_bytes: int = 8 * 1024 * 1024
    #: Time limit of the input query, seconds.
    query_time_limit_s: float = 600.0
    #: Largest model one may store (OML Services), bytes (uploads are also capped by max_upload_bytes).
    model_max_bytes: int = 512 * 1024 * 1024
    #: Time limit of one score request in the worker, seconds.
    score_time_limit_s: float = 30.0
    #: Seconds a worker may take to load a model (when it is stored, and once per worker when first scored).
    model_load_time_limit_s: float = 300.0

    #: Async jobs this server runs at once (the rest of the pool stays for synchronous calls).
    job_concurrency: int = 2
    #: Job timeout when the request gives none, and the largest allowed (Oracle: 1800 and 43200 s).
    job_default_timeout_s: int = 1800
    #: Jobs waiting to run, over all users, before submissions get 503.
    job_queue_limit: int = 1000
    #: How often a server says its jobs still run, and when a silent server's jobs are taken over.
    job_heartbeat_s: float = 5.0
    job_stale_after_s: float = 30.0
    #: Runs of a job (first run and re-runs after a server stopped) before it is failed.
    job_max_attempts: int = 2
    #: Seconds finished jobs and their results are kept.
    job_retention_s: float = 7 * 24 * 3600.0
    #: Results larger than this are stored in pieces of their own (`pyqd_job_chunks`), read back a piece at a time.
    job_spill_bytes: int = 1024 * 1024

    # -- writes and compression (issue 12) -------------------------------------------------------------------
    #: Seconds a temporary table (`oml.push`: an upload or materialize with temporary=true) lives before the server
    #: drops it, unless made permanent (`POST .../tables/{name}/keep`). Clients drop theirs when they disconnect;
    #: this is for the ones a crashed client left behind.
    temp_table_ttl_s: float = Field(default=24 * 3600.0, ge=0)
    #: How often a server drops expired temporary tables, seconds.
    temp_table_sweep_s: float = Field(default=60.0, gt=0)
    #: Answers of at least this many bytes are gzip-compressed for clients that accept it (`Accept-Encoding: gzip`);
    #: smaller ones are sent as they are. 0 turns compression off.
    gzip_min_bytes: int = Field(default=64 * 1024, ge=0)
    #: zlib level of compressed answers: 1 is the fastest (about 80 MB/s of JSON or Arrow per core, a third of the
    #: size); higher levels save a few percent more for several times the CPU.
    gzip_level: int = Field(default=1, ge=1, le=9)

    log_level: str = Field(default="info")

    # -- identity and logins (issue 8) ------------------------------------------------------------------
    #: Shortest password accepted when a user is created or a password is set (admin API and `pyqd user`).
    password_min_length: int = 12
    #: Failed logins for one user name (or API client id), and from one client address, before lockouts start.
    login_user_max_failures: int = 5
    login_address_max_failures: int = 20
    #: First lockout, seconds; each further failure doubles it, up to `login_lockout_max_s`.
    login_lockout_s: float = 2.0
    login_lockout_max_s: float = 900.0
    #: Seconds without a failure after which a user's or address's failures are forgotten.
    login_failure_window_s: float = 900.0
    #: argon2 hashes computed at once (each takes `password_hash_memory_kib`); 0 means one per CPU core.
    password_hash_concurrency: int = 0

    # -- query path and per-user fairness (issue 8) --------------------------------------------------------
    #: Execution calls (synchronous calls, and the preparation of async submits) and /query reads one user may
    #: have in flight in one server process; None means 8, and fewer than `workers` (so one user's calls never
    #: hold every worker). Keep it well under the 40 threads that serve blocking work.
    calls_per_user: int | None = None
    #: Seconds a call over `calls_per_user` waits for one of the user's own calls to finish before it gets 429.
    calls_wait_s: float = 2.0
    #: Async jobs one user may have waiting to run; more submits of theirs get 429 (other users' still queue).
    job_queue_per_user: int = 100

    @model_validator(mode="after")
    def _engine(self) -> Settings:
        if self.engine == "dask" and not self.dask_scheduler:
            raise ValueError("PYQD_ENGINE=dask needs PYQD_DASK_SCHEDULER (tcp://host:8786 or a scheduler file)")
        return self

    @property
    def relay_url(self) -> str:
        """Where Dask workers reach the API (`api_url`, else the public URL, else this server's address)."""
        return (self.api_url or self.public_url or f"http://{self.host}:{self.port}").rstrip("/")

    @field_validator("tenant", "database")
    @classmethod
    def _upper(cls, v: str) -> str:
        return v.upper()

    @property
    def metadata_url(self) -> str:
        """The metadata store's SQLAlchemy URL (SQLite in the data directory unless configured)."""
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.data_dir / 'pyqd.db').resolve()}"

    @property
    def user_call_limit(self) -> int:
        """`calls_per_user`, or its default: 8, and fewer than the workers."""
        return self.calls_per_user or max(1, min(8, self.workers - 1))

    @property
    def is_sqlite(self) -> bool:
        return self.metadata_url.startswith("sqlite")
