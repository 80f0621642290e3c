"""The console's routes against the real profile service (real Kafka and PostgreSQL): sign-in
is required, personal data stays masked without the scope, every upstream refusal or outage
reads as a clear message (never a stack trace), and the dead-letter queue can be read and
re-published from by operators only."""

from __future__ import annotations

import asyncio
import contextlib
import re
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from services.console.app import create_app
from services.console.session import COOKIE
from tenure_cli.procs import free_port
from tests.support import factories as f
from tests.support.console_harness import console_settings, served
from tests.support.platform import Namespace, RunningService, eventually, new_namespace, token

READ_ALL = ("profile:read", "scoring:read", "lifecycle:read", "engagement:read")


@dataclass
class Console:
    ns: Namespace
    profile: RunningService
    client: httpx.AsyncClient
    app: Any
    customer: str
    phone: str
    nowhere: str  # where scoring, lifecycle and engagement are said to be: nothing listens

    async def get(self, path: str, *scopes: str, headers: dict[str, str] | None = None,
                  **kw: Any) -> httpx.Response:
        signed = signed_in(token(*scopes)) if scopes else {}
        return await self.client.get(path, headers={**signed, **(headers or {})}, **kw)

    async def post(self, path: str, *scopes: str, headers: dict[str, str] | None = None,
                   **kw: Any) -> httpx.Response:
        signed = signed_in(token(*scopes))
        return await self.client.post(path, headers={**signed, **(headers or {})}, **kw)


def signed_in(jwt: str) -> dict[str, str]:
    """The console's session cookie, sent as a header (the client keeps no cookie jar)."""
    return {"Cookie": f"{COOKIE}={jwt}"}


@pytest.fixture(scope="module")
async def console() -> AsyncIterator[Console]:
    """One namespace, a real profile service, and the console routed to it; the other three
    services are pointed at a port where nothing listens."""
    ns = new_namespace()
    await ns.setup(("profile",))
    customer = f"C-{uuid.uuid4().hex[:8]}"
    phone = f"+44 7700 9{uuid.uuid4().int % 100000:05d}"
    nowhere = f"http://127.0.0.1:{free_port()}"
    try:
        async with ns.service("profile") as profile:
            settings = console_settings(
                ns, profile_url="http://profile", scoring_url=nowhere, lifecycle_url=nowhere,
                engagement_url=nowhere, upstream_timeout_seconds=5, kafka_timeout_seconds=10)
            app = create_app(settings, transports={
                "profile": httpx.ASGITransport(app=profile.app)})
            async with app.router.lifespan_context(app):
                transport = httpx.ASGITransport(app=app)
                async with httpx.AsyncClient(transport=transport,
                                             base_url="http://console") as client:
                    await ns.publish("tenure.customers.v1",
                                     f.registered(customer, f.now() - f.minutes(10), phone=phone,
                                                  name="Ada Example"))

                    async def known() -> bool:
                        r = await profile.get(f"/v1/customers/{customer}")
                        return r.status_code == 200

                    await eventually(known, what="profile to know the customer")
                    yield Console(ns, profile, client, app, customer, phone, nowhere)
    finally:
        await ns.teardown()


def no_stack_trace(body: str) -> None:
    assert "Traceback" not in body and 'File "' not in body and "Exception" not in body


# ---------------------------------------------------------------- signing in

async def test_every_page_needs_a_signed_in_token(console: Console) -> None:
    for path in ("/", "/customers", f"/customers/{console.customer}", "/worklists", "/funnel",
                 "/model", "/ops/dlq"):
        r = await console.get(path)
        assert r.status_code == 303, path
        assert r.headers["location"].startswith("/login?next="), path
    for path in ("/ops/dlq/0/0/republish", "/customers/search"):
        r = await console.client.post(path, data={"q": "C-1"})
        assert r.status_code == 303, path
        assert r.headers["location"] == "/login?next=%2Fcustomers&reason=missing", path
    # htmx asks for a fragment: it is told to load the sign-in page instead.
    r = await console.get("/worklists", headers={"HX-Request": "true"})
    assert r.status_code == 401 and r.headers["HX-Redirect"].startswith("/login?next=")
    # A token that no longer verifies sends the person back to sign in, with the reason.
    r = await console.client.get("/customers", headers=signed_in("not.a.token"))
    assert r.status_code == 303 and "reason=refused" in r.headers["location"]
    page = await console.client.get(r.headers["location"])
    assert "no longer accepted" in page.text
    # Open: health, metrics, the API description; no /docs (its page loads from a CDN).
    for path in ("/healthz", "/readyz", "/metrics", "/openapi.json", "/static/console.css"):
        assert (await console.client.get(path)).status_code == 200, path
    assert (await console.client.get("/docs")).status_code == 404


