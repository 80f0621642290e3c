"""Bearer JWT with scopes: every route but health, readiness and metrics needs one."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Annotated, Any, Literal

import jwt
from fastapi import Depends, HTTPException, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

ALGORITHMS = ["HS256"]
_bearer = HTTPBearer(auto_error=False, description="JWT with a `scope` claim")


@dataclass(frozen=True)
class Principal:
    subject: str
    scopes: frozenset[str]
    kind: Literal["person", "service"]
    rm_id: str | None = None

    def has(self, scope: str) -> bool:
        service, _, _ = scope.partition(":")
        return scope in self.scopes or f"{service}:*" in self.scopes or "*" in self.scopes


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


def decode_token(token: str, *, secret: str, audience: str) -> Principal:
    try:
        claims = jwt.decode(
            token,
            secret,
            algorithms=ALGORITHMS,
            audience=audience,
            options={"require": ["exp", "sub", "aud"]},
        )
    except jwt.ExpiredSignatureError:
        raise HTTPException(401, "token expired") from None
    except jwt.InvalidTokenError as exc:
        raise HTTPException(401, f"invalid token: {type(exc).__name__}") from None
    scope = claims.get("scope", "")
    kind = claims.get("kind", "person")
    return Principal(
        subject=str(claims["sub"]),
        scopes=frozenset(scope.split()) if isinstance(scope, str) else frozenset(),
        kind="service" if kind == "service" else "person",
        rm_id=claims.get("rm_id"),
    )


async def current_principal(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Principal:
    if credentials is None or credentials.scheme.lower() != "bearer":
        raise HTTPException(401, "missing bearer token", headers={"WWW-Authenticate": "Bearer"})
    settings = request.app.state.settings
    return decode_token(
        credentials.credentials, secret=settings.jwt_secret, audience=settings.jwt_audience
    )


def require(scope: str) -> Any:
    """A dependency that admits a principal holding `scope` (or `<service>:*`)."""

    async def check(principal: Annotated[Principal, Depends(current_principal)]) -> Principal:
        if not principal.has(scope):
            raise HTTPException(403, f"this route needs the scope {scope!r}")
        return principal

    check.__name__ = f"require_{scope.replace(':', '_')}"
    return Depends(check)
