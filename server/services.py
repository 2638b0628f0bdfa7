"""What a running server holds: settings, the metadata store, the token signer, the user-data store."""

from __future__ import annotations

import logging
import secrets
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from engines.envs import EnvStore, Preloads
from engines.pool import PoolSettings, WorkerPool
from server import notify
from server.auth import service as auth_service
from server.auth.keys import load_signing_key
from server.auth.throttle import LoginThrottle, ThrottleConfig
from server.auth.tokens import SessionKey, TokenSigner
from server.cache import LookupCache
from server.db import create_metadata_engine, run_migrations, session_factory
from server.settings import Settings

if TYPE_CHECKING:
    from engines.dask.engine import DaskWorkers
    from engines.scoring import Scorer
    from engines.service import ExecutionService
    from server.bridge import AppBridge
from tables.pg_store import PostgresStore
from tables.sqlite_store import SqliteStore
from tables.store import UserDataStore

log = logging.getLogger("pyqd.services")

#: The key under which `script_cache` keeps the datastore generation.
DATASTORE_GENERATION = "datastore-generation"


@dataclass
class Services:
    settings: Settings
    engine: Engine
    sessions: sessionmaker[Session]
    signer: TokenSigner
    user_data: UserDataStore
    #: The worker pool; started by the app's lifespan (the CLI's admin commands run without one).
    pool: WorkerPool | None = None
    #: The Dask cluster the verbs run on with PYQD_ENGINE=dask (the pool above then only scores models).
    cluster: DaskWorkers | None = None
    #: Serves the requests of workers' `import oml` in-process.
    bridge: AppBridge | None = None
    #: Runs calls and async jobs (`server.execution.open_execution`); started by the app's lifespan.
    execution: ExecutionService | None = None
    #: Loads and scores deployed models in their owners' workers (OML Services); started with the pool.
    scorer: Scorer | None = None
    #: Token sessions recently checked: SessionKey → the caller (server.deps.current_user).
    auth_cache: LookupCache[SessionKey, Any] = field(default_factory=lambda: LookupCache(0))
    #: Scripts recently resolved, by (caller, script name, owner asked for), and the datastore generation
    #: under DATASTORE_GENERATION (server.execution).
    script_cache: LookupCache[Any, Any] = field(default_factory=lambda: LookupCache(0))
    #: Deployments recently looked up for scoring, by uri (None: no such endpoint).
    deployment_cache: LookupCache[str, Any] = field(default_factory=lambda: LookupCache(0))
    #: Failed logins per user and address (see server.auth.throttle).
    login_throttle: LoginThrottle = field(default_factory=lambda: LoginThrottle(ThrottleConfig()))
    #: Identifies these services (this process's view of its stores) to workers.
    instance: str = field(default_factory=lambda: secrets.token_hex(6))
    #: Environments preloaded through `POST /py-scripts/v2/preload/conda`, by user (this server's memory).
    preloads: Preloads = field(default_factory=Preloads)

    #: Applies the forgets other servers of this PostgreSQL publish (`start_listening`; None on SQLite).
    listener: notify.Listener | None = None

    # Each change forgets what it invalidates right after its commit, before its answer goes out, so the next
    # request through this server already sees it; on PostgreSQL it also tells the other servers (server.notify).

    @property
    def envs(self) -> EnvStore:
        """The per-script environments (`pyqd env create`) of this server's data directory."""
        return EnvStore.of_data_dir(self.settings.data_dir)

    def forget_sessions(self, *, user: str | None = None, sid: str | None = None, client_id: str | None = None) -> None:
        """Drop the checked sessions of a user (password change, removal), of one session (revoked) or of an API
        client (removed)."""
        self._forget(notify.Forget(notify.Kind.SESSIONS, user=user, sid=sid, client_id=client_id))

    def forget_script(self, name: str) -> None:
        """Drop every lookup of scripts called `name` (created, replaced, dropped, granted or revoked)."""
        self._forget(notify.Forget(notify.Kind.SCRIPT, name=name))

    def forget_scripts(self) -> None:
        """Drop every script lookup and the datastore generation (a user removed with all they owned)."""
        self._forget(notify.Forget(notify.Kind.SCRIPTS))

    def forget_datastore_generation(self) -> None:
        """Drop the datastore generation (any datastore, object or grant changed)."""
        self._forget(notify.Forget(notify.Kind.DATASTORE_GENERATION))

    def forget_deployments(self) -> None:
        """Drop every deployment lookup (an endpoint or a model was created, changed or deleted)."""
        self._forget(notify.Forget(notify.Kind.DEPLOYMENTS))

    def _forget(self, forget: notify.Forget) -> None:
        self.apply_forget(forget)
        notify.publish(self.engine, forget, self.instance)

    def apply_forget(self, forget: notify.Forget) -> None:
        """Forget in this server's caches only (a change made here, or another server's notice)."""
        kind = forget.kind
        if kind == notify.Kind.SESSIONS:
            user, sid, client_id = forget.user, forget.sid, forget.client_id
            self.auth_cache.forget(
                lambda k: (
                    (user is not None and k.user == user)
                    or (sid is not None and k.sid == sid)
                    or (client_id is not None and k.client_id == client_id)
                )
            )
        elif kind == notify.Kind.SCRIPT:
            name = forget.name
            self.script_cache.forget(lambda k: isinstance(k, tuple) and len(k) == 3 and k[1] == name)
        elif kind == notify.Kind.SCRIPTS:
            self.script_cache.forget()
        elif kind == notify.Kind.DATASTORE_GENERATION:
            self.script_cache.forget(lambda k: k == DATASTORE_GENERATION)
        elif kind == notify.Kind.DEPLOYMENTS:
            self.deployment_cache.forget()
        else:  # EVERYTHING, and any kind this code does not know
            self.auth_cache.forget()
            self.script_cache.forget()
            self.deployment_cache.forget()

    def start_listening(self) -> None:
        """On PostgreSQL, apply the other servers' forgets from now on (the app's lifespan starts this)."""
        if self.engine.dialect.name == "postgresql" and self.listener is None:
            self.listener = notify.Listener(notify.connector(self.engine), self.apply_forget, self.instance)
            if not self.listener.start():
                log.warning("the cache invalidation listener is not listening yet; it keeps trying")

    def stop_listening(self) -> None:
        if self.listener is not None:
            self.listener.stop()
            self.listener = None

    def close(self) -> None:
        self.stop_listening()
        pool = getattr(self.user_data, "adbc_pool", None)
        if pool is not None:
            pool.close()
        self.engine.dispose()


