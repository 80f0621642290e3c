"""Generates the published event contract (JSON Schema, AsyncAPI) from the models in events.py.

`tenure contracts --out docs/contracts` writes, for publishers outside the bank:

- ``schemas/<event_type>.schema.json``: one JSON Schema (draft 2020-12) per event type;
- ``asyncapi.json``: an AsyncAPI 3.0.0 document with one channel per topic.

The schemas come from pydantic in **validation** mode, by alias: they describe what the
platform accepts on the wire, which is what a publisher must send and also what a consumer of
our outputs receives (``encode_event`` output re-validates against the same models). Validation
mode is also the one that keeps ``format: date-time`` on event times; serialization mode drops
it (the times have a plain serializer) and drops the money patterns of optional amounts.

Two things pydantic cannot see are fixed here, after generation, and nowhere by hand:

- money fields are ``Decimal`` whose default schema is ``anyOf [number, string]``; the models
  override it with ``type: string`` plus a pattern, which leaves the ``anyOf`` beside it. The
  contract says money is a decimal string, never a float, so the number branch is removed.
- ``event_type`` and ``schema_version`` have defaults in the models, yet ``parse_event`` routes
  on both before validating, so a message without them is dead-lettered: they are required.

Fields marked ``x-pii`` keep the mark: that is how a publisher learns which fields are personal
data. Output is deterministic (sorted keys, two-space indent, trailing newline) so that a test
can compare the committed files byte for byte with a fresh rendering.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from shared.events import EVENT_TYPES, SCHEMA_VERSION, EnvelopeBase
from shared.settings import DLQ_TOPIC, INPUT_TOPICS, OUTPUT_TOPICS, PlatformSettings

JSON_SCHEMA_DIALECT = "https://json-schema.org/draft/2020-12/schema"
CONTRACT_BASE_URI = f"https://tenure.example/contracts/v{SCHEMA_VERSION}/"
ASYNCAPI_FILE = "asyncapi.json"
SCHEMA_DIR = "schemas"
KAFKA_BINDING_VERSION = "0.5.0"

# The event types each topic carries (DESIGN.md §2); render_contracts() checks that every
# event type in events.py is on exactly one topic, so a new type cannot be left unpublished.
TOPIC_EVENT_TYPES: dict[str, tuple[str, ...]] = {
    INPUT_TOPICS["customers"]: (
        "customer.registered",
        "customer.updated",
        "account.opened",
        "account.closed",
        "consent.changed",
        "customer.erased",
    ),
    INPUT_TOPICS["transactions"]: ("transaction.posted",),
    INPUT_TOPICS["app_events"]: ("app.click",),
    INPUT_TOPICS["feedback"]: ("feedback.submitted",),
    OUTPUT_TOPICS["profile_updates"]: ("profile.updated",),
    OUTPUT_TOPICS["churn_scores"]: ("churn.scored",),
    OUTPUT_TOPICS["lifecycle_stages"]: ("stage.changed",),
    OUTPUT_TOPICS["engagement_actions"]: (
        "engagement.decided",
        "engagement.delivered",
        "engagement.outcome",
    ),
}

# Envelope fields parse_event reads before pydantic does; a message lacking one never parses.
WIRE_REQUIRED_FIELDS = ("event_type", "schema_version")

DLQ_MESSAGE = "dead-letter"
DLQ_PAYLOAD_SCHEMA = "dead-letter.original"
DLQ_HEADERS: dict[str, dict[str, Any]] = {
    "dlq.topic": {"type": "string", "description": "Topic the message was read from."},
    "dlq.partition": {
        "type": "string",
        "pattern": r"^\d+$",
        "description": "Partition it was read from (decimal integer).",
    },
    "dlq.offset": {
        "type": "string",
        "pattern": r"^\d+$",
        "description": "Offset it was read at (decimal integer).",
    },
    "dlq.service": {"type": "string", "description": "Service that refused it."},
    "dlq.reason": {
        "type": "string",
        "maxLength": 1000,
        "description": "Why it was refused; names the offending field.",
    },
    "dlq.failed_at": {
        "type": "string",
        "format": "date-time",
        "description": "When it was refused (wall-clock time of the refusing service).",
    },
}

CUSTOMER_KEY_SCHEMA: dict[str, Any] = {
    "type": "string",
    "minLength": 1,
    "maxLength": 64,
    "description": (
        "The envelope's customer_id, UTF-8 encoded. Every event of one customer must carry "
        "this key so that all of them land on one partition, in order."
    ),
}


def _topic_ids() -> dict[str, str]:
    """Channel id (the settings key, e.g. ``app_events``) for every topic, inputs first."""
    return {
        **{topic: key for key, topic in INPUT_TOPICS.items()},
        **{topic: key for key, topic in OUTPUT_TOPICS.items()},
        DLQ_TOPIC: "dlq",
    }


def _topic_of(event_type: str) -> str:
    return next(t for t, types in TOPIC_EVENT_TYPES.items() if event_type in types)


def _check_topic_coverage() -> None:
    listed = [t for types in TOPIC_EVENT_TYPES.values() for t in types]
    unknown = sorted(set(listed) - set(EVENT_TYPES))
    missing = sorted(set(EVENT_TYPES) - set(listed))
    twice = sorted({t for t in listed if listed.count(t) > 1})
    if unknown or missing or twice:
        raise ValueError(
            "TOPIC_EVENT_TYPES disagrees with events.EVENT_TYPES: "
            f"unknown {unknown}, on no topic {missing}, on several topics {twice}"
        )


def _money_as_string(node: Any) -> None:
    """Removes the number branch pydantic leaves beside a money field's string override."""
    if isinstance(node, dict):
        if node.get("type") == "string" and node.get("anyOf") == [
            {"type": "number"},
            {"type": "string"},
        ]:
            del node["anyOf"]
        for value in node.values():
            _money_as_string(value)
    elif isinstance(node, list):
        for item in node:
            _money_as_string(item)


