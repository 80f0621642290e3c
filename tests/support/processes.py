"""Real processes for fault tests: a service under uvicorn, a second Kafka broker."""

from __future__ import annotations

import time

from tenure_cli.chaos_infra import PrivateKafka
from tenure_cli.procs import ServiceProcess, free_port, wait_port

__all__ = ["KafkaBroker", "ServiceProcess", "free_port", "wait_port"]


class KafkaBroker(PrivateKafka):
    """A second single-node KRaft broker for tests that stop and start the broker: the
    chaos run's private broker (tenure_cli.chaos_infra), which also checks that the process
    is still alive once its port answers."""

    def start(self) -> None:
        super().start()
        time.sleep(0.5)
        assert self.proc is not None
        if self.proc.poll() is not None:
            tail = (self.dir / "broker.log").read_text(errors="replace")[-3000:]
            raise RuntimeError(f"test broker exited with {self.proc.returncode}\n{tail}")
