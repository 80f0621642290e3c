"""The contract: what is accepted, what is refused, and with which reason."""

from __future__ import annotations

import uuid

import orjson
import pytest

from shared.events import InvalidEvent, derived_event_id, encode_event, parse_event
from tests.support import factories as f


def _doc(**changes: object) -> bytes:
    doc = orjson.loads(encode_event(f.transaction("C-1")))
    doc.update(changes)
    return orjson.dumps(doc)


def test_round_trip_keeps_money_as_text_and_time_in_utc() -> None:
    event = f.transaction("C-1", amount="12.50")
    raw = encode_event(event)
    assert b'"amount":"12.50"' in raw
    back = parse_event(raw)
    assert back == event
    assert back.occurred_at.utcoffset().total_seconds() == 0  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        ({"schema_version": 2}, "schema_version: unsupported version 2"),
        ({"event_type": "transaction.deleted"}, "event_type: unknown event type"),
        ({"occurred_at": "2026-01-01T10:00:00"}, "occurred_at: Value error, lacks a UTC offset"),
        ({"customer_id": ""}, "customer_id: String should have at least 1 character"),
        ({"customer_id": "x" * 65}, "customer_id: String should have at most 64 characters"),
        ({"event_id": "not-a-uuid"}, "event_id: Input should be a valid UUID"),
        ({"unexpected": 1}, "unexpected: Extra inputs are not permitted"),
    ],
)
def test_envelope_violations_name_the_field(changes: dict, reason: str) -> None:
    with pytest.raises(InvalidEvent) as caught:
        parse_event(_doc(**changes))
    assert str(caught.value).startswith(reason)


@pytest.mark.parametrize(
    ("amount", "reason"),
    [
        (12.5, "not a JSON number"),
        ("0", "greater than zero"),
        ("-5.00", "greater than zero"),
        ("1e3", "plain decimal string"),
        ("1.1234567", "plain decimal string"),
    ],
)
def test_money_must_be_a_positive_decimal_string(amount: object, reason: str) -> None:
    doc = orjson.loads(_doc())
    doc["payload"]["amount"] = amount
    with pytest.raises(InvalidEvent) as caught:
        parse_event(orjson.dumps(doc))
    assert "payload.amount" in str(caught.value) and reason in str(caught.value)


def test_malformed_json_and_non_objects_are_refused() -> None:
    with pytest.raises(InvalidEvent, match="malformed JSON"):
        parse_event(b"{nope")
    with pytest.raises(InvalidEvent, match="must be a JSON object"):
        parse_event(b"[1, 2]")


def test_unknown_time_zone_is_refused() -> None:
    doc = orjson.loads(encode_event(f.registered("C-1")))
    doc["payload"]["time_zone"] = "Mars/Olympus"
    with pytest.raises(InvalidEvent, match="unknown IANA time zone"):
        parse_event(orjson.dumps(doc))


def test_derived_ids_are_deterministic_and_distinct_per_cause() -> None:
    cause = uuid.uuid4()
    assert derived_event_id("profile.updated", cause) == derived_event_id("profile.updated", cause)
    assert derived_event_id("profile.updated", cause) != derived_event_id("churn.scored", cause)