def pool_settings(settings: Settings) -> PoolSettings:
    """The settings of the worker pools: this server's, and the ones Dask workers host for the Dask engine."""
    return PoolSettings(
        memory_mb=settings.worker_memory_mb,
        cpu_seconds=settings.worker_cpu_seconds,
        user_setting=settings.worker_user,
        sandbox=settings.worker_sandbox,
        scratch_mb=settings.worker_scratch_mb,
        max_processes=settings.worker_max_processes,
        warm=settings.warm_workers,
        preload=settings.worker_preload,
        # a worker's message holds at most one task's results: the size limit plus room for the rest
        max_message_bytes=settings.output_max_bytes + 64 * 1024 * 1024,
    )


def make_pool(settings: Settings) -> WorkerPool:
    """A worker pool configured from the settings (not started), running per-script environments from the data
    directory (the pools Dask workers host have none: the environments are on this server's disk)."""
    config = pool_settings(settings).config(settings.workers, settings.workers_per_user)
    return WorkerPool(replace(config, envs_dir=str(EnvStore.of_data_dir(settings.data_dir).root.resolve())))


def make_cluster(settings: Settings) -> DaskWorkers:
    """The Dask engine configured from the settings (not started)."""
    from engines.dask.engine import DaskConfig, DaskWorkers

    assert settings.dask_scheduler is not None
    return DaskWorkers(
        DaskConfig(
            scheduler=settings.dask_scheduler,
            api_url=settings.relay_url,
            host=pool_settings(settings),
            per_user=settings.workers_per_user,
        )
    )


def open_services(settings: Settings, *, migrate: bool = True) -> Services:
    """Open the stores (creating the data directory, key and schema on first start)."""
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    settings.data_dir.chmod(0o700)
    auth_service.configure_password_hashing(
        settings.password_hash_time_cost, settings.password_hash_memory_kib, settings.password_hash_concurrency
    )
    engine = create_metadata_engine(settings)
    if migrate:
        run_migrations(engine)
    signer = TokenSigner(load_signing_key(settings), settings.token_ttl_s, settings.token_max_age_s)
    user_data: UserDataStore
    if engine.dialect.name == "sqlite":
        user_data = SqliteStore(Path(settings.data_dir) / "schemas")
    else:
        user_data = PostgresStore(engine, roles=settings.pg_roles, role_prefix=settings.pg_role_prefix)
    svc = Services(settings, engine, session_factory(engine), signer, user_data)
    svc.auth_cache = LookupCache(settings.lookup_cache_s)
    svc.script_cache = LookupCache(settings.lookup_cache_s)
    svc.deployment_cache = LookupCache(settings.lookup_cache_s)
    svc.login_throttle = LoginThrottle(
        ThrottleConfig(
            user_max_failures=settings.login_user_max_failures,
            address_max_failures=settings.login_address_max_failures,
            lockout_s=settings.login_lockout_s,
            lockout_max_s=settings.login_lockout_max_s,
            failure_window_s=settings.login_failure_window_s,
        )
    )
    return svc
