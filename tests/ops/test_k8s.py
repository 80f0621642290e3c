"""deploy/k8s: valid against the Kubernetes schemas (offline, kubernetes-validate) and
consistent: probes, ports, selectors, config, the migration Job, and lag-based scaling."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from tenure_cli.services import SERVICE_NAMES, settings_class
from tests.ops.test_deployment import PORTS, _known_env_names

K8S = Path(__file__).resolve().parents[2] / "deploy" / "k8s"
# The oldest Kubernetes a managed cluster still commonly runs, and the newest schemas known.
VERSIONS = ("1.29.0", kubernetes_validate.latest_version())


def manifests() -> list[dict[str, Any]]:
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    listed = kustomization["resources"]
    on_disk = {p.name for p in K8S.glob("*.yaml")} - {"kustomization.yaml"}
    assert set(listed) == on_disk, "every manifest is listed in kustomization.yaml"
    docs = []
    for name in listed:
        docs += [d for d in yaml.safe_load_all((K8S / name).read_text()) if d]
    return docs


def by_kind(docs: list[dict[str, Any]], kind: str) -> dict[str, dict[str, Any]]:
    return {d["metadata"]["name"]: d for d in docs if d["kind"] == kind}


def test_every_built_in_resource_is_valid_against_the_kubernetes_schemas() -> None:
    docs = [d for d in manifests() if not d["apiVersion"].startswith("keda.sh/")]
    assert len(docs) >= 15
    for version in VERSIONS:
        for doc in docs:
            kubernetes_validate.validate(doc, version, strict=True)


def test_a_misspelt_field_is_refused() -> None:
    deployment = copy.deepcopy(by_kind(manifests(), "Deployment")["tenure-profile"])
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    container["readinesProbe"] = container.pop("readinessProbe")
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, VERSIONS[0], strict=True)


def test_each_service_runs_replicated_with_probes_ports_and_config_that_exist() -> None:
    docs = manifests()
    deployments = by_kind(docs, "Deployment")
    services = by_kind(docs, "Service")
    budgets = by_kind(docs, "PodDisruptionBudget")
    config = by_kind(docs, "ConfigMap")["tenure-config"]["data"]
    secret = by_kind(docs, "Secret")["tenure-secrets"]["stringData"]
    known = _known_env_names()
    for key in [*config, *secret]:
        assert key in known, f"{key} is no setting any service reads"
    assert {d["metadata"]["namespace"] for d in docs if d["kind"] != "Namespace"} == {"tenure"}

    for name, port in PORTS.items():
        d = deployments[f"tenure-{name}"]
        spec = d["spec"]
        assert spec["replicas"] >= 2
        labels = spec["template"]["metadata"]["labels"]
        assert spec["selector"]["matchLabels"].items() <= labels.items()
        (container,) = spec["template"]["spec"]["containers"]
        cmd = container["command"]
        assert f"services.{name}.app:create_app" in cmd and cmd[cmd.index("--port") + 1] == str(
            port)
        assert container["ports"] == [{"name": "http", "containerPort": port}]
        assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
        assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
        refs = {next(iter(v.values()))["name"] for v in container["envFrom"]}
        assert refs == {"tenure-config", "tenure-secrets"}
        assert spec["template"]["metadata"]["annotations"]["prometheus.io/port"] == str(port)
        service = services[f"tenure-{name}"]
        assert service["spec"]["selector"].items() <= labels.items()
        assert service["spec"]["ports"][0]["port"] == port
        assert budgets[f"tenure-{name}"]["spec"]["selector"]["matchLabels"].items() <= (
            labels.items())


def test_the_migration_job_creates_topics_and_migrates_every_schema() -> None:
    job = by_kind(manifests(), "Job")["tenure-migrate"]
    pod = job["spec"]["template"]["spec"]
    assert pod["restartPolicy"] == "Never"
    line = " ".join(pod["containers"][0]["command"])
    assert "tenure topics ensure" in line and "tenure migrate" in line


def test_scaling_by_consumer_lag_targets_each_services_group_within_the_partitions() -> None:
    docs = manifests()
    deployments = by_kind(docs, "Deployment")
    config = by_kind(docs, "ConfigMap")["tenure-config"]["data"]
    partitions = int(config["TENURE_PARTITIONS"])
    scaled = by_kind(docs, "ScaledObject")
    assert {s["spec"]["scaleTargetRef"]["name"] for s in scaled.values()} == {
        f"tenure-{n}" for n in SERVICE_NAMES}
    for name in SERVICE_NAMES:
        s = scaled[f"tenure-{name}"]["spec"]
        assert s["scaleTargetRef"]["name"] in deployments
        # Below the partition count: the surge pod of a rolling update (maxSurge 1) must get
        # a partition, or it never becomes ready and the rollout stalls.
        surge = deployments[s["scaleTargetRef"]["name"]]["spec"]["strategy"]["rollingUpdate"]
        assert 2 <= s["minReplicaCount"] <= s["maxReplicaCount"]
        assert s["maxReplicaCount"] + surge["maxSurge"] <= partitions
        (trigger,) = s["triggers"]
        assert trigger["type"] == "kafka"
        meta = trigger["metadata"]
        # The group the service really joins (no topic prefix in production).
        assert meta["consumerGroup"] == settings_class(name)().consumer_group
        assert meta["bootstrapServers"] == config["TENURE_KAFKA_BOOTSTRAP"]
        assert int(meta["lagThreshold"]) > 0


def test_the_console_calls_the_services_where_their_kubernetes_services_answer() -> None:
    docs = manifests()
    services = by_kind(docs, "Service")
    console = by_kind(docs, "Deployment")["tenure-console"]["spec"]
    assert console["replicas"] >= 2
    (container,) = console["template"]["spec"]["containers"]
    assert "services.console.app:create_app" in container["command"]
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    env = {e["name"]: e for e in container["env"]}
    for name, port in PORTS.items():
        url = env[f"TENURE_CONSOLE_{name.upper()}_URL"]["value"]
        host, _, answered = url.removeprefix("http://").partition(":")
        assert host in services and services[host]["spec"]["ports"][0]["port"] == int(answered)
    # Least privilege: only the token key from the Secret, no database or data keys.
    assert [e["configMapRef"]["name"] for e in container["envFrom"]] == ["tenure-config"]
    secret_refs = [e["valueFrom"]["secretKeyRef"]["key"] for e in env.values() if "valueFrom" in e]
    assert secret_refs == ["TENURE_JWT_SECRET"]
    assert "tenure-console" in services
