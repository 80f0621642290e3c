"""A private Kafka broker and a private PostgreSQL for `tenure chaos`: restarted at will.

The fault run restarts the broker and crashes the database, so it never uses infrastructure
anyone else relies on (the dev stack, the shared test broker): both are started here, from the
same templates ./dev uses, on free ports in a scratch directory, and removed afterwards.
"""

from __future__ import annotations

import base64
import os
import shutil
import signal
import subprocess
import uuid
from pathlib import Path

from tenure_cli.procs import ROOT, free_port, wait_port


def _kafka_libs() -> Path:
    libs = Path(os.environ.get("TENURE_TEST_KAFKA_LIBS") or ROOT / ".cache/kafka/libs")
    if not libs.is_dir():
        raise RuntimeError(f"Kafka jars not found in {libs}: run ./dev chaos (it installs them)")
    return libs


class PrivateKafka:
    """A single-node KRaft broker on free ports (deploy/kafka/server.properties.in)."""

    def __init__(self, workdir: Path):
        self.libs = _kafka_libs()
        self.dir = workdir
        self.port = free_port()
        self.controller_port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        (self.dir / "data").mkdir(parents=True, exist_ok=True)
        self.config = self.dir / "server.properties"
        template = (ROOT / "deploy/kafka/server.properties.in").read_text()
        self.config.write_text(
            template.replace("@KAFKA_PORT@", str(self.port))
            .replace("@CONTROLLER_PORT@", str(self.controller_port))
            .replace("@DATA_DIR@", str(self.dir / "data"))
        )
        cluster = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        subprocess.run(
            ["java", "-cp", f"{self.libs}/*", *self._log4j(), "kafka.tools.StorageTool",
             # `=`: a base64url id may start with "-" and must not read as an option.
             "format", "--ignore-formatted", f"--cluster-id={cluster}", "-c", str(self.config)],
            check=True, capture_output=True,
        )

    @staticmethod
    def _log4j() -> list[str]:
        return [f"-Dlog4j2.configurationFile={ROOT}/deploy/kafka/log4j2.yaml"]

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> None:
        log = open(self.dir / "broker.log", "ab")  # noqa: SIM115 - the child owns it
        self.proc = subprocess.Popen(
            ["java", "-Xms128m", "-Xmx512m", *self._log4j(), "-cp", f"{self.libs}/*",
             "kafka.Kafka", str(self.config)],
            stdout=log, stderr=subprocess.STDOUT,
        )
        try:
            wait_port(self.port, 120)
        except TimeoutError as exc:
            tail = (self.dir / "broker.log").read_text(errors="replace")[-3000:]
            raise RuntimeError(f"private broker did not start: {exc}\n{tail}") from exc

    def stop(self, *, kill: bool = False) -> None:
        if self.proc and self.proc.poll() is None:
            if kill:
                self.proc.send_signal(signal.SIGKILL)
            else:
                self.proc.terminate()
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)


def _pg_bin() -> Path:
    for candidate in sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True):
        if (candidate / "pg_ctl").is_file():
            return candidate
    found = shutil.which("pg_ctl")
    if found:
        return Path(found).parent
    raise RuntimeError("PostgreSQL binaries not found: run ./dev chaos (it installs them)")


class PrivatePostgres:
    """A throw-away PostgreSQL cluster on a free port; `crash` stops it like a power cut."""

    def __init__(self, workdir: Path):
        self.bin = _pg_bin()
        self.dir = workdir
        self.port = free_port()
        self.as_postgres = os.geteuid() == 0  # initdb refuses to run as root
        self.dir.mkdir(parents=True, exist_ok=True)
        if self.as_postgres:
            shutil.chown(self.dir, "postgres")
            self.dir.chmod(0o700)
            # The scratch root may be private to root: let postgres through to its own folder.
            for parent in self.dir.parents:
                if parent == Path("/") or parent.stat().st_mode & 0o001:
                    break
                parent.chmod(parent.stat().st_mode | 0o001)
        self.data = self.dir / "data"
        self._run([str(self.bin / "initdb"), "-D", str(self.data), "-U", "postgres",
                   "--auth-local=trust", "--auth-host=trust", "-E", "UTF8", "--locale=C.UTF-8"])
        # The production settings (fsync on): the crash must be survived the way it would be.
        settings = (ROOT / "deploy/postgres/postgresql.conf").read_text()
        settings += f"\nport = {self.port}\nunix_socket_directories = '{self.dir}'\n"
        conf = self.data / "postgresql.conf"
        self._run(["sh", "-c", f"cat >> '{conf}'"], stdin=settings.encode())

    def _run(self, argv: list[str], stdin: bytes | None = None) -> None:
        if self.as_postgres:
            argv = ["runuser", "-u", "postgres", "--", *argv]
        result = subprocess.run(argv, input=stdin, capture_output=True)
        if result.returncode != 0:
            raise RuntimeError(f"{' '.join(argv[:6])} failed: {result.stderr.decode()[-2000:]}")

    @property
    def url(self) -> str:
        return f"postgresql+asyncpg://tenure:tenure@127.0.0.1:{self.port}/tenure"

    def start(self) -> None:
        self._run([str(self.bin / "pg_ctl"), "-D", str(self.data), "-l",
                   str(self.dir / "postgres.log"), "-w", "-t", "60", "start"])

    def create_database(self) -> None:
        sql = (
            "CREATE ROLE tenure LOGIN PASSWORD 'tenure';\n"
            "CREATE DATABASE tenure OWNER tenure;\n"
        )
        self._run([str(self.bin / "psql"), "-h", str(self.dir), "-p", str(self.port),
                   "-U", "postgres", "-q", "-v", "ON_ERROR_STOP=1"], stdin=sql.encode())

    def stop(self, mode: str = "fast") -> None:
        """`immediate` is a crash: no checkpoint, recovery from the WAL on the next start."""
        if (self.data / "postmaster.pid").exists():
            self._run([str(self.bin / "pg_ctl"), "-D", str(self.data), "-m", mode, "-w",
                       "stop"])

    def remove(self) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)
