"""Engagement service settings (TENURE_ENGAGEMENT_*)."""

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from shared.settings import ServiceSettings


class EngagementSettings(ServiceSettings):
    model_config = SettingsConfigDict(
        env_prefix="TENURE_ENGAGEMENT_", extra="ignore", populate_by_name=True
    )
    service_name: str = "engagement"
    # A message is delivered only while its trigger is this fresh in wall-clock time.
    freshness_hours: float = Field(48.0, gt=0)
