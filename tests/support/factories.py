"""Builders of contract events for tests: valid by default, every field overridable."""

from __future__ import annotations

import itertools
import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from shared import events as ev

_counter = itertools.count()


def new_id() -> uuid.UUID:
    return uuid.uuid4()


def now() -> datetime:
    return datetime.now(UTC).replace(microsecond=0)


def registered(customer_id: str, at: datetime | None = None, **payload: Any) -> ev.CustomerRegistered:
    return ev.CustomerRegistered(
        event_id=new_id(),
        customer_id=customer_id,
        occurred_at=at or now(),
        source="core-banking",
        payload=ev.CustomerDetails(
            **{"name": "Test Person", "phone": "+44 7700 900123", "segment": "retail", **payload}
        ),
    )


def daytime_zone(at: datetime | None = None) -> str:
    """An IANA zone where it is early afternoon at `at` (default now): a customer living
    there is outside the default quiet hours (21:00-08:00 local) whenever a test runs.
    (`Etc/GMT-k` is UTC+k.)"""
    hour = (at or now()).astimezone(UTC).hour
    shift = (13 - hour + 12) % 24 - 12  # in -12..11
    return "Etc/GMT" + (f"{-shift:+d}" if shift else "")


def consent(
    customer_id: str, channel: str = "email", purpose: str = "marketing", granted: bool = True,
    at: datetime | None = None,
) -> ev.ConsentChanged:
    return ev.ConsentChanged(
        event_id=new_id(),
        customer_id=customer_id,
        occurred_at=at or now(),
        source="core-banking",
        payload=ev.ConsentChange(channel=channel, purpose=purpose, granted=granted),
    )


def transaction(
    customer_id: str,
    at: datetime | None = None,
    *,
    amount: str = "25.00",
    balance_after: str | None = "1000.00",
    account_id: str | None = None,
    initiated_by: str = "customer",
    category: str = "card_purchase",
    channel: str = "mobile",
    event_id: uuid.UUID | None = None,
) -> ev.TransactionPosted:
    return ev.TransactionPosted(
        event_id=event_id or new_id(),
        customer_id=customer_id,
        occurred_at=at or now(),
        source="core-banking",
        payload=ev.TransactionDetails(
            account_id=account_id or f"{customer_id}-CUR",
            product_type="current",
            amount=Decimal(amount),
            currency="EUR",
            direction="debit",
            category=category,
            channel=channel,
            initiated_by=initiated_by,
            balance_after=Decimal(balance_after) if balance_after is not None else None,
        ),
    )


def minutes(n: float) -> timedelta:
    return timedelta(minutes=n)
