"""App factory: FastAPI with a lifespan that runs the consumers and the outbox relay."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import re
import traceback
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any

import sqlalchemy as sa
from fastapi import APIRouter, FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from sqlalchemy.ext.asyncio import AsyncEngine
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from shared.auth import TokenVerifier
from shared.kit import EventConsumer
from shared.logs import configure_logging
from shared.metrics import KitMetrics
from shared.outbox import OutboxRelay
from shared.ratelimit import RateLimiter
from shared.settings import ServiceSettings

log = logging.getLogger("tenure.app")

PROBLEM = "application/problem+json"
RELAY_GRACE_SECONDS = 10.0
_gc_tuned = False


def tune_gc(threshold: int) -> bool:
    """Once per process: freeze what start-up built and collect gen 0 less often. A consumer
    allocates many short-lived objects per event (envelopes, facts, rows) that reference
    counting frees; at Python's default threshold of 700 the collector also walks the
    long-lived heap (models, caches, modules) over and over, which measured about a quarter of
    scoring's CPU per score. Frozen objects are never collected, so this is done once (a test
    process starting many services would otherwise freeze each one's garbage)."""
    global _gc_tuned
    if threshold <= 0 or _gc_tuned:
        return False
    _gc_tuned = True
    gc.collect()
    gc.freeze()
    _, second, third = gc.get_threshold()
    gc.set_threshold(threshold, max(second, 20), max(third, 100))
    return True


class ServiceRuntime:
    """What a running service owns: engine, consumers, relay, and their tasks."""

    def __init__(
        self,
        *,
        settings: ServiceSettings,
        engine: AsyncEngine,
        metrics: KitMetrics,
        consumers: Sequence[EventConsumer] = (),
        relay: OutboxRelay | None = None,
        extra_tasks: Sequence[Callable[[], Any]] = (),
        startup: Sequence[Callable[[], Any]] = (),
    ):
        self.settings = settings
        self.engine = engine
        self.metrics = metrics
        self.consumers = list(consumers)
        self.relay = relay
        self.extra_tasks = list(extra_tasks)
        self.startup = list(startup)
        # Work the service has accepted but not finished, as `name: count query`, reported by
        # /readyz beside the outbox backlog (e.g. scoring's closed windows not yet learnt):
        # tools that wait for the platform to catch up wait for every `*_backlog` to be 0.
        # They inform; they do not make the instance unready.
        self.backlogs: dict[str, str] = {}
        self._tasks: list[asyncio.Task[Any]] = []

    async def start(self) -> None:
        for hook in self.startup:
            await hook()
        tune_gc(self.settings.gc_threshold)
        if self.settings.run_consumers:
            for consumer in self.consumers:
                self._tasks.append(asyncio.create_task(consumer.run(), name="consumer"))
        if self.relay is not None:
            self._tasks.append(asyncio.create_task(self.relay.run(), name="outbox-relay"))
        for factory in self.extra_tasks:
            self._tasks.append(asyncio.create_task(factory(), name="background"))

    async def stop(self) -> None:
        for consumer in self.consumers:
            consumer.stop()
        if self.relay is not None:
            self.relay.stop()
            # The relay finishes the cycle it is in (publish, then delete what it published)
            # rather than being cancelled between the two, which would publish those rows
            # again on the next start; stop() wakes it from its idle wait at once.
            relay = [t for t in self._tasks if t.get_name() == "outbox-relay"]
            if relay:
                await asyncio.wait(relay, timeout=RELAY_GRACE_SECONDS)
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await asyncio.wait_for(task, 15)
        self._tasks.clear()
        await self.engine.dispose()

    async def readiness(self) -> dict[str, Any]:
        checks: dict[str, Any] = {}
        try:
            async with self.engine.connect() as conn:
                await conn.execute(sa.text("SELECT 1"))
                backlog = await conn.scalar(sa.text("SELECT count(*) FROM outbox"))
                others = {name: await conn.scalar(sa.text(query))
                          for name, query in self.backlogs.items()}
            checks["database"] = "ok"
            checks["outbox_backlog"] = int(backlog or 0)
            checks.update({name: int(n or 0) for name, n in others.items()})
        except Exception as exc:  # noqa: BLE001
            checks["database"] = f"unreachable: {type(exc).__name__}"
        if self.settings.run_consumers and self.consumers:
            assigned = sum(len(c.assigned) for c in self.consumers)
            connected = all(c.consumer is not None for c in self.consumers)
            checks["kafka"] = "ok" if connected else "connecting"
            checks["assigned_partitions"] = assigned
            checks["consumers"] = "ok" if assigned > 0 else "no partitions assigned"
        return checks


