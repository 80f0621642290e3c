"""Services as the platform runs them: uvicorn processes (for eval, chaos and fault tests)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_port(port: int, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise TimeoutError(f"nothing listens on {port} after {timeout}s")


class ServiceProcess:
    """One service under uvicorn in its own process; killable with SIGKILL."""

    def __init__(self, service: str, env: dict[str, str], log_path: Path, port: int | None = None):
        self.service = service
        self.env = {**os.environ, **env}
        self.log_path = log_path
        self.port = port or free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, wait: bool = True) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        log = open(self.log_path, "ab")  # noqa: SIM115 - the child owns it
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "uvicorn", "--factory",
             f"services.{self.service}.app:create_app", "--host", "127.0.0.1",
             "--port", str(self.port), "--no-access-log"],
            env=self.env, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT,
        )
        if wait:
            self.wait()

    def wait(self) -> None:
        try:
            wait_port(self.port)
        except TimeoutError as exc:
            tail = self.log_path.read_text(errors="replace")[-2000:]
            raise RuntimeError(f"{self.service} did not start: {exc}\n{tail}") from exc

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
