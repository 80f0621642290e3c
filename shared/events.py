"""The v1 event contract (DESIGN.md §2): one envelope, typed payloads, frozen models."""

from __future__ import annotations

import re
import uuid
from datetime import UTC, date, datetime
from decimal import Decimal
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    TypeAdapter,
    WithJsonSchema,
    field_validator,
    model_validator,
)

SCHEMA_VERSION = 1

# Namespace for deterministic output event ids (UUIDv5 of what caused them).
TENURE_NAMESPACE = uuid.UUID("6f1c7f0e-5a7b-4f38-9a43-2f6c1f3e9b10")


def derived_event_id(*parts: object) -> uuid.UUID:
    """A deterministic event id for an output, from what caused it.

    >>> a = derived_event_id("profile.updated", "8c1f0000-0000-0000-0000-000000000001")
    >>> a == derived_event_id("profile.updated", "8c1f0000-0000-0000-0000-000000000001")
    True
    """
    return uuid.uuid5(TENURE_NAMESPACE, "|".join(str(p) for p in parts))


class InvalidEvent(ValueError):
    """An event that breaks the contract; the reason names the field."""


def _require_offset(value: datetime) -> datetime:
    if value.tzinfo is UTC:
        return value
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError("lacks a UTC offset (RFC 3339 requires one)")
    return value.astimezone(UTC)


EventTime = Annotated[
    datetime,
    AfterValidator(_require_offset),
    PlainSerializer(lambda v: v.isoformat().replace("+00:00", "Z"), return_type=str),
]


_MONEY_TEXT = re.compile(r"-?\d{1,15}(\.\d{1,6})?")
_RATE_TEXT = re.compile(r"-?\d(\.\d{1,8})?")


def _decimal_text(pattern: re.Pattern[str], rule: str) -> Any:
    def check(value: Any) -> Any:
        # A float cannot carry money exactly; the wire format is a decimal string.
        if isinstance(value, float | int) and not isinstance(value, bool):
            raise ValueError('must be a decimal string such as "12.50", not a JSON number')
        if isinstance(value, str) and not pattern.fullmatch(value):
            raise ValueError(f"must be a plain decimal string: {rule}")
        return value

    return check


def _fits(pattern: re.Pattern[str], rule: str, *, positive: bool = False) -> Any:
    # Values built inside a service are checked too, so an output never breaks the contract.
    def check(value: Decimal) -> Decimal:
        if not value.is_finite() or not pattern.fullmatch(format(value, "f")):
            raise ValueError(f"must be a finite decimal: {rule}")
        if positive and value <= 0:
            raise ValueError("must be greater than zero")
        return value

    return check


_MONEY_RULE = "up to 15 digits and 6 decimals"
_decimal_string = PlainSerializer(lambda v: format(v, "f"), return_type=str)

# Money travels as a decimal string, never a float (DESIGN.md §2).
PositiveAmount = Annotated[
    Decimal,
    WithJsonSchema(
        {"type": "string", "pattern": r"^(?!0+(\.0+)?$)\d{1,15}(\.\d{1,6})?$",
         "description": "decimal string greater than zero"}
    ),
    BeforeValidator(_decimal_text(_MONEY_TEXT, _MONEY_RULE)),
    AfterValidator(_fits(_MONEY_TEXT, _MONEY_RULE, positive=True)),
    _decimal_string,
]
SignedAmount = Annotated[
    Decimal,
    WithJsonSchema({"type": "string", "pattern": r"^-?\d{1,15}(\.\d{1,6})?$"}),
    BeforeValidator(_decimal_text(_MONEY_TEXT, _MONEY_RULE)),
    AfterValidator(_fits(_MONEY_TEXT, _MONEY_RULE)),
    _decimal_string,
]
# Annual rates (margins) as decimal fractions, e.g. "0.0150" for 1.5 %.
AnnualRate = Annotated[
    Decimal,
    WithJsonSchema({"type": "string", "pattern": r"^-?\d(\.\d{1,8})?$",
                    "description": "annual rate as a decimal fraction between -1 and 1"}),
    BeforeValidator(_decimal_text(_RATE_TEXT, "a fraction with up to 8 decimals")),
    AfterValidator(_fits(_RATE_TEXT, "a fraction with up to 8 decimals")),
    Field(ge=-1, le=1),
    _decimal_string,
]
Currency = Annotated[str, Field(pattern=r"^[A-Z]{3}$", description="ISO 4217 code")]
CustomerId = Annotated[str, Field(min_length=1, max_length=64)]
ShortText = Annotated[str, Field(max_length=200)]


class Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", str_strip_whitespace=False)


# ------------------------------------------------------------------ vocabularies


class Segment(StrEnum):
    retail = "retail"
    premier = "premier"
    private = "private"
    sme = "sme"


