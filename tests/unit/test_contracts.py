"""The published contract: fresh, valid JSON Schema and AsyncAPI, and true to encode_event."""

from __future__ import annotations

import re

import copy
import json
import uuid
from datetime import UTC, date, datetime
from decimal import Decimal
from functools import cache
from pathlib import Path
from typing import Any

import pytest
from jsonschema import Draft202012Validator
from jsonschema.exceptions import ValidationError

from shared import events as ev
from shared.contracts import ASYNCAPI_FILE, SCHEMA_DIR, render_contracts
from shared.settings import ALL_TOPICS, INPUT_TOPICS

CONTRACTS_DIR = Path(__file__).resolve().parents[2] / "docs" / "contracts"
REGENERATE = "run `.venv/bin/tenure contracts` and commit docs/contracts"

AT = datetime(2026, 3, 1, 9, 30, tzinfo=UTC)
CAUSE = uuid.UUID("00000000-0000-4000-8000-00000000000a")


@cache
def rendered() -> dict[str, str]:
    return render_contracts()


def schema_for(event_type: str) -> dict[str, Any]:
    document: dict[str, Any] = json.loads(rendered()[f"{SCHEMA_DIR}/{event_type}.schema.json"])
    return document


def asyncapi() -> dict[str, Any]:
    document: dict[str, Any] = json.loads(rendered()[ASYNCAPI_FILE])
    return document


def validator(schema: dict[str, Any]) -> Draft202012Validator:
    return Draft202012Validator(schema, format_checker=Draft202012Validator.FORMAT_CHECKER)


def envelope(n: int) -> dict[str, Any]:
    return {
        "event_id": uuid.UUID(int=n, version=4),
        "customer_id": "C-000123",
        "occurred_at": AT,
        "source": "core-banking",
    }


SAMPLES: dict[str, ev.EnvelopeBase] = {
    "transaction.posted": ev.TransactionPosted(
        **envelope(1),
        payload=ev.TransactionDetails(
            account_id="ACC-1",
            product_type=ev.ProductType.current,
            amount=Decimal("1250.50"),
            currency="EUR",
            direction=ev.Direction.credit,
            category=ev.TxnCategory.salary,
            channel=ev.TxnChannel.batch,
            initiated_by=ev.InitiatedBy.bank,
            balance_after=Decimal("-20.05"),
        ),
    ),
    "consent.changed": ev.ConsentChanged(
        **envelope(2),
        payload=ev.ConsentChange(
            channel=ev.ContactChannel.sms, purpose=ev.ContactPurpose.marketing, granted=False
        ),
    ),
    "customer.registered": ev.CustomerRegistered(
        **envelope(3),
        payload=ev.CustomerDetails(
            name="Ada Lovelace",
            email="ada@example.org",
            birth_date=date(1990, 12, 10),
            time_zone="Europe/London",
            segment=ev.Segment.premier,
            flags=ev.CustomerFlags(vulnerable=True),
        ),
    ),
    "churn.scored": ev.ChurnScored(
        **{**envelope(4), "source": "tenure-scoring"},
        causation_id=CAUSE,
        payload=ev.ChurnScore(
            probability=0.82,
            band=ev.ChurnBand.high,
            horizon_days=90,
            model="logreg",
            model_version=3,
            reasons=[ev.ScoreReason(feature="recency_days", text="inactive", contribution=0.4)],
            as_of=AT,
        ),
    ),
    "stage.changed": ev.StageChanged(
        **{**envelope(5), "source": "tenure-lifecycle"},
        causation_id=CAUSE,
        payload=ev.StageChange(
            from_stage=ev.Stage.active,
            to_stage=ev.Stage.dormant,
            rule="no_activity_90d",
            evidence={"last_activity_at": "2025-12-01T09:30:00Z"},
            transition_at=AT,
        ),
    ),
    "profile.updated": ev.ProfileUpdated(
        **{**envelope(6), "source": "tenure-profile"},
        payload=ev.ProfileSnapshot(as_of=AT, registered=True, total_balance=Decimal("99.90")),
    ),
}


