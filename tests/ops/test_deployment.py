"""docker-compose.yml and Dockerfile: valid against the Compose Specification's JSON Schema,
and every reference in them resolves (no container engine runs here to find out later)."""

from __future__ import annotations

import copy
import json
import re
import shlex
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import jsonschema
import yaml

from shared.settings import PlatformSettings
from tenure_cli.main import build_parser
from tenure_cli.services import SERVICE_NAMES, settings_class

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "docker-compose.yml"
SCHEMA = ROOT / "deploy/compose/compose-spec.json"
PORTS = {"profile": 8101, "scoring": 8102, "lifecycle": 8103, "engagement": 8104}


def load_compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE.read_text())


def schema_errors(doc: dict[str, Any]) -> list[str]:
    schema = json.loads(SCHEMA.read_text())
    validator = jsonschema.Draft202012Validator(schema)
    return [f"{'/'.join(map(str, e.absolute_path))}: {e.message}"
            for e in validator.iter_errors(doc)]


def _depends(service: dict[str, Any]) -> dict[str, str]:
    deps = service.get("depends_on") or {}
    if isinstance(deps, list):
        return {d: "service_started" for d in deps}
    return {name: spec.get("condition", "service_started") for name, spec in deps.items()}


def _env(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {k: str(v) for k, v in env.items()}


def _command(service: dict[str, Any]) -> list[str]:
    cmd = service.get("command") or []
    return shlex.split(cmd) if isinstance(cmd, str) else [str(c) for c in cmd]


def _known_env_names() -> set[str]:
    """Every TENURE_ variable a service reads: shared aliases and each service's prefix."""
    names: set[str] = set()
    for field in PlatformSettings.model_fields.values():
        alias = field.validation_alias
        names |= {c for c in getattr(alias, "choices", []) if isinstance(c, str)}
    from services.console.settings import ConsoleSettings

    for cls in [*map(settings_class, SERVICE_NAMES), ConsoleSettings]:
        prefix = cls.model_config.get("env_prefix", "")
        names |= {f"{prefix}{n}".upper() for n in cls.model_fields}
    names.add("TENURE_STATE_METRICS_SECONDS")
    names.add("TENURE_MASTER_KEYS")  # shared.keys.KeySettings: profile and the publishers
    return names


def reference_problems(doc: dict[str, Any]) -> list[str]:
    """Everything in a compose file that points somewhere: does it arrive?"""
    problems: list[str] = []
    services: dict[str, dict[str, Any]] = doc.get("services", {})
    volumes = set((doc.get("volumes") or {}).keys())
    host_ports: dict[str, str] = {}
    known_env = _known_env_names()

    for name, s in services.items():
        for dep, condition in _depends(s).items():
            if dep not in services:
                problems.append(f"{name}: depends_on unknown service {dep!r}")
                continue
            if dep == name:
                problems.append(f"{name}: depends on itself")
            target = services[dep]
            if condition == "service_healthy" and "healthcheck" not in target:
                problems.append(f"{name}: waits for {dep} healthy, which has no healthcheck")
            if condition == "service_completed_successfully" and target.get("restart") in (
                    "always", "unless-stopped"):
                problems.append(f"{name}: waits for {dep} to complete, which restarts forever")
        for port in s.get("ports", []):
            host, _, container = str(port).rpartition(":")
            if host in host_ports:
                problems.append(f"{name}: host port {host} already taken by {host_ports[host]}")
            host_ports[host] = name
        for mount in s.get("volumes", []):
            source = str(mount).split(":", 1)[0]
            if source.startswith((".", "/")):
                if not (ROOT / source).exists():
                    problems.append(f"{name}: bind mount {source} does not exist")
            elif source not in volumes:
                problems.append(f"{name}: volume {source!r} is not declared")
        for env_file in ([s["env_file"]] if isinstance(s.get("env_file"), str)
                         else s.get("env_file", [])):
            path = env_file if isinstance(env_file, str) else env_file["path"]
            required = isinstance(env_file, str) or env_file.get("required", True)
            if required and not (ROOT / path).exists():
                problems.append(f"{name}: env_file {path} does not exist")
        for key, value in _env(s).items():
            if key.startswith("TENURE_") and key not in known_env and key != (
                    "TENURE_PROMETHEUS_URL"):
                problems.append(f"{name}: {key} is no setting any service reads")
            if key == "TENURE_KAFKA_BOOTSTRAP":
                host = value.split(":")[0]
                if host not in services:
                    problems.append(f"{name}: Kafka at unknown host {host}")
            if key == "TENURE_DATABASE_URL":
                url = urlparse(value.replace("+asyncpg", ""))
                pg = services.get(url.hostname or "")
                if pg is None:
                    problems.append(f"{name}: PostgreSQL at unknown host {url.hostname}")
                else:
                    pg_env = _env(pg)
                    if (url.username, url.password, url.path.lstrip("/")) != (
                            pg_env.get("POSTGRES_USER"), pg_env.get("POSTGRES_PASSWORD"),
                            pg_env.get("POSTGRES_DB")):
                        problems.append(f"{name}: database URL does not match {url.hostname}")
            if key.endswith("_URL") and key.startswith("TENURE_PROMETHEUS"):
                url = urlparse(value)
                if url.hostname not in services:
                    problems.append(f"{name}: {key} points at unknown host {url.hostname}")

    # The application services: the right module, on their port, healthy on /readyz, and
    # started only after the migration step completed.
    for app, port in PORTS.items():
        s = services.get(app)
        if s is None:
            problems.append(f"service {app} is missing")
            continue
        cmd = _command(s)
        if f"services.{app}.app:create_app" not in cmd or cmd[cmd.index("--port") + 1] != str(
                port):
            problems.append(f"{app}: command does not run services.{app} on :{port}")
        if f"{port}:{port}" not in [str(p) for p in s.get("ports", [])]:
            problems.append(f"{app}: port {port} is not published")
        check = " ".join(map(str, s.get("healthcheck", {}).get("test", [])))
        if f"127.0.0.1:{port}/readyz" not in check:
            problems.append(f"{app}: healthcheck does not ask :{port}/readyz")
        migrate = [d for d, c in _depends(s).items() if c == "service_completed_successfully"]
        if not migrate:
            problems.append(f"{app}: does not wait for a migration step")
        for step in migrate:
            line = " ".join(_command(services.get(step, {})))
            if "tenure migrate" not in line or "tenure topics ensure" not in line:
                problems.append(f"{app}: {step} neither migrates nor creates the topics")
    return problems


def test_compose_file_is_valid_against_the_compose_specification() -> None:
    doc = load_compose()
    assert schema_errors(doc) == []


def test_every_reference_in_the_compose_file_resolves() -> None:
    doc = load_compose()
    assert reference_problems(doc) == []
    services = doc["services"]
    assert {"kafka", "postgres", "migrate", "prometheus", "grafana", "console", *PORTS} <= set(
        services)
    # The console calls the four services where they answer, once they are healthy.
    console = services["console"]
    assert _depends(console) == {name: "service_healthy" for name in PORTS}
    for name, port in PORTS.items():
        assert _env(console)[f"TENURE_CONSOLE_{name.upper()}_URL"] == f"http://{name}:{port}"
    assert "8100:8100" in console["ports"] and "services.console.app:create_app" in (
        _command(console))
    # The migration step needs the infrastructure healthy, and runs real CLI commands.
    assert _depends(services["migrate"]) == {"kafka": "service_healthy",
                                             "postgres": "service_healthy"}
    commands = build_parser()._subparsers._group_actions[0].choices  # type: ignore[union-attr]
    assert {"topics", "migrate"} <= set(commands)


def test_compose_checks_catch_broken_files() -> None:
    doc = load_compose()
    broken = copy.deepcopy(doc)
    broken["services"]["scoring"]["depends_on"]["nosuch"] = {"condition": "service_healthy"}
    broken["services"]["lifecycle"]["ports"] = ["8101:8103"]
    broken["services"]["grafana"]["volumes"].append("missing-volume:/data")
    broken["services"]["profile"]["environment"] = {"TENURE_KAFKA_BOOTSTRAP": "kafak:9092",
                                                    "TENURE_PROFLE_PII_KEYS": "x"}
    broken["services"]["engagement"]["depends_on"] = {"kafka": {"condition": "service_started"}}
    found = "\n".join(reference_problems(broken))
    for expected in ("unknown service 'nosuch'", "host port 8101 already taken",
                     "port 8103 is not published", "'missing-volume' is not declared",
                     "Kafka at unknown host kafak", "TENURE_PROFLE_PII_KEYS",
                     "engagement: does not wait for a migration step"):
        assert expected in found, expected
    broken["services"]["profile"]["depends_on"] = {"migrate": {"condition": "service_ready"}}
    broken["services"]["profile"]["helthcheck"] = {}
    errors = schema_errors(broken)
    assert any(e.startswith("services/profile/depends_on") for e in errors), errors
    assert any("helthcheck" in e for e in errors), errors


def test_prometheus_in_compose_scrapes_every_service_and_grafana_is_provisioned() -> None:
    doc = load_compose()
    prom = doc["services"]["prometheus"]
    mounts = dict(str(v).split(":")[:2] for v in prom["volumes"] if str(v).startswith("."))
    config = yaml.safe_load((ROOT / mounts_key(mounts, "/etc/prometheus/prometheus.yml"))
                            .read_text())
    for rule_file in config["rule_files"]:
        assert f"/etc/prometheus/{rule_file}" in mounts.values(), rule_file
    targets = {t for job in config["scrape_configs"] for sc in job["static_configs"]
               for t in sc["targets"]}
    assert targets == {f"{s}:{p}" for s, p in {**PORTS, "console": 8100}.items()}
    labelled = {sc["labels"]["service"] for job in config["scrape_configs"]
                for sc in job["static_configs"]}
    assert labelled == {*PORTS, "console"}

    grafana = doc["services"]["grafana"]
    gmounts = dict(str(v).split(":")[:2] for v in grafana["volumes"] if str(v).startswith("."))
    provisioning = ROOT / mounts_key(gmounts, "/etc/grafana/provisioning")
    providers = yaml.safe_load((provisioning / "dashboards/tenure.yml").read_text())
    dashboards_in_container = providers["providers"][0]["options"]["path"]
    host_dir = ROOT / mounts_key(gmounts, dashboards_in_container)
    assert sorted(p.name for p in host_dir.glob("*.json")) == [
        "churn-model.json", "engagement.json", "lifecycle-funnel.json", "platform-health.json"]
    datasource = (provisioning / "datasources/prometheus.yml").read_text()
    variable = re.search(r"\$\{(\w+)\}", datasource)
    assert variable is not None
    assert urlparse(_env(grafana)[variable.group(1)]).hostname == "prometheus"


def mounts_key(mounts: dict[str, str], target: str) -> str:
    sources = [src for src, dst in mounts.items() if dst == target]
    assert sources, f"nothing is mounted at {target}"
    return sources[0]


def test_dockerfile_copies_what_exists_and_exposes_the_service_ports() -> None:
    text = (ROOT / "Dockerfile").read_text()
    for line in text.splitlines():
        if line.startswith("COPY "):
            for source in line.split()[1:-1]:
                assert (ROOT / source).exists(), f"Dockerfile copies missing {source}"
    exposed = {int(p) for line in text.splitlines() if line.startswith("EXPOSE ")
               for p in line.split()[1:]}
    assert {*PORTS.values(), 8100} <= exposed
    for name, s in load_compose()["services"].items():
        if s.get("build"):
            assert s["build"] in (".", {"context": "."}), name
