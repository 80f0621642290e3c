"""The OpenAPI documents themselves: every input is bounded, every operation outside ops
names its scope, and every error is documented as problem+json. No I/O: the apps are built
but not started."""

from __future__ import annotations

import importlib
from typing import Any

import pytest

from tests.security.servers import APPS

BOUNDED_STRING = ("maxLength", "pattern", "enum", "format", "const", "$ref")
OPS = {"/healthz", "/readyz", "/metrics"}


def document(name: str) -> dict[str, Any]:
    spec: dict[str, Any] = importlib.import_module(f"services.{name}.app").create_app().openapi()
    return spec


def operations(spec: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [(m.upper(), p, op) for p, item in spec["paths"].items() for m, op in item.items()]


@pytest.mark.parametrize("name", APPS)
def test_every_parameter_is_bounded(name: str) -> None:
    checked = 0
    for method, path, op in operations(document(name)):
        for parameter in op.get("parameters", []):
            schema = parameter["schema"]
            for variant in schema.get("anyOf", [schema]):
                where = f"{method} {path} {parameter['name']}"
                if variant.get("type") == "string":
                    assert any(k in variant for k in BOUNDED_STRING), f"{where}: unbounded"
                if variant.get("type") == "integer":
                    assert "maximum" in variant, f"{where}: no maximum"
                    if parameter["name"] == "limit":
                        assert variant["maximum"] <= 5000, f"{where}: page too large"
                assert variant.get("type") != "array", f"{where}: unbounded list"
                checked += 1
    assert checked > 0


@pytest.mark.parametrize("name", APPS)
def test_every_operation_names_its_scope_and_documents_problems(name: str) -> None:
    spec = document(name)
    assert spec["components"]["securitySchemes"]["bearer"] == {
        "type": "http", "scheme": "bearer", "bearerFormat": "JWT",
        "description": spec["components"]["securitySchemes"]["bearer"]["description"]}
    assert "HTTPValidationError" not in spec["components"]["schemas"]
    for method, path, op in operations(spec):
        if path in OPS:
            assert "security" not in op, f"{path} must stay open"
            continue
        [requirement] = op["security"]
        [scope] = requirement["bearer"]
        assert scope.split(":")[0] in (name, "pii", "partners"), f"{method} {path}: {scope}"
        for code in ("401", "403", "429", "default"):
            content = op["responses"][code]["content"]
            assert content == {"application/problem+json": {
                "schema": {"$ref": "#/components/schemas/Problem"}}}, f"{method} {path} {code}"
        if "422" in op["responses"]:
            assert "application/problem+json" in op["responses"]["422"]["content"]
        assert "Retry-After" in op["responses"]["429"]["headers"]
