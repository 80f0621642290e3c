"""Pure logic of the console: what a search means, safe redirects, period bounds, the funnel's
rows, how an upstream's refusal reads to a person, and what a dead letter says about itself."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, date, datetime
from http import HTTPStatus
from typing import Any, Literal

import orjson

from shared.events import Stage

SERVICES = ("profile", "scoring", "lifecycle", "engagement")
_PHONE = re.compile(r"^\+?[0-9(][0-9 ().\-/]{4,30}$")


class InvalidInput(ValueError):
    """A person typed something the console cannot use; the message says what and why."""


@dataclass(frozen=True)
class Search:
    kind: Literal["id", "phone"]
    value: str


def plan_search(query: str, by: str = "auto") -> Search:
    """What a search box entry means: a customer id, or a phone number for the blind index.

    `auto` reads a value made of digits and phone punctuation, with at least 7 digits, as a
    phone number; anything else as a customer id.

    >>> plan_search(" C-1001 ")
    Search(kind='id', value='C-1001')
    >>> plan_search("+44 7700 900123")
    Search(kind='phone', value='+44 7700 900123')
    >>> plan_search("12345", by="auto").kind, plan_search("0044770090", by="id").kind
    ('id', 'id')
    >>> plan_search("", by="auto")
    Traceback (most recent call last):
    ...
    services.console.domain.InvalidInput: type a customer id or a phone number
    """
    value = query.strip()
    if not value:
        raise InvalidInput("type a customer id or a phone number")
    if by not in ("auto", "id", "phone"):
        raise InvalidInput("search by must be auto, id or phone")
    if by == "id" or (by == "auto" and not looks_like_phone(value)):
        if len(value) > 64:
            raise InvalidInput("a customer id has at most 64 characters")
        return Search("id", value)
    if len(value) > 32:
        raise InvalidInput("a phone number has at most 32 characters")
    return Search("phone", value)


def looks_like_phone(value: str) -> bool:
    """Digits and phone punctuation only, with at least 7 digits.

    >>> looks_like_phone("(020) 7946 0958"), looks_like_phone("C-7946-0958")
    (True, False)
    """
    return bool(_PHONE.match(value)) and sum(ch.isdigit() for ch in value) >= 7


def safe_next(target: str | None, default: str = "/customers") -> str:
    """Where to go after signing in: a path on this console only (no open redirect).

    >>> safe_next("/customers/C-1?x=1"), safe_next("//evil.example/"), safe_next("https://x")
    ('/customers/C-1?x=1', '/customers', '/customers')
    >>> safe_next("/\\\\evil.example"), safe_next(None)
    ('/customers', '/customers')
    """
    if not target or not target.startswith("/") or target.startswith("//"):
        return default
    if "\\" in target or any(ord(ch) < 32 for ch in target) or len(target) > 2000:
        return default
    return target


def day_bound(value: str | None, name: str) -> str | None:
    """A date from a form (YYYY-MM-DD, midnight UTC) or an RFC 3339 time, as RFC 3339.

    >>> day_bound("2025-06-30", "since"), day_bound("", "since")
    ('2025-06-30T00:00:00+00:00', None)
    >>> day_bound("2025-06-30T08:00:00+02:00", "until")
    '2025-06-30T08:00:00+02:00'
    >>> day_bound("30/06/2025", "until")
    Traceback (most recent call last):
    ...
    services.console.domain.InvalidInput: until: give a date as YYYY-MM-DD
    """
    if value is None or not value.strip():
        return None
    text = value.strip()
    try:
        if len(text) == 10:
            day = date.fromisoformat(text)
            return datetime(day.year, day.month, day.day, tzinfo=UTC).isoformat()
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise InvalidInput(f"{name}: give a date as YYYY-MM-DD") from None
    if moment.tzinfo is None:
        raise InvalidInput(f"{name}: a time needs a UTC offset")
    return moment.isoformat()


def problem_text(service: str, status: int, body: Any) -> str:
    """How a service's refusal reads to a person: its own words (problem+json `detail`, the
    fields it names), never a stack trace or a raw body.

    >>> problem_text("scoring", 403, {"title": "Forbidden",
    ...                               "detail": "this route needs the scope 'scoring:read'"})
    "scoring refused: this route needs the scope 'scoring:read' (HTTP 403)"
    >>> problem_text("profile", 422, {"detail": "request failed validation",
    ...     "errors": [{"field": "query.tier", "reason": "String should match pattern"}]})
    'profile refused: request failed validation: query.tier: String should match pattern (HTTP 422)'
    >>> problem_text("lifecycle", 502, "<html>Bad gateway</html>")
    'lifecycle failed: Bad Gateway (HTTP 502)'
    """
    detail = ""
    if isinstance(body, dict):
        detail = str(body.get("detail") or body.get("title") or "")
        errors = body.get("errors")
        if isinstance(errors, list) and errors:
            named = "; ".join(
                f"{e.get('field', '?')}: {e.get('reason', '?')}" for e in errors[:5]
                if isinstance(e, dict)
            )
            detail = f"{detail}: {named}" if detail else named
    if not detail:
        try:
            detail = HTTPStatus(status).phrase
        except ValueError:
            detail = "unexpected answer"
    verb = "failed" if status >= 500 else "refused"
    return f"{service} {verb}: {detail[:500]} (HTTP {status})"


@dataclass(frozen=True)
class FunnelRow:
    stage: str
    customers: int
    share: float  # of all staged customers, 0..1
    bar: int  # width of the bar in percent of the largest stage
    entered: int
    left: int


def funnel_rows(
    counts: dict[str, int], entered: dict[str, int] | None = None,
    left: dict[str, int] | None = None,
) -> list[FunnelRow]:
    """One row per lifecycle stage, in the lifecycle's order, with bar widths.

    >>> rows = funnel_rows({"prospect": 1, "onboarding": 3}, {"onboarding": 3}, {"prospect": 3})
    >>> [(r.stage, r.customers, r.bar, r.entered, r.left) for r in rows[:3]]
    [('prospect', 1, 33, 0, 3), ('onboarding', 3, 100, 3, 0), ('active', 0, 0, 0, 0)]
    >>> round(rows[1].share, 2)
    0.75
    """
    entered, left = entered or {}, left or {}
    total = sum(counts.values())
    largest = max(counts.values(), default=0)
    return [
        FunnelRow(
            stage=stage.value,
            customers=counts.get(stage.value, 0),
            share=counts.get(stage.value, 0) / total if total else 0.0,
            bar=round(100 * counts.get(stage.value, 0) / largest) if largest else 0,
            entered=entered.get(stage.value, 0),
            left=left.get(stage.value, 0),
        )
        for stage in Stage
    ]


@dataclass(frozen=True)
class DeadLetter:
    """A message on the dead-letter topic, as an operator needs to see it."""

    partition: int
    offset: int
    failed_at: str | None
    service: str | None
    reason: str | None
    original_topic: str | None
    original_partition: str | None
    original_offset: str | None
    key: str | None
    size: int
    event_type: str | None
    event_id: str | None
    customer_id: str | None
    payload: str | None  # the original bytes as text, only for callers who may see PII
    replay_of: str | None  # set on a re-published copy that was refused again

    @property
    def origin(self) -> tuple[str, str | None, str | None] | None:
        """The original message (topic, partition, offset) this dead letter stands for."""
        if self.original_topic is None:
            return None
        return (self.original_topic, self.original_partition, self.original_offset)

    @property
    def original_position(self) -> str | None:
        if self.original_topic is None:
            return None
        return (f"{self.original_topic}[{self.original_partition or '?'}]"
                f"@{self.original_offset or '?'}")


def dead_letter(
    *, partition: int, offset: int, key: bytes | None, value: bytes | None,
    headers: list[tuple[str, bytes]] | None, show_payload: bool,
) -> DeadLetter:
    """Describe a dead letter from its record; the payload may hold personal data, so its
    text is kept only when the caller may see it (`show_payload`).

    >>> d = dead_letter(partition=1, offset=7, key=b"C-1",
    ...     value=b'{"event_type": "customer.registered", "customer_id": "C-1",'
    ...           b' "payload": {"name": "Ann"}}',
    ...     headers=[("dlq.topic", b"tenure.customers.v1"), ("dlq.partition", b"1"),
    ...              ("dlq.offset", b"42"), ("dlq.reason", b"payload.phone: invalid")],
    ...     show_payload=False)
    >>> d.event_type, d.customer_id, d.original_position, d.reason, d.payload
    ('customer.registered', 'C-1', 'tenure.customers.v1[1]@42', 'payload.phone: invalid', None)
    """
    meta = {k: v.decode("utf-8", "replace") for k, v in (headers or [])}
    parsed: dict[str, Any] = {}
    if value:
        try:
            loaded = orjson.loads(value)
        except orjson.JSONDecodeError:
            loaded = None
        if isinstance(loaded, dict):
            parsed = loaded

    def text(field: str) -> str | None:
        found = parsed.get(field)
        return str(found)[:100] if isinstance(found, str | int) else None

    return DeadLetter(
        partition=partition,
        offset=offset,
        failed_at=meta.get("dlq.failed_at"),
        service=meta.get("dlq.service"),
        reason=meta.get("dlq.reason"),
        original_topic=meta.get("dlq.topic"),
        original_partition=meta.get("dlq.partition"),
        original_offset=meta.get("dlq.offset"),
        key=key.decode("utf-8", "replace")[:100] if key is not None else None,
        size=len(value or b""),
        event_type=text("event_type"),
        event_id=text("event_id"),
        customer_id=text("customer_id"),
        payload=(value or b"").decode("utf-8", "replace")[:4000] if show_payload else None,
        replay_of=meta.get("dlq.replay_of"),
    )


@dataclass(frozen=True)
class Refused:
    """One original message and every dead letter written for it: each service that reads
    its topic and refused it wrote its own, and one re-publish serves them all."""

    letters: tuple[DeadLetter, ...]

    @property
    def latest(self) -> DeadLetter:
        return self.letters[0]

    @property
    def services(self) -> list[str]:
        return sorted({d.service or "?" for d in self.letters})


def by_message(letters: list[DeadLetter]) -> list[Refused]:
    """Group dead letters (newest first) by the original message, keeping that order.

    >>> def letter(offset, service, origin):
    ...     headers = [("dlq.topic", b"t"), ("dlq.partition", b"0"),
    ...                ("dlq.offset", str(origin).encode()), ("dlq.service", service.encode())]
    ...     return dead_letter(partition=0, offset=offset, key=None, value=b"x",
    ...                        headers=headers, show_payload=False)
    >>> groups = by_message([letter(3, "scoring", 7), letter(2, "other", 8),
    ...                      letter(1, "profile", 7)])
    >>> [(g.latest.offset, g.services) for g in groups]
    [(3, ['profile', 'scoring']), (2, ['other'])]
    """
    groups: dict[Any, list[DeadLetter]] = {}
    for letter in letters:
        key = letter.origin or ("dlq", letter.partition, letter.offset)
        groups.setdefault(key, []).append(letter)
    return [Refused(tuple(group)) for group in groups.values()]


def republish_target(original_topic: str | None, allowed: set[str],
                     allowed_prefixes: tuple[str, ...] = ()) -> str:
    """The topic a dead letter goes back to: its original one, if the platform owns it (one
    of its topics, or under one of its prefixes, e.g. a partner's `tenure.partner.<id>.`).

    >>> republish_target("tenure.customers.v1", {"tenure.customers.v1"})
    'tenure.customers.v1'
    >>> republish_target("tenure.partner.bank-x.customers.v1", set(), ("tenure.partner.",))
    'tenure.partner.bank-x.customers.v1'
    >>> republish_target("payments.internal", {"tenure.customers.v1"})
    Traceback (most recent call last):
    ...
    services.console.domain.InvalidInput: its topic 'payments.internal' is not the platform's
    """
    if not original_topic:
        raise InvalidInput("the message carries no dlq.topic header: its origin is unknown")
    if original_topic not in allowed and not original_topic.startswith(allowed_prefixes):
        raise InvalidInput(f"its topic {original_topic!r} is not the platform's")
    return original_topic


def percent(value: Any, digits: int = 0) -> str:
    """A probability or share as a percentage for people.

    >>> percent(0.431104), percent(None), percent(0.5, 1)
    ('43%', '–', '50.0%')
    """
    if not isinstance(value, int | float):
        return "–"
    return f"{100 * value:.{digits}f}%"