def _describe(event_type: str, model: type[EnvelopeBase]) -> str:
    topic = _topic_of(event_type)
    publisher = (
        "Published by the bank's systems and partners (an input of Tenure)"
        if topic in INPUT_TOPICS.values()
        else "Published by Tenure (an output)"
    )
    payload_model = model.model_fields["payload"].annotation
    payload_doc = getattr(payload_model, "__doc__", None) or ""
    lines = [
        f"`{event_type}`, schema_version {SCHEMA_VERSION}, on topic `{topic}` keyed by "
        "customer_id. " + publisher + ".",
        "One envelope for every event: event_id is the idempotency key, occurred_at is the "
        "event time (RFC 3339 with an offset), source is the registered publisher id (e.g. "
        "`core-banking`, `partner:bank-x`), money is a decimal string with an ISO 4217 "
        "currency. Fields marked `x-pii: true` are personal data.",
    ]
    if payload_doc.strip():
        lines.append("Payload: " + " ".join(payload_doc.split()))
    return "\n\n".join(lines)


def event_schema(event_type: str) -> dict[str, Any]:
    """The standalone JSON Schema (draft 2020-12) of one event type, envelope and payload."""
    model = EVENT_TYPES[event_type]
    schema: dict[str, Any] = model.model_json_schema(by_alias=True, mode="validation")
    _money_as_string(schema)
    required = set(schema.get("required", [])) | set(WIRE_REQUIRED_FIELDS)
    schema["required"] = [name for name in schema["properties"] if name in required]
    schema["$schema"] = JSON_SCHEMA_DIALECT
    schema["$id"] = f"{CONTRACT_BASE_URI}{event_type}.schema.json"
    schema["title"] = event_type
    schema["description"] = _describe(event_type, model)
    return schema


def _rebase_refs(node: Any) -> Any:
    """A copy of a schema whose ``#/$defs/X`` refs point at ``#/components/schemas/X``."""
    if isinstance(node, dict):
        return {
            key: (
                value.replace("#/$defs/", "#/components/schemas/", 1)
                if key == "$ref" and isinstance(value, str)
                else _rebase_refs(value)
            )
            for key, value in node.items()
        }
    if isinstance(node, list):
        return [_rebase_refs(item) for item in node]
    return node


