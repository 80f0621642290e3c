"""Console settings (TENURE_CONSOLE_*): where the four services answer, how long to wait."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from shared.settings import PlatformSettings


class ConsoleSettings(PlatformSettings):
    """The console holds no data: it needs the services' addresses, and Kafka (from the
    platform settings) for the dead-letter topic only."""

    model_config = SettingsConfigDict(
        env_prefix="TENURE_CONSOLE_", extra="ignore", populate_by_name=True
    )
    service_name: str = "console"
    profile_url: str = "http://127.0.0.1:8101"
    scoring_url: str = "http://127.0.0.1:8102"
    lifecycle_url: str = "http://127.0.0.1:8103"
    engagement_url: str = "http://127.0.0.1:8104"
    # A page waits this long for a service before it says so; the model card and the stage
    # transitions can take a few seconds on a large population.
    upstream_timeout_seconds: float = Field(10.0, gt=0)
    kafka_timeout_seconds: float = Field(10.0, gt=0)
    # Set it behind TLS (production): the session cookie then travels over HTTPS only.
    cookie_secure: bool = False
    dlq_page_size: int = Field(50, ge=1, le=500)
    log_level: str = "INFO"

    def service_urls(self) -> dict[str, str]:
        return {
            "profile": self.profile_url,
            "scoring": self.scoring_url,
            "lifecycle": self.lifecycle_url,
            "engagement": self.engagement_url,
        }
