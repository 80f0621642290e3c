"""Console: a web page for relationship managers, retention teams and operators, server-rendered
(Jinja2 + htmx, served from here), over the four services' REST APIs."""

from __future__ import annotations

import contextlib
import logging
import traceback
from collections.abc import AsyncIterator
from http import HTTPStatus
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from fastapi.staticfiles import StaticFiles
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from services.console import ops, pages, session
from services.console.bootstrap import bootstrap
from services.console.settings import ConsoleSettings
from services.console.templating import TEMPLATES, is_htmx
from shared.auth import TokenVerifier
from shared.logs import configure_logging

log = logging.getLogger("tenure.console")
STATIC = Path(__file__).parent / "static"
# Everything the pages load comes from this origin: htmx is vendored, no CDN, no inline script.
SECURITY_HEADERS = [
    (b"content-security-policy",
     b"default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
     b"connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"x-frame-options", b"DENY"),
]


def create_app(settings: ConsoleSettings | None = None, **overrides: Any) -> FastAPI:
    """The ASGI app; `overrides` replace parts of the object graph (see bootstrap)."""
    settings = settings or ConsoleSettings()
    configure_logging(settings.log_level)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        runtime = bootstrap(settings, **overrides)
        app.state.runtime = runtime
        await runtime.start()
        try:
            yield
        finally:
            await runtime.stop()

    # No /docs or /redoc: their pages load scripts from a CDN (the CSP would block them, and
    # nothing here is fetched from elsewhere); /openapi.json stays.
    app = FastAPI(title="Tenure console", version="1", lifespan=lifespan, docs_url=None,
                  redoc_url=None,
                  description="Web pages over the profile, scoring, lifecycle and engagement "
                              "APIs; the dead-letter queue for operators.")
    app.state.settings = settings
    # Built at start-up: a misconfigured identity provider fails here, not on a person.
    app.state.verifier = TokenVerifier(settings)
    app.add_middleware(PageGuard)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    @app.get("/healthz", tags=["ops"], summary="Liveness")
    async def healthz() -> dict[str, str]:
        return {"status": "ok", "service": settings.service_name}

    @app.get("/readyz", tags=["ops"], summary="Readiness, with each service's liveness")
    async def readyz(request: Request) -> Response:
        # Ready while it runs: a page whose service is down says so, which helps a person
        # more than a console taken out of the load balancer.
        checks = await request.app.state.runtime.readiness()
        down = [n for n, state in checks["services"].items() if state != "ok"]
        return JSONResponse({"status": "degraded" if down else "ready", "checks": checks})

    @app.get("/metrics", tags=["ops"], summary="Prometheus metrics",
             response_class=PlainTextResponse)
    async def metrics(request: Request) -> Response:
        registry = request.app.state.runtime.metrics.registry
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    app.include_router(session.router)
    app.include_router(pages.router)
    app.include_router(ops.router)

    @app.exception_handler(session.SignInRequired)
    async def sign_in(request: Request, exc: session.SignInRequired) -> Response:
        return session.sign_in_redirect(request, exc.reason)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
        return error_page(request, exc.status_code, str(exc.detail))

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> Response:
        # Name the field and the rule, never the value (it may be personal data).
        reasons = "; ".join(
            f"{'.'.join(str(p) for p in e.get('loc', ())[1:])}: {e.get('msg', '')}"
            for e in exc.errors()
        )
        return error_page(request, 422, f"The request was not understood: {reasons}")

    return app


def error_page(request: Request, status: int, message: str) -> Response:
    try:
        title = HTTPStatus(status).phrase
    except ValueError:
        title = "Error"
    name = "_problem.html" if is_htmx(request) else "error.html"
    session_ = getattr(request.state, "session", None)
    return TEMPLATES.TemplateResponse(
        request, name, {"session": session_, "title": title, "message": message,
                        "status": status},
        status_code=status,
    )


class PageGuard:
    """Security headers on every answer, and the last line against an unhandled error: a
    plain page that says it was logged, never a stack trace (nor its text in the log)."""

    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def with_headers(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                message.setdefault("headers", [])
                message["headers"] = [*message["headers"], *SECURITY_HEADERS]
            await send(message)

        try:
            await self.app(scope, receive, with_headers)
        except Exception as exc:  # noqa: BLE001 - the point of this guard
            frames = [f"{f.filename}:{f.lineno} in {f.name}"
                      for f in traceback.extract_tb(exc.__traceback__)[-6:]]
            log.error("unhandled error", extra={"reason": f"{type(exc).__name__} at "
                                                          f"{' < '.join(reversed(frames))}"})
            if not started:
                page = PlainTextResponse(
                    "The console hit an unexpected error. It was logged; no details are shown "
                    "here. Try again, or tell the platform team the time it happened.",
                    status_code=500)
                await page(scope, receive, with_headers)
