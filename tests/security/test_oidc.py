"""Production tokens: the bank's OIDC provider, its JWKS over real HTTP, key rotation."""

from __future__ import annotations

import asyncio
import base64
import json
from typing import Annotated, Any

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from fastapi import APIRouter, HTTPException

from shared.app import ServiceRuntime, create_service_app
from shared.auth import Principal, ServiceTokens, TokenVerifier, mint_token, require
from shared.settings import DEV_JWT_SECRET, PlatformSettings, ServiceSettings
from tests.security.idp import IdentityProvider, SigningKey


def oidc_settings(idp: IdentityProvider, **kw: Any) -> PlatformSettings:
    return PlatformSettings(auth_mode="oidc", oidc_issuer=idp.issuer,
                            oidc_jwks_min_refresh_seconds=kw.pop("min_refresh", 0.0), **kw)


async def refused(verifier: TokenVerifier, token: str) -> str:
    with pytest.raises(HTTPException) as caught:
        await verifier.verify(token)
    assert caught.value.status_code == 401
    return str(caught.value.detail)


async def test_provider_tokens_are_verified_with_keys_found_by_discovery() -> None:
    async with IdentityProvider() as idp:
        verifier = TokenVerifier(oidc_settings(idp))
        rsa_key, ec_key = idp.keys
        person = await verifier.verify(idp.token(rsa_key, rm_id="RM7", scope="profile:read"))
        assert (person.subject, person.kind, person.rm_id) == ("u-anna", "person", "RM7")
        assert person.has("profile:read") and not person.has("profile:admin")
        service = await verifier.verify(idp.token(ec_key, sub="svc-crm", client_id="svc-crm",
                                                  scope=None, scp=["scoring:read"]))
        assert service.kind == "service" and service.has("scoring:read")
        assert idp.jwks_requests == 1  # the keys are cached between tokens


async def test_issuer_audience_expiry_and_signature_are_checked() -> None:
    async with IdentityProvider() as idp:
        verifier = TokenVerifier(oidc_settings(idp))
        assert await refused(verifier, idp.token(iss="http://127.0.0.1:1/realms/evil")) == (
            "invalid token: InvalidIssuerError")
        assert await refused(verifier, idp.token(aud="another-app")) == (
            "invalid token: InvalidAudienceError")
        assert await refused(verifier, idp.token(ttl=-120)) == "token expired"
        # Signed by a key of the same kid the provider never held: the signature fails.
        impostor = SigningKey.new("RS256")
        impostor.kid = idp.keys[0].kid
        assert await refused(verifier, idp.token(impostor)) == (
            "invalid token: InvalidSignatureError")


async def test_symmetric_and_unsigned_tokens_are_refused_in_oidc_mode() -> None:
    async with IdentityProvider() as idp:
        verifier = TokenVerifier(oidc_settings(idp))
        await verifier.verify(idp.token())
        dev = mint_token(DEV_JWT_SECRET, subject="x", scopes=["*"])
        assert "InvalidAlgorithmError" in await refused(verifier, dev)
        # The classic confusion: HS256 keyed with the provider's public key.
        public_pem = idp.keys[0].private.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        claims = jwt.decode(idp.token(scope="*"), options={"verify_signature": False})
        forged = _sign_hs256(claims, public_pem, kid=idp.keys[0].kid)
        assert "InvalidAlgorithmError" in await refused(verifier, forged)
        assert "InvalidAlgorithmError" in await refused(verifier, _unsigned(claims,
                                                                            idp.keys[0].kid))
        assert "invalid token" in await refused(verifier, "not.a.jwt")


async def test_a_rotated_key_is_fetched_and_an_unknown_kid_is_refused() -> None:
    async with IdentityProvider() as idp:
        verifier = TokenVerifier(oidc_settings(idp, min_refresh=0.0))
        await verifier.verify(idp.token())
        assert idp.jwks_requests == 1
        new_key = idp.rotate("ES256")
        principal = await verifier.verify(idp.token(new_key, sub="u-ben"))
        assert principal.subject == "u-ben" and idp.jwks_requests == 2
        stranger = SigningKey.new("RS256")
        assert await refused(verifier, idp.token(stranger)) == (
            "invalid token: unknown signing key")
        assert idp.jwks_requests == 3  # it looked once more before refusing


async def test_concurrent_requests_share_one_fetch_of_a_rotated_key() -> None:
    async with IdentityProvider() as idp:
        verifier = TokenVerifier(oidc_settings(idp, min_refresh=0.0))
        await verifier.verify(idp.token())
        new_key = idp.rotate("RS256")
        tokens = [idp.token(new_key, sub=f"u-{i}") for i in range(10)]
        principals = await asyncio.gather(*(verifier.verify(t) for t in tokens))
        assert [p.subject for p in principals] == [f"u-{i}" for i in range(10)]
        assert idp.jwks_requests == 2


async def test_made_up_kids_cannot_hammer_the_provider() -> None:
    async with IdentityProvider() as idp:
        verifier = TokenVerifier(oidc_settings(idp, min_refresh=3600.0))
        await verifier.verify(idp.token())
        for _ in range(5):
            await refused(verifier, idp.token(SigningKey.new("RS256")))
        assert idp.jwks_requests == 1