def problem(status: int, title: str, detail: str | None = None, **extra: Any) -> JSONResponse:
    body: dict[str, Any] = {"type": "about:blank", "title": title, "status": status}
    if detail:
        body["detail"] = detail
    body.update(extra)
    return JSONResponse(body, status_code=status, media_type=PROBLEM)


def create_service_app(
    *,
    settings: ServiceSettings,
    build_runtime: Callable[[ServiceSettings], ServiceRuntime],
    routers: Sequence[APIRouter],
    title: str,
    description: str,
) -> FastAPI:
    configure_logging(settings.log_level)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        runtime = build_runtime(settings)
        app.state.runtime = runtime
        await runtime.start()
        log.info("service started", extra={"service": settings.service_name})
        try:
            yield
        finally:
            await runtime.stop()
            log.info("service stopped", extra={"service": settings.service_name})

    app = FastAPI(title=title, description=description, version="1", lifespan=lifespan)
    app.state.settings = settings
    # Built here, not per request: a misconfigured identity provider fails at start-up, and
    # the JWKS cache and the rate buckets live as long as the app.
    app.state.verifier = TokenVerifier(settings)
    app.state.rate_limiter = RateLimiter(
        rate=settings.rate_limit_per_second, burst=settings.rate_limit_burst
    )
    app.add_middleware(
        RequestGuard,
        max_body_bytes=settings.max_body_bytes,
        max_query_bytes=settings.max_query_bytes,
    )

    @app.get("/healthz", tags=["ops"], summary="Liveness")
    async def healthz() -> dict[str, str]:
        return {"status": "ok", "service": settings.service_name}

    @app.get("/readyz", tags=["ops"], summary="Readiness: database, Kafka, consumers",
             responses={503: {"description": "Not ready (the checks say why)"}})
    async def readyz(request: Request) -> Response:
        checks = await request.app.state.runtime.readiness()
        ready = checks.get("database") == "ok" and checks.get("consumers", "ok") == "ok"
        return JSONResponse(
            {"status": "ready" if ready else "not ready", "checks": checks},
            status_code=200 if ready else 503,
        )

    @app.get("/metrics", tags=["ops"], summary="Prometheus metrics", include_in_schema=True,
             response_class=PlainTextResponse)
    async def metrics(request: Request) -> Response:
        registry = request.app.state.runtime.metrics.registry
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    for router in routers:
        app.include_router(router)

    @app.exception_handler(StarletteHTTPException)
    async def http_problem(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        response = problem(exc.status_code, _title(exc.status_code), str(exc.detail))
        for k, v in (exc.headers or {}).items():
            response.headers[k] = v
        return response

    @app.exception_handler(RequestValidationError)
    async def validation_problem(request: Request, exc: RequestValidationError) -> JSONResponse:
        # Name the field and the rule; never echo the input (it may be personal data).
        errors = [
            {"field": ".".join(str(p) for p in e.get("loc", ())), "reason": e.get("msg", "")}
            for e in exc.errors()
        ]
        return problem(422, "Unprocessable request", "request failed validation", errors=errors)

    @app.exception_handler(Exception)
    async def internal_problem(request: Request, exc: Exception) -> JSONResponse:
        _log_unhandled(exc)
        return _internal_error()

    _document_problems(app)
    return app


def _internal_error() -> JSONResponse:
    return problem(500, "Internal error", "the error was logged; no details are returned")


def _log_unhandled(exc: BaseException) -> None:
    """Log where it failed (file, line, function), not the message: an exception's text may
    carry the values (personal data) that caused it."""
    frames = [f"{f.filename}:{f.lineno} in {f.name}"
              for f in traceback.extract_tb(exc.__traceback__)[-8:]]
    log.error("unhandled error", extra={"reason": type(exc).__name__, "frames": frames})


# An escaped NUL in JSON text: `\u0000` after an even number of backslashes (PostgreSQL text
# and jsonb cannot hold it). Checked over each chunk plus the tail of the one before.
_JSON_NUL = re.compile(rb"(?<!\\)(?:\\\\)*\\u0000")


class RequestGuard:
    """Bounds on what a request may bring, and the last line against unhandled errors.

    A query string longer than `max_query_bytes` gets 414, a NUL character in the path, query
    or a JSON body 400, and a body longer than `max_body_bytes` 413 (by Content-Length up
    front, or counted as it streams in), all as problem+json. An exception that no handler
    took becomes a 500 problem without its text or stack trace, and is not re-raised to the
    server (whose log would print the text).
    """

    def __init__(self, app: ASGIApp, *, max_body_bytes: int, max_query_bytes: int):
        self.app = app
        self.max_body_bytes = max_body_bytes
        self.max_query_bytes = max_query_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        query = scope.get("query_string", b"")
        if len(query) > self.max_query_bytes:
            await self._reply(send, scope, problem(
                414, "URI Too Long", f"the query string exceeds {self.max_query_bytes} bytes"))
            return
        if "\x00" in scope.get("path", "") or b"%00" in query.lower() or b"\x00" in query:
            # PostgreSQL text cannot hold NUL: refuse it here rather than fail in a query.
            await self._reply(send, scope, problem(
                400, "Bad Request", "the path or query contains a NUL character"))
            return
        declared = dict(scope.get("headers", [])).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_body_bytes:
            await self._reply(send, scope, self._too_large())
            return
        received = 0
        started = False
        tail = b""

        async def bounded_receive() -> Message:
            nonlocal received, tail
            message = await receive()
            if message["type"] == "http.request":
                chunk = message.get("body", b"")
                received += len(chunk)
                # FastAPI re-raises its HTTPException from body reading: problem+json.
                if received > self.max_body_bytes:
                    raise HTTPException(413, self._too_large_detail())
                if _JSON_NUL.search(tail + chunk):
                    raise HTTPException(400, "the body contains a NUL character (\\u0000)")
                tail = (tail + chunk)[-32:]
            return message

        async def tracked_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, bounded_receive, tracked_send)
        except Exception as exc:  # noqa: BLE001 - the point of this guard
            _log_unhandled(exc)
            if not started:
                await self._reply(send, scope, _internal_error())

    def _too_large_detail(self) -> str:
        return f"the request body exceeds {self.max_body_bytes} bytes"

    def _too_large(self) -> JSONResponse:
        return problem(413, "Content Too Large", self._too_large_detail())

    @staticmethod
    async def _reply(send: Send, scope: Scope, response: Response) -> None:
        async def nothing() -> Message:
            return {"type": "http.disconnect"}

        await response(scope, nothing, send)


