"""Calls to the four services' REST APIs with the signed-in person's own token; every failure
becomes a `Problem` a page can show (the service, what it said, never a stack trace)."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import httpx
from prometheus_client import CollectorRegistry, Counter

from services.console.domain import problem_text

log = logging.getLogger("tenure.console")


@dataclass(frozen=True)
class Problem:
    service: str
    status: int  # what the console answers with when this problem spoils a whole page
    message: str


@dataclass(frozen=True)
class Reply:
    service: str
    data: Any = None
    problem: Problem | None = None

    @property
    def ok(self) -> bool:
        return self.problem is None


def segment(value: str) -> str:
    """A customer id as one URL path segment (ids may hold `/`, `?` or spaces).

    >>> segment("C 1/2?")
    'C%201%2F2%3F'
    """
    return quote(value, safe="")


class ConsoleMetrics:
    """What the console counts: upstream calls by outcome, dead letters re-published."""

    def __init__(self, registry: CollectorRegistry | None = None):
        self.registry = registry or CollectorRegistry()
        self.upstream = Counter(
            "tenure_console_upstream_requests", "Calls to the services by outcome "
            "(ok, refused = 4xx, failed = 5xx, unreachable, timeout)",
            ["service", "outcome"], registry=self.registry,
        )
        self.republished = Counter(
            "tenure_console_dlq_republished", "Dead letters re-published to their original "
            "topic from the console", registry=self.registry,
        )


class Upstreams:
    """One HTTP client per service; tests may hand in transports (e.g. ASGI) per service."""

    def __init__(
        self, urls: dict[str, str], *, timeout: float, metrics: ConsoleMetrics,
        transports: dict[str, httpx.AsyncBaseTransport] | None = None,
    ):
        self.urls = urls
        self.timeout = timeout
        self.metrics = metrics
        self.clients = {
            name: httpx.AsyncClient(
                base_url=url, timeout=timeout, follow_redirects=False,
                transport=(transports or {}).get(name),
            )
            for name, url in urls.items()
        }

    async def close(self) -> None:
        for client in self.clients.values():
            await client.aclose()

    async def get(
        self, service: str, path: str, token: str, *, params: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
    ) -> Reply:
        return await self._call("GET", service, path, token, params=params, headers=headers)

    async def _call(
        self, method: str, service: str, path: str, token: str, *,
        params: dict[str, Any] | None = None, headers: dict[str, str] | None = None,
    ) -> Reply:
        client = self.clients[service]
        sent = {"Authorization": f"Bearer {token}", "Accept": "application/json",
                **(headers or {})}
        query = {k: v for k, v in (params or {}).items() if v not in (None, "")}
        try:
            response = await client.request(method, path, params=query, headers=sent)
        except httpx.TimeoutException:
            return self._problem(service, "timeout", 504,
                                 f"{service} did not answer within {self.timeout:g} s")
        except httpx.HTTPError as exc:
            log.warning("service unreachable",
                        extra={"service": service, "reason": type(exc).__name__})
            return self._problem(service, "unreachable", 502,
                                 f"{service} is unreachable at {self.urls[service]}: "
                                 "is it running?")
        try:
            body: Any = response.json()
        except ValueError:
            body = None
        if response.status_code >= 400:
            outcome = "failed" if response.status_code >= 500 else "refused"
            status = 502 if response.status_code >= 500 else response.status_code
            return self._problem(service, outcome, status,
                                 problem_text(service, response.status_code, body))
        if body is None:
            return self._problem(service, "failed", 502,
                                 f"{service} answered HTTP {response.status_code} without JSON")
        self.metrics.upstream.labels(service, "ok").inc()
        return Reply(service, data=body)

    def _problem(self, service: str, outcome: str, status: int, message: str) -> Reply:
        self.metrics.upstream.labels(service, outcome).inc()
        return Reply(service, problem=Problem(service, status, message))

    async def health(self) -> dict[str, str]:
        """Each service's liveness, for the console's own readiness report (asked at once)."""

        async def one(client: httpx.AsyncClient) -> str:
            try:
                r = await client.get("/healthz", timeout=min(self.timeout, 2.0))
            except httpx.HTTPError as exc:
                return f"unreachable: {type(exc).__name__}"
            return "ok" if r.status_code == 200 else f"HTTP {r.status_code}"

        states = await asyncio.gather(*(one(c) for c in self.clients.values()))
        return dict(zip(self.clients, states, strict=True))
