"""Bearer tokens with scopes: the bank's OIDC identity provider in production (RS256/ES256,
keys from its JWKS), the dev HS256 key locally; person versus service principals and the
relationship manager's book. Every route but health, readiness and metrics needs a token
(docs/security.md)."""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from typing import Annotated, Any, Literal

import httpx
import jwt
from fastapi import Depends, HTTPException, Request, Security
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from shared.ratelimit import RateLimiter
from shared.settings import PlatformSettings

log = logging.getLogger("tenure.auth")

DEV_ALGORITHMS = ["HS256"]
# Asymmetric only: an HMAC algorithm here would let a caller sign with the public key.
ASYMMETRIC = {"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512"}
# Clock skew tolerated between the identity provider and us (dev tokens are minted here).
LEEWAY_SECONDS = 30
ALL_BOOKS = "all-books"

_bearer = HTTPBearer(
    auto_error=False,
    scheme_name="bearer",
    bearerFormat="JWT",
    description="A JWT from the bank's identity provider (OIDC; dev: `tenure token`). Its "
    "`scope` claim must hold the scope each operation lists; `<service>:*` holds them all.",
)


@dataclass(frozen=True)
class Principal:
    subject: str
    scopes: frozenset[str]
    kind: Literal["person", "service"]
    rm_id: str | None = None

    def has(self, scope: str) -> bool:
        service, _, _ = scope.partition(":")
        return scope in self.scopes or f"{service}:*" in self.scopes or "*" in self.scopes

    def book(self, service: str) -> str | None:
        """The relationship manager whose customers alone this principal may see, or None.

        A person token carrying an `rm_id` is a relationship manager's: it sees the customers
        of that book unless it also holds `<service>:all-books`. Service tokens and person
        tokens without an `rm_id` (back-office roles) are governed by their scopes alone.

        >>> rm = Principal("rm-7", frozenset({"profile:read"}), "person", "RM7")
        >>> rm.book("profile"), Principal("s", frozenset(), "service", "RM7").book("profile")
        ('RM7', None)
        """
        if self.kind != "person" or not self.rm_id or self.has(f"{service}:{ALL_BOOKS}"):
            return None
        return self.rm_id

    def ensure_in_book(self, service: str, customer_rm_id: str | None) -> None:
        """403 unless the customer (whose RM is `customer_rm_id`) is in this principal's book."""
        book = self.book(service)
        if book is not None and customer_rm_id != book:
            raise HTTPException(403, "this customer is not in your book")

    def ensure_all_books(self, service: str) -> None:
        """403 for a book-limited token where the service cannot tell a customer's RM."""
        if self.book(service) is not None:
            raise HTTPException(
                403, f"{service} cannot tell which relationship manager a customer has: a "
                f"book-limited token needs {service}:{ALL_BOOKS} here (profile's 360° view "
                "shows the stage of a customer in your book)")


def mint_token(
    secret: str,
    *,
    subject: str,
    scopes: list[str],
    kind: Literal["person", "service"] = "person",
    ttl_seconds: int = 8 * 3600,
    audience: str = "tenure",
    rm_id: str | None = None,
) -> str:
    """A dev token signed with the shared HS256 key (`tenure token`; tests)."""
    now = int(time.time())
    claims: dict[str, Any] = {
        "sub": subject,
        "scope": " ".join(scopes),
        "kind": kind,
        "aud": audience,
        "iat": now,
        "exp": now + ttl_seconds,
    }
    if rm_id:
        claims["rm_id"] = rm_id
    return jwt.encode(claims, secret, algorithm="HS256")


# RFC 6750 §3: a missing token gets a bare challenge, a bad one says it is invalid.
_INVALID = {"WWW-Authenticate": 'Bearer error="invalid_token"'}


def _refused(exc: jwt.InvalidTokenError) -> HTTPException:
    if isinstance(exc, jwt.ExpiredSignatureError):
        return HTTPException(401, "token expired", headers=_INVALID)
    return HTTPException(401, f"invalid token: {type(exc).__name__}", headers=_INVALID)


def principal_of(claims: dict[str, Any], *, rm_claim: str = "rm_id") -> Principal:
    """Who the verified claims speak for.

    Scopes come from `scope` (space-separated, RFC 8693) or `scp` (a list). A token is a
    service's when it says so (`kind`), or when its subject is the OAuth client itself
    (`client_id`/`azp` equal to `sub`: the client-credentials grant, RFC 9068); anything
    else is a person's, the stricter case (audited, limited to a book).

    >>> principal_of({"sub": "svc", "client_id": "svc", "scp": ["a:read"]}).kind
    'service'
    >>> principal_of({"sub": "u1", "azp": "console", "scope": "a:read b:read"}).scopes == {
    ...     "a:read", "b:read"}
    True
    """
    raw_scopes = claims.get("scope") or claims.get("scp") or ""
    if isinstance(raw_scopes, str):
        scopes = frozenset(raw_scopes.split())
    elif isinstance(raw_scopes, list):
        scopes = frozenset(str(s) for s in raw_scopes)
    else:
        scopes = frozenset()
    subject = str(claims["sub"])
    declared = claims.get("kind")
    if declared in ("person", "service"):
        kind: Literal["person", "service"] = declared
    elif subject in (claims.get("client_id"), claims.get("azp")):
        kind = "service"
    else:
        kind = "person"
    rm = claims.get(rm_claim)
    return Principal(subject=subject, scopes=scopes, kind=kind,
                     rm_id=str(rm)[:64] if isinstance(rm, str | int) and rm != "" else None)


