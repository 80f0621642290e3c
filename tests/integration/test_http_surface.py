"""Every service's HTTP surface: open ops endpoints, bearer scopes elsewhere, problem+json."""

from __future__ import annotations

import contextlib

from tests.support import factories as f
from tests.support.platform import Namespace, eventually, token

ROUTES = {
    "profile": ("/v1/customers/C-H", "profile:read"),
    "scoring": ("/v1/customers/C-H/churn", "scoring:read"),
    "lifecycle": ("/v1/customers/C-H/stage", "lifecycle:read"),
    "engagement": ("/v1/customers/C-H/actions", "engagement:read"),
}


async def test_ops_endpoints_open_everything_else_needs_a_scoped_token(ns: Namespace) -> None:
    async with contextlib.AsyncExitStack() as stack:
        services = {n: await stack.enter_async_context(ns.service(n)) for n in ROUTES}
        await ns.publish("tenure.transactions.v1", f.transaction("C-H"))
        for name, svc in services.items():
            path, scope = ROUTES[name]
            assert (await svc.client.get("/healthz")).json()["status"] == "ok"
            await eventually(svc.ready, timeout=30, what=f"{name} ready")
            ready = (await svc.client.get("/readyz")).json()
            assert ready["checks"]["database"] == "ok" and ready["checks"]["assigned_partitions"] > 0
            metrics = (await svc.client.get("/metrics")).text
            for family in ("events_consumed", "events_processed", "events_dead_lettered",
                           "batch_seconds", "consumer_lag", "outbox_backlog"):
                assert f"tenure_{name}_{family}" in metrics
            openapi = (await svc.client.get("/openapi.json")).json()
            assert path.replace("C-H", "{customer_id}") in openapi["paths"]

            missing = await svc.client.get(path)
            assert missing.status_code == 401
            assert missing.headers["content-type"] == "application/problem+json"
            assert missing.json()["detail"] == "missing bearer token"

            wrong = await svc.client.get(
                path, headers={"Authorization": f"Bearer {token('other:read')}"}
            )
            assert wrong.status_code == 403 and scope in wrong.json()["detail"]

            expired = await svc.client.get(
                path, headers={"Authorization": f"Bearer {token(scope, ttl_seconds=-5)}"}
            )
            assert expired.status_code == 401 and expired.json()["detail"] == "token expired"

            async def answered() -> bool:
                r = await svc.get(path)
                return r.status_code in (200, 404)

            await eventually(answered, what=f"{name} answers with a valid token")

        too_long = await services["profile"].get("/v1/customers/" + "x" * 65)
        assert too_long.status_code == 422
        body = too_long.json()
        assert body["errors"][0]["field"] == "path.customer_id"
        assert "x" * 65 not in too_long.text  # the input is not echoed back
