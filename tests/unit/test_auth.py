"""Tokens: scopes, expiry, signature, and the `alg=none` trick."""

from __future__ import annotations

import base64
import json

import jwt
import pytest
from fastapi import HTTPException

from shared.auth import decode_token, mint_token

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
def test_bad_tokens_are_refused_with_401(token_of, detail: str) -> None:  # type: ignore[no-untyped-def]
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
