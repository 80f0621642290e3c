"""App factory: FastAPI with a lifespan that runs the consumers and the outbox relay."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any

import sqlalchemy as sa
from fastapi import APIRouter, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from sqlalchemy.ext.asyncio import AsyncEngine
from starlette.exceptions import HTTPException as StarletteHTTPException

from shared.kit import EventConsumer
from shared.logs import configure_logging
from shared.metrics import KitMetrics
from shared.outbox import OutboxRelay
from shared.settings import ServiceSettings

log = logging.getLogger("tenure.app")

PROBLEM = "application/problem+json"


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
        self._tasks: list[asyncio.Task[Any]] = []

    async def start(self) -> None:
        for hook in self.startup:
            await hook()
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
            checks["database"] = "ok"
            checks["outbox_backlog"] = int(backlog or 0)
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

    @app.get("/healthz", tags=["ops"], summary="Liveness")
    async def healthz() -> dict[str, str]:
        return {"status": "ok", "service": settings.service_name}

    @app.get("/readyz", tags=["ops"], summary="Readiness: database, Kafka, consumers")
    async def readyz(request: Request) -> Response:
        checks = await request.app.state.runtime.readiness()
        ready = checks.get("database") == "ok" and checks.get("consumers", "ok") == "ok"
        return JSONResponse(
            {"status": "ready" if ready else "not ready", "checks": checks},
            status_code=200 if ready else 503,
        )

    @app.get("/metrics", tags=["ops"], summary="Prometheus metrics", include_in_schema=True)
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
        log.error("unhandled error", extra={"reason": type(exc).__name__})
        return problem(500, "Internal error", "the error was logged; no details are returned")

    return app


def _title(status: int) -> str:
    from http import HTTPStatus

    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Error"
