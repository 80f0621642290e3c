"""The short version of `./dev chaos`: every fault once under a small load, nothing lost or
doubled. It starts a private broker and a private PostgreSQL (it restarts and crashes them),
so it never disturbs the shared test infrastructure."""

from __future__ import annotations

from pathlib import Path

import pytest

from tenure_cli.chaos import ChaosConfig, run_chaos, write_report
from tests.support.platform import require_infrastructure

pytestmark = pytest.mark.slow


async def test_faults_under_load_lose_and_double_nothing(tmp_path: Path) -> None:
    require_infrastructure()  # the Kafka jars and PostgreSQL binaries ./dev test installs
    figures = await run_chaos(ChaosConfig(customers=25, days=2, rate=10, pause=1.0,
                                          down=1.0, workdir=tmp_path / "chaos"))
    published = {s["what"]: s["published"] for s in figures["timeline"] if "published" in s}
    for fault in ("SIGKILL profile", "SIGKILL scoring", "SIGKILL lifecycle",
                  "SIGKILL engagement", "broker restarted", "PostgreSQL restarted"):
        assert fault in published
    # The load ran through the faults: inputs were acknowledged between the first fault and
    # the last, and after it.
    assert published["SIGKILL profile"] < published["broker stopped"]
    assert published["broker restarted"] <= published["PostgreSQL restarted"]
    assert published["PostgreSQL restarted"] < published["load done"]
    detail = figures["detail"]
    assert figures["inputs_published"] == published["load done"] > 0
    assert {
        "inputs_lost": figures["inputs_lost"],
        "outputs_lost": figures["outputs_lost"],
        "effects_duplicated": figures["effects_duplicated"],
        "messages_sent_twice": figures["messages_sent_twice"],
    } == {"inputs_lost": 0, "outputs_lost": 0, "effects_duplicated": 0,
          "messages_sent_twice": 0}, detail

    figures["measured_at"] = "test"
    write_report(figures, tmp_path / "reliability.md")
    assert "**inputs lost**" in (tmp_path / "reliability.md").read_text()