def wire(event: ev.EnvelopeBase) -> dict[str, Any]:
    document: dict[str, Any] = json.loads(ev.encode_event(event))
    return document


# ------------------------------------------------------------------ (a) committed == generated


def test_committed_contracts_are_up_to_date() -> None:
    expected = rendered()
    committed = {
        path.relative_to(CONTRACTS_DIR).as_posix(): path.read_text(encoding="utf-8")
        for path in sorted(CONTRACTS_DIR.rglob("*.json"))
    }
    missing = sorted(set(expected) - set(committed))
    extra = sorted(set(committed) - set(expected))
    differ = sorted(n for n in set(expected) & set(committed) if expected[n] != committed[n])
    assert not (missing or extra or differ), (
        f"docs/contracts is stale (missing {missing}, no longer generated {extra}, "
        f"out of date {differ}): {REGENERATE}"
    )


# ------------------------------------------------------------------ (b) valid JSON Schema


@pytest.mark.parametrize("event_type", sorted(ev.EVENT_TYPES))
def test_schema_is_valid_draft_2020_12(event_type: str) -> None:
    schema = schema_for(event_type)
    Draft202012Validator.check_schema(schema)
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert schema["$id"] == f"https://tenure.example/contracts/v1/{event_type}.schema.json"
    assert schema["title"] == event_type
    assert schema["description"]
    assert schema["properties"]["event_type"]["const"] == event_type
    assert {"event_id", "event_type", "schema_version", "customer_id", "occurred_at"} <= set(
        schema["required"]
    )


def _nodes(node: Any) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []
    if isinstance(node, dict):
        found.append(node)
        for value in node.values():
            found.extend(_nodes(value))
    elif isinstance(node, list):
        for item in node:
            found.extend(_nodes(item))
    return found


@pytest.mark.parametrize("event_type", sorted(ev.EVENT_TYPES))
def test_money_is_never_a_number(event_type: str) -> None:
    for node in _nodes(schema_for(event_type)):
        if "pattern" in node and r"\d{1,15}" in node["pattern"]:
            assert node.get("type") == "string" and "anyOf" not in node, node


def test_money_and_personal_data_are_marked() -> None:
    details = schema_for("transaction.posted")["$defs"]["TransactionDetails"]["properties"]
    assert details["amount"]["type"] == "string"
    assert re.fullmatch(details["amount"]["pattern"], "12.50")
    assert not re.fullmatch(details["amount"]["pattern"], "0.00")
    customer = schema_for("customer.registered")["$defs"]["CustomerDetails"]["properties"]
    pii = {name for name, prop in customer.items() if prop.get("x-pii")}
    assert pii == {"name", "phone", "email", "national_id", "birth_date"}


# ------------------------------------------------------------------ (c) true to the wire


@pytest.mark.parametrize("event_type", sorted(SAMPLES))
def test_encoded_sample_matches_its_schema(event_type: str) -> None:
    document = wire(SAMPLES[event_type])
    validator(schema_for(event_type)).validate(document)
    assert ev.parse_event(json.dumps(document)) == SAMPLES[event_type]


def _float_amount(d: dict[str, Any]) -> None:
    d["payload"]["amount"] = 1250.5


def _no_customer(d: dict[str, Any]) -> None:
    del d["customer_id"]


def _no_event_type(d: dict[str, Any]) -> None:
    del d["event_type"]


def _numeric_time(d: dict[str, Any]) -> None:
    d["occurred_at"] = 20260301


def _unknown_field(d: dict[str, Any]) -> None:
    d["payload"]["note"] = "extra"


def _bad_uuid(d: dict[str, Any]) -> None:
    d["event_id"] = "not-a-uuid"


@pytest.mark.parametrize(
    "breakage",
    [_float_amount, _no_customer, _no_event_type, _numeric_time, _unknown_field, _bad_uuid],
)
def test_broken_transaction_fails_its_schema(breakage: Any) -> None:
    document = copy.deepcopy(wire(SAMPLES["transaction.posted"]))
    breakage(document)
    with pytest.raises(ValidationError):
        validator(schema_for("transaction.posted")).validate(document)


