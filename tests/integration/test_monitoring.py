"""Prometheus configuration and alert rules: valid, unit-tested, and about real metrics."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.support import factories as f
from tests.support.platform import Namespace, eventually

PROMETHEUS = Path(__file__).resolve().parents[2] / "deploy" / "prometheus"


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    tool = shutil.which("promtool")
    if tool is None:
        pytest.fail("promtool is missing: ./dev test installs Debian's prometheus package")
    return subprocess.run([tool, *args], cwd=PROMETHEUS, capture_output=True, text=True,
                          timeout=60)


def test_config_and_rules_are_valid_and_the_alerts_behave() -> None:
    for args in (("check", "config", "prometheus.yml"), ("check", "rules", "alerts.yml"),
                 ("test", "rules", "alerts.test.yml")):
        result = promtool(*args)
        assert result.returncode == 0, result.stdout + result.stderr


def test_a_broken_rule_is_caught(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yml"
    bad.write_text("groups:\n  - name: x\n    rules:\n      - alert: X\n        expr: rate(\n")
    result = promtool("check", "rules", str(bad))
    assert result.returncode != 0


async def test_every_alert_reads_metrics_the_services_export(ns: Namespace) -> None:
    patterns = set(re.findall(r'__name__=~"([^"]+)"', (PROMETHEUS / "alerts.yml").read_text()))
    assert patterns
    async with ns.service("profile") as profile:
        await ns.publish("tenure.transactions.v1", f.transaction("C-MON"))

        async def exported() -> str | None:
            text = (await profile.client.get("/metrics")).text
            return text if "tenure_profile_watermark_delay_seconds{" in text else None

        text = await eventually(exported, what="metrics with samples")
    names = {line.split("{")[0].split(" ")[0] for line in text.splitlines()
             if line and not line.startswith("#")}
    # Families declared but without samples yet (a labelled counter before its first event).
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            _, _, family, kind = line.split(" ")
            names.add(family)
            if kind == "counter" and not family.endswith("_total"):
                names.add(f"{family}_total")
    for pattern in patterns:
        assert any(re.fullmatch(pattern, n) for n in names), f"no exported metric matches {pattern}"
