"""Profile service settings (TENURE_PROFILE_*)."""

from pathlib import Path

from pydantic_settings import SettingsConfigDict

from services.profile.pii import DEV_BLIND_INDEX_KEY_SETTING, DEV_KEYRING_SETTING

from shared.settings import ServiceSettings


class ProfileSettings(ServiceSettings):
    model_config = SettingsConfigDict(
        env_prefix="TENURE_PROFILE_", extra="ignore", populate_by_name=True
    )
    service_name: str = "profile"
    # Data-encryption keys, first one active: "k2:<base64url 32 bytes>,k1:<...>".
    pii_keys: str = DEV_KEYRING_SETTING
    blind_index_key: str = DEV_BLIND_INDEX_KEY_SETTING
    default_country_code: str = "+44"
    tags_dir: Path = Path(__file__).parent / "tags"