async def test_keys_already_held_survive_an_unreachable_provider() -> None:
    idp = IdentityProvider()
    async with idp:
        verifier = TokenVerifier(oidc_settings(idp, oidc_jwks_ttl_seconds=0.001))
        token = idp.token()
        await verifier.verify(token)
    # The provider is gone and the cache is stale: the known key still verifies.
    assert (await verifier.verify(token)).subject == "u-anna"
    cold = TokenVerifier(oidc_settings(idp))
    with pytest.raises(HTTPException) as caught:
        await cold.verify(token)
    assert caught.value.status_code == 503


async def test_a_service_in_oidc_mode_answers_problems_over_http() -> None:
    async with IdentityProvider() as idp:
        router = APIRouter()

        @router.get("/v1/probe")
        async def probe(p: Annotated[Principal, require("profile:read")]) -> dict[str, str]:
            return {"subject": p.subject}

        settings = ServiceSettings(auth_mode="oidc", oidc_issuer=idp.issuer)
        app = create_service_app(settings=settings, build_runtime=_no_runtime,
                                 routers=[router], title="probe", description="probe")
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            ok = await client.get("/v1/probe", headers={"Authorization":
                                                        f"Bearer {idp.token()}"})
            assert ok.status_code == 200 and ok.json() == {"subject": "u-anna"}
            dev = mint_token(DEV_JWT_SECRET, subject="x", scopes=["profile:read"])
            bad = await client.get("/v1/probe", headers={"Authorization": f"Bearer {dev}"})
            assert bad.status_code == 401
            assert bad.headers["content-type"] == "application/problem+json"
            assert bad.headers["www-authenticate"] == 'Bearer error="invalid_token"'


def test_oidc_mode_without_an_issuer_fails_at_start() -> None:
    with pytest.raises(ValueError, match="TENURE_OIDC_ISSUER"):
        TokenVerifier(PlatformSettings(auth_mode="oidc"))


def _no_runtime(settings: ServiceSettings) -> ServiceRuntime:
    raise AssertionError("the lifespan does not run in this test")


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def _sign_hs256(claims: dict[str, Any], key: bytes, *, kid: str) -> str:
    import hashlib
    import hmac

    head = _b64(json.dumps({"alg": "HS256", "typ": "JWT", "kid": kid}).encode())
    body = _b64(json.dumps(claims).encode())
    mac = hmac.new(key, f"{head}.{body}".encode(), hashlib.sha256).digest()
    return f"{head}.{body}.{_b64(mac)}"


def _unsigned(claims: dict[str, Any], kid: str) -> str:
    head = _b64(json.dumps({"alg": "none", "typ": "JWT", "kid": kid}).encode())
    return f"{head}.{_b64(json.dumps(claims).encode())}."


async def test_a_service_gets_its_own_token_by_client_credentials() -> None:
    async with IdentityProvider() as idp:
        settings = oidc_settings(idp, oidc_client_id="tenure-engagement",
                                 oidc_client_secret="s3cret")
        tokens = ServiceTokens(settings, subject="engagement-delivery",
                               scopes=["profile:read", "pii:read"])
        first = await tokens.get()
        assert await tokens.get() == first and idp.token_requests == 1  # reused until expiry
        principal = await TokenVerifier(settings).verify(first)
        assert principal.kind == "service" and principal.subject == "tenure-engagement"
        assert principal.has("pii:read")
        wrong = ServiceTokens(oidc_settings(idp, oidc_client_id="tenure-engagement",
                                            oidc_client_secret="guess"),
                              subject="x", scopes=["profile:read"])
        with pytest.raises(httpx.HTTPStatusError):
            await wrong.get()


async def test_dev_mode_service_tokens_are_minted_locally() -> None:
    settings = PlatformSettings()
    token = await ServiceTokens(settings, subject="engagement-delivery",
                                scopes=["profile:read"]).get()
    principal = await TokenVerifier(settings).verify(token)
    assert principal.kind == "service" and principal.subject == "engagement-delivery"


async def test_churn_report_asks_the_provider_for_its_token_in_oidc_mode() -> None:
    from tenure_cli.report import REPORT_SCOPES, report_token

    async with IdentityProvider(clients={"tenure-reports": "s3cret"}) as idp:
        settings = oidc_settings(idp, oidc_client_id="tenure-reports",
                                 oidc_client_secret="s3cret")
        principal = await TokenVerifier(settings).verify(await report_token(settings))
        assert idp.token_requests == 1, "client credentials, not a dev key"
        assert principal.kind == "service" and principal.subject == "tenure-reports"
        assert all(principal.has(scope) for scope in REPORT_SCOPES)
    dev = PlatformSettings()
    minted = await TokenVerifier(dev).verify(await report_token(dev))
    assert minted.subject == "churn-report" and minted.has("scoring:read")


async def test_churn_report_presents_a_current_token_on_every_request() -> None:
    """Waiting for the platform to catch up can outlast one five-minute dev token: each
    request asks for the current one (ServiceTokens mints or renews as needed)."""
    from tenure_cli.report import BearerAuth

    class Counting(ServiceTokens):
        def __init__(self) -> None:
            super().__init__(PlatformSettings(), subject="churn-report", scopes=["scoring:read"])
            self.calls = 0

        async def get(self) -> str:
            self.calls += 1
            return f"token-{self.calls}"

    seen: list[str] = []

    def answer(request: httpx.Request) -> httpx.Response:
        seen.append(request.headers["Authorization"])
        return httpx.Response(200, json={})

    async with httpx.AsyncClient(auth=BearerAuth(Counting()),
                                 transport=httpx.MockTransport(answer)) as client:
        for _ in range(3):
            await client.get("http://scoring.test/readyz")
    assert seen == ["Bearer token-1", "Bearer token-2", "Bearer token-3"]
