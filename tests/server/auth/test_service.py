"""The identity store below HTTP: name rules, session checks, and forgetting old revocations."""

from __future__ import annotations

import time

import pytest
from sqlalchemy import select

from server.auth import service as auth_service
from server.auth.errors import BadCredentials, InvalidName, TokenInvalid
from server.auth.models import RevokedSession
from server.db import write_session
from tests.server.support import backdate_user


@pytest.mark.parametrize(
    ("given", "stored"), [("alice", "ALICE"), ("Oml_User", "OML_USER"), ("a1", "A1"), ("x" * 30, "X" * 30)]
)
def test_valid_names_are_upper_cased(given, stored):
    assert auth_service.normalize_user_name(given) == stored


@pytest.mark.parametrize("name", ["1abc", "a b", "../x", "x" * 31, "PUBLIC", "pyqsys", "PG_X", "sqlite_y", "", None, 7])
def test_invalid_names_are_refused(name):
    with pytest.raises(InvalidName):
        auth_service.normalize_user_name(name)


def test_passwords_are_stored_hashed_and_checked(services):
    with write_session(services.sessions) as session:
        user = auth_service.create_user(session, "alice", "s3cret")
        assert "s3cret" not in user.password_hash
    with services.sessions() as session:
        assert auth_service.authenticate(session, "ALICE", "s3cret").name == "ALICE"
        for name, password in [("alice", "S3CRET"), ("bob", "s3cret"), ("../alice", "s3cret"), ("alice", "")]:
            with pytest.raises(BadCredentials):
                auth_service.authenticate(session, name, password)


def test_client_secrets_are_stored_hashed_and_checked(services):
    with write_session(services.sessions) as session:
        auth_service.create_user(session, "alice", "pw")
        client, secret = auth_service.create_client(session, "apex", "alice")
        assert secret not in client.secret_hash
    with services.sessions() as session:
        assert auth_service.authenticate_client(session, client.client_id, secret).user_name == "ALICE"
        for cid, sec in [(client.client_id, secret[:-1]), ("nope", secret), ("", secret)]:
            with pytest.raises(BadCredentials):
                auth_service.authenticate_client(session, cid, sec)


def test_purge_forgets_only_revocations_whose_tokens_are_all_dead(services):
    signer = services.signer
    with write_session(services.sessions) as session:
        auth_service.create_user(session, "alice", "pw")
    backdate_user(services, "ALICE", hours=20)
    old = signer.issue("ALICE", now=time.time() - 9 * 3600).claims  # its refresh window closed an hour ago
    recent = signer.issue("ALICE").claims
    with write_session(services.sessions) as session:
        auth_service.revoke_session(session, old, signer.max_age_s)
        auth_service.revoke_session(session, recent, signer.max_age_s)
        auth_service.revoke_session(session, recent, signer.max_age_s)  # twice is fine
    with write_session(services.sessions) as session:
        assert auth_service.purge_revoked(session) == 1
    with services.sessions() as session:
        assert list(session.scalars(select(RevokedSession.sid))) == [recent.sid]
        with pytest.raises(TokenInvalid, match="revoked"):
            auth_service.check_session(session, recent)
