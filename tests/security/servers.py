"""Services served over real HTTP from this process: uvicorn in a thread of its own, with
its own event loop (the app's lifespan runs there), so a synchronous client such as
schemathesis can call it without starting a process per service."""

from __future__ import annotations

import importlib
import threading
import time
from typing import Any

import uvicorn

from tenure_cli.procs import free_port

# Every service built on shared/app.py, the four of the pipeline and the partner ingress.
APPS = ("profile", "scoring", "lifecycle", "engagement", "ingress")


class ThreadedServer:
    def __init__(self, name: str, settings: Any):
        app = importlib.import_module(f"services.{name}.app").create_app(settings)
        self.name = name
        self.app = app
        self.port = free_port()
        self.server = uvicorn.Server(uvicorn.Config(
            app, host="127.0.0.1", port=self.port, log_level="warning", lifespan="on",
            access_log=False))
        self.thread = threading.Thread(target=self.server.run, name=f"http-{name}", daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        self.thread.start()

    def wait(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"{self.name} did not start serving")
            time.sleep(0.05)

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(30)
