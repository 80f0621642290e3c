"""Ingress service settings (TENURE_INGRESS_*)."""

from pydantic import AliasChoices, Field
from pydantic_settings import SettingsConfigDict

from shared.settings import ServiceSettings


class IngressSettings(ServiceSettings):
    model_config = SettingsConfigDict(
        env_prefix="TENURE_INGRESS_", extra="ignore", populate_by_name=True
    )
    service_name: str = "ingress"
    # How soon a partner added while the service runs is read: the consumer refreshes its
    # topic metadata (and with it the partner-topic pattern's matches) this often.
    topic_refresh_ms: int = Field(5_000, ge=500, le=300_000)
    # The partner listener (SASL/SCRAM over TLS) as partners dial it: printed with a partner's
    # credentials. ./dev's broker listens on 19094 (test profile: 29094).
    partner_bootstrap: str = Field(
        "127.0.0.1:19094", validation_alias=AliasChoices("TENURE_PARTNER_BOOTSTRAP")
    )
