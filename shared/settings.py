"""Settings shared by every service; each service subclasses with its own TENURE_<NAME>_ prefix."""

from __future__ import annotations

from typing import Literal

from pydantic import AliasChoices, Field
from pydantic_settings import BaseSettings, SettingsConfigDict

# The dev key signs dev tokens (`tenure token`). Production sets TENURE_JWT_SECRET or OIDC.
DEV_JWT_SECRET = "tenure-dev-only-signing-key-change-me-in-production"

INPUT_TOPICS = {
    "customers": "tenure.customers.v1",
    "transactions": "tenure.transactions.v1",
    "app_events": "tenure.app-events.v1",
    "feedback": "tenure.feedback.v1",
}
OUTPUT_TOPICS = {
    "profile_updates": "tenure.profile-updates.v1",
    "churn_scores": "tenure.churn-scores.v1",
    "lifecycle_stages": "tenure.lifecycle-stages.v1",
    "engagement_actions": "tenure.engagement-actions.v1",
}
DLQ_TOPIC = "tenure.dlq.v1"
ALL_TOPICS = [*INPUT_TOPICS.values(), *OUTPUT_TOPICS.values(), DLQ_TOPIC]


def _shared(name: str) -> AliasChoices:
    """A field every service reads from the same variable (no service prefix)."""
    return AliasChoices(f"TENURE_{name}")


class PlatformSettings(BaseSettings):
    """What every process of the platform agrees on: where Kafka and PostgreSQL are, names."""

    model_config = SettingsConfigDict(extra="ignore", populate_by_name=True)

    kafka_bootstrap: str = Field("127.0.0.1:19092", validation_alias=_shared("KAFKA_BOOTSTRAP"))
    database_url: str = Field(
        "postgresql+asyncpg://tenure:tenure@127.0.0.1:15432/tenure",
        validation_alias=_shared("DATABASE_URL"),
    )
    # Tests isolate themselves by prefixing topic and schema names; production leaves both empty.
    topic_prefix: str = Field("", validation_alias=_shared("TOPIC_PREFIX"))
    schema_prefix: str = Field("", validation_alias=_shared("SCHEMA_PREFIX"))
    partitions: int = Field(6, ge=1, validation_alias=_shared("PARTITIONS"))
    jwt_secret: str = Field(DEV_JWT_SECRET, validation_alias=_shared("JWT_SECRET"))
    jwt_audience: str = Field("tenure", validation_alias=_shared("JWT_AUDIENCE"))
    # Token verification (docs/security.md): "dev" checks HS256 tokens signed with jwt_secret;
    # "oidc" checks the bank's identity provider's RS256/ES256 tokens against its JWKS.
    auth_mode: Literal["dev", "oidc"] = Field("dev", validation_alias=_shared("AUTH_MODE"))
    oidc_issuer: str = Field("", validation_alias=_shared("OIDC_ISSUER"))
    oidc_jwks_url: str = Field("", validation_alias=_shared("OIDC_JWKS_URL"))
    oidc_algorithms: list[str] = Field(
        default_factory=lambda: ["RS256", "ES256"], validation_alias=_shared("OIDC_ALGORITHMS")
    )
    oidc_jwks_ttl_seconds: float = Field(600.0, gt=0, validation_alias=_shared("OIDC_JWKS_TTL"))
    oidc_jwks_min_refresh_seconds: float = Field(
        10.0, ge=0, validation_alias=_shared("OIDC_JWKS_MIN_REFRESH")
    )
    oidc_rm_claim: str = Field("rm_id", validation_alias=_shared("OIDC_RM_CLAIM"))
    # This process's own OAuth client, for calls to another service (client-credentials grant).
    oidc_token_url: str = Field("", validation_alias=_shared("OIDC_TOKEN_URL"))
    oidc_client_id: str = Field("", validation_alias=_shared("OIDC_CLIENT_ID"))
    oidc_client_secret: str = Field("", validation_alias=_shared("OIDC_CLIENT_SECRET"))
    registered_sources: list[str] = Field(
        default_factory=lambda: [
            "core-banking",
            "mobile-app",
            "complaint-desk",
            "crm",
            "importer",
            "simulator",
            "tenure-profile",
            "tenure-scoring",
            "tenure-lifecycle",
            "tenure-engagement",
        ],
        validation_alias=_shared("REGISTERED_SOURCES"),
    )

    def topic(self, name: str) -> str:
        return f"{self.topic_prefix}{name}"

    @property
    def dlq_topic(self) -> str:
        return self.topic(DLQ_TOPIC)

    def source_allowed(self, source: str) -> bool:
        return source in self.registered_sources or source.startswith("partner:")


class ServiceSettings(PlatformSettings):
    """Common knobs of a service; subclasses set `service_name` and their env prefix."""

    service_name: str = "service"
    max_message_bytes: int = Field(256 * 1024, ge=1024)
    batch_max_records: int = Field(2000, ge=1, le=10_000)
    batch_timeout_ms: int = Field(200, ge=1)
    allowed_lateness_seconds: int = Field(300, ge=0)
    outbox_poll_seconds: float = Field(0.2, gt=0)
    outbox_batch: int = Field(1000, ge=1)
    run_consumers: bool = True
    # HTTP bounds (docs/security.md): a token bucket per principal and per instance, 0 = off.
    rate_limit_per_second: float = Field(100.0, ge=0)
    rate_limit_burst: int = Field(200, ge=1)
    max_body_bytes: int = Field(1024 * 1024, ge=1024)
    max_query_bytes: int = Field(4096, ge=256)
    log_level: str = "INFO"
    # Garbage collector for a long-running consumer (docs/benchmarks.md): the first start in
    # a process freezes what start-up built (never scanned again) and gen-0 collections run
    # every `gc_threshold` net allocations instead of Python's 700. 0 leaves Python's defaults.
    gc_threshold: int = Field(50_000, ge=0)

    @property
    def db_schema(self) -> str:
        return f"{self.schema_prefix}{self.service_name}"

    @property
    def consumer_group(self) -> str:
        return f"{self.topic_prefix}tenure-{self.service_name}"

    @property
    def source_id(self) -> str:
        return f"tenure-{self.service_name}"


def topic_of(event_type: str) -> str:
    """The (unprefixed) topic an event type travels on (DESIGN.md §2).

    >>> topic_of("transaction.posted"), topic_of("consent.changed")
    ('tenure.transactions.v1', 'tenure.customers.v1')
    """
    family = event_type.split(".", 1)[0]
    by_family = {
        "customer": INPUT_TOPICS["customers"],
        "account": INPUT_TOPICS["customers"],
        "consent": INPUT_TOPICS["customers"],
        "transaction": INPUT_TOPICS["transactions"],
        "app": INPUT_TOPICS["app_events"],
        "feedback": INPUT_TOPICS["feedback"],
        "profile": OUTPUT_TOPICS["profile_updates"],
        "churn": OUTPUT_TOPICS["churn_scores"],
        "stage": OUTPUT_TOPICS["lifecycle_stages"],
        "engagement": OUTPUT_TOPICS["engagement_actions"],
    }
    if family not in by_family:
        raise ValueError(f"no topic carries event type {event_type!r}")
    return by_family[family]