async def test_signing_in_checks_the_token_and_sets_a_strict_cookie(console: Console) -> None:
    r = await console.client.post("/login", data={"token": "garbage", "next": "/funnel"})
    assert r.status_code == 401
    assert "The token was refused: invalid token" in r.text
    expired = token(*READ_ALL, ttl_seconds=-60)
    r = await console.client.post("/login", data={"token": expired})
    assert r.status_code == 401 and "token expired" in r.text
    r = await console.client.post("/login", data={"token": "  "})
    assert r.status_code == 422 and "Paste a token first" in r.text

    good = token(*READ_ALL, subject="rm-anna")
    r = await console.client.post("/login", data={"token": f"Bearer {good}",
                                                  "next": "//evil.example/phish"})
    assert r.status_code == 303 and r.headers["location"] == "/customers"
    cookie = r.headers["set-cookie"]
    assert cookie.startswith(f"{COOKIE}={good};")
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie and "Path=/" in cookie
    console.client.cookies.clear()
    page = await console.client.get("/customers", headers=signed_in(good))
    assert page.status_code == 200 and "rm-anna" in page.text
    assert "script-src 'self'" in page.headers["content-security-policy"]
    assert '<script src="/static/htmx.min.js"' in page.text
    htmx = await console.client.get("/static/htmx.min.js")
    assert htmx.status_code == 200 and htmx.text.startswith("var htmx=")

    r = await console.client.post("/logout", headers=signed_in(good))
    assert r.status_code == 303 and f'{COOKIE}=""' in r.headers["set-cookie"]


# ---------------------------------------------------------------- customers

async def test_a_phone_search_finds_the_customer_and_an_id_opens_it(console: Console) -> None:
    r = await console.post("/customers/search", *READ_ALL,
                           data={"q": console.phone.replace(" ", "")})
    assert r.status_code == 200
    assert f'href="/customers/{console.customer}"' in r.text
    r = await console.post("/customers/search", *READ_ALL, data={"q": console.customer})
    assert r.status_code == 303 and r.headers["location"] == f"/customers/{console.customer}"
    r = await console.post("/customers/search", *READ_ALL,
                           data={"q": console.customer}, headers={"HX-Request": "true"})
    assert r.headers["HX-Redirect"] == f"/customers/{console.customer}"
    r = await console.post("/customers/search", *READ_ALL, data={"q": "+44 7700 000000"})
    assert r.status_code == 200 and "No customer has this phone number" in r.text
    r = await console.post("/customers/search", *READ_ALL, data={"q": " "})
    assert r.status_code == 422 and "type a customer id or a phone number" in r.text


async def test_the_360_view_is_masked_without_the_pii_scope(console: Console) -> None:
    digits = console.phone.replace(" ", "")
    masked = await console.get(f"/customers/{console.customer}", *READ_ALL)
    assert masked.status_code == 200
    assert "Ada Example" not in masked.text and digits not in masked.text
    assert console.phone not in masked.text
    assert re.search(r"A\*+ E\*+", masked.text), "the masked name is shown"
    assert "PII masked" in masked.text
    clear = await console.get(f"/customers/{console.customer}", *READ_ALL, "pii:read")
    assert "Ada Example" in clear.text and console.phone in clear.text
    assert "PII masked" not in clear.text