PROBLEM_SCHEMA: dict[str, Any] = {
    "type": "object",
    "description": "RFC 9457 problem details; never echoes the request's values",
    "required": ["type", "title", "status"],
    "properties": {
        "type": {"type": "string"},
        "title": {"type": "string"},
        "status": {"type": "integer"},
        "detail": {"type": "string"},
        "errors": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {"field": {"type": "string"}, "reason": {"type": "string"}},
            },
        },
    },
}


def _document_problems(app: FastAPI) -> None:
    """Make the OpenAPI document say what the service really answers on errors: every
    error is problem+json (FastAPI's default 422 schema is not what we send), and a secured
    operation may answer 401, 403 and 429."""
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema:
            return app.openapi_schema
        schema = generate()
        components = schema.setdefault("components", {}).setdefault("schemas", {})
        components.pop("HTTPValidationError", None)
        components.pop("ValidationError", None)
        components["Problem"] = PROBLEM_SCHEMA
        ref = {"application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}}
        secured = {
            "401": "No valid bearer token (missing, expired, badly signed, wrong audience)",
            "403": "The token lacks the operation's scope, or the customer is not in its book",
            "429": "Rate limit of this token exceeded; see Retry-After",
        }
        for operation in _operations(schema):
            responses = operation.setdefault("responses", {})
            if "ops" in operation.get("tags", []):
                continue
            if "422" in responses:
                responses["422"] = {"description": "The request failed validation",
                                    "content": ref}
            if operation.get("security"):
                for code, description in secured.items():
                    responses.setdefault(code, {"description": description, "content": ref})
                responses["429"]["headers"] = {
                    "Retry-After": {"schema": {"type": "integer"},
                                    "description": "seconds until the token may call again"}
                }
            responses.setdefault(
                "default", {"description": "Any other error, as problem details", "content": ref}
            )
        return schema

    app.openapi = openapi  # type: ignore[method-assign]


def _operations(schema: dict[str, Any]) -> list[dict[str, Any]]:
    methods = {"get", "put", "post", "delete", "patch", "head", "options"}
    return [op for item in schema.get("paths", {}).values()
            for method, op in item.items() if method in methods]


def _title(status: int) -> str:
    from http import HTTPStatus

    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Error"
