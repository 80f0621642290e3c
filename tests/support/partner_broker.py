"""A Kafka broker of its own with the partner listener (SASL/SCRAM over TLS) and ACLs on.

The shared test broker serves every engineer's tests; the partner tests start this one on free
ports instead, from the same deploy/kafka templates ./dev renders.
"""

from __future__ import annotations

import ssl
import time
from pathlib import Path

from tenure_cli.devtls import ensure_dev_ca
from tenure_cli.procs import ROOT, free_port, wait_port
from tests.support.processes import KafkaBroker


class PartnerBroker(KafkaBroker):
    def __init__(self, workdir: Path):
        super().__init__(workdir)
        self.partner_port = free_port()
        self.tls_dir = workdir / "tls"
        self.ca_file = ensure_dev_ca(self.tls_dir)
        fragment = (ROOT / "deploy/kafka/partners.properties.in").read_text()
        with self.config.open("a") as out:
            out.write(
                fragment.replace("@KAFKA_PORT@", str(self.port))
                .replace("@CONTROLLER_PORT@", str(self.controller_port))
                .replace("@PARTNER_HOST@", "127.0.0.1")
                .replace("@PARTNER_PORT@", str(self.partner_port))
                .replace("@TLS_DIR@", str(self.tls_dir))
            )

    @property
    def partner_bootstrap(self) -> str:
        return f"127.0.0.1:{self.partner_port}"

    def ssl_context(self) -> ssl.SSLContext:
        """What a partner configures: trust the bank's CA, verify the broker's name."""
        return ssl.create_default_context(cafile=str(self.ca_file))

    def start(self) -> None:
        super().start()
        try:
            wait_port(self.partner_port, 60)
        except TimeoutError as exc:
            tail = (self.dir / "broker.log").read_text()[-3000:]
            raise RuntimeError(f"partner listener did not open: {exc}\n{tail}") from exc
        time.sleep(0.2)