class ProductType(StrEnum):
    current = "current"
    savings = "savings"
    card = "card"
    loan = "loan"
    mortgage = "mortgage"
    insurance = "insurance"
    investment = "investment"


class Direction(StrEnum):
    debit = "debit"
    credit = "credit"


class TxnCategory(StrEnum):
    salary = "salary"
    transfer = "transfer"
    card_purchase = "card_purchase"
    bill = "bill"
    fee = "fee"
    interest = "interest"
    atm_withdrawal = "atm_withdrawal"
    premium = "premium"
    claim = "claim"
    other = "other"


class TxnChannel(StrEnum):
    branch = "branch"
    atm = "atm"
    mobile = "mobile"
    web = "web"
    call_centre = "call_centre"
    pos = "pos"
    batch = "batch"


class InitiatedBy(StrEnum):
    customer = "customer"
    bank = "bank"


class AppChannel(StrEnum):
    mobile = "mobile"
    web = "web"


class FeedbackKind(StrEnum):
    nps = "nps"
    complaint_opened = "complaint_opened"
    complaint_resolved = "complaint_resolved"
    survey = "survey"
    compliment = "compliment"


class ContactChannel(StrEnum):
    sms = "sms"
    email = "email"
    push = "push"
    phone = "phone"
    mail = "mail"


class ContactPurpose(StrEnum):
    marketing = "marketing"
    service = "service"


class ChurnBand(StrEnum):
    low = "low"
    medium = "medium"
    high = "high"
    critical = "critical"


class Stage(StrEnum):
    prospect = "prospect"
    onboarding = "onboarding"
    active = "active"
    loyal = "loyal"
    at_risk = "at_risk"
    dormant = "dormant"
    churned = "churned"
    won_back = "won_back"


class Decision(StrEnum):
    sent = "sent"
    deferred = "deferred"
    suppressed = "suppressed"
    holdout = "holdout"
    historical = "historical"


# ------------------------------------------------------------------ input payloads


class SealedPII(Frozen):
    """Personal fields encrypted with the customer's own data key (crypto-shredding).

    The publisher seals; only profile opens. Erasing the customer deletes the key, so every
    copy of this field (topics, the DLQ, backups) becomes unreadable. See
    docs/data-protection.md.
    """

    kid: Annotated[
        str,
        Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$",
              description="opaque id of the customer's data key in the key store"),
    ]
    ciphertext: Annotated[
        str,
        Field(min_length=16, max_length=24_000, pattern=r"^[A-Za-z0-9_-]+$",
              description="base64url of nonce, AES-256-GCM ciphertext and tag over a JSON "
              "object of the personal fields"),
    ]


def _only_sealed(payload: Any, names: tuple[str, ...]) -> Any:
    if payload.sealed is not None:
        clear = [n for n in names if getattr(payload, n) is not None]
        if clear:
            raise ValueError(
                f"{', '.join(clear)} must travel inside sealed when sealed is present"
            )
    return payload


class CustomerFlags(Frozen):
    vulnerable: bool = False
    collections: bool = False


