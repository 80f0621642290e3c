"""Every route of every service, taken from its FastAPI route table: a token is needed, its
scope is the one OpenAPI lists, and bad tokens of every kind are refused."""

from __future__ import annotations

import base64
import json
import time
import uuid
from typing import Any

import pytest
from fastapi.routing import iter_route_contexts

from shared.auth import mint_token
from shared.db import migrate
from tenure_cli.services import SERVICE_NAMES, migrations_dir
from tests.security.servers import APPS
from tests.support.platform import Namespace, token

OPEN = {"/healthz", "/readyz", "/metrics", "/openapi.json", "/docs", "/docs/oauth2-redirect",
        "/redoc"}
SAMPLES = {"customer_id": "C-ROUTE", "playbook_id": "no_such_playbook",
           "task_id": str(uuid.uuid4()), "action_id": str(uuid.uuid4()),
           "partner_id": "bank-x", "partner_customer_id": "P-1"}
# Operations whose positive control would start slow work; the gate is still tested.
NO_POSITIVE_CALL = {("POST", "/v1/model:promote")}


def secured_routes(app: Any) -> list[tuple[str, str]]:
    """(method, path template) of every API route outside the open ops endpoints, whether
    or not it is in the OpenAPI document."""
    out = []
    for route in iter_route_contexts(app.routes):  # flattens included routers
        if route.path in OPEN:
            continue
        assert route.methods, f"{route.path}: a kind of route this test cannot exercise"
        out.extend((m, route.path) for m in sorted(set(route.methods) - {"HEAD", "OPTIONS"}))
    return out


def concrete(path: str) -> str:
    for name, value in SAMPLES.items():
        path = path.replace("{" + name + "}", value)
    assert "{" not in path, f"no sample value for a parameter of {path}"
    return path


def unsigned(scope: str) -> str:
    def b64(d: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(d).encode()).decode().rstrip("=")

    claims = {"sub": "mallory", "aud": "tenure", "exp": int(time.time()) + 600,
              "scope": scope, "kind": "service"}
    return f"{b64({'alg': 'none', 'typ': 'JWT'})}.{b64(claims)}."


@pytest.mark.parametrize("name", APPS)
async def test_every_route_needs_a_valid_token_with_its_scope(
    module_ns: Namespace, name: str
) -> None:
    ns = module_ns
    if name not in SERVICE_NAMES:
        await migrate(ns.settings(name), migrations_dir(name))
    async with ns.service(name, run_consumers=False) as svc:
        openapi = (await svc.client.get("/openapi.json")).json()
        assert openapi["components"]["securitySchemes"]["bearer"]["scheme"] == "bearer"
        routes = secured_routes(svc.app)
        documented = {(m.upper(), p) for p, item in openapi["paths"].items()
                      for m, op in item.items() if p not in OPEN}
        assert set(routes) == documented, "a route is missing from OpenAPI, or the reverse"
        assert len(routes) >= 4
        customer_routes = 0
        for method, template in routes:
            op = openapi["paths"][template][method.lower()]
            assert op.get("security"), f"{method} {template} declares no security"
            [scope] = op["security"][0]["bearer"]
            for code in ("401", "403", "429"):
                assert op["responses"][code]["content"]["application/problem+json"]
            path = concrete(template)

            async def call(bearer: str | None, method: str = method, path: str = path) -> Any:
                headers = {"Authorization": f"Bearer {bearer}"} if bearer else {}
                body = {} if method in ("PUT", "POST") else None
                return await svc.client.request(method, path, headers=headers, json=body)

            where = f"{method} {template}"
            missing = await call(None)
            assert missing.status_code == 401, where
            assert missing.headers["content-type"] == "application/problem+json", where
            assert missing.headers["www-authenticate"] == "Bearer", where

            wrong = await call(token("nothing:read", kind="service"))
            assert wrong.status_code == 403, where
            assert scope in wrong.json()["detail"], where
            assert wrong.headers["www-authenticate"] == (
                f'Bearer error="insufficient_scope", scope="{scope}"'), where

            refused = {
                "expired": token(scope, kind="service", ttl_seconds=-5),
                "bad signature": mint_token("another-key-of-enough-length-0123456789",
                                            subject="mallory", scopes=[scope], kind="service"),
                "alg=none": unsigned(scope),
                "other audience": token(scope, kind="service", audience="another-app"),
                "garbage": "not-a-jwt",
            }
            for why, bearer in refused.items():
                r = await call(bearer)
                assert r.status_code == 401, f"{where}: {why} -> {r.status_code}"
                assert r.headers["content-type"] == "application/problem+json"
                assert r.headers["www-authenticate"] == 'Bearer error="invalid_token"', where

            if "{customer_id}" in template:
                # A relationship manager of another book, with the route's own scope: the
                # customer is refused (403) or, where the service cannot know it, not found.
                other_rm = token(scope, subject="u-rm-z", rm_id="RM-Z")
                r = await call(other_rm)
                assert r.status_code in (403, 404), f"{where}: another RM -> {r.status_code}"
                customer_routes += 1

            if (method, template) not in NO_POSITIVE_CALL:
                # The same request with the right scope passes the gate (whatever it answers).
                ok = await call(token(scope, kind="service"))
                assert ok.status_code not in (401, 403), f"{where}: {ok.status_code} {ok.text}"
        assert customer_routes > 0 or name == "ingress", "no per-customer route was checked"