def test_schema_forbids_a_float_balance_and_a_missing_payload_field() -> None:
    schema = schema_for("transaction.posted")
    document = wire(SAMPLES["transaction.posted"])
    floated = copy.deepcopy(document)
    floated["payload"]["balance_after"] = -20.05
    short = copy.deepcopy(document)
    del short["payload"]["currency"]
    for broken in (floated, short):
        with pytest.raises(ValidationError):
            validator(schema).validate(broken)


# ------------------------------------------------------------------ (d) AsyncAPI


def _resolve(document: dict[str, Any], ref: str) -> Any:
    assert ref.startswith("#/"), f"external $ref {ref}"
    node: Any = document
    for part in ref[2:].split("/"):
        part = part.replace("~1", "/").replace("~0", "~")
        assert isinstance(node, dict) and part in node, f"dangling $ref {ref}"
        node = node[part]
    return node


def test_asyncapi_has_a_channel_per_topic_and_resolvable_refs() -> None:
    doc = asyncapi()
    assert doc["asyncapi"] == "3.0.0"
    assert doc["info"]["title"] == "Tenure event contract"
    assert doc["info"]["version"] == "1"
    assert doc["servers"]["dev"] == {
        "host": "127.0.0.1:19092",
        "protocol": "kafka",
        "description": doc["servers"]["dev"]["description"],
    }
    addresses = sorted(channel["address"] for channel in doc["channels"].values())
    assert addresses == sorted(ALL_TOPICS)

    components = doc["components"]["messages"]
    carried: list[str] = []
    for channel_id, channel in doc["channels"].items():
        for name, message in channel["messages"].items():
            assert message["$ref"] == f"#/components/messages/{name}"
            assert name in components, f"{channel_id} carries unknown message {name}"
            carried.append(name)
    assert sorted(n for n in carried if n in ev.EVENT_TYPES) == sorted(ev.EVENT_TYPES)

    for operation in doc["operations"].values():
        channel = _resolve(doc, operation["channel"]["$ref"])
        outputs_or_dlq = channel["address"] not in INPUT_TOPICS.values()
        assert operation["action"] == ("receive" if outputs_or_dlq else "send")
        for message in operation["messages"]:
            assert message["$ref"].startswith(operation["channel"]["$ref"] + "/messages/")
            _resolve(doc, message["$ref"])
    assert len(doc["operations"]) == len(doc["channels"])

    for node in _nodes(doc):
        if isinstance(node.get("$ref"), str):
            _resolve(doc, node["$ref"])
    for name in ev.EVENT_TYPES:
        message = components[name]
        assert message["bindings"]["kafka"]["key"]["type"] == "string"
        assert "customer_id" in message["bindings"]["kafka"]["key"]["description"]


def test_asyncapi_dlq_names_its_headers() -> None:
    doc = asyncapi()
    dlq = next(c for c in doc["channels"].values() if c["address"] == "tenure.dlq.v1")
    (ref,) = (m["$ref"] for m in dlq["messages"].values())
    headers = _resolve(doc, ref)["headers"]
    assert sorted(headers["required"]) == sorted(
        ["dlq.topic", "dlq.partition", "dlq.offset", "dlq.service", "dlq.reason", "dlq.failed_at"]
    )


@pytest.mark.parametrize("event_type", sorted(SAMPLES))
def test_asyncapi_payload_schema_accepts_what_the_standalone_schema_accepts(
    event_type: str,
) -> None:
    doc = asyncapi()
    payload_ref = doc["components"]["messages"][event_type]["payload"]["$ref"]
    schema = {"$ref": payload_ref, "components": doc["components"]}
    document = wire(SAMPLES[event_type])
    validator(schema).validate(document)
    if event_type == "transaction.posted":
        document["payload"]["amount"] = 1.5
        with pytest.raises(ValidationError):
            validator(schema).validate(document)
