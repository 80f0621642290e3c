"""The running platform for console tests: the four services and the console served over real
HTTP (uvicorn, in this process, each with its real lifespan) on one test namespace."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import uvicorn

from services.console.app import create_app as create_console
from services.console.settings import ConsoleSettings
from tenure_cli.procs import free_port
from tenure_cli.services import SERVICE_NAMES
from tests.support.platform import Namespace, eventually

CHROMIUM = "/usr/bin/chromium"
# Debian's Chromium, never a downloaded browser; no network beyond this machine.
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]


def console_settings(ns: Namespace, **overrides: Any) -> ConsoleSettings:
    base: dict[str, Any] = {k.removeprefix("TENURE_").lower(): v for k, v in ns.env.items()}
    base.update(overrides)
    return ConsoleSettings(**base)


@contextlib.asynccontextmanager
async def served(app: Any, name: str, port: int | None = None) -> AsyncIterator[str]:
    """Serve an ASGI app on a loopback port until the block ends; yields its URL."""
    port = port or free_port()
    server = uvicorn.Server(uvicorn.Config(
        app, host="127.0.0.1", port=port, lifespan="on", log_config=None, access_log=False,
        log_level="warning",
    ))
    task = asyncio.create_task(server.serve(), name=f"serve-{name}")

    async def up() -> bool:
        if task.done():
            raise RuntimeError(f"{name} stopped while starting: {task.exception()!r}")
        return server.started

    try:
        await eventually(up, timeout=60, interval=0.05, what=f"{name} to listen")
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.wait_for(task, 30)


@dataclass
class Platform:
    urls: dict[str, str]

    @property
    def console(self) -> str:
        return self.urls["console"]


@contextlib.asynccontextmanager
async def running_platform(ns: Namespace, **console_overrides: Any) -> AsyncIterator[Platform]:
    """profile, scoring, lifecycle and engagement on the namespace's topics and schemas, and
    the console pointed at them, all listening on real ports."""
    import importlib

    async with contextlib.AsyncExitStack() as stack:
        ports = {name: free_port() for name in (*SERVICE_NAMES, "console")}
        urls = {name: f"http://127.0.0.1:{port}" for name, port in ports.items()}
        apps = {name: importlib.import_module(f"services.{name}.app").create_app(
            ns.settings(name)) for name in SERVICE_NAMES}
        settings = console_settings(ns, **{f"{n}_url": urls[n] for n in SERVICE_NAMES},
                                    **console_overrides)
        apps["console"] = create_console(settings)
        # Started together: each start waits mostly on Kafka's group join, not on the CPU,
        # and the console needs no service to start.
        await asyncio.gather(*(stack.enter_async_context(served(app, name, ports[name]))
                               for name, app in apps.items()))
        yield Platform(urls)
