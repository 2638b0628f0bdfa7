"""TokenSigner on its own: lifetimes, the refresh window, and every way a token can be refused."""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable
from types import SimpleNamespace

import jwt
import pytest

import server.auth.tokens as tokens_module
from server.auth.errors import RefreshDenied, TokenInvalid
from server.auth.tokens import TokenSigner
from tests.server.jwts import HS256_HEADER, craft, header_of, payload_of, with_payload

KEY = secrets.token_bytes(32)
HOUR = 3600
T0 = 1_700_000_000  # a whole second, so the arithmetic below is exact


def signer() -> TokenSigner:
    return TokenSigner(KEY)


def test_issue_gives_one_hour_and_a_new_session_each_time():
    s = signer()
    first, second = s.issue("ALICE"), s.issue("ALICE")
    assert first.expires_in == HOUR and second.expires_in == HOUR
    assert first.claims.sid != second.claims.sid
    assert first.token.startswith("eyJ")
    claims = s.decode(first.token)
    assert claims == first.claims
    assert claims.user == "ALICE" and claims.client_id is None
    assert claims.expires_at - int(claims.first_issued_at) == HOUR


def test_the_session_start_is_kept_to_the_millisecond():
    """A password change refuses sessions begun before it; whole seconds could not tell them apart."""
    s = signer()
    start = int(time.time())
    issued = s.issue("ALICE", now=start + 0.1239)
    assert issued.claims.first_issued_ms == start * 1000 + 123
    assert s.decode(issued.token).first_issued_ms == start * 1000 + 123
    assert issued.claims.expires_at == start + HOUR  # exp stays in whole seconds, as JWT wants
    assert s.refresh(issued.claims, now=start + 10).claims.first_issued_ms == start * 1000 + 123


def test_client_token_carries_the_client_id():
    s = signer()
    issued = s.issue("ALICE", client_id="cid-123")
    assert s.decode(issued.token).client_id == "cid-123"
    assert s.decode(s.refresh(issued.claims).token).client_id == "cid-123"


def test_refresh_gives_one_more_hour_and_keeps_the_session():
    s = signer()
    first = s.issue("ALICE", now=T0)
    later = s.refresh(first.claims, now=T0 + 1800)
    assert later.expires_in == HOUR
    assert later.claims.expires_at == T0 + 1800 + HOUR
    assert later.claims.sid == first.claims.sid
    assert later.claims.first_issued_at == first.claims.first_issued_at
    assert later.claims.user == "ALICE"


def test_refresh_chain_never_passes_eight_hours_after_the_first_issue():
    s = signer()
    claims = s.issue("ALICE", now=T0).claims
    deadline = T0 + 8 * HOUR
    seen = []
    now = T0
    while True:
        now += HOUR - 60  # refresh a minute before each expiry
        try:
            issued = s.refresh(claims, now=now)
        except RefreshDenied:
            break
        assert issued.claims.expires_at <= deadline
        assert issued.expires_in == issued.claims.expires_at - now
        seen.append(issued.claims.expires_at)
        claims = issued.claims
    assert seen[-1] == deadline
    assert len(seen) == 8  # 7 full hours, then the capped one
    assert now >= deadline


def test_refresh_near_the_end_of_the_window_is_capped():
    s = signer()
    first = s.issue("ALICE", now=T0)
    capped = s.refresh(first.claims, now=T0 + 7 * HOUR + 1800)
    assert capped.claims.expires_at == T0 + 8 * HOUR
    assert capped.expires_in == 1800


@pytest.mark.parametrize("after", [8 * HOUR, 8 * HOUR + 1, 24 * HOUR])
def test_refresh_after_the_window_is_denied(after):
    s = signer()
    first = s.issue("ALICE", now=T0)
    with pytest.raises(RefreshDenied):
        s.refresh(first.claims, now=T0 + after)


def test_short_configured_lifetimes_are_honoured():
    s = TokenSigner(KEY, ttl_s=60, max_age_s=150)
    first = s.issue("ALICE", now=T0)
    assert first.expires_in == 60
    assert s.refresh(first.claims, now=T0 + 50).claims.expires_at == T0 + 110
    assert s.refresh(first.claims, now=T0 + 120).claims.expires_at == T0 + 150
    with pytest.raises(RefreshDenied):
        s.refresh(first.claims, now=T0 + 150)


