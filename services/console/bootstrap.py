"""The console's object graph: HTTP clients for the four services, the dead-letter gateway and
the metrics. No database, no consumer: the console holds no data of its own."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import httpx

from services.console.dlq import DeadLetters
from services.console.settings import ConsoleSettings
from services.console.upstream import ConsoleMetrics, Upstreams


@dataclass
class ConsoleRuntime:
    settings: ConsoleSettings
    upstreams: Upstreams
    dead_letters: DeadLetters
    metrics: ConsoleMetrics

    async def start(self) -> None:
        """Nothing to warm up: a service that is down is reported on the page that needs it."""

    async def stop(self) -> None:
        await self.upstreams.close()

    async def readiness(self) -> dict[str, Any]:
        return {"services": await self.upstreams.health()}


def bootstrap(
    settings: ConsoleSettings, *,
    transports: dict[str, httpx.AsyncBaseTransport] | None = None,
    dead_letters: DeadLetters | None = None,
    metrics: ConsoleMetrics | None = None,
) -> ConsoleRuntime:
    """`transports` route a service's calls elsewhere (tests hand in ASGI transports)."""
    metrics = metrics or ConsoleMetrics()
    return ConsoleRuntime(
        settings=settings,
        upstreams=Upstreams(settings.service_urls(), timeout=settings.upstream_timeout_seconds,
                            metrics=metrics, transports=transports),
        dead_letters=dead_letters or DeadLetters(settings),
        metrics=metrics,
    )