async def test_a_service_that_is_down_is_named_and_the_rest_still_shows(
    console: Console,
) -> None:
    r = await console.get(f"/customers/{console.customer}", *READ_ALL)
    assert r.status_code == 200  # profile answered; the page is useful
    for service in ("scoring", "lifecycle", "engagement"):
        assert f"{service} is unreachable at {console.nowhere}: is it running?" in r.text
    assert 'id="identity"' in r.text
    no_stack_trace(r.text)
    r = await console.get("/model", *READ_ALL)
    assert r.status_code == 502
    assert f"scoring is unreachable at {console.nowhere}" in r.text
    r = await console.get("/funnel", *READ_ALL)
    assert r.status_code == 502 and "lifecycle is unreachable" in r.text
    ready = (await console.client.get("/readyz")).json()
    assert ready["status"] == "degraded"
    assert ready["checks"]["services"]["profile"] == "ok"
    assert ready["checks"]["services"]["scoring"].startswith("unreachable")
    metrics = (await console.client.get("/metrics")).text
    assert re.search(
        r'tenure_console_upstream_requests_total\{outcome="unreachable",service="scoring"\} '
        r"[1-9]", metrics)


async def test_refusals_read_in_the_services_own_words(console: Console) -> None:
    r = await console.get(f"/customers/{console.customer}", "scoring:read")
    assert r.status_code == 403
    assert "profile refused: this route needs the scope &#39;profile:read&#39; (HTTP 403)" \
        in r.text
    # Profile refused: nothing the other services hold about the customer is asked for.
    assert "scoring" not in r.text.split("</header>")[1] and 'id="churn"' not in r.text
    r = await console.get("/customers/NOBODY-HERE", *READ_ALL)
    assert r.status_code == 404
    assert "profile refused: customer &#39;NOBODY-HERE&#39; is not known to profile" in r.text
    r = await console.get("/worklists", *READ_ALL, params={"tier": "platinum"})
    assert r.status_code == 422
    assert "profile refused: request failed validation: query.tier" in r.text
    r = await console.post("/customers/search", *READ_ALL,
                           data={"q": "not-a-phone", "by": "phone"})
    assert r.status_code == 422 and "phone is not a usable phone" in r.text
    r = await console.get("/funnel", *READ_ALL, params={"since": "31/01/2025"})
    assert r.status_code == 422 and "since: give a date as YYYY-MM-DD" in r.text
    r = await console.get("/customers/" + "x" * 65, *READ_ALL)
    assert r.status_code == 422 and "customer_id" in r.text and "at most 64" in r.text
    r = await console.get("/no/such/page", *READ_ALL)
    assert r.status_code == 404 and "Not Found" in r.text
    for page in (r,):
        no_stack_trace(page.text)


async def test_the_worklist_lists_customers_and_pages_with_htmx(console: Console) -> None:
    r = await console.get("/worklists", *READ_ALL)
    assert r.status_code == 200 and f">{console.customer}</a>" in r.text
    assert "engagement is unreachable" in r.text  # the RM task panel says why it is empty
    fragment = await console.get("/worklists", *READ_ALL, params={"stage": "churned"},
                                 headers={"HX-Request": "true", "HX-Target": "worklist"})
    assert fragment.status_code == 200 and "<html" not in fragment.text
    assert "No customer matches these filters" in fragment.text


# ---------------------------------------------------------------- dead letters

