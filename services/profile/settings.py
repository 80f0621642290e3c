"""Profile service settings (TENURE_PROFILE_*)."""

from pydantic_settings import SettingsConfigDict

from shared.settings import ServiceSettings


class ProfileSettings(ServiceSettings):
    model_config = SettingsConfigDict(
        env_prefix="TENURE_PROFILE_", extra="ignore", populate_by_name=True
    )
    service_name: str = "profile"
