"""Real processes for fault tests: a service under uvicorn, a second Kafka broker."""

from __future__ import annotations

import base64
import os
import subprocess
import time
import uuid
from pathlib import Path

from tenure_cli.procs import ROOT, ServiceProcess, free_port, wait_port

__all__ = ["KafkaBroker", "ServiceProcess", "free_port", "wait_port"]


class KafkaBroker:
    """A second single-node KRaft broker for tests that stop and start the broker."""

    def __init__(self, workdir: Path):
        libs = os.environ.get("TENURE_TEST_KAFKA_LIBS") or str(ROOT / ".cache/kafka/libs")
        if not Path(libs).is_dir():
            raise RuntimeError(f"Kafka jars not found in {libs}: run the tests with ./dev test")
        self.libs = libs
        self.dir = workdir
        self.port = free_port()
        self.controller_port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        template = (ROOT / "deploy/kafka/server.properties.in").read_text()
        (self.dir / "data").mkdir(parents=True, exist_ok=True)
        self.config = self.dir / "server.properties"
        self.config.write_text(
            template.replace("@KAFKA_PORT@", str(self.port))
            .replace("@CONTROLLER_PORT@", str(self.controller_port))
            .replace("@DATA_DIR@", str(self.dir / "data"))
        )
        cluster = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        subprocess.run(
            ["java", "-cp", f"{self.libs}/*", f"-Dlog4j2.configurationFile={ROOT}/deploy/kafka/log4j2.yaml",
             "kafka.tools.StorageTool", "format", "--ignore-formatted", f"--cluster-id={cluster}", "-c", str(self.config)],
            check=True, capture_output=True,
        )

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> None:
        log = open(self.dir / "broker.log", "ab")  # noqa: SIM115
        self.proc = subprocess.Popen(
            ["java", "-Xms128m", "-Xmx512m", f"-Dlog4j2.configurationFile={ROOT}/deploy/kafka/log4j2.yaml",
             "-cp", f"{self.libs}/*", "kafka.Kafka", str(self.config)],
            stdout=log, stderr=subprocess.STDOUT,
        )
        try:
            wait_port(self.port)
            time.sleep(0.5)
            if self.proc.poll() is not None:
                raise RuntimeError(f"broker exited with {self.proc.returncode}")
        except (TimeoutError, RuntimeError) as exc:
            tail = (self.dir / "broker.log").read_text()[-3000:]
            raise RuntimeError(f"test broker did not start: {exc}\n{tail}") from exc

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