def test_expired_token_is_refused_with_a_message_saying_so():
    s = signer()
    old = s.issue("ALICE", now=time.time() - HOUR - 5)
    with pytest.raises(TokenInvalid, match="expired"):
        s.decode(old.token)


def test_tokens_are_short_enough_for_old_apex():
    s = signer()
    longest_name = "U" + "X" * 29
    issued = s.issue(longest_name, client_id=secrets.token_urlsafe(12))
    assert len(issued.token) < 255
    assert len(s.refresh(issued.claims).token) < 255


#: Variants of a valid token (and its claims) that must all be refused.
FORGERIES: dict[str, Callable[[str, dict], str]] = {
    "tampered sub": lambda t, c: with_payload(t, {**c, "sub": "ADMIN"}),
    "tampered exp": lambda t, c: with_payload(t, {**c, "exp": c["exp"] + 10 * HOUR}),
    "alg none": lambda t, c: craft({"alg": "none", "typ": "JWT"}, c, None),
    "alg none, upper case": lambda t, c: craft({"alg": "NONE", "typ": "JWT"}, c, None),
    "wrong key": lambda t, c: craft(HS256_HEADER, c, secrets.token_bytes(32)),
    "HS512 header, HS256 signature": lambda t, c: craft({"alg": "HS512", "typ": "JWT"}, c, KEY),
    "HS512 header and signature": lambda t, c: craft({"alg": "HS512", "typ": "JWT"}, c, KEY, "sha512"),
    "RS256 header, HS256 signature": lambda t, c: craft({"alg": "RS256", "typ": "JWT"}, c, KEY),
    "signature dropped": lambda t, c: t.rsplit(".", 1)[0] + ".",
    "garbage": lambda t, c: "not-a-jwt",
    "empty": lambda t, c: "",
    "two parts": lambda t, c: ".".join(t.split(".")[:2]),
}


@pytest.mark.parametrize("kind", list(FORGERIES))
def test_forged_tokens_are_refused(kind):
    s = signer()
    token = s.issue("ALICE").token
    forged = FORGERIES[kind](token, payload_of(token))
    assert forged != token
    with pytest.raises(TokenInvalid):
        s.decode(forged)


def test_the_crafting_helper_makes_tokens_the_signer_accepts():
    """Guards the forgery test above: a correctly crafted token passes, so refusals are for the right reason."""
    s = signer()
    token = s.issue("ALICE").token
    assert header_of(token)["alg"] == "HS256"
    assert s.decode(craft(HS256_HEADER, payload_of(token), KEY)).user == "ALICE"


@pytest.mark.parametrize("missing", ["sub", "sid", "exp", "oat"])
def test_tokens_missing_a_required_claim_are_refused(missing):
    s = signer()
    claims = payload_of(s.issue("ALICE").token)
    del claims[missing]
    with pytest.raises(TokenInvalid):
        s.decode(craft(HS256_HEADER, claims, KEY))


@pytest.mark.parametrize("bad", [{"oat": "yesterday"}, {"exp": "soon"}, {"oat": None}])
def test_tokens_with_malformed_claims_are_refused(bad):
    s = signer()
    claims = {**payload_of(s.issue("ALICE").token), **bad}
    with pytest.raises(TokenInvalid):
        s.decode(craft(HS256_HEADER, claims, KEY))


def test_tokens_are_plain_hs256_jwts():
    """Any JWT library verifies them with the key (nothing pyqd-specific in the envelope)."""
    token = signer().issue("ALICE").token
    assert jwt.decode(token, KEY, algorithms=["HS256"])["sub"] == "ALICE"


def test_a_token_verified_before_is_still_refused_once_it_expires(monkeypatch):
    """decode() remembers verified tokens; the expiry check must still apply to a remembered one."""
    s = signer()
    issued = s.issue("ALICE", ttl_s=60)
    assert s.decode(issued.token) == issued.claims
    assert s.decode(issued.token) == issued.claims
    later = issued.claims.expires_at
    monkeypatch.setattr(tokens_module, "time", SimpleNamespace(time=lambda: later))  # this module's clock only
    with pytest.raises(TokenInvalid, match="expired"):
        s.decode(issued.token)


def test_a_tampered_copy_of_a_verified_token_is_refused():
    s = signer()
    issued = s.issue("ALICE")
    s.decode(issued.token)
    head, body, sig = issued.token.split(".")
    with pytest.raises(TokenInvalid):
        s.decode(f"{head}.{body}.{sig[:-2]}{'A' if sig[-2] != 'A' else 'B'}{sig[-1]}")
