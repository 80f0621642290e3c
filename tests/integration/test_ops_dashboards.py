"""Grafana dashboards: well-formed, provisioned, and every query answers against the real
platform (the four services and the simulator, scraped by Debian's Prometheus)."""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import subprocess
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import orjson
import pytest
import yaml

from shared.events import encode_event
from shared.settings import PlatformSettings
from tenure_cli.procs import ServiceProcess, free_port, wait_port
from tenure_cli.publish import EventPublisher
from tenure_cli.services import SERVICE_NAMES
from tenure_cli.simulator import SimConfig, simulate
from tests.support.platform import Namespace

ROOT = Path(__file__).resolve().parents[2]
GRAFANA = ROOT / "deploy" / "grafana"
DASHBOARDS = sorted((GRAFANA / "dashboards").glob("*.json"))
# Grafana's built-in interval variables, as Grafana would expand them for a short range.
GRAFANA_VARIABLES = {"$__rate_interval": "1m", "$__interval": "15s", "$__range": "1h"}


def dashboard_queries() -> list[tuple[str, str, str]]:
    """(dashboard title, panel title, PromQL) for every target of every panel."""
    out = []
    for path in DASHBOARDS:
        board = json.loads(path.read_text())
        for p in board["panels"]:
            for t in p["targets"]:
                expr = t["expr"]
                for var, value in GRAFANA_VARIABLES.items():
                    expr = expr.replace(var, value)
                out.append((board["title"], p["title"], expr))
    return out


def test_dashboards_are_generated_and_well_formed() -> None:
    import importlib.util

    spec = importlib.util.spec_from_file_location("build", GRAFANA / "build_dashboards.py")
    assert spec is not None and spec.loader is not None
    build = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(build)
    rendered = build.render()
    assert {p.name for p in DASHBOARDS} == set(rendered) == {
        "platform-health.json", "lifecycle-funnel.json", "churn-model.json", "engagement.json"}
    for path in DASHBOARDS:
        assert path.read_text() == rendered[path.name], (
            f"{path.name} is stale: run .venv/bin/python deploy/grafana/build_dashboards.py")

    datasources = yaml.safe_load(
        (GRAFANA / "provisioning/datasources/prometheus.yml").read_text())
    assert datasources["apiVersion"] == 1
    uids = {d["uid"]: d for d in datasources["datasources"]}
    providers = yaml.safe_load((GRAFANA / "provisioning/dashboards/tenure.yml").read_text())
    assert providers["apiVersion"] == 1
    assert [p["type"] for p in providers["providers"]] == ["file"]

    seen_uids = set()
    for path in DASHBOARDS:
        board = json.loads(path.read_text())
        assert board["uid"] not in seen_uids and re.fullmatch(r"[a-z0-9-]{1,40}", board["uid"])
        seen_uids.add(board["uid"])
        assert board["title"] and isinstance(board["schemaVersion"], int)
        assert board["panels"], f"{path.name} has no panel"
        ids = [p["id"] for p in board["panels"]]
        assert len(ids) == len(set(ids)), f"{path.name}: panel ids repeat"
        for p in board["panels"]:
            where = f"{path.name} / {p['title']}"
            assert p["type"] in {"timeseries", "stat", "bargauge"}, where
            assert p["datasource"]["uid"] in uids, f"{where}: unknown datasource"
            assert uids[p["datasource"]["uid"]]["type"] == p["datasource"]["type"], where
            g = p["gridPos"]
            assert g["w"] > 0 and g["h"] > 0 and g["x"] + g["w"] <= 24, where
            assert p["targets"], f"{where}: no targets"
            refs = [t["refId"] for t in p["targets"]]
            assert len(refs) == len(set(refs)), where
            for t in p["targets"]:
                assert t["datasource"]["uid"] in uids, f"{where}: target datasource"
                assert t["expr"].strip(), f"{where}: empty query"