def _component_schemas(schemas: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Each event schema with its ``$defs`` hoisted into one shared components.schemas map."""
    components: dict[str, Any] = {}
    for event_type, schema in schemas.items():
        body = {k: v for k, v in schema.items() if k not in ("$schema", "$id", "$defs")}
        components[event_type] = _rebase_refs(body)
        for name, definition in schema.get("$defs", {}).items():
            rebased = _rebase_refs(definition)
            if components.setdefault(name, rebased) != rebased:
                raise ValueError(f"two different payload models are both named {name!r}")
    components[DLQ_PAYLOAD_SCHEMA] = {
        "title": "Original message bytes",
        "description": (
            "The refused message's value exactly as it was read: it may be malformed JSON, an "
            "unknown event type or an unsupported schema_version, so no shape is promised."
        ),
    }
    return components


def _event_message(event_type: str) -> dict[str, Any]:
    return {
        "name": event_type,
        "title": event_type,
        "summary": f"{event_type} (schema_version {SCHEMA_VERSION})",
        "contentType": "application/json",
        "payload": {"$ref": f"#/components/schemas/{event_type}"},
        "bindings": {
            "kafka": {"key": CUSTOMER_KEY_SCHEMA, "bindingVersion": KAFKA_BINDING_VERSION}
        },
    }


def _dlq_message() -> dict[str, Any]:
    return {
        "name": DLQ_MESSAGE,
        "title": "Dead-lettered message",
        "summary": "A message a service could not parse or validate, with where it came from.",
        "description": (
            "The original bytes and key, untouched, republished by the service that refused "
            "them; the consumer moved on. Lateness is never a reason to dead-letter a valid "
            "event."
        ),
        "contentType": "application/octet-stream",
        "headers": {
            "type": "object",
            "required": list(DLQ_HEADERS),
            "properties": DLQ_HEADERS,
        },
        "payload": {"$ref": f"#/components/schemas/{DLQ_PAYLOAD_SCHEMA}"},
        "bindings": {
            "kafka": {
                "key": {
                    "type": "string",
                    "description": "The original message's key (the customer_id), if it had one.",
                },
                "bindingVersion": KAFKA_BINDING_VERSION,
            }
        },
    }


def asyncapi_document(schemas: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The AsyncAPI 3.0.0 document: one channel and one operation per topic."""
    channels: dict[str, Any] = {}
    operations: dict[str, Any] = {}
    messages: dict[str, Any] = {name: _event_message(name) for name in schemas}
    messages[DLQ_MESSAGE] = _dlq_message()
    for topic, channel_id in _topic_ids().items():
        names = TOPIC_EVENT_TYPES.get(topic, (DLQ_MESSAGE,))
        if topic in INPUT_TOPICS.values():
            action, summary = "send", f"The bank's publishers send events to {topic}."
        elif topic == DLQ_TOPIC:
            action, summary = "receive", f"Operators receive refused messages from {topic}."
        else:
            action, summary = "receive", f"Consumers receive Tenure's outputs from {topic}."
        channels[channel_id] = {
            "address": topic,
            "title": topic,
            "messages": {n: {"$ref": f"#/components/messages/{n}"} for n in names},
            "bindings": {"kafka": {"topic": topic, "bindingVersion": KAFKA_BINDING_VERSION}},
        }
        operations[f"{action}_{channel_id}"] = {
            "action": action,
            "summary": summary,
            "channel": {"$ref": f"#/channels/{channel_id}"},
            "messages": [{"$ref": f"#/channels/{channel_id}/messages/{n}"} for n in names],
        }
    bootstrap = PlatformSettings.model_fields["kafka_bootstrap"].default
    return {
        "asyncapi": "3.0.0",
        "id": "urn:tenure:contracts:v1",
        "info": {
            "title": "Tenure event contract",
            "version": str(SCHEMA_VERSION),
            "description": (
                "Events into and out of Tenure, the customer-lifecycle platform. JSON, UTF-8, "
                "one envelope for every topic; every message is keyed by customer_id. "
                "Generated from shared/events.py by `tenure contracts`: do not edit by hand."
            ),
        },
        "defaultContentType": "application/json",
        "servers": {
            "dev": {
                "host": bootstrap,
                "protocol": "kafka",
                "description": "The local development broker (TENURE_KAFKA_BOOTSTRAP elsewhere).",
            }
        },
        "channels": channels,
        "operations": operations,
        "components": {"schemas": _component_schemas(schemas), "messages": messages},
    }


def _dump(document: dict[str, Any]) -> str:
    return json.dumps(document, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def render_contracts() -> dict[str, str]:
    """Every contract file, by path relative to the output directory (``/``-separated)."""
    _check_topic_coverage()
    schemas = {event_type: event_schema(event_type) for event_type in sorted(EVENT_TYPES)}
    files = {
        f"{SCHEMA_DIR}/{event_type}.schema.json": _dump(schema)
        for event_type, schema in schemas.items()
    }
    files[ASYNCAPI_FILE] = _dump(asyncapi_document(schemas))
    return files


def write_contracts(out_dir: str | Path) -> list[Path]:
    """Writes the rendered files under out_dir and removes schemas no model produces any more."""
    root = Path(out_dir)
    files = render_contracts()
    written: list[Path] = []
    for relative, text in files.items():
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
        written.append(path)
    for stale in sorted((root / SCHEMA_DIR).glob("*.schema.json")):
        if f"{SCHEMA_DIR}/{stale.name}" not in files:
            stale.unlink()
    return written