class CustomerDetails(Frozen):
    """customer.registered / customer.updated. Fields marked PII are personal data."""

    name: Annotated[str | None, Field(max_length=200, json_schema_extra={"x-pii": True})] = None
    phone: Annotated[str | None, Field(max_length=32, json_schema_extra={"x-pii": True})] = None
    email: Annotated[str | None, Field(max_length=254, json_schema_extra={"x-pii": True})] = None
    national_id: Annotated[
        str | None, Field(max_length=64, json_schema_extra={"x-pii": True})
    ] = None
    birth_date: Annotated[date | None, Field(json_schema_extra={"x-pii": True})] = None
    time_zone: Annotated[str, Field(max_length=64, description="IANA time zone")] = "UTC"
    language: Annotated[str, Field(max_length=16)] = "en"
    segment: Segment = Segment.retail
    rm_id: Annotated[str | None, Field(max_length=64)] = None
    flags: CustomerFlags = CustomerFlags()
    sealed: Annotated[
        SealedPII | None,
        Field(description="name, phone, email, national_id and birth_date, encrypted "
              "with the customer's data key (instead of the plain fields)"),
    ] = None

    @model_validator(mode="after")
    def _sealed_alone(self) -> CustomerDetails:
        return _only_sealed(  # type: ignore[no-any-return]
            self, ("name", "phone", "email", "national_id", "birth_date")
        )

    @field_validator("time_zone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"unknown IANA time zone {value!r}") from exc
        return value


class AccountChange(Frozen):
    account_id: Annotated[str, Field(min_length=1, max_length=64)]
    product_type: ProductType
    currency: Currency
    margin_rate: AnnualRate | None = None
    reason: ShortText | None = None


class TransactionDetails(Frozen):
    account_id: Annotated[str, Field(min_length=1, max_length=64)]
    product_type: ProductType
    amount: PositiveAmount
    currency: Currency
    direction: Direction
    category: TxnCategory
    channel: TxnChannel
    initiated_by: InitiatedBy
    balance_after: SignedAmount | None = None


class AppClick(Frozen):
    session_id: Annotated[str, Field(min_length=1, max_length=128)]
    action: Annotated[str, Field(min_length=1, max_length=64)]
    screen: Annotated[str | None, Field(max_length=128)] = None
    channel: AppChannel


class FeedbackDetails(Frozen):
    kind: FeedbackKind
    score: Annotated[int | None, Field(ge=0, le=10)] = None
    complaint_id: Annotated[str | None, Field(max_length=64)] = None
    category: Annotated[str | None, Field(max_length=64)] = None
    severity: Annotated[str | None, Field(max_length=32)] = None
    text: Annotated[str | None, Field(max_length=4000, json_schema_extra={"x-pii": True})] = None
    sealed: Annotated[
        SealedPII | None,
        Field(description="text, encrypted with the customer's data key (instead of text)"),
    ] = None

    @model_validator(mode="after")
    def _sealed_alone(self) -> FeedbackDetails:
        return _only_sealed(self, ("text",))  # type: ignore[no-any-return]


class ConsentChange(Frozen):
    channel: ContactChannel
    purpose: ContactPurpose
    granted: bool


class ErasureRequest(Frozen):
    requested_by: Annotated[str, Field(min_length=1, max_length=64)]


# ------------------------------------------------------------------ output payloads


class ProfileSnapshot(Frozen):
    """profile.updated: the feature snapshot, no personal data."""

    as_of: EventTime
    registered: bool = False
    segment: Segment | None = None
    time_zone: str = "UTC"
    language: str = "en"
    rm_id: str | None = None
    flags: CustomerFlags = CustomerFlags()
    consent: dict[str, bool] = Field(
        default_factory=dict, description="'<channel>:<purpose>' -> granted"
    )
    first_activity_at: EventTime | None = None
    last_activity_at: EventTime | None = None
    transaction_count: int = 0
    products: dict[str, int] = Field(default_factory=dict, description="open accounts per type")
    total_balance: SignedAmount = Decimal(0)
    features: dict[str, float] = Field(default_factory=dict)
    tags: list[str] = Field(default_factory=list)
    value_tier: str | None = None
    rfm_segment: str | None = None
    quadrant: str | None = None
    clv: float | None = None


class ScoreReason(Frozen):
    feature: str
    text: str
    contribution: float


class ChurnScore(Frozen):
    probability: Annotated[float, Field(ge=0, le=1)]
    band: ChurnBand
    horizon_days: int
    model: str
    model_version: int
    cold_start: bool = False
    reasons: list[ScoreReason] = Field(default_factory=list)
    as_of: EventTime


class StageChange(Frozen):
    from_stage: Stage | None = Field(default=None, alias="from")
    to_stage: Stage = Field(alias="to")
    rule: str
    evidence: dict[str, Any] = Field(default_factory=dict)
    transition_at: EventTime

    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)


class EngagementDecision(Frozen):
    action_id: uuid.UUID
    playbook: str
    action: str
    channel: ContactChannel | Literal["rm_task"] | None = None
    decision: Decision
    reason: str
    policy: dict[str, Any] = Field(default_factory=dict)
    treated: bool = False


class EngagementDelivery(Frozen):
    action_id: uuid.UUID
    channel: str
    status: Literal["delivered", "failed", "dead"]
    attempts: int = 1
    detail: str | None = None


class EngagementOutcome(Frozen):
    action_id: uuid.UUID
    outcome: Literal["opened", "clicked", "accepted_offer", "declined", "task_completed"]
    detail: ShortText | None = None


# ------------------------------------------------------------------ the envelope


class EnvelopeBase(Frozen):
    event_id: uuid.UUID
    schema_version: Literal[1] = 1
    customer_id: CustomerId
    occurred_at: EventTime
    source: Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[a-z0-9][a-z0-9:._-]*$")]
    causation_id: uuid.UUID | None = None


class CustomerRegistered(EnvelopeBase):
    event_type: Literal["customer.registered"] = "customer.registered"
    payload: CustomerDetails


class CustomerUpdated(EnvelopeBase):
    event_type: Literal["customer.updated"] = "customer.updated"
    payload: CustomerDetails


class AccountOpened(EnvelopeBase):
    event_type: Literal["account.opened"] = "account.opened"
    payload: AccountChange


class AccountClosed(EnvelopeBase):
    event_type: Literal["account.closed"] = "account.closed"
    payload: AccountChange