def _prometheus_config(tmp: Path, targets: dict[str, int], alerts: Path) -> Path:
    config = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(alerts)],
        "scrape_configs": [{
            "job_name": "tenure",
            "static_configs": [{"targets": [f"127.0.0.1:{port}"], "labels": {"service": name}}
                               for name, port in targets.items()],
        }],
    }
    path = tmp / "prometheus.yml"
    path.write_text(yaml.safe_dump(config))
    return path


async def _publish_simulated_bank(ns: Namespace) -> int:
    """A year of a small bank up to today, and a few messages no service can accept."""
    today = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    config = SimConfig(customers=40, seed=3, days=400, start=today - timedelta(days=400))
    settings = PlatformSettings(**{k.removeprefix("TENURE_").lower(): v
                                   for k, v in ns.env.items()})
    events = list(simulate(config))
    async with EventPublisher(settings) as publisher:
        for event in events:
            await publisher.send(event)
        valid = orjson.loads(encode_event(events[0]))
        bad = [b'{"event_id": "not json', orjson.dumps({**valid, "schema_version": 9})]
        for value in bad:
            await publisher.send_raw("tenure.transactions.v1", value, events[0].customer_id)
    return len(events)


async def test_every_dashboard_query_has_data_on_the_running_platform(
    ns: Namespace, tmp_path: Path
) -> None:
    prometheus = shutil.which("prometheus")
    if prometheus is None:
        pytest.fail("prometheus is missing: ./dev test installs Debian's prometheus package")
    queries = dashboard_queries()
    assert len(queries) >= 30

    env = {**ns.env, "TENURE_STATE_METRICS_SECONDS": "1"}
    services = [ServiceProcess(n, env, tmp_path / f"{n}.log") for n in SERVICE_NAMES]
    port = free_port()
    config = _prometheus_config(tmp_path, {s.service: s.port for s in services},
                                ROOT / "deploy/prometheus/alerts.yml")
    prom: subprocess.Popen[bytes] | None = None
    try:
        # Everything starts at once: the events wait in Kafka for the services, and
        # Prometheus scrapes whoever answers.
        for s in services:
            s.start(wait=False)
        prom = subprocess.Popen(
            [prometheus, f"--config.file={config}", f"--storage.tsdb.path={tmp_path / 'tsdb'}",
             f"--web.listen-address=127.0.0.1:{port}"],
            stdout=(tmp_path / "prometheus.log").open("wb"), stderr=subprocess.STDOUT)
        await _publish_simulated_bank(ns)
        for s in services:
            s.wait()
        wait_port(port)

        missing: dict[str, str] = {}
        deadline = time.monotonic() + 240
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=10) as api:
            while True:
                missing = {}
                for board, title, expr in queries:
                    r = await api.get("/api/v1/query", params={"query": expr})
                    body = r.json()
                    # A query error is a broken dashboard: fail at once, no retry helps.
                    assert r.status_code == 200 and body["status"] == "success", (
                        f"{board} / {title}: {expr}\n{body.get('error')}")
                    if not body["data"]["result"]:
                        missing[f"{board} / {title}"] = expr
                if not missing or time.monotonic() > deadline:
                    break
                await asyncio.sleep(2)
            targets = (await api.get("/api/v1/targets")).json()["data"]["activeTargets"]
        assert {t["labels"]["service"] for t in targets if t["health"] == "up"} == set(
            SERVICE_NAMES)
        assert not missing, "panels without data:\n" + "\n".join(
            f"  {k}: {v}" for k, v in missing.items())
    finally:
        if prom is not None:
            prom.terminate()
            prom.wait(20)
        for s in services:
            s.stop()


def test_every_grafana_variable_in_a_query_is_one_the_live_test_expands() -> None:
    used: set[str] = set()
    for _, _, expr in dashboard_queries():
        used |= set(re.findall(r"\$\w+", expr))
    assert not used, f"unexpanded variables: {used}"
