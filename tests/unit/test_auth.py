"""Tokens: scopes, expiry, signature, and the `alg=none` trick."""

from __future__ import annotations

import base64
import json
from typing import Any

import jwt
import pytest
from fastapi import HTTPException

from shared.auth import Principal, TokenVerifier, decode_token, mint_token, principal_of
from shared.ratelimit import RateLimiter
from shared.settings import PlatformSettings

SECRET = "unit-test-secret-key-of-enough-length-123"


def test_minted_token_round_trips_scopes_and_kind() -> None:
    token = mint_token(SECRET, subject="rm-7", scopes=["profile:read", "pii:read"], rm_id="RM7")
    p = decode_token(token, secret=SECRET, audience="tenure")
    assert p.subject == "rm-7" and p.kind == "person" and p.rm_id == "RM7"
    assert p.has("profile:read") and p.has("pii:read") and not p.has("scoring:read")


def test_service_wildcard_scope() -> None:
    p = decode_token(mint_token(SECRET, subject="s", scopes=["profile:*"]), secret=SECRET,
                     audience="tenure")
    assert p.has("profile:read") and p.has("profile:write") and not p.has("scoring:read")


@pytest.mark.parametrize(
    ("token_of", "detail"),
    [
        (lambda: mint_token(SECRET, subject="x", scopes=[], ttl_seconds=-10), "token expired"),
        (lambda: mint_token("another-secret-key-of-enough-length-456", subject="x", scopes=[]),
         "invalid token: InvalidSignatureError"),
        (lambda: mint_token(SECRET, subject="x", scopes=[], audience="other"),
         "invalid token: InvalidAudienceError"),
        (lambda: _unsigned({"sub": "x", "aud": "tenure", "exp": 9999999999, "scope": "*"}),
         "invalid token"),
    ],
)
def test_bad_tokens_are_refused_with_401(token_of: Any, detail: str) -> None:
    with pytest.raises(HTTPException) as caught:
        decode_token(token_of(), secret=SECRET, audience="tenure")
    assert caught.value.status_code == 401
    assert caught.value.detail.startswith(detail)


def _unsigned(claims: dict) -> str:
    def b64(d: dict) -> str:
        return base64.urlsafe_b64encode(json.dumps(d).encode()).decode().rstrip("=")

    return f"{b64({'alg': 'none', 'typ': 'JWT'})}.{b64(claims)}."


def test_pyjwt_is_not_tricked_by_alg_none() -> None:
    with pytest.raises(jwt.InvalidTokenError):
        jwt.decode(_unsigned({"sub": "x"}), SECRET, algorithms=["HS256"])


# ---------------------------------------------------------------- who the claims speak for


@pytest.mark.parametrize(
    ("claims", "kind"),
    [
        ({"sub": "u1"}, "person"),
        ({"sub": "u1", "kind": "service"}, "service"),
        ({"sub": "crm", "client_id": "crm"}, "service"),  # client credentials (RFC 9068)
        ({"sub": "crm", "azp": "crm"}, "service"),
        ({"sub": "u1", "azp": "console"}, "person"),  # a person through an app
        ({"sub": "u1", "kind": "robot"}, "person"),  # unknown kinds get the stricter case
    ],
)
def test_persons_and_services_are_told_apart(claims: dict, kind: str) -> None:
    assert principal_of(claims).kind == kind


def test_scopes_from_scope_or_scp_and_the_rm_claim() -> None:
    p = principal_of({"sub": "u", "scope": None, "scp": ["a:read", "b:read"],
                      "branch_rm": "RM9"}, rm_claim="branch_rm")
    assert p.scopes == {"a:read", "b:read"} and p.rm_id == "RM9"
    assert principal_of({"sub": "u", "scope": 42}).scopes == frozenset()
    assert principal_of({"sub": "u", "rm_id": ""}).rm_id is None


def test_a_relationship_manager_is_kept_to_their_book() -> None:
    rm = Principal("rm-7", frozenset({"profile:read", "scoring:all-books"}), "person", "RM7")
    assert rm.book("profile") == "RM7" and rm.book("scoring") is None
    rm.ensure_in_book("profile", "RM7")
    with pytest.raises(HTTPException) as caught:
        rm.ensure_in_book("profile", "RM8")
    assert caught.value.status_code == 403
    with pytest.raises(HTTPException):
        rm.ensure_in_book("profile", None)  # a customer without an RM is nobody's book
    with pytest.raises(HTTPException):
        rm.ensure_all_books("lifecycle")
    rm.ensure_all_books("scoring")
    admin = Principal("ops", frozenset({"profile:*"}), "person", "RM7")
    assert admin.book("profile") is None  # the wildcard includes all-books
    backoffice = Principal("bo", frozenset({"profile:read"}), "person", None)
    service = Principal("crm", frozenset({"profile:read"}), "service", "RM7")
    assert backoffice.book("profile") is None and service.book("profile") is None


async def test_dev_mode_verifier_checks_the_dev_key() -> None:
    verifier = TokenVerifier(PlatformSettings(jwt_secret=SECRET))
    principal = await verifier.verify(mint_token(SECRET, subject="s", scopes=["a:read"],
                                                 kind="service"))
    assert principal.kind == "service"
    with pytest.raises(HTTPException) as caught:
        await verifier.verify(_unsigned({"sub": "x", "aud": "tenure", "exp": 9999999999}))
    assert caught.value.status_code == 401


def test_oidc_mode_refuses_symmetric_algorithms_only_configuration() -> None:
    with pytest.raises(ValueError):
        TokenVerifier(PlatformSettings(auth_mode="oidc", oidc_issuer="https://idp",
                                       oidc_algorithms=["HS256"]))


# ---------------------------------------------------------------- rate limits


def test_the_bucket_refills_at_its_rate_and_caps_at_its_burst() -> None:
    clock = [0.0]
    limiter = RateLimiter(rate=2.0, burst=4, clock=lambda: clock[0])
    assert [limiter.take("t") for _ in range(4)] == [0.0] * 4
    assert limiter.take("t") == pytest.approx(0.5)
    clock[0] = 100.0  # a long pause saves up no more than the burst
    assert [limiter.take("t") for _ in range(4)] == [0.0] * 4
    assert limiter.take("t") > 0
    assert RateLimiter.retry_after(0.01) == "1" and RateLimiter.retry_after(2.2) == "3"
    assert RateLimiter(rate=0, burst=1).take("t") == 0.0  # 0 switches the limit off


def test_the_bucket_table_stays_bounded() -> None:
    limiter = RateLimiter(rate=1.0, burst=1, max_keys=3, clock=lambda: 0.0)
    for key in ("a", "b", "c", "d"):
        limiter.take(key)
    assert list(limiter._buckets) == ["b", "c", "d"]
