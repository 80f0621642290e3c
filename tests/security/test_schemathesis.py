"""Property-based fuzzing of each service's OpenAPI document with schemathesis, against the
services running as real processes: no answer is a 5xx, and none violates its schema.

Bounded for CI: a fixed number of examples per operation (positive and negative data),
derandomized so a failure reproduces, without shrinking."""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import response_schema_conformance

from tests.support.platform import Namespace, token
from tenure_cli.procs import ServiceProcess
from tenure_cli.services import SERVICE_NAMES

POSITIVE_EXAMPLES = 6
NEGATIVE_EXAMPLES = 3
# Promotion waits up to 15 s for the learner to act on the command: one call is tested in
# the route test; fuzzing it would spend the whole budget waiting.
SKIP = {("POST", "/v1/model:promote")}
SCOPES = [f"{name}:*" for name in SERVICE_NAMES] + ["pii:read"]


def _env(ns: Namespace) -> dict[str, str]:
    env = dict(ns.env)
    for name in SERVICE_NAMES:
        prefix = f"TENURE_{name.upper()}_"
        env[prefix + "RUN_CONSUMERS"] = "false"
        env[prefix + "RATE_LIMIT_PER_SECOND"] = "0"
    env["TENURE_SCORING_REPORT_SETTLE_SECONDS"] = "0"
    return env


def _wait_ready(proc: ServiceProcess, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            if httpx.get(f"{proc.url}/readyz", timeout=5).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            raise AssertionError(f"{proc.service} not ready: {proc.log_path.read_text()[-2000:]}")
        time.sleep(0.2)


def _fuzz(url: str, headers: dict[str, str]) -> tuple[int, list[str]]:
    schema = schemathesis.openapi.from_url(f"{url}/openapi.json")
    calls = 0
    failures: list[str] = []
    for result in schema.get_all_operations():
        operation = result.ok()
        if (operation.method.upper(), operation.path) in SKIP:
            continue
        for mode, examples in ((GenerationMode.POSITIVE, POSITIVE_EXAMPLES),
                               (GenerationMode.NEGATIVE, NEGATIVE_EXAMPLES)):
            seen: list[str] = []

            @given(case=operation.as_strategy(generation_mode=mode))
            @settings(max_examples=examples, deadline=None, database=None, derandomize=True,
                      phases=[Phase.generate], suppress_health_check=list(HealthCheck))
            def run(case: Any) -> None:
                nonlocal calls
                response = case.call(base_url=url, headers=headers, timeout=30)
                calls += 1
                try:
                    case.validate_response(
                        response, checks=[not_a_server_error, response_schema_conformance],
                        headers=headers)
                except (AssertionError, BaseExceptionGroup) as exc:  # a check's failures
                    if len(seen) < 2:
                        seen.append(f"{operation.method.upper()} {operation.path} ({mode}): "
                                    f"{str(exc)[:1500]}")

            try:
                run()
            except Unsatisfiable:
                pass  # nothing of that kind to generate (e.g. negative data, no parameters)
            failures.extend(seen)
    return calls, failures


def test_no_5xx_and_no_schema_violation_in_any_service(ns: Namespace) -> None:
    headers = {"Authorization": f"Bearer {token(*SCOPES, kind='service', subject='fuzzer')}"}
    with tempfile.TemporaryDirectory() as tmp:
        procs = [ServiceProcess(name, _env(ns), Path(tmp) / f"{name}.log")
                 for name in SERVICE_NAMES]
        try:
            for proc in procs:
                proc.start(wait=False)
            for proc in procs:
                proc.wait()
                _wait_ready(proc)
            report = {}
            for proc in procs:
                began = time.monotonic()
                report[proc.service] = _fuzz(proc.url, headers)
                print(f"{proc.service}: {report[proc.service][0]} calls in "  # noqa: T201
                      f"{time.monotonic() - began:.1f}s")
        finally:
            for proc in procs:
                proc.stop()
    for name, (calls, _) in report.items():
        assert calls >= 20, f"{name}: only {calls} requests were made"
    problems = [f for _, found in report.values() for f in found]
    assert not problems, "\n\n".join(problems)