def decode_token(token: str, *, secret: str, audience: str) -> Principal:
    """Verify a dev (HS256) token; a 401 HTTPException says why not."""
    try:
        claims = jwt.decode(
            token,
            secret,
            algorithms=DEV_ALGORITHMS,
            audience=audience,
            options={"require": ["exp", "sub", "aud"]},
        )
    except jwt.InvalidTokenError as exc:
        raise _refused(exc) from None
    return principal_of(claims)


class JwksCache:
    """The identity provider's signing keys by `kid`, fetched over HTTPS and cached.

    Keys are refreshed when the cache is older than `ttl`, and at once when a token names a
    `kid` the cache lacks (the provider rotated its keys), but no more often than every
    `min_refresh` seconds, so tokens with made-up kids cannot hammer the provider. When the
    provider is unreachable the keys already held keep working.
    """

    def __init__(
        self, *, issuer: str, jwks_url: str = "", ttl: float = 600.0,
        min_refresh: float = 10.0, timeout: float = 5.0,
    ):
        self.issuer = issuer
        self.jwks_url = jwks_url
        self.ttl = ttl
        self.min_refresh = min_refresh
        self.timeout = timeout
        self.keys: dict[str, jwt.PyJWK] = {}
        self.fetched_at: float | None = None
        self.fetches = 0
        self._lock = asyncio.Lock()

    async def key(self, kid: str) -> jwt.PyJWK:
        if self._needs_fetch(kid):
            async with self._lock:
                # Checked again under the lock: requests that waited for another's fetch
                # use its result instead of fetching once each.
                if self._needs_fetch(kid):
                    await self._refresh()
        found = self.keys.get(kid)
        if found is None:
            raise HTTPException(401, "invalid token: unknown signing key", headers=_INVALID)
        return found

    def _needs_fetch(self, kid: str) -> bool:
        if self.fetched_at is None:
            return True
        age = time.monotonic() - self.fetched_at
        # stale, or a kid we lack (rotation) unless we fetched a moment ago (a kid storm)
        return age > self.ttl or (kid not in self.keys and age >= self.min_refresh)

    async def _refresh(self) -> None:
        now = time.monotonic()
        self.fetches += 1
        try:
            self.keys = await self._fetch()
        except (httpx.HTTPError, ValueError, jwt.PyJWKSetError) as exc:
            log.warning("identity provider keys not refreshed",
                        extra={"reason": type(exc).__name__})
            if not self.keys:
                raise HTTPException(503, "the identity provider's keys are unavailable",
                                    headers={"Retry-After": "5"}) from None
            # Keep the keys held, and try again after min_refresh rather than a whole ttl.
            self.fetched_at = now - self.ttl + self.min_refresh
            return
        self.fetched_at = now

    async def _fetch(self) -> dict[str, jwt.PyJWK]:
        async with httpx.AsyncClient(timeout=self.timeout, follow_redirects=False) as client:
            url = self.jwks_url
            if not url:
                # OIDC discovery: the issuer publishes where its keys are.
                meta = (await client.get(
                    self.issuer.rstrip("/") + "/.well-known/openid-configuration"
                )).raise_for_status().json()
                if meta.get("issuer") != self.issuer:
                    raise ValueError("discovery document names another issuer")
                url = str(meta["jwks_uri"])
            document = (await client.get(url)).raise_for_status().json()
        keys: dict[str, jwt.PyJWK] = {}
        for jwk in document.get("keys", []):
            if jwk.get("use", "sig") != "sig" or not jwk.get("kid"):
                continue
            try:
                keys[str(jwk["kid"])] = jwt.PyJWK(jwk)
            except (jwt.PyJWKError, jwt.InvalidKeyError):
                continue  # a key type we do not use; the others still count
        return keys