async def test_operators_read_and_re_publish_dead_letters(console: Console) -> None:
    bad = b'{"event_type": "customer.registered", "customer_id": "C-BAD", "schema_version": 9}'
    await console.ns.publish_raw("tenure.customers.v1", bad, key=b"C-BAD")

    async def listed() -> httpx.Response | None:
        r = await console.get("/ops/dlq", "ops:read")
        return r if r.status_code == 200 and "C-BAD" in r.text else None

    page = await eventually(listed, timeout=45, what="the dead letter in the console")
    assert "unsupported version" in page.text and "profile" in page.text
    assert "Re-publish</button>" not in page.text and "read only" in page.text
    assert "schema_version\": 9" not in page.text  # the bytes need pii:read
    position = re.search(r'id="dl-(\d+)-(\d+)"', page.text)
    assert position is not None
    partition, offset = position.groups()
    url = f"/ops/dlq/{partition}/{offset}/republish"

    assert (await console.get("/ops/dlq", *READ_ALL)).status_code == 403
    denied = await console.post(url, "ops:read", headers={"HX-Request": "true"})
    assert denied.status_code == 403 and "needs the scope &#39;ops:admin&#39;" in denied.text
    missing = await console.post(f"/ops/dlq/{partition}/999999/republish", "ops:admin",
                                 headers={"HX-Request": "true"})
    assert missing.status_code == 404 and "no dead letter at" in missing.text

    before = await console.ns.read_topic("tenure.customers.v1")
    done = await console.post(url, "ops:admin", headers={"HX-Request": "true"})
    assert done.status_code == 200, done.text
    topic = console.ns.topic("tenure.customers.v1")
    assert f"re-published to {topic}[" in done.text and "<html" not in done.text
    after = await console.ns.read_topic("tenure.customers.v1")
    copies = [m for m in after if m["headers"].get("dlq.replay_of")]
    assert len(after) == len(before) + 1 and len(copies) == 1
    assert copies[0]["raw"] == bad and copies[0]["key"] == b"C-BAD"
    assert copies[0]["headers"]["dlq.replayed_by"] == "test-user"
    assert copies[0]["headers"]["dlq.replay_of"] == (
        f"{console.ns.topic('tenure.dlq.v1')}:{partition}:{offset}")

    shown = await console.get("/ops/dlq", "ops:admin", "pii:read")
    assert "Re-publish</button>" in shown.text and "schema_version&#34;: 9" in shown.text


@dataclass
class BrokenDeadLetters:
    """A dead-letter gateway whose every call fails in an unforeseen way."""

    topic: str = "t.tenure.dlq.v1"

    async def latest(self, limit: int) -> list[Any]:
        raise RuntimeError("customer Ada Example +44 7700 900123 broke it")


async def test_an_unexpected_error_shows_no_details(console: Console) -> None:
    settings = console_settings(console.ns, profile_url=console.nowhere,
                                scoring_url=console.nowhere, lifecycle_url=console.nowhere,
                                engagement_url=console.nowhere)
    app = create_app(settings, dead_letters=BrokenDeadLetters())
    async with contextlib.AsyncExitStack() as stack:
        await stack.enter_async_context(app.router.lifespan_context(app))
        client = await stack.enter_async_context(httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app, raise_app_exceptions=False),
            base_url="http://console"))
        r = await client.get("/ops/dlq", headers=signed_in(token("ops:read")))
    assert r.status_code == 500
    assert "It was logged; no details are shown" in r.text
    assert "Ada" not in r.text and "RuntimeError" not in r.text
    no_stack_trace(r.text)


async def misbehaving_service(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """A service that is slow on the model card and fails with a raw stack trace elsewhere."""
    if scope["type"] != "http":
        return
    if scope["path"] == "/v1/model":
        await asyncio.sleep(1.5)  # the console waits 0.5 s
    body = b"Traceback (most recent call last):\n  File \"x.py\", line 1\nKeyError: 'Ada'"
    await send({"type": "http.response.start", "status": 500,
                "headers": [(b"content-type", b"text/plain")]})
    await send({"type": "http.response.body", "body": body})


async def test_a_slow_or_failing_service_is_named_without_its_trace(console: Console) -> None:
    async with served(misbehaving_service, "misbehaving") as url:
        settings = console_settings(console.ns, profile_url=url, scoring_url=url,
                                    lifecycle_url=url, engagement_url=url,
                                    upstream_timeout_seconds=0.5)
        app = create_app(settings)
        async with contextlib.AsyncExitStack() as stack:
            await stack.enter_async_context(app.router.lifespan_context(app))
            client = await stack.enter_async_context(httpx.AsyncClient(
                transport=httpx.ASGITransport(app=app), base_url="http://console"))
            slow = await client.get("/model", headers=signed_in(token(*READ_ALL)))
            failing = await client.get("/funnel", headers=signed_in(token(*READ_ALL)))
    assert slow.status_code == 504 and "scoring did not answer within 0.5 s" in slow.text
    assert failing.status_code == 502
    assert "lifecycle failed: Internal Server Error (HTTP 500)" in failing.text
    assert "Ada" not in failing.text
    no_stack_trace(failing.text)