class TransactionPosted(EnvelopeBase):
    event_type: Literal["transaction.posted"] = "transaction.posted"
    payload: TransactionDetails


class AppClicked(EnvelopeBase):
    event_type: Literal["app.click"] = "app.click"
    payload: AppClick


class FeedbackSubmitted(EnvelopeBase):
    event_type: Literal["feedback.submitted"] = "feedback.submitted"
    payload: FeedbackDetails


class ConsentChanged(EnvelopeBase):
    event_type: Literal["consent.changed"] = "consent.changed"
    payload: ConsentChange


class CustomerErased(EnvelopeBase):
    event_type: Literal["customer.erased"] = "customer.erased"
    payload: ErasureRequest


class ProfileUpdated(EnvelopeBase):
    event_type: Literal["profile.updated"] = "profile.updated"
    payload: ProfileSnapshot


class ChurnScored(EnvelopeBase):
    event_type: Literal["churn.scored"] = "churn.scored"
    payload: ChurnScore


class StageChanged(EnvelopeBase):
    event_type: Literal["stage.changed"] = "stage.changed"
    payload: StageChange


class EngagementDecided(EnvelopeBase):
    event_type: Literal["engagement.decided"] = "engagement.decided"
    payload: EngagementDecision


class EngagementDelivered(EnvelopeBase):
    event_type: Literal["engagement.delivered"] = "engagement.delivered"
    payload: EngagementDelivery


class EngagementOutcomeRecorded(EnvelopeBase):
    event_type: Literal["engagement.outcome"] = "engagement.outcome"
    payload: EngagementOutcome


EVENT_MODELS: tuple[type[EnvelopeBase], ...] = (
    CustomerRegistered,
    CustomerUpdated,
    AccountOpened,
    AccountClosed,
    TransactionPosted,
    AppClicked,
    FeedbackSubmitted,
    ConsentChanged,
    CustomerErased,
    ProfileUpdated,
    ChurnScored,
    StageChanged,
    EngagementDecided,
    EngagementDelivered,
    EngagementOutcomeRecorded,
)

Event = Annotated[
    CustomerRegistered
    | CustomerUpdated
    | AccountOpened
    | AccountClosed
    | TransactionPosted
    | AppClicked
    | FeedbackSubmitted
    | ConsentChanged
    | CustomerErased
    | ProfileUpdated
    | ChurnScored
    | StageChanged
    | EngagementDecided
    | EngagementDelivered
    | EngagementOutcomeRecorded,
    Field(discriminator="event_type"),
]

EVENT_TYPES: dict[str, type[EnvelopeBase]] = {
    m.model_fields["event_type"].default: m for m in EVENT_MODELS
}

_EVENT_ADAPTER: TypeAdapter[Event] = TypeAdapter(Event)


def parse_event(raw: bytes | str) -> EnvelopeBase:
    """Parse and validate one message; raises InvalidEvent with a reason naming the field.

    >>> e = parse_event(b'{"event_id":"00000000-0000-4000-8000-000000000001",'
    ...   b'"event_type":"consent.changed","schema_version":1,"customer_id":"c1",'
    ...   b'"occurred_at":"2026-01-01T09:00:00+08:00","source":"core-banking",'
    ...   b'"payload":{"channel":"email","purpose":"marketing","granted":true}}')
    >>> e.occurred_at.isoformat()
    '2026-01-01T01:00:00+00:00'
    >>> parse_event(b'{"schema_version": 2}')
    Traceback (most recent call last):
    ...
    shared.events.InvalidEvent: schema_version: unsupported version 2 (this service reads 1)
    """
    import orjson
    from pydantic import ValidationError

    try:
        document = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise InvalidEvent(f"malformed JSON: {exc}") from None
    if not isinstance(document, dict):
        raise InvalidEvent("envelope must be a JSON object")
    version = document.get("schema_version")
    if version != SCHEMA_VERSION:
        raise InvalidEvent(
            f"schema_version: unsupported version {version!r} (this service reads {SCHEMA_VERSION})"
        )
    event_type = document.get("event_type")
    if event_type not in EVENT_TYPES:
        raise InvalidEvent(f"event_type: unknown event type {event_type!r}")
    try:
        return _EVENT_ADAPTER.validate_python(document)
    except ValidationError as exc:
        raise InvalidEvent(_explain(exc)) from None


def _explain(exc: Any) -> str:
    parts = []
    for err in exc.errors()[:5]:
        loc = ".".join(str(p) for p in err["loc"][1:] if p != "") or "envelope"
        parts.append(f"{loc}: {err['msg']}")
    return "; ".join(parts)


def encode_event(event: EnvelopeBase) -> bytes:
    return event.model_dump_json(by_alias=True).encode()