class TokenVerifier:
    """Turns a bearer token into a Principal the way the settings say (dev or OIDC)."""

    def __init__(self, settings: PlatformSettings):
        self.mode = settings.auth_mode
        self.audience = settings.jwt_audience
        self.secret = settings.jwt_secret
        self.issuer = settings.oidc_issuer
        self.rm_claim = settings.oidc_rm_claim
        self.algorithms = [a for a in settings.oidc_algorithms if a in ASYMMETRIC]
        self.jwks: JwksCache | None = None
        if self.mode == "oidc":
            if not self.issuer or not self.algorithms:
                raise ValueError("TENURE_AUTH_MODE=oidc needs TENURE_OIDC_ISSUER and at least "
                                 f"one of {sorted(ASYMMETRIC)} in TENURE_OIDC_ALGORITHMS")
            self.jwks = JwksCache(
                issuer=self.issuer, jwks_url=settings.oidc_jwks_url,
                ttl=settings.oidc_jwks_ttl_seconds,
                min_refresh=settings.oidc_jwks_min_refresh_seconds,
            )

    async def verify(self, token: str) -> Principal:
        if self.jwks is None:
            return decode_token(token, secret=self.secret, audience=self.audience)
        try:
            header = jwt.get_unverified_header(token)
        except jwt.InvalidTokenError as exc:
            raise _refused(exc) from None
        alg, kid = header.get("alg"), header.get("kid")
        if alg not in self.algorithms:
            raise _refused(jwt.InvalidAlgorithmError())
        if not isinstance(kid, str) or not kid:
            raise _refused(jwt.InvalidKeyError())
        key = await self.jwks.key(kid)
        try:
            claims = jwt.decode(
                token,
                key.key,
                algorithms=[alg],
                audience=self.audience,
                issuer=self.issuer,
                leeway=LEEWAY_SECONDS,
                options={"require": ["exp", "iat", "sub", "aud", "iss"]},
            )
        except jwt.InvalidTokenError as exc:
            raise _refused(exc) from None
        return principal_of(claims, rm_claim=self.rm_claim)


class ServiceTokens:
    """The bearer token this process presents when it calls another service.

    Dev mode mints a short-lived service token with the dev key. OIDC mode asks the identity
    provider for one with the client-credentials grant (TENURE_OIDC_CLIENT_ID and _SECRET;
    the token endpoint from TENURE_OIDC_TOKEN_URL or discovery) and reuses it until a minute
    before it expires. The provider must put the tenure audience in such tokens.
    """

    def __init__(self, settings: PlatformSettings, *, subject: str, scopes: list[str]):
        self.settings = settings
        self.subject = subject
        self.scopes = scopes
        self._token: str | None = None
        self._expires = 0.0
        self._lock = asyncio.Lock()

    async def get(self) -> str:
        s = self.settings
        if s.auth_mode != "oidc":
            return mint_token(s.jwt_secret, subject=self.subject, kind="service",
                              scopes=self.scopes, audience=s.jwt_audience, ttl_seconds=300)
        async with self._lock:
            if self._token is None or time.monotonic() > self._expires - 60:
                self._token, lifetime = await self._grant()
                self._expires = time.monotonic() + lifetime
            return self._token

    async def _grant(self) -> tuple[str, float]:
        s = self.settings
        if not s.oidc_client_id or not s.oidc_client_secret:
            raise RuntimeError("TENURE_OIDC_CLIENT_ID and TENURE_OIDC_CLIENT_SECRET are needed "
                               "to call other services in oidc mode")
        async with httpx.AsyncClient(timeout=10.0, follow_redirects=False) as client:
            url = s.oidc_token_url
            if not url:
                meta = (await client.get(
                    s.oidc_issuer.rstrip("/") + "/.well-known/openid-configuration"
                )).raise_for_status().json()
                url = str(meta["token_endpoint"])
            answer = (await client.post(
                url, data={"grant_type": "client_credentials", "scope": " ".join(self.scopes)},
                auth=(s.oidc_client_id, s.oidc_client_secret),
            )).raise_for_status().json()
        return str(answer["access_token"]), float(answer.get("expires_in", 300))


def _verifier(request: Request) -> TokenVerifier:
    state = request.app.state
    verifier: TokenVerifier | None = getattr(state, "verifier", None)
    if verifier is None:
        verifier = state.verifier = TokenVerifier(state.settings)
    return verifier


async def current_principal(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Principal:
    if credentials is None or credentials.scheme.lower() != "bearer":
        raise HTTPException(401, "missing bearer token", headers={"WWW-Authenticate": "Bearer"})
    principal = await _verifier(request).verify(credentials.credentials)
    limiter: RateLimiter | None = getattr(request.app.state, "rate_limiter", None)
    if limiter is not None:
        wait = limiter.take(f"{principal.kind}:{principal.subject}")
        if wait > 0:
            raise HTTPException(429, "rate limit exceeded for this token",
                                headers={"Retry-After": RateLimiter.retry_after(wait)})
    return principal


def require(scope: str) -> Any:
    """A dependency that admits a principal holding `scope` (or `<service>:*`); the scope is
    listed in the operation's `security` in OpenAPI."""

    async def check(principal: Annotated[Principal, Depends(current_principal)]) -> Principal:
        if not principal.has(scope):
            raise HTTPException(403, f"this route needs the scope {scope!r}", headers={
                "WWW-Authenticate": f'Bearer error="insufficient_scope", scope="{scope}"'})
        return principal

    check.__name__ = f"require_{scope.replace(':', '_').replace('-', '_')}"
    return Security(check, scopes=[scope])
