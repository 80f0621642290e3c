"""Hostile input: per-token rate limits, bounded pages, strings and bodies, and errors that
are problem+json without personal data or stack traces."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from typing import Annotated

import httpx
import pytest
from fastapi import APIRouter

from shared.app import ServiceRuntime, create_service_app
from shared.auth import Principal, require
from shared.settings import ServiceSettings
from tests.support.platform import Namespace, token

PHONE = "+44 7700 900987"
NAME = "Jane Q. Customer"


def bearer(*scopes: str, subject: str = "svc-a") -> dict[str, str]:
    return {"Authorization": f"Bearer {token(*scopes, subject=subject, kind='service')}"}


async def test_each_token_has_its_own_rate_limit(module_ns: Namespace) -> None:
    ns = module_ns
    async with ns.service("profile", run_consumers=False, rate_limit_per_second=0.01,
                          rate_limit_burst=3) as svc:
        first = bearer("profile:read", subject="svc-a")
        answers = [await svc.client.get("/v1/segments", headers=first) for _ in range(4)]
        assert [r.status_code for r in answers] == [200, 200, 200, 429]
        limited = answers[-1]
        assert limited.headers["content-type"] == "application/problem+json"
        assert int(limited.headers["retry-after"]) >= 1
        assert limited.json()["status"] == 429
        # another token is not held back by the first one's bucket; ops endpoints are open
        assert (await svc.client.get("/v1/segments",
                                     headers=bearer("profile:read", subject="svc-b"))
                ).status_code == 200
        assert (await svc.client.get("/healthz")).status_code == 200


async def test_pages_strings_queries_and_bodies_are_bounded(module_ns: Namespace) -> None:
    ns = module_ns
    async with ns.service("engagement", run_consumers=False, max_body_bytes=4096) as svc:
        admin = bearer("engagement:admin", "engagement:read")
        page = await svc.client.get("/v1/rm-tasks", params={"limit": 100_000}, headers=admin)
        assert page.status_code == 422 and page.json()["errors"][0]["field"] == "query.limit"

        long_rm = await svc.client.get("/v1/rm-tasks", params={"rm": PHONE * 10},
                                       headers=admin)
        assert long_rm.status_code == 422 and PHONE not in long_rm.text

        query = await svc.client.get("/v1/playbooks?" + "x=1&" * 2000, headers=admin)
        assert query.status_code == 414
        assert query.headers["content-type"] == "application/problem+json"

        big = {"id": "huge", "description": NAME * 1000}
        declared = await svc.client.put("/v1/playbooks/huge", json=big, headers=admin)
        assert declared.status_code == 413 and NAME not in declared.text
        assert declared.headers["content-type"] == "application/problem+json"

        async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: counted as it comes
            yield b'{"id": "huge", "description": "'
            for _ in range(100):
                yield NAME.encode() * 10
            yield b'"}'

        streamed = await svc.client.put(
            "/v1/playbooks/huge", content=chunks(),
            headers={**admin, "Content-Type": "application/json"})
        assert streamed.status_code == 413 and NAME not in streamed.text

        nul = await svc.client.post(
            "/v1/rm-tasks/00000000-0000-0000-0000-000000000000:complete",
            content=b'{"outcome": "x\\u0000y"}',
            headers={**bearer("engagement:write"), "Content-Type": "application/json"})
        assert nul.status_code == 400 and "NUL" in nul.json()["detail"]

        # an outcome that is an object, not a string, was a 500 (unhashable in a set test)
        odd = await svc.client.post(
            "/v1/actions/00000000-0000-0000-0000-000000000000/outcomes",
            json={"outcome": {"opened": True}}, headers=bearer("engagement:write"))
        assert odd.status_code == 422 and odd.json()["detail"].startswith("outcome must be")

        bad_json = await svc.client.put(
            "/v1/playbooks/huge", content=f'{{"description": "{NAME}"'.encode(),
            headers={**admin, "Content-Type": "application/json"})
        assert bad_json.status_code == 422 and NAME not in bad_json.text
        assert bad_json.headers["content-type"] == "application/problem+json"


async def test_validation_errors_name_the_field_not_the_value(module_ns: Namespace) -> None:
    ns = module_ns
    async with ns.service("profile", run_consumers=False) as svc:
        reader = bearer("profile:read")
        for params in ({"phone": PHONE * 3}, {"national_id": "AB123456C" * 10},
                       {"min_churn": PHONE}, {"tier": NAME}):
            r = await svc.client.get("/v1/customers", params=params, headers=reader)
            assert r.status_code == 422, params
            assert r.headers["content-type"] == "application/problem+json"
            body = r.json()
            assert body["errors"][0]["field"].startswith("query.")
            for value in params.values():
                assert value not in r.text and value[:10] not in r.text
        for path in ("/v1/customers/C%00X", "/v1/customers?segment=a%00b"):
            nul = await svc.client.get(path, headers=reader)
            assert nul.status_code == 400, path
            assert nul.headers["content-type"] == "application/problem+json"
        unknown = await svc.client.get("/v1/no-such-thing", headers=reader)
        assert unknown.status_code == 404
        assert unknown.headers["content-type"] == "application/problem+json"
        wrong_method = await svc.client.patch("/v1/segments", headers=reader)
        assert wrong_method.status_code == 405
        assert wrong_method.headers["content-type"] == "application/problem+json"


@pytest.mark.parametrize("failure", [RuntimeError, KeyError, ValueError])
async def test_an_unhandled_error_is_a_bare_500_problem(
    failure: type[Exception], caplog: pytest.LogCaptureFixture
) -> None:
    router = APIRouter()

    @router.get("/v1/fragile")
    async def fragile(p: Annotated[Principal, require("probe:read")]) -> None:
        raise failure(f"row for {NAME}, phone {PHONE}, failed")

    app = create_service_app(settings=ServiceSettings(), build_runtime=_no_runtime,
                             routers=[router], title="probe", description="probe")
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    caplog.set_level(logging.INFO)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        r = await client.get("/v1/fragile", headers=bearer("probe:read"))
    assert r.status_code == 500
    assert r.headers["content-type"] == "application/problem+json"
    assert r.json() == {"type": "about:blank", "title": "Internal error", "status": 500,
                        "detail": "the error was logged; no details are returned"}
    assert "Traceback" not in r.text and "fragile" not in r.text
    logged = "\n".join(f"{rec.getMessage()} {rec.__dict__}" for rec in caplog.records)
    assert failure.__name__ in logged  # the kind of failure and where are logged ...
    assert "fragile" in logged
    assert NAME not in logged and PHONE not in logged  # ... never the values


def _no_runtime(settings: ServiceSettings) -> ServiceRuntime:
    raise AssertionError("the lifespan does not run in this test")
