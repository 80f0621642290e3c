"""Lifecycle service settings (TENURE_LIFECYCLE_*)."""

from pydantic_settings import SettingsConfigDict

from shared.settings import ServiceSettings


class LifecycleSettings(ServiceSettings):
    model_config = SettingsConfigDict(
        env_prefix="TENURE_LIFECYCLE_", extra="ignore", populate_by_name=True
    )
    service_name: str = "lifecycle"
